"""A request that ends in an unhandled error (a bug) is still observed: one audit record
and one metric, outcome ``INTERNAL_ERROR`` (21.9)."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import pytest

from adapters.base import parse_routing
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
