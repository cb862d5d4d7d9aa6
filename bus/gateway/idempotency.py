"""Idempotency and async mode at the gateway, on the store's message results.

``request_id`` is the idempotency key, per calling system (the store keys results by
consumer + request_id). The first request claims the key (``pending``) and its answer is
stored (``done``) exactly as sent: status and JSON bytes. A repeat with the same request
(same SHA-256 of service, operation and canonical body):

* answered before → the stored answer, without calling the upstream again
  (``Idempotent-Replayed: true``); a stored *retryable* failure (timeout, unavailable,
  circuit open …) is not final: the repeat runs the request again;
* still in flight → waits for that answer (until its own deadline), or in async mode
  ``202`` with its ``Location``;
* left pending by a gateway that died (older than the operation's timeout + a grace) →
  taken over and run again.

The same ``request_id`` with a different request is ``409 IDEMPOTENCY_CONFLICT`` and changes
nothing. An answer the bus never accepted (``OVERLOADED``, ``NO_ROUTE``) is not stored.

Async mode (``Prefer: respond-async``): the request runs in the background (still counted
in the gateway's in-flight bound); an outcome ready within :data:`ASYNC_GRACE_S` (an
immediate refusal, a fast answer) is returned at once, otherwise ``202`` +
``Location: /v1/messages/{request_id}``. ``GET /v1/messages/{id}`` serves the stored answer
from the store, so it survives a gateway restart; a ``pending`` record is ``202`` with
``Retry-After``. A final answer served by ``GET`` is handed over: the store deletes it and
keeps a ``fetched`` mark until the record expires, so a second ``GET`` — or a repeat of the
request with that ``request_id`` — is ``410 ANSWER_FETCHED`` (a retryable failure is not
final: it stays, for a repeat to run again). Answers never fetched stay replayable.
Takeovers are stored as a ``202`` marker answer (the store's only way back from ``done``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from bus.errors import (
    AuditUnavailable,
    BusError,
    BusUnavailable,
    Conflict,
    DeadlineExceeded,
    InternalError,
)
from bus.gateway.journal import Journal
from bus.gateway.outcomes import (
    Outcome,
    accepted,
    awaits_answer,
    body_hash,
    fetched,
    in_progress,
    location,
    pending_body,
    prefers_async,
    prune_forever,
    retryable_failure,
    stale,
    stored_outcome,
)
from bus.store.base import MessageWrite, Store, StoredMessage

__all__ = [
    "ASYNC_GRACE_S",
    "STALE_GRACE_S",
    "Background",
    "Idempotency",
    "Outcome",
    "StoreUnavailable",
    "awaits_answer",
    "body_hash",
    "location",
    "prefers_async",
    "prune_forever",
    "stored_outcome",
]

log = structlog.get_logger("bus.gateway.idempotency")
T = TypeVar("T")

ASYNC_GRACE_S = 0.05
"""Async mode returns an outcome ready this soon (refusals, fast answers) instead of 202."""
STALE_GRACE_S = 5.0
"""A claim still pending this long after its operation's timeout is abandoned."""
POLL_MAX_S = 0.5
"""Longest pause between store reads while waiting for an earlier request's answer."""
NOT_ACCEPTED = frozenset({"OVERLOADED", "NO_ROUTE"})
"""Error codes meaning the bus never took the request: nothing is stored."""
STORE_TIMEOUT_S = 5.0


class StoreUnavailable(BusUnavailable):
    """The store holding request results cannot be reached."""

    default_code = "STORE_UNAVAILABLE"


class Background:
    """Owns the async-mode tasks of one gateway app; drained/cancelled on shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Outcome]] = set()

    def spawn(self, work: Awaitable[Outcome]) -> asyncio.Task[Outcome]:
        """Run ``work`` as an owned task."""
        task: asyncio.Task[Outcome] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self, bound_s: float) -> None:
        """Let running tasks finish within ``bound_s``, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=bound_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("idempotency.background_cancelled", tasks=len(pending))
            await asyncio.wait(pending, timeout=STORE_TIMEOUT_S)


Execute = Callable[[], Awaitable[Outcome]]


