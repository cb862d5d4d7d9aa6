"""What one attempt is, per kind of outbox queue, and the delivery handler of each:

* :class:`SendTarget` — a one-way send: the service's adapter through the worker's request
  handler (the operation's retry policy and circuit breaker apply within one attempt; the
  request_id goes along as the upstream's idempotency key where the route maps it, and an
  "already received" answer is success where the route's ``app_status`` says so);
* :class:`WebhookTarget` — an HTTP POST of the minimised, signed event;
* :class:`PullTarget` — an append to the subscription's log in the store.

Outcome codes (``lgsp_deliveries_total{outcome}``, the audit trail, ``last_error``):
``OK``; webhook ``HTTP_<status>`` (408, 425, 429 and 5xx retryable; other 4xx not),
``TIMEOUT`` and ``UNREACHABLE`` (retryable); a send's error code from the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import structlog

from bus.broker.base import Handler
from bus.broker.outbox import (
    ACCEPT_GRACE_S,
    ACCEPTED_AT,
    ACK,
    EVENT_TYPE,
    PUBLISHED_AT,
    REPLAYED_AT,
    Delivery,
    Disposition,
    send_stream,
    subscription_stream,
)
from bus.config import RoutingConfig, resolve_secret
from bus.config.delivery import Subscription
from bus.delivery.fields import minimise
from bus.delivery.recorder import DeliveryReport
from bus.delivery.schedule import Attempt, Schedule, run_schedule
from bus.delivery.signature import SIGNATURE_HEADER, sign
from bus.envelope import DecodeError, Request, decode_request
from bus.store.base import Store

__all__ = ["PullTarget", "SendTarget", "WebhookTarget", "poison"]

log = structlog.get_logger("bus.delivery.targets")

_RETRYABLE_HTTP = frozenset({408, 425, 429})


def poison(error: str) -> Disposition:
    """A message that cannot be read: straight to the DLQ."""
    return Disposition("dead", "rejected", error)


def _ms(headers: dict[str, Any], name: str) -> float | None:
    value = headers.get(name)
    return value / 1000 if isinstance(value, int) and not isinstance(value, bool) else None


def _clock(headers: dict[str, Any], name: str) -> float:
    """When the deliver_within clock started: accepted/published, or replayed."""
    started = _ms(headers, name) or time.time()
    return max(started, _ms(headers, REPLAYED_AT) or 0.0)


class SendTarget:
    """Delivers one-way sends of one operation to its upstream."""

    def __init__(
        self,
        config: RoutingConfig,
        store: Store,
        handler: Handler,
        report: DeliveryReport,
        stop: asyncio.Event,
    ) -> None:
        self.config, self.store, self.handler = config, store, handler
        self.report, self.stop = report, stop

    async def __call__(self, delivery: Delivery) -> Disposition:
        try:
            req = decode_request(delivery.body, delivery.headers, delivery.message_id)
        except DecodeError as exc:
            return poison(str(exc))
        op = self.config.services[req.service].operations[req.operation]
        stream = send_stream(req.consumer)
        if not await self._accepted(stream, req.request_id):
            log.warning("delivery.send_not_accepted", service=req.service)
            await self._report(req, 0, "DROPPED_NOT_ACCEPTED", time.time(), time.time())
            return ACK
        accepted = _clock(delivery.headers, ACCEPTED_AT)
        plan = Schedule(
            stream,
            req.request_id,
            accepted + op.deliver_within_s,
            op.redelivery,
            record_exists=True,
            replayed_at=_ms(delivery.headers, REPLAYED_AT) or 0.0,
        )

        async def attempt(number: int) -> Attempt:
            started = time.time()
            await self.store.delivery_set(stream, req.request_id, "DELIVERING", next_at=0.0)
            deadline = min(started + op.timeout_s, plan.deadline)
            # A fresh correlation id per attempt: the worker answers a repeated one from
            # its memory of replies (bus/worker/redelivery.py), which would replay a failure.
            attempt_req = replace(
                req, deadline=deadline, attempt=number, correlation_id=uuid.uuid4().hex
            )
            reply = await self.handler(attempt_req)
            if reply.error is None:
                result = Attempt("OK", status=200)
            else:
                code = str(reply.error.get("code", "INTERNAL_ERROR"))
                result = Attempt(code, bool(reply.error.get("retryable", False)))
            outcome = "DELIVERED" if result.ok else result.code
            await self._report(req, number, outcome, accepted, started)
            return result

        disposition, _, attempts = await run_schedule(self.store, plan, attempt, self.stop)
        if disposition.action == "dead":
            await self._report(req, attempts, "DEAD", accepted, time.time())
        return disposition

    async def _accepted(self, stream: str, request_id: str) -> bool:
        """The gateway's record says the send was accepted (waits out ``ACCEPTING``)."""
        while True:
            record = await self.store.delivery_get(stream, request_id)
            if record is None:
                return False
            if record.state != "ACCEPTING" or time.time() - record.created_at > ACCEPT_GRACE_S:
                return True
            await asyncio.sleep(0.2)

    async def _report(
        self, req: Request, attempt: int, outcome: str, accepted: float, started: float
    ) -> None:
        await self.report.attempted(
            stream=f"send.{req.service}.{req.operation}",
            consumer=req.consumer,
            service=req.service,
            operation=req.operation,
            msg_id=req.request_id,
            attempt=attempt,
            outcome=outcome,
            status=0,
            published_at=accepted,
            started=started,
        )


