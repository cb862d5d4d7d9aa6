"""A bus on loopback that follows its routing file: two civil-status simulators to route
between, a gateway and a worker wired to one :class:`~bus.reload.ConfigReloader` exactly as
``bus/runner.py`` wires them (``follow_gateway``/``follow_worker``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from adapters.base import load_routing, request_models
from adapters.civil_status.simulator import STATS, SimStats, build_app
from bus.broker import Broker, open_broker, queue_specs
from bus.cli.reloading import follow_gateway, follow_worker
from bus.gateway.app import GATEWAY, Gateway, Runtime, instrument_gateway
from bus.gateway.app import build_app as build_gateway
from bus.observe.metrics import Metrics
from bus.reload.reloader import ConfigReloader
from bus.worker.worker import Worker, open_adapters
from tests.support.stack import new_secret, serve_app

__all__ = [
    "ReloadingBus",
    "Sims",
    "civil_config",
    "consumer_keys",
    "reloading_bus",
    "simulators",
    "write_config",
]


@dataclass
class Sims:
    """Two MOJ simulators (``a`` and ``b``) sharing one token."""

    a_url: str
    b_url: str
    a: SimStats
    b: SimStats


@asynccontextmanager
async def simulators(
    monkeypatch: pytest.MonkeyPatch, *, latency_ms_a: float = 0.0
) -> AsyncIterator[Sims]:
    """Start both simulators; their token is in ``T_RELOAD_MOJ_TOKEN``."""
    token = new_secret()
    monkeypatch.setenv("T_RELOAD_MOJ_TOKEN", token)
    sim_a = build_app(token=token, hang_s=30, latency_ms=latency_ms_a)
    sim_b = build_app(token=token, hang_s=30)
    async with serve_app(sim_a) as a_url, serve_app(sim_b) as b_url:
        yield Sims(a_url, b_url, sim_a[STATS], sim_b[STATS])


def civil_config(
    sims: Sims,
    *,
    upstream: str = "sim-a",
    grants: dict[str, dict[str, list[str]]] | None = None,
    timeout_s: float = 5.0,
    extra_services: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A routing config (as data) for the two simulators; keys from ``T_RELOAD_*`` env."""
    grants = grants if grants is not None else {"portal": {"civil-status": ["lookup"]}}
    data: dict[str, Any] = {
        "version": 1,
        "gateway": {"shutdown_grace_s": 5, "max_deadline_s": 10},
        "broker": {"prefetch": 16, "delivery_limit": 3},
        "consumers": {
            name: {"api_keys": [{"key": f"env:T_RELOAD_KEY_{name.upper()}"}], "allow": allow}
            for name, allow in {"portal": {}, "clerk": {}, **grants}.items()
        },
        "upstreams": {
            name: {
                "url": url,
                "allow_plain_http": True,
                "auth": {"kind": "bearer", "token": "env:T_RELOAD_MOJ_TOKEN"},
            }
            for name, url in (("sim-a", sims.a_url), ("sim-b", sims.b_url))
        },
        "services": {
            "civil-status": {
                "adapter": "civil_status",
                "upstream": upstream,
                "operations": {"lookup": {"timeout_s": timeout_s}},
            },
            **(extra_services or {}),
        },
    }
    if admin is not None:
        data["admin"] = admin
    return data


def write_config(path: Path, data: dict[str, Any] | str) -> None:
    """Replace the file atomically (write, then rename), as a careful operator does."""
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    temp = path.with_name(path.name + ".new")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)


@dataclass
class ReloadingBus:
    """The running bus and its parts."""

    url: str
    session: aiohttp.ClientSession
    reloader: ConfigReloader
    app: web.Application
    worker: Worker
    metrics: Metrics
    keys: dict[str, str]

    async def call(
        self, consumer: str, body: dict[str, Any], service: str = "civil-status"
    ) -> tuple[int, dict[str, Any]]:
        """POST a lookup as ``consumer``."""
        headers = {"Authorization": f"Bearer {self.keys[consumer]}"}
        async with self.session.post(
            f"{self.url}v1/{service}/lookup", json=body, headers=headers
        ) as r:
            return r.status, await r.json()

    async def get(self, path: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
        """GET a path (with ``key`` as bearer if given)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.session.get(self.url + path, headers=headers) as r:
            return r.status, await r.json()

    @property
    def runtime(self) -> Runtime:
        """The runtime new requests get."""
        return self.gateway.runtime

    @property
    def gateway(self) -> Gateway:
        """The long-lived gateway of the app (its runtime changes on reload)."""
        return self.app[GATEWAY]


def consumer_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh keys for portal, clerk and an admin, in the environment the config names."""
    keys = {"portal": new_secret(), "clerk": new_secret(), "admin": new_secret()}
    for name, key in keys.items():
        monkeypatch.setenv(f"T_RELOAD_KEY_{name.upper()}", key)
    return keys


@asynccontextmanager
async def reloading_bus(
    path: Path,
    amqp_url: str | None,
    keys: dict[str, str],
    *,
    watch: bool = True,
    sighup: bool = False,
) -> AsyncIterator[ReloadingBus]:
    """Gateway + worker on the config at ``path``, following it; stopped on exit."""
    config = load_routing(path)
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        reloader = await stack.enter_async_context(ConfigReloader(path, config, recorder=metrics))
        brokers: list[Broker]
        if amqp_url is None:
            gateway_broker = worker_broker = open_broker(None)
            brokers = [gateway_broker]
        else:
            gateway_broker = open_broker(amqp_url, name="reload-gateway")
            worker_broker = open_broker(amqp_url, name="reload-worker")
            brokers = [gateway_broker, worker_broker]
        for b in brokers:
            await b.connect()
            stack.push_async_callback(b.aclose)
            await b.declare(queue_specs(config))
        adapters = await open_adapters(config)
        worker = Worker(config, worker_broker, adapters, drain_s=5, metrics=metrics)
        stack.push_async_callback(worker.aclose)
        follow_worker(reloader, worker)
        app = build_gateway(
            Gateway(gateway_broker, Runtime.build(config, models=request_models(config)))
        )
        follow_gateway(reloader, app)
        instrument_gateway(app, metrics)  # as the gateway role has it
        stop = asyncio.Event()
        worker_task = asyncio.create_task(worker.run(stop))
        serving = asyncio.create_task(reloader.serve(stop, watch=watch, sighup=sighup))

        async def stop_all() -> None:
            stop.set()
            await asyncio.wait_for(asyncio.gather(worker_task, serving), 20)

        stack.push_async_callback(stop_all)
        url = await stack.enter_async_context(serve_app(app))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield ReloadingBus(url, session, reloader, app, worker, metrics, keys)
