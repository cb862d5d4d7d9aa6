"""Retries and circuit breakers around upstream calls.

**Retry** (:func:`call_with_retry`, tenacity): the operation's :class:`~bus.config.RetryPolicy`
gives the attempts, the exponential backoff (``backoff_initial_s · 2ⁿ`` plus up to
``jitter_s`` of random jitter, each delay capped at ``backoff_max_s``) and an optional total
``budget_s``. Whatever the policy, retrying stops when the next attempt could not start
at least :data:`MIN_ATTEMPT_S` before the request's deadline: retries never outlive it.
Only transient errors retry (``BusError.retryable``: timeouts, connection failures,
502/503/504, SOAP faults the adapter marked transient) — never a rejection, a bad answer
or ``CIRCUIT_OPEN``. An operation configured ``idempotent: false`` retries only failures
that prove the upstream never received the request (the connection could not be made).

**Circuit breaker** (:class:`CircuitBreaker`, one per upstream): counts calls and failures
in a sliding window of one-second buckets. ``closed`` → ``open`` when, with at least
``min_calls`` in the window, ``failures / calls ≥ failure_ratio``; while ``open`` every call
fails at once with ``CIRCUIT_OPEN`` (``Retry-After`` = the time left open); after
``open_s`` it is ``half_open`` and lets ``half_open_probes`` calls through at a time; a
probe's success closes it, a probe's failure opens it again. Failures are the upstream's
health failures only (timeouts, unavailable, HTTP 500); a rejection or an unreadable
answer means the upstream is up and counts as a success. A timeout at a deadline the
caller shortened below the operation's timeout (``Request.short_deadline``) is no outcome:
one consumer's short deadlines must not open the breaker for every consumer.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Protocol, TypeVar

import structlog
from aiohttp import ClientConnectorError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

from bus.config import BreakerPolicy, RetryPolicy, RoutingConfig
from bus.errors import (
    BusError,
    CircuitOpen,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "MIN_ATTEMPT_S",
    "BreakerState",
    "Breakers",
    "CircuitBreaker",
    "ResilienceRecorder",
    "backoff_delay",
    "call_with_retry",
    "counts_as_failure",
    "should_retry",
    "upstream_may_have_acted",
]

log = structlog.get_logger("bus.worker.resilience")

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]

MIN_ATTEMPT_S = 0.1
"""No attempt is started with less time than this left before the deadline."""

_NOT_SENT = (ConnectionRefusedError, socket.gaierror, ClientConnectorError)
"""Causes that prove the request never reached the upstream (the connection failed)."""


class ResilienceRecorder(Protocol):
    """Where retries and breaker changes are reported (``bus.metrics.Metrics`` fits)."""

    def upstream_retry(self, service: str, operation: str) -> None:
        """An upstream call is about to be repeated."""
        ...

    def breaker_changed(self, upstream: str, state: str) -> None:
        """``upstream``'s breaker is now ``closed``, ``half_open`` or ``open``."""
        ...


class _NoRecorder:
    def upstream_retry(self, service: str, operation: str) -> None:
        """Ignored."""

    def breaker_changed(self, upstream: str, state: str) -> None:
        """Ignored."""


# -- classification (pure) ----------------------------------------------------------------


def upstream_may_have_acted(exc: BaseException) -> bool:
    """False only when the error proves the upstream never received the request."""
    if isinstance(exc, CircuitOpen):
        return False
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, _NOT_SENT):
            return False
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return True


def should_retry(exc: BaseException, *, idempotent: bool) -> bool:
    """Transient, not ``CIRCUIT_OPEN``, and safe to repeat for this operation."""
    if not isinstance(exc, BusError) or not exc.retryable or isinstance(exc, CircuitOpen):
        return False
    return idempotent or not upstream_may_have_acted(exc)


def counts_as_failure(exc: BaseException) -> bool:
    """Whether an error says the upstream is unhealthy (for the breaker)."""
    if isinstance(exc, UpstreamTimeout | UpstreamUnavailable):
        return True
    return isinstance(exc, UpstreamError) and exc.code == "UPSTREAM_ERROR"


