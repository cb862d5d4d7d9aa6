"""What a stored message record means to a caller: the :class:`Outcome` of a request (an
error, or status + JSON bytes), rebuilt from a ``done`` record, the async ``202`` and its
``Location``, and the request hash a repeat is compared by — the pure half of
:mod:`bus.gateway.idempotency`, with the store's pruning chore."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from bus.errors import BusError, Gone, InternalError, error_from_code
from bus.store.base import Store, StoredMessage

__all__ = [
    "Outcome",
    "accepted",
    "awaits_answer",
    "body_hash",
    "fetched",
    "in_progress",
    "location",
    "pending_body",
    "prefers_async",
    "prune_forever",
    "retryable_failure",
    "stale",
    "stored_outcome",
]

log = structlog.get_logger("bus.gateway.idempotency")


@dataclass
class Outcome:
    """What the caller gets: an error (rendered by the gateway) or status + JSON bytes."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    error: BusError | None = None
    stored: bytes | None = None
    """What the store keeps when it is not ``body`` (an answer with the service and
    operation it came from, so it can be re-checked when served:
    :func:`bus.gateway.reply.serve_stored`)."""
    final: bool = False
    """A stored answer that ``GET /v1/messages/{id}`` hands over (then deletes)."""

    @classmethod
    def failure(cls, exc: BusError, request_id: str | None) -> Outcome:
        """An error as the caller sees it (the gateway's one error shape)."""
        payload = exc.to_dict()
        payload["request_id"] = request_id
        return cls(exc.status, orjson.dumps({"error": payload}), error=exc)


def body_hash(
    service: str, operation: str, body: Mapping[str, Any], key: bytes | None = None
) -> str:
    """The digest a repeat of a request is compared by, as stored: HMAC-SHA256 under
    ``key`` (:func:`bus.config.atrest.request_digest_key`; a request's ID number cannot
    be tested against it without the key), else SHA-256, of the request in canonical form
    (sorted keys, compact UTF-8 JSON), hex."""
    canonical = orjson.dumps(
        {"service": service, "operation": operation, "body": body}, option=orjson.OPT_SORT_KEYS
    )
    if key is None:
        return hashlib.sha256(canonical).hexdigest()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def prefers_async(header: str | None) -> bool:
    """Whether a ``Prefer`` header asks for ``respond-async`` (RFC 7240)."""
    if not header:
        return False
    for preference in header.split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


def location(request_id: str) -> str:
    """Where the answer of ``request_id`` is served."""
    return f"/v1/messages/{request_id}"


def pending_body(request_id: str) -> bytes:
    return orjson.dumps({"request_id": request_id, "state": "pending"})


def accepted(request_id: str) -> Outcome:
    return Outcome(
        202,
        pending_body(request_id),
        {
            "Location": location(request_id),
            "Retry-After": "1",
            "Preference-Applied": "respond-async",
        },
    )


def fetched() -> Gone:
    return Gone("this request_id's answer was fetched and deleted; send anew with a new id")


def in_progress(record: StoredMessage) -> bool:
    return record.state == "pending" or record.status == 202


def stale(record: StoredMessage, stale_after_s: float, now: float) -> bool:
    return in_progress(record) and now - record.updated_at > stale_after_s


def stored_outcome(record: StoredMessage, *, rebuild: bool = True) -> Outcome:
    """A ``done`` record as the answer it was: the bytes (always for a success; for a
    failure unless ``rebuild``), else the error rebuilt from its code so observers see it."""
    status = record.status or 500
    body = record.reply or b"{}"
    if status < 400 or not rebuild:
        return Outcome(status, body, {"Idempotent-Replayed": "true"})
    try:
        error = orjson.loads(body)["error"]
        rebuilt = error_from_code(str(error["code"]), str(error["message"]), error.get("detail"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        rebuilt = InternalError("the stored answer is unreadable")
    return Outcome(status, body, error=rebuilt)


def retryable_failure(record: StoredMessage) -> bool:
    if record.state != "done" or (record.status or 0) < 400:
        return False
    try:
        return bool(orjson.loads(record.reply or b"{}")["error"]["retryable"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return True


def awaits_answer(record: StoredMessage) -> bool:
    """Whether a record still wants an answer: in progress, or failed retryably (so a
    later answer, e.g. from ``lgsp-bus dlq replay``, may replace it)."""
    return in_progress(record) or retryable_failure(record)


async def prune_forever(store: Store, interval_s: float, stop: asyncio.Event) -> None:
    """Delete expired message results every ``interval_s`` until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            async with asyncio.timeout(60):
                removed = await store.messages_prune(time.time())
        except Exception as exc:  # the next round tries again
            log.warning("idempotency.prune_failed", error=type(exc).__name__)
            continue
        if removed:
            log.info("idempotency.pruned", records=removed)
