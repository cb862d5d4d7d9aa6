"""A request that ends in an unhandled error (a bug) is still observed: one audit record
and one metric, outcome ``INTERNAL_ERROR`` (21.9); no upstream text reaches a caller (21.10)."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

import pytest

from adapters.base import parse_routing
from bus.errors import UPSTREAM_MESSAGES, CircuitOpen, UpstreamRejected, for_caller
from bus.exchange import Exchange
from bus.gateway import pipeline
from tests.faults.test_faults import KEY_ENV, _secrets, fault_config, fresh_service, good, simulator
from tests.support.stack import running_bus

__all__ = ["_secrets"]


class Seen:
    def __init__(self) -> None:
        self.exchanges: list[tuple[str | None, int | None, str | None]] = []

    async def exchange_finished(self, exchange: Exchange) -> None:
        self.exchanges.append((exchange.outcome, exchange.status, exchange.request_id))


async def test_an_unhandled_error_is_observed_and_answered_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        service = fresh_service()
        config = parse_routing(fault_config(sim.url, service=service))
        bus = await stack.enter_async_context(running_bus(config, None, os.environ[KEY_ENV]))
        seen = Seen()
        bus.gateway.add_observer(seen)

        def broken(*args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(pipeline, "check", broken)
        body = good(1)
        status, reply = await bus.post(f"v1/{service}/lookup", body)
        assert (status, reply["error"]["code"]) == (500, "INTERNAL_ERROR")
        assert "a bug" not in str(reply)
        assert seen.exchanges == [("INTERNAL_ERROR", 500, body["request_id"])]
        assert sim.calls == 0


async def test_no_upstream_text_reaches_the_caller_or_the_store() -> None:
    # 21.10: a malformed upstream HTTP response used to be quoted in the error message
    # (an ID, a token and markup reached the caller and the stored answers).
    hostile = b"HTTP/1.1 2x0 <script>001189714874 Bearer tok-SECRET</script>\r\n\r\n"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(hostile)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        service = fresh_service()
        config = parse_routing(
            fault_config(f"http://127.0.0.1:{port}/", service=service, retry={"attempts": 1})
        )
        async with running_bus(config, None, os.environ[KEY_ENV]) as bus:
            status, reply = await bus.post(f"v1/{service}/lookup", good(1))
    finally:
        server.close()
    assert (status, reply["error"]["code"]) == (502, "UPSTREAM_BAD_RESPONSE")
    assert reply["error"]["message"] == UPSTREAM_MESSAGES["UPSTREAM_BAD_RESPONSE"]
    for leaked in ("001189714874", "tok-SECRET", "<script>"):
        assert leaked not in str(reply)


def test_upstream_errors_keep_only_code_shaped_detail() -> None:
    exc = UpstreamRejected(
        "MOJ refused: Nguyễn Văn An 001189714874",
        detail={"upstream_code": "E-102", "fault_code": "<b>x</b>", "reason": "Nguyễn"},
    )
    wire = for_caller(exc)
    assert wire == {
        "code": "UPSTREAM_REJECTED",
        "message": UPSTREAM_MESSAGES["UPSTREAM_REJECTED"],
        "retryable": False,
        "detail": {"upstream_code": "E-102"},
    }
    assert for_caller(CircuitOpen("breaker open", retry_after=3))["message"] == "breaker open"
