"""Retry policy and circuit breaker: the pure rules (fake clock, scripted attempts).

The same rules are exercised end to end, against real RabbitMQ and real upstream
servers, in ``tests/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from adapters.base import parse_routing
from bus.config import BreakerPolicy, ConfigError, OperationConfig, RetryPolicy
from bus.errors import (
    BusError,
    CircuitOpen,
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bus.worker.resilience import (
    MIN_ATTEMPT_S,
    Breakers,
    CircuitBreaker,
    backoff_delay,
    call_with_retry,
    counts_as_failure,
    should_retry,
    upstream_may_have_acted,
)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused() -> UpstreamUnavailable:
    """The error the HTTP layer raises when the connection cannot be made."""
    try:
        raise ConnectionRefusedError(111, "refused")
    except ConnectionRefusedError as exc:
        try:
            raise UpstreamUnavailable("cannot reach upstream") from exc
        except UpstreamUnavailable as err:
            return err


# -- classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (UpstreamTimeout("slow"), True, True),
        (UpstreamUnavailable("503"), True, True),
        (UpstreamRejected("400"), True, False),
        (UpstreamBadResponse("bad json"), True, False),
        (UpstreamError("500"), True, False),
        (InvalidRequest("bad"), True, False),
        (CircuitOpen("open"), True, False),
        (RuntimeError("bug"), True, False),
        # Not idempotent: only a failure that proves the request never left is retried.
        (UpstreamTimeout("slow"), False, False),
        (UpstreamUnavailable("503"), False, False),
        (refused(), False, True),
    ],
)
def test_only_transient_errors_retry(
    error: BaseException, idempotent: bool, expected: bool
) -> None:
    assert should_retry(error, idempotent=idempotent) is expected


def test_refused_connection_proves_the_upstream_never_acted() -> None:
    assert upstream_may_have_acted(refused()) is False
    assert upstream_may_have_acted(UpstreamTimeout("slow")) is True
    assert upstream_may_have_acted(CircuitOpen("open")) is False


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (UpstreamTimeout("t"), True),
        (UpstreamUnavailable("u"), True),
        (UpstreamError("500"), True),
        (UpstreamRejected("r"), False),
        (UpstreamBadResponse("b"), False),
        (InvalidRequest("i"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_breaker_counts_only_health_failures(error: BaseException, failure: bool) -> None:
    assert counts_as_failure(error) is failure


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(backoff_initial_s=0.1, backoff_max_s=1.0, jitter_s=0.05)
    for failed, base in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)):
        for _ in range(50):
            assert base <= backoff_delay(policy, failed) <= base + 0.05
    assert all(backoff_delay(policy, n) <= 1.0 for n in (5, 10, 100, 10_000))


# -- retry --------------------------------------------------------------------------------


class Script:
    """An upstream call that fails with the scripted errors, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[int, float]] = []

    async def __call__(self, number: int, attempt_end: float) -> dict[str, Any]:
        self.calls.append((number, attempt_end))
        if self.errors:
            raise self.errors.pop(0)
        return {"ok": number}


FAST = RetryPolicy(attempts=4, backoff_initial_s=0.01, backoff_max_s=0.02, jitter_s=0.0)


async def test_transient_failures_are_retried_until_success() -> None:
    script = Script(UpstreamUnavailable("503"), UpstreamTimeout("slow"))
    retried: list[tuple[int, str]] = []
    result = await call_with_retry(
        script,
        policy=FAST,
        idempotent=True,
        deadline=time.time() + 5,
        on_retry=lambda n, e: retried.append((n, e.code if isinstance(e, BusError) else "")),
    )
    assert result == {"ok": 3}
    assert [n for n, _ in script.calls] == [1, 2, 3]
    assert retried == [(1, "UPSTREAM_UNAVAILABLE"), (2, "UPSTREAM_TIMEOUT")]


async def test_attempts_are_capped_and_the_last_error_is_raised() -> None:
    script = Script(*(UpstreamUnavailable(f"503 #{i}") for i in range(10)))
    with pytest.raises(UpstreamUnavailable, match="#3"):
        await call_with_retry(script, policy=FAST, idempotent=True, deadline=time.time() + 5)
    assert len(script.calls) == FAST.attempts


async def test_a_rejection_is_never_retried() -> None:
    script = Script(UpstreamRejected("no such record"))
    with pytest.raises(UpstreamRejected):
        await call_with_retry(script, policy=FAST, idempotent=True, deadline=time.time() + 5)
    assert len(script.calls) == 1