# -- circuit breaker ----------------------------------------------------------------------


class CircuitBreaker:
    """The breaker of one upstream (state lives in this process)."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        recorder: ResilienceRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy
        self._recorder = recorder or _NoRecorder()
        self._clock = clock
        self._state: BreakerState = "closed"
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures]
        self._opened_at = 0.0
        self._probes = 0
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        """Current state (``open`` turns ``half_open`` once ``open_s`` has passed)."""
        if self._state == "open" and self._clock() - self._opened_at >= self.policy.open_s:
            self._move("half_open")
        return self._state

    def _move(self, state: BreakerState) -> None:
        if state == self._state:
            return
        self._state = state
        if state == "open":
            self._opened_at = self._clock()
            self.opened_count += 1
        if state != "half_open":
            self._probes = 0
        if state == "closed":
            self._buckets.clear()
        log.warning("breaker.changed", upstream=self.name, state=state)
        self._recorder.breaker_changed(self.name, state)

    def _window(self) -> tuple[int, int]:
        horizon = int(self._clock()) - self.policy.window_s
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        calls = sum(b[1] for b in self._buckets)
        return calls, sum(b[2] for b in self._buckets)

    def _count(self, failed: bool) -> None:
        second = int(self._clock())
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += int(failed)

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.policy.open_s - (self._clock() - self._opened_at))

    def acquire(self) -> bool:
        """Permission for one call (``True``: it is a half-open probe), or
        :class:`CircuitOpen` at once."""
        if not self.policy.enabled:
            return False
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and self._probes < self.policy.half_open_probes:
            self._probes += 1
            return True
        wait = self.retry_after() or 1.0
        raise CircuitOpen(
            f"upstream {self.name} is failing; calls fail fast for up to {wait:.0f}s",
            retry_after=wait,
        )

    def record(self, exc: BaseException | None, *, probe: bool = False) -> None:
        """The outcome of a call :meth:`acquire` allowed (``None``: success)."""
        if not self.policy.enabled:
            return
        failed = exc is not None and counts_as_failure(exc)
        if probe:
            self._probes = max(0, self._probes - 1)
            if self._state == "half_open":
                self._move("open" if failed else "closed")
            return
        if self._state != "closed":
            return  # a call started before it opened; the window restarts on close
        self._count(failed)
        if failed:
            calls, failures = self._window()
            if calls >= self.policy.min_calls and failures >= self.policy.failure_ratio * calls:
                self._move("open")

    def release(self, *, probe: bool = False) -> None:
        """A call that ended without an outcome (cancelled): free its probe slot."""
        if probe:
            self._probes = max(0, self._probes - 1)

    def snapshot(self) -> dict[str, Any]:
        """State for ``/readyz`` and operators."""
        calls, failures = self._window()
        out: dict[str, Any] = {
            "state": self.state,
            "calls": calls,
            "failures": failures,
            "failure_ratio": round(failures / calls, 3) if calls else 0.0,
            "window_s": self.policy.window_s,
            "times_opened": self.opened_count,
        }
        if self._state == "open":
            out["retry_after_s"] = round(self.retry_after(), 1)
        return out


class Breakers:
    """One breaker per upstream a set of services uses."""

    def __init__(
        self,
        config: RoutingConfig,
        services: Iterable[str] | None = None,
        *,
        recorder: ResilienceRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = services if services is not None else config.services
        self._by_service: dict[str, CircuitBreaker] = {}
        self._by_upstream: dict[str, CircuitBreaker] = {}
        for service in names:
            upstream = config.services[service].upstream
            breaker = self._by_upstream.get(upstream)
            if breaker is None:
                policy = config.upstreams[upstream].breaker
                breaker = CircuitBreaker(upstream, policy, recorder=recorder, clock=clock)
                self._by_upstream[upstream] = breaker
            self._by_service[service] = breaker

    def for_service(self, service: str) -> CircuitBreaker | None:
        """The breaker of the service's upstream."""
        return self._by_service.get(service)

    def upstream(self, name: str) -> CircuitBreaker | None:
        """The breaker of upstream ``name``."""
        return self._by_upstream.get(name)

    def states(self) -> dict[str, str]:
        """Every breaker's state name (``closed`` …), by upstream."""
        return {name: b.state for name, b in sorted(self._by_upstream.items())}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every breaker's state, by upstream."""
        return {name: b.snapshot() for name, b in sorted(self._by_upstream.items())}


