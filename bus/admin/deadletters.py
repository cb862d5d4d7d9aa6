"""``lgsp-bus dlq list|show|replay|purge``: what is in ``lgsp.dlq.<service>``, and why.

Dead letters are requests that could not be decoded (``rejected``), were delivered too
often without an answer (``delivery_limit``) or waited past their deadline (``expired``);
they stay ``broker.dlq_ttl_s`` (default 14 days). Actions:

* ``list`` — id, reason, attempts, when, operation, request id, calling system and last
  error of each dead letter (held unacknowledged for a moment, then returned);
* ``show ID`` — one dead letter's headers and body; names, addresses, dates of birth and
  ID numbers are masked unless ``--reveal``;
* ``replay ID…|--all|--reason R`` — publish each again with a fresh deadline (the
  operation's timeout, or ``--timeout-s``) and wait for its answer; a letter leaves the DLQ
  once re-published. If the caller's async-mode record still waits for an answer (or
  failed retryably), the answer is stored there for ``GET /v1/messages/{id}``.
  Undecodable letters cannot be replayed: purge them;
* ``purge ID…|--all|--reason R`` — delete for good.

``show``, ``replay`` and ``purge`` are recorded in the audit trail (``dlq.show`` …, actor
``--actor``) before they act, and refused if that record cannot be written; every action
is logged. Needs ``LGSP_AMQP_URL``: the embedded in-memory broker's DLQ lives inside its
own process. Exit codes: 0 done, 1 letters not found or not replayed, 2 bad arguments or
nothing reachable. This module holds the operations; the command is :mod:`bus.cli.dlq`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import orjson
import structlog

from bus.broker.deadletters import ClaimedLetter, DeadLetter, DeadLetterQueue
from bus.canonical import new_id
from bus.config import RoutingConfig
from bus.config.atrest import request_digest_key
from bus.envelope import DecodeError, Reply, Request, decode_request
from bus.errors import BusError, DeadlineExceeded
from bus.gateway.idempotency import awaits_answer, body_hash
from bus.gateway.reply import render_reply
from bus.logs import mask_value
from bus.store.base import Store

__all__ = [
    "Broker",
    "Replayed",
    "answer_keeper",
    "detail",
    "list_letters",
    "purge",
    "replay",
    "summary",
]

log = structlog.get_logger("bus.admin.deadletters")

VN = timezone(timedelta(hours=7), "ICT")


@dataclasses.dataclass(frozen=True, slots=True)
class Replayed:
    """What became of one replayed dead letter."""

    id: str
    request_id: str | None
    outcome: str
    """``OK``, the answer's error code, ``NO_REPLY`` (published, no answer in time) or
    ``NOT_REPLAYABLE`` (not a valid envelope); or why it could not be published."""
    left_dlq: bool


class Broker(DeadLetterQueue, Protocol):
    """What the DLQ tools need of a broker: its DLQ operations and ``request``."""

    async def request(self, req: Request) -> Reply:
        """Publish and await the reply (the broker's own ``request``)."""


def _select(
    held: Sequence[ClaimedLetter], ids: Collection[str] | None, reason: str | None
) -> list[ClaimedLetter]:
    return [
        c
        for c in held
        if (ids is None or c.letter.id in ids) and (reason is None or c.letter.reason == reason)
    ]


async def list_letters(broker: DeadLetterQueue, service: str, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters of ``service``, oldest first (none removed)."""
    async with broker.dead_letters_claim(service, limit=limit) as held:
        return [c.letter for c in held]


async def purge(
    broker: DeadLetterQueue, service: str, ids: Collection[str] | None, reason: str | None
) -> list[DeadLetter]:
    """Delete the selected dead letters (all, with neither ``ids`` nor ``reason``)."""
    async with broker.dead_letters_claim(service) as held:
        chosen = _select(held, ids, reason)
        for claimed in chosen:
            await claimed.ack()
        return [c.letter for c in chosen]


OnAnswer = Callable[[Request, Reply], Awaitable[None]]


def answer_keeper(config: RoutingConfig, store: Store) -> OnAnswer:
    """Store a replayed request's answer for ``GET /v1/messages/{id}``, rendered as the
    gateway would, if the caller's record of this very request still waits for one."""
    key = request_digest_key(config)

    # Imported here: every `lgsp-bus` command loads this module, and the gateway is heavy.
    async def keep(req: Request, reply: Reply) -> None:
        try:
            kept = await store.message_get(req.consumer, req.request_id)
            digest = body_hash(req.service, req.operation, req.body, key)
            if kept is None or kept.body_hash != digest:
                return
            if awaits_answer(kept):
                outcome = render_reply(
                    config, req, reply, req.trace_id or req.correlation_id
                ).outcome
                await store.message_finish(
                    req.consumer, req.request_id, outcome.status, outcome.stored or outcome.body
                )
                log.info("dlq.answer_stored", status=outcome.status)
        except Exception as exc:  # the replay itself succeeded; say so and go on
            log.warning("dlq.answer_not_stored", error=type(exc).__name__)

    return keep


async def replay(
    broker: Broker,
    service: str,
    ids: Collection[str] | None,
    *,
    reason: str | None,
    timeout_s: Callable[[str], float],
    on_answer: OnAnswer | None = None,
) -> list[Replayed]:
    """Publish the selected dead letters again, each with a fresh deadline
    (``timeout_s(operation)`` from now), and wait for their answers."""
    async with broker.dead_letters_claim(service) as held:
        chosen = _select(held, ids, reason)
        return list(
            await asyncio.gather(*(_replay_one(broker, c, timeout_s, on_answer) for c in chosen))
        )


async def _replay_one(
    broker: Broker,
    claimed: ClaimedLetter,
    timeout_s: Callable[[str], float],
    on_answer: OnAnswer | None,
) -> Replayed:
    letter = claimed.letter
    try:
        old = decode_request(letter.body, letter.headers, letter.correlation_id or "dead")
    except DecodeError:
        return Replayed(letter.id, letter.request_id, "NOT_REPLAYABLE", False)
    req = dataclasses.replace(
        old,
        correlation_id=new_id(),
        deadline=time.time() + timeout_s(old.operation),
        attempt=old.attempt + 1,
    )
    try:
        reply = await broker.request(req)
    except DeadlineExceeded:
        await claimed.ack()  # it was published: the work queue has it now
        return Replayed(letter.id, req.request_id, "NO_REPLY", True)
    except BusError as exc:  # not published (queue full, no route, broker down): keep it
        return Replayed(letter.id, req.request_id, exc.code, False)
    await claimed.ack()
    if on_answer is not None:
        await on_answer(req, reply)
    code = "OK" if reply.error is None else str(reply.error.get("code", "ERROR"))
    return Replayed(letter.id, req.request_id, code, True)


# -- presentation ---------------------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, VN).isoformat(timespec="seconds")


def summary(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter's facts, for ``list`` (no body)."""
    return {
        "id": letter.id,
        "service": letter.service,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "dead_at": _when(letter.dead_at),
        "operation": letter.operation,
        "request_id": letter.request_id,
        "consumer": letter.consumer,
        "last_error": letter.last_error,
        "bytes": len(letter.body),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def detail(letter: DeadLetter, *, reveal: bool) -> dict[str, Any]:
    """One dead letter for ``show``: summary, headers and (masked) body."""
    try:
        body: Any = orjson.loads(letter.body)
    except orjson.JSONDecodeError:
        body = letter.body.decode("utf-8", "replace") if reveal else f"<{len(letter.body)} bytes>"
    else:
        body = body if reveal else mask_value(body, whole_names=True)
    headers = _plain(letter.headers)
    if not reveal:
        headers = mask_value(headers, whole_names=True)
    return {**summary(letter), "headers": headers, "body": body}
