"""Waiting for a condition the system reaches on its own (a delivery, a state change)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["until"]


async def until(check: Callable[[], Awaitable[bool]], bound_s: float = 30.0) -> None:
    """Poll ``check`` every 50 ms until it is true; ``TimeoutError`` after ``bound_s``
    (a bound for a stuck test, not a speed assertion)."""
    async with asyncio.timeout(bound_s):
        while not await check():  # noqa: ASYNC110 - the condition is outside this process's events
            await asyncio.sleep(0.05)
