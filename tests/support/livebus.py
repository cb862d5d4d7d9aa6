"""A running bus for sync test drivers (hypothesis ``@given`` tests, schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any, TypeVar

import pytest

from tests.support.security import Reply, SecureBus, secure_bus

__all__ = ["LiveBus"]

T = TypeVar("T")


class LiveBus:
    """A :func:`secure_bus` served from an event loop in a thread of its own, for sync test
    drivers (hypothesis ``@given`` tests, schemathesis) that cannot await.

    Between calls the loop is held (blocked in a callback), so nothing in the bus runs
    while hypothesis draws data: hypothesis refuses draws during which the global
    ``random`` changed, and the bus's own code (retry jitter, aiohttp) may use it. Wrap
    any request not made through :meth:`call` in :meth:`running`."""

    def __init__(self, broker_url: str | None) -> None:
        self._broker_url = broker_url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._monkeypatch = pytest.MonkeyPatch()
        self._stack: AsyncExitStack | None = None
        self._held = threading.Event()
        self._resume = threading.Event()
        self.bus: SecureBus | None = None

    def __enter__(self) -> LiveBus:
        self._thread.start()
        self._run(self._start())
        self._hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self._resume.set()
        try:
            if self._stack is not None:
                self._run(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
            self._monkeypatch.undo()

    def _hold(self) -> None:
        self._resume.clear()
        self._held.clear()
        self._loop.call_soon_threadsafe(self._block)
        if not self._held.wait(30):
            raise TimeoutError("the bus's loop did not come to rest")

    def _block(self) -> None:
        self._held.set()
        # Bounded: a test that dies while holding must not hang the loop for ever.
        self._resume.wait(120)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Let the bus run for the duration of the block."""
        self._resume.set()
        try:
            yield
        finally:
            self._hold()

    async def _start(self) -> None:
        stack = AsyncExitStack()
        self.bus = await stack.enter_async_context(secure_bus(self._broker_url, self._monkeypatch))
        self._stack = stack

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        assert self.bus is not None
        return self.bus.url

    def key(self, credential: str = "portal-new") -> str:
        """A consumer's API key."""
        assert self.bus is not None
        return self.bus.keys[credential]

    def upstream_calls(self) -> int:
        """Requests both simulators have received."""
        assert self.bus is not None
        return self.bus.upstream_calls()

    def call(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        """:meth:`SecureBus.call`, from the test's thread."""
        assert self.bus is not None
        with self.running():
            return self._run(self.bus.call(path, body, **kwargs))
