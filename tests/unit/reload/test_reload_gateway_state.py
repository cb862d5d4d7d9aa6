"""A reload swaps the config view, never the gateway's process state: what is in flight
stays counted (gauge and bound), and rate-limit buckets keep their tokens; a revoked
grant's stored answers are purged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import load_routing, request_models
from bus.broker import open_broker
from bus.config import RateLimit, RoutingConfig
from bus.gateway.ratelimit import RateLimiter
from bus.gateway.runtime import Gateway, Runtime
from bus.reload.targets import GatewayTarget
from bus.store import open_store
from tests.support.reloadstack import (
    ReloadingBus,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)
from tests.support.storetools import raw_fetch
from tests.unit.reload.test_reload import lookup, within


async def _in_flight_gauge(bus: ReloadingBus) -> float:
    async with bus.session.get(bus.url + "metrics") as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lgsp_gateway_requests_in_flight":
                return sample.value
    raise AssertionError("no lgsp_gateway_requests_in_flight on /metrics")


async def test_requests_in_flight_stay_counted_across_a_reload(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = consumer_keys(monkeypatch)
    async with simulators(monkeypatch, latency_ms_a=1500) as sims:
        data = civil_config(sims)
        data["gateway"]["max_in_flight"] = 3
        path = tmp_path / "routing.yaml"
        write_config(path, data)
        async with reloading_bus(path, None, keys, watch=False) as bus:
            slow = [asyncio.create_task(bus.call("portal", lookup(i))) for i in range(3)]
            await within(3, lambda: bus.gateway.in_flight == 3)
            result = await bus.reloader.reload("api")  # the same file, applied again
            assert result.outcome == "applied"
            assert await _in_flight_gauge(bus) == 3
            status, body = await bus.call("portal", lookup(9))  # the bound still holds
            assert (status, body["error"]["code"]) == (503, "OVERLOADED")
            assert [s for s, _ in await asyncio.gather(*slow)] == [200, 200, 200]
            assert await _in_flight_gauge(bus) == 0


async def test_a_reload_does_not_refill_a_consumers_bucket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = consumer_keys(monkeypatch)
    async with simulators(monkeypatch) as sims:
        data = civil_config(sims)
        data["consumers"]["portal"]["rate_limit"] = {"rate_per_s": 0.01, "burst": 2}
        path = tmp_path / "routing.yaml"
        write_config(path, data)
        async with reloading_bus(path, None, keys, watch=False) as bus:
            statuses = [(await bus.call("portal", lookup(i)))[0] for i in range(3)]
            assert statuses == [200, 200, 429]
            for trigger in ("api", "sighup"):
                assert (await bus.reloader.reload(trigger)).outcome == "applied"
                status, body = await bus.call("portal", lookup(7))
                assert (status, body["error"]["code"]) == (429, "RATE_LIMITED"), trigger
            status, _ = await bus.call("clerk", lookup(8))  # other consumers unaffected
            assert status == 403  # clerk has no grant here, and no bucket to run dry


def _config(limit: RateLimit | None) -> RoutingConfig:
    consumers = {"c": {"api_keys": [{"key": "env:T_NONE"}], "rate_limit": limit}}
    return RoutingConfig.model_validate({"version": 1, "consumers": consumers})


def test_reconfigured_buckets_keep_their_tokens() -> None:
    now = [0.0]
    limiter = RateLimiter({"c": RateLimit(rate_per_s=1.0, burst=3)}, clock=lambda: now[0])
    limiter.check("c")
    limiter.check("c")  # one token left
    same = limiter.reconfigured(_config(RateLimit(rate_per_s=1.0, burst=3)))
    same.check("c")
    with pytest.raises(Exception, match="rate limit"):
        same.check("c")
    now[0] += 1.0  # one token back
    wider = same.reconfigured(_config(RateLimit(rate_per_s=1.0, burst=10)))
    wider.check("c")
    with pytest.raises(Exception, match="rate limit"):
        wider.check("c")  # a larger burst is not a refill
    assert _no_limit(wider.reconfigured(_config(None)))


def _no_limit(limiter: RateLimiter) -> bool:
    for _ in range(100):
        limiter.check("c")
    return True


async def test_a_reload_that_revokes_a_grant_purges_the_consumers_stored_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    consumer_keys(monkeypatch)
    both = {"portal": {"civil-status": ["lookup"]}, "clerk": {"civil-status": ["lookup"]}}
    async with simulators(monkeypatch) as sims:
        configs: list[RoutingConfig] = []
        for grants in (both, {"clerk": both["clerk"]}):
            path = tmp_path / f"routing-{len(configs)}.yaml"
            write_config(path, civil_config(sims, grants=grants))
            configs.append(load_routing(path))
        old, new = configs
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
        store = open_store(url)
        await store.connect()
        try:
            for consumer in ("portal", "clerk"):
                await store.message_begin(consumer, f"req-{consumer}-1", "h", 3600)
                await store.message_finish(consumer, f"req-{consumer}-1", 200, b'{"n":1}')
            gateway = Gateway(open_broker(None), Runtime.build(old, models=request_models(old)))
            gateway.store = store
            swap = await GatewayTarget(gateway).prepare(old, new)
            swap.commit()
            await swap.settle(asyncio.Event())
            assert gateway.runtime.config is new
        finally:
            await store.aclose()
        rows = await raw_fetch(url, "SELECT consumer FROM lgsp_messages ORDER BY consumer")
        assert rows == [("clerk",)]  # portal lost its grant: its answers are gone