async def test_non_idempotent_operation_is_not_retried_after_the_upstream_may_have_acted() -> None:
    script = Script(UpstreamTimeout("slow"))
    with pytest.raises(UpstreamTimeout):
        await call_with_retry(script, policy=FAST, idempotent=False, deadline=time.time() + 5)
    assert len(script.calls) == 1
    script = Script(refused())
    assert await call_with_retry(script, policy=FAST, idempotent=False, deadline=time.time() + 5)
    assert len(script.calls) == 2


async def test_retries_never_outlive_the_deadline() -> None:
    slow_backoff = RetryPolicy(attempts=10, backoff_initial_s=0.3, backoff_max_s=0.3, jitter_s=0)
    script = Script(*(UpstreamUnavailable("503") for _ in range(10)))
    deadline = time.time() + 0.5
    with pytest.raises(UpstreamUnavailable):
        await call_with_retry(script, policy=slow_backoff, idempotent=True, deadline=deadline)
    # 0 s, then 0.3 s: a third attempt would start after the deadline − MIN_ATTEMPT_S.
    assert len(script.calls) == 2
    assert time.time() < deadline
    assert all(end <= deadline for _, end in script.calls)


async def test_budget_and_attempt_timeout_bound_each_attempt() -> None:
    policy = RetryPolicy(
        attempts=5,
        backoff_initial_s=0.01,
        backoff_max_s=0.01,
        jitter_s=0,
        budget_s=1.0,
        attempt_timeout_s=0.2,
    )
    script = Script(UpstreamTimeout("slow"))
    started = time.time()
    await call_with_retry(script, policy=policy, idempotent=True, deadline=started + 30)
    for _, end in script.calls:
        assert end <= time.time() + 0.2
        assert end <= started + 1.0 + 0.01


async def test_a_retry_never_starts_without_time_left() -> None:
    script = Script(UpstreamUnavailable("503"))
    with pytest.raises(UpstreamUnavailable):
        await call_with_retry(
            script, policy=FAST, idempotent=True, deadline=time.time() + MIN_ATTEMPT_S / 2
        )
    assert len(script.calls) == 1


# -- circuit breaker ----------------------------------------------------------------------

POLICY = BreakerPolicy(window_s=10, min_calls=4, failure_ratio=0.5, open_s=5, half_open_probes=1)


def state(breaker: CircuitBreaker) -> str:
    """The state, read afresh (the property moves with the clock)."""
    return breaker.state


def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        probe = breaker.acquire()
        breaker.record(UpstreamUnavailable("down"), probe=probe)


