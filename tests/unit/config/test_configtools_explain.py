"""``config explain`` says what the running gateway does: drive the same calls and compare
the decision, the upstream that answers, the timeout, the retries and the rate limit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.base import load_routing
from bus.config.explain import Explanation, explain
from tests.support.reloadstack import (
    ReloadingBus,
    Sims,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)
from tests.support.stack import new_secret
from tests.unit.reload.test_reload import lookup

CALLS = [
    ("portal", "civil-status", "lookup"),
    ("portal", "civil-status-b", "lookup"),
    ("clerk", "civil-status-b", "lookup"),
    ("clerk", "civil-status", "lookup"),
    ("portal", "land-registry", "lookup"),
    ("portal", "civil-status", "delete"),
    ("ghost", "civil-status", "lookup"),
    ("batch", "civil-status", "lookup"),
]


@pytest.fixture
async def sims(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sims]:
    async with simulators(monkeypatch) as running:
        yield running


@pytest.fixture
async def bus(
    sims: Sims, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker_url: str | None
) -> AsyncIterator[ReloadingBus]:
    keys = consumer_keys(monkeypatch)
    keys["batch"], keys["ghost"] = new_secret(), new_secret()
    monkeypatch.setenv("T_RELOAD_KEY_BATCH", keys["batch"])
    data = civil_config(
        sims,
        timeout_s=1.5,
        grants={
            "portal": {"civil-status": ["lookup"]},
            "clerk": {"civil-status-b": ["*"]},
            "batch": {"civil-status": ["lookup"]},
        },
        extra_services={
            "civil-status-b": {
                "adapter": "civil_status",
                "upstream": "sim-b",
                "operations": {
                    "lookup": {
                        "timeout_s": 1.0,
                        "retry": {"attempts": 2, "backoff_initial_s": 0.05, "jitter_s": 0},
                    }
                },
            }
        },
    )
    data["consumers"]["batch"]["rate_limit"] = {"rate_per_s": 0.01, "burst": 2}
    path = tmp_path / "routing.yaml"
    write_config(path, data)
    async with reloading_bus(path, broker_url, keys, watch=False) as running:
        yield running


def upstream_hits(sims: Sims) -> dict[str, int]:
    return {sims.a_url: sims.a.requests, sims.b_url: sims.b.requests}


async def test_explain_matches_what_the_gateway_does(bus: ReloadingBus, sims: Sims) -> None:
    config = load_routing(bus.reloader.path)
    for consumer, service, operation in CALLS:
        e = explain(config, consumer, service, operation)
        before = upstream_hits(sims)
        path = f"v1/{service}/{operation}"
        headers = {"Authorization": f"Bearer {bus.keys[consumer]}"}
        async with bus.session.post(bus.url + path, json=lookup(), headers=headers) as r:
            status, reply = r.status, await r.json()
        got = (status, reply["error"]["code"] if status != 200 else None)
        assert got == (e.status, e.code), (consumer, service, operation, e.reason, reply)
        after = upstream_hits(sims)
        if e.allowed:
            assert e.upstream is not None
            hit = [url for url in after if after[url] > before[url]]
            assert hit == [e.upstream["url"]], (consumer, service)
        else:
            assert after == before  # a denied call reaches no upstream


async def test_explained_timeout_is_the_deadline_the_caller_sees(
    bus: ReloadingBus, sims: Sims
) -> None:
    config = load_routing(bus.reloader.path)
    for consumer, service in (("portal", "civil-status"), ("clerk", "civil-status-b")):
        e = explain(config, consumer, service, "lookup")
        assert e.timeout_s is not None
        body = lookup()
        body["by_registration"] = {"authority_code": "00001", "number": "HANG"}
        started = time.monotonic()
        status, reply = await bus.call(consumer, body, service=service)
        elapsed = time.monotonic() - started
        assert (status, reply["error"]["code"]) == (504, "UPSTREAM_TIMEOUT")
        # Timers never fire early; the upper margin is for a busy machine.
        assert e.timeout_s - 0.5 <= elapsed <= e.timeout_s + 1.0, (service, elapsed)


async def test_explained_retry_policy_is_what_the_worker_does(
    bus: ReloadingBus, sims: Sims
) -> None:
    e = explain(load_routing(bus.reloader.path), "clerk", "civil-status-b", "lookup")
    assert e.retry is not None
    before = sims.b.requests
    body = lookup()
    body["by_registration"] = {"authority_code": "00001", "number": "FAIL503"}
    status, reply = await bus.call("clerk", body, service="civil-status-b")
    assert (status, reply["error"]["code"]) == (503, "UPSTREAM_UNAVAILABLE")
    assert sims.b.requests - before == e.retry["attempts"] == 2


async def test_explained_rate_limit_is_enforced(bus: ReloadingBus) -> None:
    e: Explanation = explain(load_routing(bus.reloader.path), "batch", "civil-status", "lookup")
    limit = e.policies["rate_limit"]
    assert limit["source"] == "consumers.batch.rate_limit"
    statuses = [(await bus.call("batch", lookup(i)))[0] for i in range(limit["value"]["burst"] + 1)]
    assert statuses == [200] * limit["value"]["burst"] + [429]
