"""Idle and slow connections are closed (21.7): over a real loopback socket to the gateway
role (``run_gateway``), an idle kept-alive connection is closed after
``gateway.keepalive_timeout_s``, and a client sending its headers or its body a byte at a
time is cut off after ``gateway.request_read_timeout_s``. Small timeouts here; the only
bound asserted is a generous one (a connection still open after it failed the test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest

from adapters.base import parse_routing
from bus.broker import open_broker, queue_specs
from bus.cli.roles import run_gateway
from bus.config import ConfigError
from tests.faults.test_faults import KEY_ENV, _secrets, fault_config, fresh_service, good

__all__ = ["_secrets"]

BOUND_S = 30.0
"""Far above the timeouts under test (1 s) and far below what a slow client would take
without them (a byte every 0.2 s of a 1000-byte body: 200 s; aiohttp's own keep-alive: 1 h)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def gateway(keepalive_s: float, read_s: float) -> AsyncIterator[tuple[int, str]]:
    """The gateway role on a loopback port (memory broker); yields (port, service)."""
    service = fresh_service()
    settings = {"keepalive_timeout_s": keepalive_s, "request_read_timeout_s": read_s}
    config = parse_routing(fault_config("http://127.0.0.1:9/", service=service, gateway=settings))
    broker = open_broker(None)
    await broker.connect()
    await broker.declare(queue_specs(config))
    port, stop, listening = _free_port(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_gateway(config, broker, "127.0.0.1", port, stop, listening))
    try:
        await asyncio.wait_for(listening.wait(), 10)
        yield port, service
    finally:
        stop.set()
        await task
        await broker.aclose()


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (within the bound)."""
    try:
        return await asyncio.wait_for(reader.read(), BOUND_S)
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {BOUND_S} s") from None


async def _trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` a byte at a time, 0.2 s apart, until the server closes."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.2)


async def test_an_idle_kept_alive_connection_is_closed() -> None:
    async with gateway(keepalive_s=1, read_s=20) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        await writer.drain()
        answer = await _closed(reader)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        writer.close()
        # A connection that never sends a request is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed(reader) == b""
        writer.close()


async def test_a_client_sending_its_headers_a_byte_at_a_time_is_cut_off() -> None:
    async with gateway(keepalive_s=600, read_s=1) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000 + b"\r\n\r\n"
        sending = asyncio.create_task(_trickle(writer, head))
        assert b"200" not in await _closed(reader)
        sending.cancel()
        writer.close()


async def test_a_client_sending_its_body_a_byte_at_a_time_is_cut_off() -> None:
    async with gateway(keepalive_s=600, read_s=1) as (port, service):
        # Kept alive after a first call: the deadline holds for every request, not the first.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = orjson.dumps(good(1)) + b" " * 1000
        head = (
            f"POST /v1/{service}/lookup HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {os.environ[KEY_ENV]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head)
        await writer.drain()
        sending = asyncio.create_task(_trickle(writer, body))
        answer = await _closed(reader)
        assert not answer.startswith(b"HTTP/1.1 2"), answer[:100]
        sending.cancel()
        writer.close()


async def test_a_prompt_client_is_served_on_a_kept_alive_connection() -> None:
    async with gateway(keepalive_s=600, read_s=1) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), BOUND_S)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
            await asyncio.sleep(1.5)  # idle longer than the read deadline: not a slow request
        writer.close()


@pytest.mark.parametrize(
    ("key", "value"), [("keepalive_timeout_s", 0.5), ("request_read_timeout_s", 301)]
)
def test_the_timeouts_are_bounded(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_routing(fault_config("http://127.0.0.1:9/", gateway={key: value}))
