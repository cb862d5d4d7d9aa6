"""The attempt loop of one message: backoff between attempts, ``deliver_within``, and the
persisted schedule.

The schedule is the message itself plus its delivery record. The message stays in its
durable quorum queue, unacknowledged, while a worker holds it between attempts; the
record (store) keeps ``attempts``, ``last_error`` and ``next_at``. Whatever stops —
worker SIGKILL, broker restart, store restart — the message comes back to a worker (the
broker requeues unacknowledged ones in place), which reads the record and waits until
``next_at`` before the next attempt; ``deliver_within`` counts from the message's own
accepted/published time (or its replay). On ``stop`` a held message is released
(``requeue``): it goes back to the head of its queue (see :mod:`bus.broker.amqp.outbox`
for how, and for RabbitMQ's ``consumer_timeout``).

Why not delay queues (per-delay TTL queues dead-lettering back): a retried message would
leave its queue and let later messages of its key overtake it; holding it keeps order per
partition, at the price that a message under retry holds its partition (ordered routes,
subscriptions) or one prefetch slot (unordered sends) — by design for a subscriber that is
down, and bounded by ``deliver_within``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import structlog

from bus.broker.outbox import ACK, REQUEUE, Disposition
from bus.config.delivery import Redelivery
from bus.store.base import Store

__all__ = ["Attempt", "Schedule", "run_schedule"]

log = structlog.get_logger("bus.delivery.schedule")

RECORD_TTL_S = 35 * 86_400.0
"""Delivery records of subscriptions outlive the longest ``deliver_within`` (30 days)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt ended: ``OK``, or an error code and whether trying again may help."""

    code: str
    retryable: bool = False
    status: int = 0

    @property
    def ok(self) -> bool:
        """Delivered (``already received`` answers count)."""
        return self.code == "OK"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Where and how long one message may be tried."""

    stream: str
    msg_id: str
    deadline: float
    redelivery: Redelivery
    record_exists: bool
    """The record was made before the first attempt (sends): every state is written.
    Else (events) it is made at the first failure only, so a first-time success costs no
    store write."""
    replayed_at: float = 0.0
    """When ``dlq replay`` sent it back (0: never)."""


async def _sleep(seconds: float, stop: asyncio.Event) -> bool:
    """Sleep unless ``stop`` comes first; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


async def run_schedule(
    store: Store,
    plan: Schedule,
    attempt: Callable[[int], Awaitable[Attempt]],
    stop: asyncio.Event,
) -> tuple[Disposition, Attempt | None, int]:
    """Try until delivered, refused for good, past the deadline, held too long or stopped.
    Returns the disposition, the last attempt (if one ran now) and the attempt count."""
    record = await store.delivery_get(plan.stream, plan.msg_id)
    if record is not None and record.state == "DEAD" and plan.replayed_at >= record.updated_at:
        record = replace(record, state="DELIVERING", next_at=0.0)  # `dlq replay`: once more
    if record is not None and record.state in ("DELIVERED", "DEAD"):
        return ACK, None, record.attempts  # a copy redelivered after it was settled
    exists = plan.record_exists or record is not None
    attempts = record.attempts if record is not None else 0
    next_at = record.next_at if record is not None else 0.0
    last_error = record.last_error if record is not None else None
    last: Attempt | None = None
    while True:
        now = time.time()
        if now >= plan.deadline:
            error = last_error or "DELIVER_WITHIN_PASSED"
            await _settle(store, plan, exists, "DEAD", attempts, error)
            dead = Disposition("dead", "deliver_within", f"not delivered in time; last {error}")
            return dead, last, attempts
        wait = min(next_at - now, plan.deadline - now)
        if wait > 0:
            if await _sleep(wait, stop):
                return REQUEUE, last, attempts
            continue
        if stop.is_set():
            return REQUEUE, last, attempts
        attempts += 1
        last = await attempt(attempts)
        if last.ok:
            if exists:
                await _settle(store, plan, True, "DELIVERED", attempts, None)
            return ACK, last, attempts
        last_error = last.code
        if not last.retryable:
            await _settle(store, plan, exists, "DEAD", attempts, last.code)
            return Disposition("dead", "refused", f"{last.code} (not retryable)"), last, attempts
        next_at = time.time() + plan.redelivery.wait_s(attempts)
        if not exists:
            await store.delivery_begin(plan.stream, plan.msg_id, "", "DELIVERING", RECORD_TTL_S)
            exists = True
        await store.delivery_set(
            plan.stream,
            plan.msg_id,
            "DELIVERING",
            attempts=attempts,
            last_error=last.code,
            next_at=next_at,
        )
        log.info("delivery.retry_scheduled", stream=plan.stream, attempt=attempts, code=last.code)


async def _settle(
    store: Store, plan: Schedule, exists: bool, state: str, attempts: int, error: str | None
) -> None:
    if not exists:
        await store.delivery_begin(plan.stream, plan.msg_id, "", state, RECORD_TTL_S)
    await store.delivery_set(plan.stream, plan.msg_id, state, attempts=attempts, last_error=error)
