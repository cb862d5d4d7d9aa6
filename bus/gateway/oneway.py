"""One-way sends at the gateway (an operation with ``mode: send``).

After the pipeline (authenticated, authorised, validated, checked — exactly as a call) the
send is accepted in three steps, so that ``202`` means *durably queued* and an error means
*never delivered*:

1. the delivery record ``send:<consumer>`` / request_id is created ``ACCEPTING`` in the
   store (a repeat of the same request finds it: same body → the same ``202`` again,
   other body → ``409 IDEMPOTENCY_CONFLICT``);
2. the message is published to ``lgsp.sends`` and the broker's confirm awaited (the
   memory broker: enqueued);
3. the record becomes ``QUEUED`` and the caller gets ``202`` + ``Location``.

If the publish fails the record is deleted and the caller gets the error: a worker that
receives a message without a record drops it (the broker may have kept a message whose
confirm was lost). A worker that sees ``ACCEPTING`` waits for step 3 until
:data:`~bus.broker.outbox.ACCEPT_GRACE_S` after the record was made (the publish timeout
plus 2 s); after that (the gateway died between confirm and step 3, the caller saw no
answer) it delivers. A repeat of the request meanwhile waits as long, then publishes again
(one copy is delivered, the other finds the record settled). Limit: a gateway whose
publish failed and which then cannot delete the record (the store down too) leaves it
``ACCEPTING``, and that message, if the broker kept it, is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from aiohttp import web

from bus.broker.outbox import (
    ACCEPT_GRACE_S,
    ACCEPTED_AT,
    SENDS_EXCHANGE,
    partition,
    send_key,
    send_stream,
)
from bus.config.delivery import dotted_get
from bus.envelope import Request, encode_request
from bus.errors import BusError, BusUnavailable, Conflict
from bus.gateway.idempotency import STORE_TIMEOUT_S, StoreUnavailable, body_hash, location
from bus.gateway.runtime import Gateway, Runtime
from bus.store.base import DeliveryState

__all__ = ["accept_send", "shown_state", "status_body"]

T = TypeVar("T")


def shown_state(record: DeliveryState) -> str:
    """The state a caller sees (``ACCEPTING`` is not one: it only exists before the 202)."""
    return "QUEUED" if record.state == "ACCEPTING" else record.state


def status_body(record: DeliveryState) -> dict[str, object]:
    """``GET /v1/messages/{id}`` of a send."""
    return {
        "request_id": record.msg_id,
        "state": shown_state(record),
        "attempts": record.attempts,
        "last_error": record.last_error,
        "updated_at": round(record.updated_at, 3),
    }


def _accepted(req: Request, state: str, replayed: bool) -> web.Response:
    headers = {"Location": location(req.request_id)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = {"request_id": req.request_id, "state": state}
    return web.Response(
        body=orjson.dumps(body), status=202, content_type="application/json", headers=headers
    )


async def accept_send(gateway: Gateway, rt: Runtime, req: Request) -> web.Response:
    """Steps 1-3 of the module doc; raises the :mod:`bus.errors` error on refusal."""
    store = gateway.store
    if store is None:
        raise BusUnavailable("one-way sends need the store", code="STORE_UNAVAILABLE")
    op = rt.config.services[req.service].operations[req.operation]
    digest = body_hash(req.service, req.operation, req.body, rt.digest_key)
    stream = send_stream(req.consumer)
    ttl = op.deliver_within_s + rt.config.gateway.idempotency_ttl_s
    existing = await _store(store.delivery_begin(stream, req.request_id, digest, "ACCEPTING", ttl))
    if existing is not None:
        if existing.body_hash != digest:
            raise Conflict(
                "this request_id was already used for a different request; send a new request_id",
                code="IDEMPOTENCY_CONFLICT",
            )
        existing = await _settled(gateway, stream, existing)
        if existing is not None and existing.state != "ACCEPTING":
            return _accepted(req, shown_state(existing), replayed=True)
        # Still ACCEPTING after the wait: the first gateway died mid-publish; publish again
        # (the worker delivers one of the two copies, the other finds it DELIVERED).
    now = time.time()
    one_way = Request(
        request_id=req.request_id,
        service=req.service,
        operation=req.operation,
        consumer=req.consumer,
        correlation_id=req.correlation_id,
        trace_id=req.trace_id,
        deadline=now + op.deliver_within_s,
        body=req.body,
        officer=req.officer,
    )
    body, headers = encode_request(one_way)
    headers = {**headers, ACCEPTED_AT: round(now * 1000)}
    n = rt.config.delivery.partitions
    p = partition(dotted_get(req.body, op.order_by), n) if op.order_by else 0
    try:
        await gateway.broker.publish(
            SENDS_EXCHANGE,
            send_key(req.service, req.operation, p),
            body,
            headers,
            message_id=req.request_id,
            mandatory=True,
        )
    except BusError:
        await _store(store.delivery_forget(stream, req.request_id))
        raise
    with contextlib.suppress(BusUnavailable):  # durable in the broker: the worker
        await _store(store.delivery_set(stream, req.request_id, "QUEUED"))  # waits it out
    return _accepted(req, "QUEUED", replayed=False)


async def _settled(gateway: Gateway, stream: str, record: DeliveryState) -> DeliveryState | None:
    """Wait for a repeat's first copy to leave ``ACCEPTING``, at most until
    :data:`ACCEPT_GRACE_S` after it was made (then its publish is over either way)."""
    assert gateway.store is not None
    current: DeliveryState | None = record
    while current is not None and current.state == "ACCEPTING":
        if time.time() - current.created_at > ACCEPT_GRACE_S:
            return current
        await asyncio.sleep(0.1)
        current = await _store(gateway.store.delivery_get(stream, record.msg_id))
    return current


async def _store(action: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(STORE_TIMEOUT_S):
            return await action
    except BusError:
        raise
    except Exception as exc:  # OSError, a driver's own error class (asyncpg, sqlite3 …)
        raise StoreUnavailable("the store of deliveries failed") from exc
