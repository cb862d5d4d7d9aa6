"""``/metrics`` and ``/readyz`` detail behind ``observe.metrics_token`` (21.15b): over real
loopback HTTP to the gateway role and the worker's health app, the metrics need the bearer
token (``401 UNAUTHENTICATED`` without), ``/readyz`` shows status and checks to anyone and
its detail (services, config, breakers) only with the token; ``/readyz`` never names the
config file's absolute path."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from adapters.base import load_routing, parse_routing
from bus.broker import open_broker, queue_specs
from bus.cli.reloading import hot_reload
from bus.cli.roles import run_gateway
from bus.config import RoutingConfig
from bus.observe.health import WorkerStatus, build_worker_app
from bus.observe.metrics import Metrics
from tests.faults.test_faults import _secrets, fault_config
from tests.support.stack import serve_app

__all__ = ["_secrets"]

TOKEN_ENV = "T_METRICS_TOKEN"
TOKEN = "scrape-token-for-the-test-0123"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(token: bool) -> RoutingConfig:
    data = fault_config("http://127.0.0.1:9/")
    if token:
        data["observe"] = {"metrics_token": f"env:{TOKEN_ENV}"}
    return parse_routing(data)


@asynccontextmanager
async def urls(config: RoutingConfig) -> AsyncIterator[tuple[str, str]]:
    """(gateway URL, worker health URL), both with metrics."""
    broker = open_broker(None)
    await broker.connect()
    await broker.declare(queue_specs(config))
    metrics = Metrics(CollectorRegistry(), role="all")
    port, stop, listening = _port(), asyncio.Event(), asyncio.Event()
    role = run_gateway(config, broker, "127.0.0.1", port, stop, listening, metrics=metrics)
    task = asyncio.create_task(role)
    status = WorkerStatus(config, broker, list(config.services))
    try:
        await asyncio.wait_for(listening.wait(), 10)
        async with serve_app(build_worker_app(status, metrics)) as worker_url:
            yield f"http://127.0.0.1:{port}/", worker_url
    finally:
        stop.set()
        await task
        await broker.aclose()


async def _get(session: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(url, headers=headers) as r:
        return r.status, await r.text()


async def test_metrics_and_readiness_detail_need_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = _config(token=True)
    async with urls(config) as (gateway, worker), aiohttp.ClientSession() as session:
        for base in (gateway, worker):
            for wrong in (None, "nope", TOKEN + "x", TOKEN.upper()):
                status, text = await _get(session, base + "metrics", wrong)
                assert status == 401, text
                assert json.loads(text)["error"]["code"] == "UNAUTHENTICATED"
                assert "lgsp_" not in text
            status, text = await _get(session, base + "metrics", TOKEN)
            assert status == 200
            assert "lgsp_" in text
            status, text = await _get(session, base + "readyz", None)
            assert status == 200
            assert set(json.loads(text)) == {"status", "checks"}
            for name in [*config.services, *config.consumers]:
                assert name not in text
            status, text = await _get(session, base + "readyz", TOKEN)
            assert status == 200
            assert json.loads(text)["services"] == sorted(config.services)


async def test_without_a_token_both_stay_open() -> None:
    config = _config(token=False)
    async with urls(config) as (gateway, worker), aiohttp.ClientSession() as session:
        for base in (gateway, worker):
            assert (await _get(session, base + "metrics", None))[0] == 200
            status, text = await _get(session, base + "readyz", None)
            assert status == 200
            assert "services" in json.loads(text)


async def test_readiness_names_the_config_file_not_its_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(json.dumps(fault_config("http://127.0.0.1:9/")))
    config = load_routing(path)
    async with hot_reload(path, config, watch=False) as reloader:
        shown = json.dumps(reloader.readiness())
        assert str(tmp_path) not in shown
        assert reloader.readiness()["config"]["file"] == "routing.yaml"