# -- retry --------------------------------------------------------------------------------


def backoff_delay(policy: RetryPolicy, failed_attempts: int) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure: exponential from
    ``backoff_initial_s``, plus up to ``jitter_s`` of jitter, capped at ``backoff_max_s``."""
    exponent = min(failed_attempts - 1, 30)  # 2**30 is far past any cap
    delay = policy.backoff_initial_s * float(2**exponent) + random.uniform(0, policy.jitter_s)
    return min(delay, policy.backoff_max_s)


class _stop_before(stop_base):
    """Stop when the next attempt would start too close to ``end`` (wall clock)."""

    def __init__(self, end: float) -> None:
        self.end = end

    def __call__(self, retry_state: RetryCallState) -> bool:
        start_at = time.time() + (retry_state.upcoming_sleep or 0.0)
        return start_at + MIN_ATTEMPT_S > self.end


async def call_with_retry(  # noqa: C901 (ARCHITECTURE.md)
    attempt: Callable[[int, float], Awaitable[T]],
    *,
    policy: RetryPolicy,
    idempotent: bool,
    deadline: float,
    breaker: CircuitBreaker | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
    caller_deadline: bool = False,
) -> T:
    """Run ``attempt(number, attempt_deadline)`` under the policy and the breaker.

    ``deadline`` is wall-clock epoch seconds (the request's deadline minus the reply
    margin); each attempt gets ``min(deadline, now + attempt_timeout_s)`` and must finish
    by it. The last error is raised as it is. ``caller_deadline``: the caller shortened
    ``deadline`` below the operation's timeout; an attempt that ran into it and timed out
    is then no outcome for the breaker (neither failure nor success), so one consumer's
    short deadlines cannot open the upstream's breaker for everyone.
    """
    end = deadline
    if policy.budget_s is not None:
        end = min(end, time.time() + policy.budget_s)

    def retryable(exc: BaseException) -> bool:
        return should_retry(exc, idempotent=idempotent)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(state.attempt_number, error)

    async def once(number: int) -> T:
        attempt_end = end
        if policy.attempt_timeout_s is not None:
            attempt_end = min(end, time.time() + policy.attempt_timeout_s)
        if breaker is None:
            return await attempt(number, attempt_end)
        probe = breaker.acquire()
        try:
            result = await attempt(number, attempt_end)
        except asyncio.CancelledError:
            breaker.release(probe=probe)
            raise
        except Exception as exc:
            if caller_deadline and attempt_end >= deadline and isinstance(exc, UpstreamTimeout):
                breaker.release(probe=probe)  # the caller's deadline, not the upstream's health
            else:
                breaker.record(exc, probe=probe)
            raise
        breaker.record(None, probe=probe)
        return result

    # The first attempt runs without tenacity: most calls succeed at once, and building the
    # retry machinery per call was a measurable share of the worker's CPU. Only a retryable
    # failure enters the loop below, whose attempt 1 replays that failure, so stops, waits,
    # ``on_retry`` and the error finally raised are exactly those of the plain loop.
    try:
        return await once(1)
    except Exception as exc:
        if policy.attempts <= 1 or not retryable(exc):
            raise
        first_error = exc

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | _stop_before(end),
        wait=lambda state: backoff_delay(policy, state.attempt_number),
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for state in retrying:
        with state:
            number = state.retry_state.attempt_number
            if number == 1:
                raise first_error
            return await once(number)
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover
