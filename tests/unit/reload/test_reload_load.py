"""Reload under steady load (both brokers): swap a route's upstream and an ACL grant while
requests flow. No request fails because of the swap, the new config is in force within
2 s of the file changing, and an invalid file changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.reloadstack import (
    ReloadingBus,
    Sims,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)
from tests.unit.reload.test_reload import EFFECT_BOUND_S, lookup, within

CLIENTS = 8
"""Concurrent portal clients (each sends its next request when the last is answered)."""


@dataclass
class Load:
    """Outcomes of the load, by consumer."""

    portal: Counter[int | str] = field(default_factory=Counter)
    clerk: list[tuple[float, int]] = field(default_factory=list)
    """(time sent, status) of each clerk request."""
    failures: list[str] = field(default_factory=list)


async def portal_client(bus: ReloadingBus, load: Load, stop: asyncio.Event, n: int) -> None:
    index = n
    while not stop.is_set():
        status, reply = await bus.call("portal", lookup(index))
        load.portal[status] += 1
        if status != 200:
            load.failures.append(f"{status} {reply.get('error', {}).get('code')}")
        index += CLIENTS


async def clerk_client(bus: ReloadingBus, load: Load, stop: asyncio.Event) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        status, _ = await bus.call("clerk", lookup(7))
        load.clerk.append((sent, status))
        await asyncio.sleep(0.02)


@pytest.fixture
async def sims(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sims]:
    async with simulators(monkeypatch) as running:
        yield running


async def test_swap_upstream_and_acl_under_steady_load(
    sims: Sims,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    broker_url: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = consumer_keys(monkeypatch)
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims))  # civil-status → sim-a; clerk may call nothing
    async with reloading_bus(path, broker_url, keys) as bus:
        load, stop = Load(), asyncio.Event()
        clients = [asyncio.create_task(portal_client(bus, load, stop, n)) for n in range(CLIENTS)]
        clients.append(asyncio.create_task(clerk_client(bus, load, stop)))
        try:
            await within(10, lambda: load.portal[200] >= 50)
            assert sims.b.requests == 0
            # The swap: the route's upstream moves to sim-b, and clerk is granted lookup.
            swapped = civil_config(
                sims,
                upstream="sim-b",
                grants={
                    "portal": {"civil-status": ["lookup"]},
                    "clerk": {"civil-status": ["lookup"]},
                },
            )
            written = time.monotonic()
            write_config(path, swapped)
            await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["applied"] == 1)
            in_force = time.monotonic() - written
            await within(EFFECT_BOUND_S, lambda: sims.b.requests > 0)
            upstream_moved = time.monotonic() - written
            await within(EFFECT_BOUND_S, lambda: any(s == 200 for _, s in load.clerk))
            granted = time.monotonic() - written
            assert max(in_force, upstream_moved, granted) <= EFFECT_BOUND_S
            # Nothing reaches sim-a once the requests sent before the swap have finished.
            await asyncio.sleep(0.5)
            settled_a = sims.a.requests
            before = load.portal[200]
            await within(10, lambda: load.portal[200] >= before + 50)
            assert sims.a.requests == settled_a
            # An invalid file: rejected, nothing changes, requests keep flowing to sim-b.
            version, runtime = bus.reloader.version, bus.runtime
            broken = dict(swapped, services={"civil-status": {"adapter": "fax"}})
            write_config(path, broken)
            await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["rejected"] == 1)
            assert (bus.reloader.version, bus.runtime) == (version, runtime)
            before, before_b = load.portal[200], sims.b.requests
            await within(10, lambda: load.portal[200] >= before + 50)
            assert sims.b.requests > before_b
            assert sims.a.requests == settled_a
            _, ready = await bus.get("readyz")
            assert ready["config"]["version"] == version
            assert ready["config"]["last_reload"]["outcome"] == "rejected"
        finally:
            stop.set()
            await asyncio.gather(*clients)
    assert load.failures == [], Counter(load.failures)
    clerk_after = [s for sent, s in load.clerk if sent > written + granted]
    assert clerk_after
    assert set(clerk_after) == {200}
    assert {s for sent, s in load.clerk if sent < written} == {403}
    with capsys.disabled():
        print(
            f"\nreload under load ({'rabbitmq' if broker_url else 'memory'}): "
            f"{sum(load.portal.values())} portal requests, {len(load.failures)} failed; "
            f"file written → reload applied {in_force:.3f} s, first request at the new "
            f"upstream {upstream_moved:.3f} s, clerk's grant in force {granted:.3f} s; "
            f"sim-a {sims.a.requests}, sim-b {sims.b.requests} calls"
        )
