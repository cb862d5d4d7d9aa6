"""Hot reload: validate, then swap gateway and worker at once — or change nothing.

Each test runs a real gateway and worker (in-memory broker, and the real RabbitMQ where the
broker matters) on two real civil-status simulators, and edits the routing file on disk.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from bus.exchange import Exchange
from bus.observe.metrics import config_version
from bus.reload.targets import rebind
from tests.support.reloadstack import (
    ReloadingBus,
    Sims,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)

EFFECT_BOUND_S = 2.0
"""A change must be in force within this (the issue's bound)."""


def lookup(index: int = 0) -> dict[str, Any]:
    reg = sample_registration(0, RecordType.BIRTH, index % 50)
    return {
        "request_id": f"req-{uuid.uuid4().hex[:16]}",
        "record_type": "BIRTH",
        "by_registration": reg,
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-2026-0001",
            "legal_basis": "LEGAL_DUTY",
        },
    }


async def within(bound_s: float, check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` holds; fails the test past ``bound_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > bound_s:
            pytest.fail(f"not within {bound_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def metric(bus: ReloadingBus, name: str, **labels: str) -> float:
    text = bus.metrics.render().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture
async def sims(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sims]:
    async with simulators(monkeypatch) as running:
        yield running


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return consumer_keys(monkeypatch)


async def test_invalid_file_changes_nothing_and_is_shown(
    sims: Sims, keys: dict[str, str], tmp_path: Path, broker_url: str | None
) -> None:
    path = tmp_path / "routing.yaml"
    first = civil_config(sims)
    write_config(path, first)
    async with reloading_bus(path, broker_url, keys) as bus:
        version = bus.reloader.version
        runtime = bus.runtime
        adapters = dict(bus.worker.adapters)
        broken = civil_config(sims, upstream="sim-b")
        broken["upstreams"]["sim-b"]["auth"]["token"] = "plain-text-token"
        broken["services"]["civil-status"]["adapter"] = "civil-status"
        write_config(path, broken)
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["rejected"] == 1)
        assert bus.reloader.version == version
        assert bus.runtime is runtime
        assert bus.worker.adapters == adapters
        before_b = sims.b.requests
        status, reply = await bus.call("portal", lookup())
        assert status == 200, reply
        assert sims.b.requests == before_b  # still routed to sim-a
        status, ready = await bus.get("readyz")
        assert status == 200  # the running config still serves
        last = ready["config"]["last_reload"]
        assert (ready["config"]["version"], last["outcome"]) == (version, "rejected")
        assert last["trigger"] == "file"
        assert any(
            e.startswith("upstreams.sim-b.auth.token (line ") and "inline secrets" in e
            for e in last["errors"]
        )
        assert any("unknown adapter kind 'civil-status'" in e for e in last["errors"])
        assert "plain-text-token" not in str(ready)
        assert metric(bus, "lgsp_config_reloads_total", result="failure") == 1
        assert metric(bus, "lgsp_config_last_reload_successful") == 0
        # Putting the file back as it was: nothing to apply, but the alarm clears.
        write_config(path, first)
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["unchanged"] == 1)
        assert bus.runtime is runtime
        assert metric(bus, "lgsp_config_last_reload_successful") == 1
        # Fixing the file applies it, and the metrics say so.
        write_config(path, civil_config(sims, upstream="sim-b"))
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["applied"] == 1)
        assert metric(bus, "lgsp_config_reloads_total", result="success") == 2
        assert metric(bus, "lgsp_config_info", version=bus.reloader.version) == 1


async def test_a_change_that_cannot_be_applied_is_rejected_whole(
    sims: Sims, keys: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims))
    async with reloading_bus(path, None, keys, watch=False) as bus:
        adapters = dict(bus.worker.adapters)
        runtime = bus.runtime
        # Valid on paper, but the new consumer's key is nowhere in this environment.
        data = civil_config(sims, upstream="sim-b")
        data["consumers"]["late"] = {"api_keys": [{"key": "env:T_RELOAD_NOWHERE"}]}
        write_config(path, data)
        result = await bus.reloader.reload("api", actor="test")
        assert result.outcome == "rejected"
        [error] = result.errors
        assert error.startswith("gateway: cannot apply: ")
        assert "T_RELOAD_NOWHERE is not set" in error
        assert bus.runtime is runtime
        assert bus.worker.adapters == adapters  # the adapter opened for sim-b was closed


async def test_services_are_added_and_removed_live(
    sims: Sims, keys: dict[str, str], tmp_path: Path, broker_url: str | None
) -> None:
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims))
    # Unique per run: on RabbitMQ the vhost outlives the test.
    extra = f"civil-{uuid.uuid4().hex[:6]}"
    async with reloading_bus(path, broker_url, keys) as bus:
        # Every upstream in use has a breaker series from the start (closed: 0).
        assert breaker_states(bus) == {"sim-a": 0}
        added = civil_config(
            sims,
            grants={"portal": {"civil-status": ["lookup"], extra: ["*"]}},
            extra_services={
                extra: {
                    "adapter": "civil_status",
                    "upstream": "sim-b",
                    "operations": {"lookup": {"timeout_s": 1}},
                }
            },
        )
        write_config(path, added)
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["applied"] == 1)
        assert breaker_states(bus) == {"sim-a": 0, "sim-b": 0}, "the added upstream's breaker"
        # New queue declared and bound, and the worker consumes it.
        before_b = sims.b.requests
        status, reply = await bus.call("portal", lookup(), service=extra)
        assert status == 200, reply
        assert sims.b.requests == before_b + 1
        status, listing = await bus.get("v1/services", keys["portal"])
        assert {s["service"] for s in listing["services"]} == {"civil-status", extra}
        write_config(path, civil_config(sims))
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["applied"] == 2)
        status, reply = await bus.call("portal", lookup(), service=extra)
        assert (status, reply["error"]["code"]) == (404, "UNKNOWN_SERVICE")
        # The worker answers what was queued under the old config for one deadline
        # (1 s + reply margin), then stops consuming and closes the adapter.
        await within(5.0, lambda: extra not in bus.worker.adapters)
        assert set(bus.worker.adapters) == {"civil-status"}
        assert breaker_states(bus) == {"sim-a": 0}, "no series for an upstream out of use"


def breaker_states(bus: ReloadingBus) -> dict[str, float]:
    """``lgsp_circuit_breaker_state`` by upstream, as /metrics shows it."""
    families = text_string_to_metric_families(bus.metrics.render().decode())
    return {
        s.labels["upstream"]: s.value
        for f in families
        if f.name == "lgsp_circuit_breaker_state"
        for s in f.samples
    }


async def test_requests_in_flight_finish_under_the_config_they_started_with(
    monkeypatch: pytest.MonkeyPatch, keys: dict[str, str], tmp_path: Path
) -> None:
    async with simulators(monkeypatch, latency_ms_a=800) as sims:
        path = tmp_path / "routing.yaml"
        write_config(path, civil_config(sims))
        async with reloading_bus(path, None, keys, watch=False) as bus:
            slow = asyncio.create_task(bus.call("portal", lookup(1)))
            await within(EFFECT_BOUND_S, lambda: sims.a.requests == 1)
            write_config(path, civil_config(sims, upstream="sim-b", grants={}))
            result = await bus.reloader.reload("api")
            assert result.outcome == "applied"
            assert "acl revoked: portal → civil-status/lookup" in result.changes
            status, reply = await slow  # started before: old ACL, old upstream, open adapter
            assert status == 200, reply
            assert reply["status"] == "FOUND"
            status, reply = await bus.call("portal", lookup(2))
            assert (status, reply["error"]["code"]) == (403, "FORBIDDEN_OPERATION")
            assert sims.b.requests == 0


async def test_sighup_reloads_when_watching_is_off(
    sims: Sims, keys: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims))
    async with reloading_bus(path, None, keys, watch=False, sighup=True) as bus:
        version = bus.reloader.version
        new = civil_config(sims, upstream="sim-b")
        write_config(path, new)
        await asyncio.sleep(0.6)  # longer than the watcher's debounce: no watcher here
        assert bus.reloader.version == version
        os.kill(os.getpid(), signal.SIGHUP)
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["applied"] == 1)
        assert bus.reloader.last is not None
        assert (bus.reloader.last.trigger, bus.reloader.last.actor) == ("sighup", "operator")
        assert "services changed: civil-status" in bus.reloader.last.changes
        assert bus.reloader.version != version


async def test_meaningless_edits_are_no_reload(
    sims: Sims, keys: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    data = civil_config(sims)
    write_config(path, data)
    async with reloading_bus(path, None, keys) as bus:
        runtime = bus.runtime
        text = path.read_text(encoding="utf-8")
        write_config(path, "# reviewed by the operations centre\n" + text)
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["unchanged"] == 1)
        assert bus.runtime is runtime
        assert bus.reloader.counts["applied"] == 0
        # An explicit reload of the same meaning re-reads secret files: it is applied.
        result = await bus.reloader.reload("api")
        assert (result.outcome, result.changes) == ("applied", ("no change in meaning",))
        assert bus.reloader.version == config_version(bus.runtime.config)


class _Observer:
    """An observer holding per-route state, as the audit observer does."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def with_config(self, config: Any) -> _Observer:
        return _Observer(config)

    async def exchange_finished(self, exchange: Exchange) -> None:
        return None


async def test_what_the_runner_attached_is_carried_over(
    sims: Sims, keys: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims))
    async with reloading_bus(path, None, keys, watch=False) as bus:
        gateway = bus.gateway
        gateway.add_observer(_Observer(gateway.config))
        old = bus.runtime
        readiness = gateway.readiness
        result = await bus.reloader.reload("api")
        assert result.outcome == "applied"
        new = bus.runtime
        assert new is not old
        assert bus.gateway is gateway  # the process state outlives the reload
        assert gateway.readiness is readiness  # shared list: reload's own provider is in it
        assert bus.reloader.readiness in gateway.readiness
        rebuilt = [o for o in new.observers if isinstance(o, _Observer)]
        assert len(rebuilt) == 1
        assert rebuilt[0].config is new.config
        assert rebind("plain", new.config) == "plain"
