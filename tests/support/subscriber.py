"""A webhook subscriber on loopback for delivery tests: verifies each signature, dedupes by
event_id as a real subscriber would, and can be down (port closed), refuse (a status) or
be slow (answer after a pause)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bus.delivery.signature import SIGNATURE_HEADER, verify

__all__ = ["Subscriber", "free_port"]


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Subscriber:
    """One webhook endpoint; ``received`` in arrival order (duplicates included)."""

    secret: bytes
    status: int = 200
    pause_s: float = 0.0
    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def unique(self) -> dict[str, dict[str, Any]]:
        """Events by event_id, first delivery of each (what a deduplicating subscriber keeps)."""
        out: dict[str, dict[str, Any]] = {}
        for event in self.received:
            out.setdefault(str(event["event_id"]), event)
        return out

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.secret, body, request.headers.get(SIGNATURE_HEADER, "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.pause_s:
            with contextlib.suppress(TimeoutError):  # a slow subscriber; woken by stop()
                await asyncio.wait_for(self._closing.wait(), self.pause_s)
        if self.status < 300:
            self.received.append(orjson.loads(body))
            self.arrived.set()
        return web.Response(status=self.status)

    async def start(self) -> None:
        """Listen (again, on the same port)."""
        self._closing.clear()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        """Close the port (connections refused until :meth:`start`)."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, bound_s: float = 30.0) -> None:
        """Until ``count`` distinct events arrived (fails after ``bound_s``)."""
        async with asyncio.timeout(bound_s):
            while len(self.unique()) < count:
                self.arrived.clear()
                await self.arrived.wait()
