"""Token buckets in Redis: one bucket per consumer for every gateway that shares the Redis.

``gateway.rate_limit_backend: {kind: redis, url: env:LGSP_REDIS_URL}`` makes a consumer's
``rate_limit`` hold across all gateways: each request runs one Lua script on Redis that
refills and spends the consumer's bucket atomically (a hash ``<prefix><consumer>`` with
``tokens`` and ``stamp``), on Redis's clock (``TIME``), so gateways with skewed clocks
agree. It is the same token bucket as the per-process one (:mod:`bus.gateway.ratelimit`):
``burst`` at once, ``rate_per_s`` a second after that. The key expires once a full bucket
would have refilled, so idle consumers leave nothing behind.

Why a script of our own over redis-py and not the ``limits`` library: ``limits`` offers
fixed-window, moving-window and sliding-window counters, none of which is a token bucket
with a burst — the meaning of ``rate_limit: {rate_per_s, burst}`` would change with the
backend. Twenty lines of Lua keep one meaning, on one well-kept client (redis-py's asyncio
client), with one round trip per request.

When Redis is slow (past ``timeout_s``) or unreachable, the gateway falls back to its own
per-process bucket for a second and tries Redis again after that (:class:`SharedBuckets`
reports it in ``/readyz``): the limit then holds per gateway (N× across N gateways) rather
than refusing every call, or admitting every call, while Redis is away.
"""

from __future__ import annotations

import time

import structlog

from bus.config import RateLimitBackend, resolve_secret

__all__ = ["SharedBuckets", "SharedBucketsDown"]

log = structlog.get_logger("bus.gateway.sharedbuckets")

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(held[1])
local stamp = tonumber(held[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
local elapsed = now - stamp
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return math.ceil(wait * 1000000)
"""
"""Refill and spend one token; returns the wait in microseconds (0: admitted)."""

FALLBACK_S = 1.0
"""After a Redis failure, how long the per-process buckets decide before Redis is tried again."""


class SharedBucketsDown(Exception):
    """Redis did not answer (in time): the caller decides with its own bucket."""


class SharedBuckets:
    """The consumers' buckets in one Redis (connected lazily, on the first request)."""

    def __init__(self, settings: RateLimitBackend) -> None:
        from redis.asyncio import Redis

        assert settings.url is not None
        url = settings.url
        if url.startswith(("env:", "file:")):
            url = resolve_secret(url)
        self.prefix = settings.key_prefix
        self._client = Redis.from_url(
            url,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
        )
        self._script = self._client.register_script(_TAKE)
        self._down_until = 0.0
        self.failures = 0
        """Redis calls that failed or timed out (each started a fallback second)."""

    @property
    def shared(self) -> bool:
        """False while the per-process fallback decides (Redis failed in the last second)."""
        return time.monotonic() >= self._down_until

    async def take(self, consumer: str, rate: float, burst: int) -> float:
        """Spend a token of ``consumer``'s shared bucket: ``0.0``, or seconds to wait.
        Raises :class:`SharedBucketsDown` during a fallback second, or when Redis fails."""
        from redis.exceptions import RedisError

        if not self.shared:
            raise SharedBucketsDown("redis failed in the last second")
        try:
            micros = await self._script(keys=[self.prefix + consumer], args=[rate, burst])
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self._down_until = time.monotonic() + FALLBACK_S
            log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
            raise SharedBucketsDown(repr(exc)) from exc
        return int(micros) / 1_000_000

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