class _EventTarget:
    """Shared by webhook and pull: decode, minimise, schedule."""

    def __init__(
        self,
        config: RoutingConfig,
        store: Store,
        consumer: str,
        name: str,
        report: DeliveryReport,
        stop: asyncio.Event,
    ) -> None:
        self.config, self.store, self.report, self.stop = config, store, report, stop
        self.consumer, self.name = consumer, name
        self.sub: Subscription = config.consumers[consumer].subscriptions[name]
        self.stream = subscription_stream(consumer, name)

    async def attempt_once(self, event_id: str, body: bytes) -> Attempt:
        raise NotImplementedError

    async def __call__(self, delivery: Delivery) -> Disposition:
        event_type = delivery.headers.get(EVENT_TYPE)
        declared = self.config.events.get(event_type) if isinstance(event_type, str) else None
        try:
            event = orjson.loads(delivery.body)
        except orjson.JSONDecodeError:
            return poison("the event is not JSON")
        if declared is None or not isinstance(event, dict) or "event_id" not in event:
            return poison("not an event of a declared type")
        event_id = str(event["event_id"])
        body = orjson.dumps(minimise(event, declared, self.sub))
        published = _ms(delivery.headers, PUBLISHED_AT) or time.time()
        plan = Schedule(
            self.stream,
            event_id,
            _clock(delivery.headers, PUBLISHED_AT) + self.sub.deliver_within_s,
            self.sub.redelivery,
            record_exists=False,
            replayed_at=_ms(delivery.headers, REPLAYED_AT) or 0.0,
        )

        async def attempt(number: int) -> Attempt:
            started = time.time()
            result = await self.attempt_once(event_id, body)
            outcome = "DELIVERED" if result.ok else result.code
            await self._report(
                str(event_type), event_id, number, outcome, result.status, published, started
            )
            return result

        disposition, last, attempts = await run_schedule(self.store, plan, attempt, self.stop)
        if disposition.action == "dead":
            status = last.status if last is not None else 0
            await self._report(
                str(event_type), event_id, attempts, "DEAD", status, published, time.time()
            )
        return disposition

    async def _report(
        self,
        event_type: str,
        event_id: str,
        attempt: int,
        outcome: str,
        status: int,
        published: float,
        started: float,
    ) -> None:
        await self.report.attempted(
            stream=self.stream,
            consumer=self.consumer,
            service="events",
            operation=event_type,
            msg_id=event_id,
            attempt=attempt,
            outcome=outcome,
            status=status,
            published_at=published,
            started=started,
        )


class WebhookTarget(_EventTarget):
    """POSTs each event, signed, to the subscription's URL."""

    def __init__(self, *args: Any, session: aiohttp.ClientSession, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = session
        if self.sub.secret is None or self.sub.url is None:
            raise ValueError("a webhook subscription needs url and secret")
        self.url = self.sub.url
        self.secret = resolve_secret(self.sub.secret).encode()

    async def attempt_once(self, event_id: str, body: bytes) -> Attempt:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            "X-Lgsp-Event-Id": event_id,
            "X-Lgsp-Subscription": f"{self.consumer}.{self.name}",
        }
        try:
            async with asyncio.timeout(self.sub.timeout_s):
                async with self.session.post(self.url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
        except TimeoutError:
            return Attempt("TIMEOUT", retryable=True)
        except (aiohttp.ClientError, OSError):
            return Attempt("UNREACHABLE", retryable=True)
        if 200 <= status < 300:
            return Attempt("OK", status=status)
        retryable = status >= 500 or status in _RETRYABLE_HTTP
        return Attempt(f"HTTP_{status}", retryable, status)


class PullTarget(_EventTarget):
    """Appends each event to the subscription's log (read by ``GET /v1/events``)."""

    async def attempt_once(self, event_id: str, body: bytes) -> Attempt:
        await self.store.event_append(self.stream, event_id, body)  # None: already there
        return Attempt("OK")