class Idempotency:
    """The idempotency/async step of one request (cheap: build one per request)."""

    def __init__(
        self, store: Store, *, ttl_s: float, background: Background, journal: Journal | None = None
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.background = background
        self.journal = journal

    async def _store(self, action: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                return await action
        except AuditUnavailable:  # fail_closed: the audit record with it was not written
            raise
        except (OSError, TimeoutError, ConnectionError, RuntimeError) as exc:
            log.warning("idempotency.store_failed", error=type(exc).__name__)
            raise StoreUnavailable("the store of request results is unreachable") from exc
        except Exception as exc:  # a driver's own error class (asyncpg, sqlite3 …)
            log.warning("idempotency.store_failed", error=type(exc).__name__)
            raise StoreUnavailable("the store of request results failed") from exc

    async def answer(
        self,
        *,
        consumer: str,
        request_id: str,
        digest: str,
        deadline: float,
        stale_after_s: float,
        asynchronous: bool,
        execute: Execute,
        hold: Callable[[], Callable[[], None]],
    ) -> Outcome:
        """The answer to this request under the idempotency rules (see the module doc).

        ``execute`` sends the request and returns its outcome; ``hold`` counts a background
        run in the gateway's in-flight bound and returns its release."""
        record = await self._claim(consumer, request_id, digest, lasting=asynchronous)
        while record is not None:
            if record.state == "fetched":
                raise fetched()
            if record.body_hash != digest:
                raise Conflict(
                    "this request_id was already used for a different request; "
                    "send a new request_id",
                    code="IDEMPOTENCY_CONFLICT",
                )
            now = time.time()
            if stale(record, stale_after_s, now) or retryable_failure(record):
                # Take it over: mark it in progress again, then run it.
                log.info("idempotency.takeover", stale=in_progress(record))
                await self._store(
                    self.store.message_finish(consumer, request_id, 202, pending_body(request_id))
                )
                break
            if not in_progress(record):
                log.info("idempotency.replayed")
                return stored_outcome(record)
            if asynchronous:
                return accepted(request_id)
            record = await self._wait(consumer, request_id, deadline)
            if record is None:  # expired and pruned meanwhile: claim afresh
                record = await self._claim(consumer, request_id, digest, lasting=asynchronous)
        # Sync: the answer is stored with the final audit record (async: that is the 202's).
        run = self._run(consumer, request_id, execute, joint=not asynchronous)
        if not asynchronous:
            return await run
        release = hold()
        task = self.background.spawn(run)
        task.add_done_callback(lambda _: release())  # also if cancelled before it started
        done, _ = await asyncio.wait({task}, timeout=ASYNC_GRACE_S)
        return task.result() if done else accepted(request_id)

    async def _claim(
        self, consumer: str, request_id: str, digest: str, *, lasting: bool
    ) -> StoredMessage | None:
        """Claim, through the journal when there is one (with the ``STARTED`` record).
        ``lasting``: an async claim must outlive the machine (its 202 promises the answer);
        a synchronous one need only outlive the process: its answer and final record are
        committed to disk before the answer leaves."""
        if self.journal is None:
            begin = self.store.message_begin(consumer, request_id, digest, self.ttl_s)
            return await self._store(begin)
        write = MessageWrite(
            "claim", consumer, request_id, body_hash=digest, ttl_s=self.ttl_s, lasting=lasting
        )
        return await self._store(self.journal.claim(write))

    async def _wait(self, consumer: str, request_id: str, deadline: float) -> StoredMessage | None:
        """Wait for an earlier request with this id to be answered, until ``deadline``."""
        pause = 0.05
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise DeadlineExceeded(
                    "an earlier request with this request_id is still in progress; "
                    f"ask again later or GET {location(request_id)}",
                    retry_after=1.0,
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, POLL_MAX_S)
            record = await self._store(self.store.message_get(consumer, request_id))
            if record is None or not in_progress(record) or time.time() >= deadline:
                return record

    async def _run(
        self, consumer: str, request_id: str, execute: Execute, *, joint: bool = False
    ) -> Outcome:
        """Send, then store the outcome (or forget the claim if the bus never took it)."""
        try:
            outcome = await execute()
        except asyncio.CancelledError:
            # The gateway is stopping: say so in the record rather than leave it pending.
            stopped = BusUnavailable("the gateway stopped before the answer arrived")
            await asyncio.shield(self._settle(consumer, request_id, _failed(stopped, request_id)))
            raise
        except BusError as exc:
            outcome = _failed(exc, request_id)
        except Exception:
            log.exception("idempotency.execute_crashed")
            outcome = _failed(InternalError("the gateway failed unexpectedly"), request_id)
        return await self._settle(consumer, request_id, outcome, joint=joint)

    async def _settle(
        self, consumer: str, request_id: str, outcome: Outcome, *, joint: bool = False
    ) -> Outcome:
        """Store the answer (with its final audit record when ``joint``); the outcome the
        caller gets (``AUDIT_UNAVAILABLE`` if fail_closed could not write that record)."""
        kept, status = outcome.stored or outcome.body, outcome.status
        try:
            if outcome.error is not None and outcome.error.code in NOT_ACCEPTED:
                await self._store(self.store.message_release(consumer, request_id))
            elif joint and self.journal is not None:
                code = outcome.error.code if outcome.error is not None else "OK"
                write = MessageWrite("finish", consumer, request_id, status=status, reply=kept)
                await self._store(self.journal.finish(write, code, status))
            else:
                await self._store(self.store.message_finish(consumer, request_id, status, kept))
        except AuditUnavailable as exc:  # the answer is withheld, and not stored
            return _failed(exc, request_id)
        except StoreUnavailable:
            # The caller still gets this answer; only a repeat would run the request again.
            log.warning("idempotency.answer_not_stored", status=outcome.status)
        return outcome

    async def lookup(self, consumer: str, request_id: str, stale_after_s: float) -> Outcome | None:
        """``GET /v1/messages/{id}``: the stored answer, ``202`` while pending, ``None`` if
        there is no such message (for this consumer)."""
        record = await self._store(self.store.message_get(consumer, request_id))
        if record is None:
            return None
        if record.state == "fetched":
            raise fetched()
        if stale(record, stale_after_s, time.time()):
            error = DeadlineExceeded(
                "no answer was recorded before the deadline; send the request again with "
                "the same request_id"
            )
            return Outcome(error.status, _failed(error, request_id).body)
        if in_progress(record):
            waiting = accepted(request_id)
            del waiting.headers["Preference-Applied"]
            return waiting
        outcome = stored_outcome(record, rebuild=False)
        outcome.headers.pop("Idempotent-Replayed", None)
        outcome.final = not retryable_failure(record)
        return outcome

    async def hand_over(self, consumer: str, request_id: str, outcome: Outcome) -> None:
        """After ``GET`` rendered ``outcome``: a final answer is deleted (``fetched``); if
        another ``GET`` took it first, this one is ``410 ANSWER_FETCHED`` too."""
        if outcome.final and not await self._store(
            self.store.message_fetched(consumer, request_id)
        ):
            raise fetched()


def _failed(exc: BusError, request_id: str) -> Outcome:
    return Outcome.failure(exc, request_id)
