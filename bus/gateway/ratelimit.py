"""Per-consumer rate limits: one token bucket per consumer, in this gateway process.

A consumer with ``rate_limit: {rate_per_s, burst}`` in ``routing.yaml`` may make ``burst``
requests at once and ``rate_per_s`` a second after that; one more gets ``429
RATE_LIMITED`` with ``Retry-After`` (whole seconds, rounded up) and costs nothing. The 429
also carries the IETF draft's ``RateLimit-Limit`` (the burst), ``RateLimit-Remaining``
(``0``) and ``RateLimit-Reset`` (seconds until a request is admitted again, rounded up).
Consumers without a ``rate_limit`` are bounded only by the gateway's in-flight limit.

By default the buckets live in this process: N gateway replicas behind a load balancer
admit up to N times the configured rate. With ``gateway.rate_limit_backend: {kind: redis,
url: …}`` every gateway spends from one bucket per consumer in Redis
(:mod:`bus.gateway.sharedbuckets`), and the limit holds for all of them together; while
Redis is unreachable each gateway falls back to its own bucket. ``/readyz`` says which
decides (``rate_limit``). A config reload keeps every local bucket's tokens (a changed
limit keeps at most its new burst; a consumer new to the config starts full), so a reload
never hands a consumer a fresh burst; the backend itself is chosen at start (a reload that
changes ``rate_limit_backend`` takes effect at the next restart).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bus.config import RateLimit, RoutingConfig
from bus.errors import RateLimited
from bus.gateway.sharedbuckets import SharedBuckets, SharedBucketsDown

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; one token per request."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def resized(self, rate: float, burst: int) -> TokenBucket:
        """A bucket with another limit that keeps this one's tokens (at most ``burst``)."""
        other = TokenBucket(rate, burst, self._clock)
        self.refill()
        other._tokens = min(float(burst), self._tokens)
        other._stamp = self._stamp
        return other

    def refill(self) -> None:
        """Bring the tokens up to now without spending one."""
        now = self._clock()
        # A clock that stood still or stepped back adds nothing (monotonic by default).
        self._tokens = min(
            float(self.burst), self._tokens + max(0.0, now - self._stamp) * self.rate
        )
        self._stamp = now

    def take(self) -> float:
        """Spend a token: ``0.0`` if there was one, else seconds until there will be."""
        self.refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """The buckets of every rate-limited consumer of one config."""

    def __init__(
        self,
        limits: dict[str, RateLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.shared: SharedBuckets | None = None
        """The buckets in Redis, when ``gateway.rate_limit_backend`` is ``redis``."""
        self._buckets = {
            name: TokenBucket(limit.rate_per_s, limit.burst, clock)
            for name, limit in (limits or {}).items()
        }

    def reconfigured(self, config: RoutingConfig) -> RateLimiter:
        """The limiter for a reloaded ``config``, built from these buckets: an unchanged
        limit keeps its bucket, a changed one keeps its tokens (up to the new burst), a
        consumer new to the limits starts full, one without a limit now has no bucket."""
        fresh = RateLimiter(clock=self._clock)
        fresh.shared = self.shared
        for name, consumer in config.consumers.items():
            limit = consumer.rate_limit
            if limit is None:
                continue
            old = self._buckets.get(name)
            if old is None:
                fresh._buckets[name] = TokenBucket(limit.rate_per_s, limit.burst, self._clock)
            elif (old.rate, old.burst) == (limit.rate_per_s, limit.burst):
                fresh._buckets[name] = old
            else:
                fresh._buckets[name] = old.resized(limit.rate_per_s, limit.burst)
        return fresh

    @classmethod
    def from_config(cls, config: RoutingConfig) -> RateLimiter:
        """Buckets for the consumers that have a ``rate_limit`` (and the Redis ones, when
        the config's backend is ``redis``)."""
        limiter = cls(
            {
                name: consumer.rate_limit
                for name, consumer in config.consumers.items()
                if consumer.rate_limit is not None
            }
        )
        backend = config.gateway.rate_limit_backend
        if backend.kind == "redis":
            limiter.shared = SharedBuckets(backend)
        return limiter

    async def admit(self, consumer: str) -> None:
        """Like :meth:`check`, on the shared bucket when there is one (this process's bucket
        while Redis is unreachable)."""
        bucket = self._buckets.get(consumer)
        if bucket is None:
            return
        if self.shared is None:
            self.check(consumer)
            return
        try:
            wait = await self.shared.take(consumer, bucket.rate, bucket.burst)
        except SharedBucketsDown:
            self.check(consumer)
            return
        if wait > 0:
            raise RateLimited(
                f"over this consumer's rate limit ({bucket.rate:g}/s, burst {bucket.burst}, "
                "shared by every gateway)",
                retry_after=wait,
            )

    def describe(self) -> dict[str, object]:
        """``/readyz``'s ``rate_limit``: which backend is in force and whether it decides."""
        if self.shared is None:
            return {"backend": "process", "shared": False}
        return {
            "backend": "redis",
            "shared": self.shared.shared,
            "fallback": None if self.shared.shared else "process (redis unreachable)",
            "redis_failures": self.shared.failures,
        }

    async def aclose(self) -> None:
        """Close the Redis client, if any."""
        if self.shared is not None:
            await self.shared.aclose()

    def check(self, consumer: str) -> None:
        """Spend one of ``consumer``'s tokens or raise ``RateLimited`` (with ``retry_after``)."""
        bucket = self._buckets.get(consumer)
        if bucket is None:
            return
        wait = bucket.take()
        if wait > 0:
            raise RateLimited(
                f"over this consumer's rate limit ({bucket.rate:g}/s, burst {bucket.burst})",
                retry_after=wait,
                headers={
                    "RateLimit-Limit": str(bucket.burst),
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(max(1, math.ceil(wait))),
                },
            )