def succeed(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        probe = breaker.acquire()
        breaker.record(None, probe=probe)


def test_breaker_opens_on_the_failure_ratio_after_min_calls() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    fail(breaker, 3)
    assert state(breaker) == "closed"  # three calls: under min_calls
    succeed(breaker, 2)
    assert state(breaker) == "closed"  # successes never open it
    fail(breaker, 1)
    assert state(breaker) == "open"  # 4 of 6 failed


def test_breaker_ratio_and_min_calls() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    succeed(breaker, 3)
    fail(breaker, 2)
    assert state(breaker) == "closed"  # 2/5 = 0.4 < 0.5
    fail(breaker, 1)
    assert state(breaker) == "open"  # 3/6 = 0.5
    with pytest.raises(CircuitOpen) as info:
        breaker.acquire()
    assert info.value.retry_after == pytest.approx(5.0)
    assert info.value.code == "CIRCUIT_OPEN"


def test_failures_leave_the_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    fail(breaker, 3)
    clock.now += 11  # the window is 10 s: those failures are forgotten
    fail(breaker, 1)
    succeed(breaker, 3)
    assert state(breaker) == "closed"
    assert breaker.snapshot()["calls"] == 4


def test_half_open_lets_probes_through_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    fail(breaker, 4)
    assert state(breaker) == "open"
    clock.now += 5
    assert state(breaker) == "half_open"
    assert breaker.acquire() is True  # the one probe
    with pytest.raises(CircuitOpen):
        breaker.acquire()  # a second call while the probe is out
    breaker.record(None, probe=True)
    assert state(breaker) == "closed"
    assert breaker.snapshot()["calls"] == 0  # a fresh window


def test_a_failed_probe_opens_it_again() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []

    class Recorder:
        def upstream_retry(self, service: str, operation: str) -> None:
            pass

        def breaker_changed(self, upstream: str, state: str) -> None:
            changes.append((upstream, state))

    breaker = CircuitBreaker("moj", POLICY, clock=clock, recorder=Recorder())
    fail(breaker, 4)
    clock.now += 5
    probe = breaker.acquire()
    breaker.record(UpstreamTimeout("still down"), probe=probe)
    assert state(breaker) == "open"
    assert breaker.retry_after() == pytest.approx(5.0)
    clock.now += 5
    succeed(breaker)
    assert changes == [
        ("moj", "open"),
        ("moj", "half_open"),
        ("moj", "open"),
        ("moj", "half_open"),
        ("moj", "closed"),
    ]
    assert breaker.opened_count == 2


def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    fail(breaker, 4)
    clock.now += 5
    probe = breaker.acquire()
    breaker.release(probe=probe)
    assert breaker.acquire() is True


def test_rejections_mean_the_upstream_is_up() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    for _ in range(10):
        breaker.acquire()
        breaker.record(UpstreamRejected("no"))
    assert state(breaker) == "closed"


def test_a_disabled_breaker_never_opens() -> None:
    breaker = CircuitBreaker("moj", BreakerPolicy(enabled=False, min_calls=1), clock=Clock())
    fail(breaker, 20)
    assert state(breaker) == "closed"


async def test_open_breaker_fails_fast_without_calling() -> None:
    clock = Clock()
    breaker = CircuitBreaker("moj", POLICY, clock=clock)
    fail(breaker, 4)
    script = Script()
    started = time.monotonic()
    with pytest.raises(CircuitOpen):
        await call_with_retry(
            script, policy=FAST, idempotent=True, deadline=time.time() + 5, breaker=breaker
        )
    assert script.calls == []
    assert time.monotonic() - started < 0.5


async def test_cancelled_attempt_is_not_a_failure() -> None:
    breaker = CircuitBreaker("moj", BreakerPolicy(min_calls=1), clock=Clock())

    async def hang(number: int, attempt_end: float) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    task = asyncio.create_task(
        call_with_retry(
            hang, policy=FAST, idempotent=True, deadline=time.time() + 5, breaker=breaker
        )
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state(breaker) == "closed"
    assert breaker.snapshot()["calls"] == 0


def test_services_sharing_an_upstream_share_its_breaker() -> None:
    config = parse_routing(
        {
            "upstreams": {
                "moj": {
                    "url": "https://moj.example.vn/",
                    "breaker": {"min_calls": 2, "open_s": 3},
                }
            },
            "services": {
                name: {"adapter": "civil_status", "upstream": "moj", "operations": {"lookup": {}}}
                for name in ("civil-a", "civil-b")
            },
        }
    )
    breakers = Breakers(config)
    a, b = breakers.for_service("civil-a"), breakers.for_service("civil-b")
    assert a is not None
    assert a is b
    assert a.policy.open_s == 3
    assert set(breakers.snapshot()) == {"moj"}
    assert breakers.snapshot()["moj"]["state"] == "closed"


# -- config -------------------------------------------------------------------------------


def _service(op: dict[str, Any]) -> dict[str, Any]:
    return {
        "upstreams": {"moj": {"url": "https://moj.example.vn/"}},
        "services": {
            "civil-status": {
                "adapter": "civil_status",
                "upstream": "moj",
                "operations": {"lookup": op},
            }
        },
    }


@pytest.mark.parametrize(
    ("op", "words"),
    [
        ({"retry": {"backoff_initial_s": 5, "backoff_max_s": 1}}, "backoff_initial_s"),
        ({"timeout_s": 5, "retry": {"budget_s": 6}}, "budget_s"),
        ({"timeout_s": 5, "retry": {"attempt_timeout_s": 8}}, "attempt_timeout_s"),
        ({"retry": {"attempts": 0}}, "attempts"),
    ],
)
def test_bad_retry_policies_are_rejected_at_load(op: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_routing(_service(op))
    assert words in str(info.value.issues)


def test_bad_breaker_policies_are_rejected_at_load() -> None:
    data = _service({})
    data["upstreams"]["moj"]["breaker"] = {"failure_ratio": 1.5, "window_s": 0}
    with pytest.raises(ConfigError) as info:
        parse_routing(data)
    text = str(info.value.issues)
    assert "failure_ratio" in text
    assert "window_s" in text


def test_policy_defaults() -> None:
    op = OperationConfig()
    assert (op.retry.attempts, op.retry.budget_s, op.idempotent) == (3, None, True)
    assert BreakerPolicy().failure_ratio == 0.5
