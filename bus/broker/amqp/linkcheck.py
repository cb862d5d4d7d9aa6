"""The broker link's self-check: find a half-open link that TCP and the robust connection miss.

A link whose bytes stop arriving (a firewall dropping packets, a NAT entry gone, a stall in
the middle of a frame) keeps its TCP connection: aio-pika still says "connected", the reply
consumer looks registered, and every request waits for a reply that never comes — for good,
since AMQP heartbeats only notice after three missed intervals and a frame parser stuck in
the middle of a frame may never recover. The check asks the broker a question on the
publishing channel every :data:`CHECK_INTERVAL_S` (a passive declare of the requests
exchange, one round trip) and verifies the reply consumer is still registered on that
channel. No answer within :data:`CHECK_TIMEOUT_S`, an error, or the consumer gone → the
link is declared dead: requests waiting on it fail with ``BROKER_UNAVAILABLE``, the broker
reports not ready (``/readyz``, ``lgsp_broker_connected`` 0,
``lgsp_broker_link_failures_total``) and the connection is torn down so the robust
connection reconnects and restores its channels and consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

__all__ = [
    "CHECK_INTERVAL_S",
    "CHECK_TIMEOUT_S",
    "HEARTBEAT_S",
    "LinkDead",
    "LinkWatchdog",
    "with_heartbeat",
]

log = structlog.get_logger("bus.broker.amqp.linkcheck")

CHECK_INTERVAL_S = 5.0
"""Seconds between two checks of the publishing channel."""
CHECK_TIMEOUT_S = 5.0
"""Seconds the broker has to answer a check; a half-open link is found within
``CHECK_INTERVAL_S + CHECK_TIMEOUT_S`` (≤ 10 s by default)."""
HEARTBEAT_S = 10
"""AMQP heartbeat asked for when the URL names none (RabbitMQ's default is 60 s, so a dead
peer would take 3 minutes to notice); a URL's ``heartbeat=`` wins."""


class LinkDead(Exception):
    """The check found the link dead; the message says why (no personal data)."""


class LinkWatchdog:
    """Runs ``check`` every ``interval_s``; calls ``on_dead(reason)`` when it fails."""

    def __init__(
        self,
        check: Callable[[], Awaitable[None]],
        on_dead: Callable[[str], Awaitable[None]],
        *,
        interval_s: float = CHECK_INTERVAL_S,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._check = check
        self._on_dead = on_dead
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start checking (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            reason = await self.check_once()
            if reason is not None:
                try:
                    await self._on_dead(reason)
                except Exception as exc:  # keep checking whatever the teardown did
                    log.error("broker.link_teardown_failed", error=repr(exc))

    async def check_once(self) -> str | None:
        """One check: ``None`` when the link answered, else why it is considered dead."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._check()
        except TimeoutError:
            return f"no answer from the broker within {self.timeout_s:g} s"
        except LinkDead as exc:
            return str(exc)
        except Exception as exc:  # any failure of the round trip means the link is unusable
            return f"check failed: {type(exc).__name__}"
        return None


def with_heartbeat(url: str, seconds: int = HEARTBEAT_S) -> str:
    """``url`` with ``heartbeat=seconds`` added unless it names a heartbeat already."""
    head, _, query = url.partition("?")
    params = [p for p in query.split("&") if p]
    if any(p.split("=", 1)[0] == "heartbeat" for p in params):
        return url
    params.append(f"heartbeat={seconds}")
    return f"{head}?{'&'.join(params)}"
