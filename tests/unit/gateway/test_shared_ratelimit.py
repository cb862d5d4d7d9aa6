"""The Redis token buckets (bus/gateway/sharedbuckets.py) on the machine's real Redis.

Two limiters stand for two gateways: they spend from one bucket. With Redis unreachable a
limiter falls back to its own bucket and says so (``describe``, shown in ``/readyz``).
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest
import redis.asyncio

from adapters.base import parse_routing
from bus.config import RoutingConfig
from bus.errors import RateLimited
from bus.gateway.ratelimit import RateLimiter


def config(url: str, prefix: str, *, rate: float = 1.0, burst: int = 3) -> RoutingConfig:
    return parse_routing(
        {
            "version": 1,
            "gateway": {
                "rate_limit_backend": {
                    "kind": "redis",
                    "url": url,
                    "key_prefix": prefix,
                    "timeout_s": 0.2,
                }
            },
            "consumers": {
                "a": {"rate_limit": {"rate_per_s": rate, "burst": burst}},
                "free": {},
            },
        }
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            pass
    except OSError:
        message = "Redis is not reachable on 127.0.0.1:6379 (the test command starts it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return "redis://127.0.0.1:6379/0"


async def admitted(limiter: RateLimiter, consumer: str, n: int) -> int:
    ok, waits = 0, []
    for _ in range(n):
        try:
            await limiter.admit(consumer)
            ok += 1
        except RateLimited as exc:
            waits.append(exc.retry_after)
    assert all(wait is not None and wait > 0 for wait in waits)  # Retry-After given
    return ok


async def test_two_gateways_spend_one_bucket(redis_url: str) -> None:
    prefix = f"lgsp-test-{uuid.uuid4().hex[:10]}:"
    cfg = config(redis_url, prefix, rate=0.5, burst=3)  # refills one token per 2 s
    first, second = RateLimiter.from_config(cfg), RateLimiter.from_config(cfg)
    try:
        # Alternating between the two: the burst of 3 holds for both together, not 3 each.
        results = [await admitted(lim, "a", 1) for lim in (first, second) * 4]
        assert sum(results) == 3
        assert await admitted(first, "free", 20) == 20  # no rate_limit: never refused
        assert first.describe()["backend"] == "redis"
        assert first.describe()["shared"] is True
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            ttl = await client.pttl(prefix + "a")
            assert 0 < ttl <= (3 / 0.5 + 1) * 1000  # gone once a full bucket would be back
        finally:
            await client.aclose()
    finally:
        await first.aclose()
        await second.aclose()


async def test_unreachable_redis_falls_back_to_this_process_bucket() -> None:
    limiter = RateLimiter.from_config(
        config(f"redis://127.0.0.1:{_closed_port()}/0", "lgsp-test-down:", rate=0.5, burst=2)
    )
    try:
        assert await admitted(limiter, "a", 5) == 2  # the local bucket still limits
        described = limiter.describe()
        assert described["shared"] is False
        assert described["fallback"] == "process (redis unreachable)"
        assert described["redis_failures"] == 1  # then a second without trying Redis
    finally:
        await limiter.aclose()


def test_process_backend_is_the_default() -> None:
    cfg = parse_routing({"version": 1, "consumers": {"a": {}}})
    assert RateLimiter.from_config(cfg).describe() == {"backend": "process", "shared": False}


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ({"kind": "redis"}, "kind redis needs url"),
        ({"kind": "redis", "url": "redis://:pw@127.0.0.1/0"}, "inline secrets"),
        ({"kind": "redis", "url": "http://127.0.0.1/"}, "redis://"),
    ],
)
def test_backend_config_errors(backend: dict[str, str], message: str) -> None:
    from bus.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_routing({"version": 1, "gateway": {"rate_limit_backend": backend}})


def test_changing_the_backend_or_tracing_needs_a_restart() -> None:
    from bus.config.diff import needs_restart

    before = parse_routing({"version": 1})
    after = config("redis://127.0.0.1:6379/0", "p:")
    traced = parse_routing({"version": 1, "tracing": {"enabled": True}})
    changed = needs_restart(before, after)
    assert changed
    assert all(path.startswith("gateway.rate_limit_backend.") for path in changed)
    assert needs_restart(before, traced) == ["tracing.enabled"]
