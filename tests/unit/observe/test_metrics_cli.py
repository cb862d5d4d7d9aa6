"""The real processes: ``lgsp-bus gateway`` and ``lgsp-bus worker --http-port`` on RabbitMQ,
and ``lgsp-bus run``, as an operator starts them.

Each serves ``/metrics`` (the worker on its own port, with ``/healthz`` and ``/readyz``),
writes JSON log lines carrying timestamp, level, event, correlation id, service, operation
and consumer — one correlation id across gateway and worker — and honours ``--log-level``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import build_app as build_sim
from tests.e2e.test_e2e_civil_status import lookup
from tests.support.paths import REPO
from tests.support.rabbit import TestVhost
from tests.support.stack import new_secret, serve_app, terminate
from tests.unit.observe.test_metrics import check_labels, parse, value

ROOT = REPO
LOG_KEYS = {"timestamp", "level", "event"}
REQUEST_KEYS = {"correlation_id", "service", "operation", "consumer"}


@dataclass
class Process:
    """A running ``lgsp-bus`` child with its stderr collected as JSON log events."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (a non-JSON line fails the test)."""
        out = []
        for line in self.lines:
            if line.startswith("{"):
                out.append(json.loads(line))
            else:
                assert not line.strip(), f"not a JSON log line: {line!r}"
        return out

    async def wait_event(self, name: str, bound_s: float = 20) -> dict[str, Any]:
        """The first log event called ``name``, waiting at most ``bound_s``."""
        end = time.monotonic() + bound_s
        while True:
            for event in self.events():
                if event["event"] == name:
                    return event
            if self.proc.returncode is not None or time.monotonic() > end:
                pytest.fail(f"no {name} event; log: {self.lines[-20:]}")
            await asyncio.sleep(0.05)

    async def stop(self, bound_s: float = 20) -> int:
        """SIGTERM, and the exit code within ``bound_s``."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), bound_s)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 5)
        return code


@contextlib.asynccontextmanager
async def lgsp_bus(*args: str, env: dict[str, str]) -> AsyncIterator[Process]:
    """Start ``python -m bus.cli.main ARGS``; SIGTERM it (then SIGKILL) on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bus.cli.main",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    child = Process(proc)

    async def read() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            child.lines.append(line.decode())

    child.reader = asyncio.create_task(read())
    try:
        yield child
    finally:
        await terminate(proc)
        child.reader.cancel()


def routing_file(tmp_path: Path, sim_url: str) -> Path:
    """The shipped routing.yaml, pointed at the test's simulator."""
    data = yaml.safe_load((ROOT / "routing.yaml").read_text(encoding="utf-8"))
    data["upstreams"]["moj-civil-status-sim"]["url"] = sim_url
    data["gateway"]["shutdown_grace_s"] = 3
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as r:
        return r.status, await r.text()


async def until(check: Callable[[], Awaitable[bool]], bound_s: float) -> None:
    end = time.monotonic() + bound_s
    while not await check():
        assert time.monotonic() < end, f"not within {bound_s}s"
        await asyncio.sleep(0.1)


@pytest.fixture
async def sim_env(tmp_path: Path) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    token = new_secret()
    env = {
        "LGSP_DEMO_API_KEY": new_secret(),
        "LGSP_SIM_CIVIL_STATUS_TOKEN": token,
        "LGSP_SIM_POPULATION_SECRET": new_secret(),
        "LGSP_AUDIT_KEY": new_secret(),
        "LGSP_STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
    }
    async with serve_app(build_sim(token=token)) as sim_url:
        yield routing_file(tmp_path, sim_url), env


@pytest.fixture
def fresh_vhost(rabbit_vhost: TestVhost) -> Iterator[TestVhost]:
    """A vhost of its own: the shipped routing's queue settings differ from other tests'."""
    vhost = TestVhost()
    yield vhost
    vhost.close()


@pytest.mark.rabbitmq
async def test_gateway_and_worker_processes_serve_metrics_and_json_logs(
    fresh_vhost: TestVhost, sim_env: tuple[Path, dict[str, str]]
) -> None:
    config, env = sim_env
    env = {**env, "LGSP_AMQP_URL": fresh_vhost.url()}
    common = ["--log-format", "json", "--log-level", "info"]
    async with (
        lgsp_bus(*common, "worker", "--config", str(config), "--http-port", "0", env=env) as wk,
        lgsp_bus(*common, "gateway", "--config", str(config), "--port", "0", env=env) as gw,
        aiohttp.ClientSession() as session,
    ):
        worker_url = (await wk.wait_event("worker.http_listening"))["url"] + "/"
        gateway_url = (await gw.wait_event("gateway.listening"))["url"] + "/"
        await wk.wait_event("worker.started")

        async def worker_ready() -> bool:
            return (await fetch(session, worker_url + "readyz"))[0] == 200

        await until(worker_ready, 10)
        assert (await fetch(session, worker_url + "healthz"))[0] == 200
        ready = json.loads((await fetch(session, worker_url + "readyz"))[1])
        assert ready["checks"] == {"broker": True, "config": True, "consuming": True}
        assert "breakers" in ready, "per-upstream circuit breakers in the detail"
        headers = {"Authorization": f"Bearer {env['LGSP_DEMO_API_KEY']}"}
        body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 2))
        async with session.post(
            gateway_url + "v1/civil-status/lookup",
            json=body,
            headers={**headers, "X-Request-Id": "trace-cli-0001"},
        ) as r:
            assert r.status == 200, await r.text()
        async with session.post(
            gateway_url + "v1/civil-status/lookup", json={"x": 1}, headers=headers
        ) as r:
            assert r.status == 400

        _, gw_text = await fetch(session, gateway_url + "metrics")
        _, wk_text = await fetch(session, worker_url + "metrics")
        gw_samples, wk_samples = parse(gw_text), parse(wk_text)
        svc = {"service": "civil-status", "operation": "lookup"}
        assert value(gw_samples, "lgsp_requests_total", **svc, consumer="demo", code="OK") == 1
        assert value(gw_samples, "lgsp_requests_total", **svc, outcome="rejected") == 1
        assert value(gw_samples, "lgsp_build_info", role="gateway") == 1
        assert value(wk_samples, "lgsp_upstream_requests_total", **svc, code="OK") == 1
        assert value(wk_samples, "lgsp_build_info", role="worker") == 1
        assert value(wk_samples, "lgsp_broker_connected") == 1
        assert value(gw_samples, "lgsp_broker_connected") == 1
        check_labels(gw_samples + wk_samples)

        assert await gw.stop() == 0
        assert await wk.stop() == 0

    for child in (gw, wk):
        for event in child.events():
            assert event.keys() >= LOG_KEYS
    served = next(e for e in wk.events() if e["event"] == "worker.request_served")
    access = next(
        e for e in gw.events() if e["event"] == "gateway.request_finished" and e["status"] == 200
    )
    assert served.keys() >= REQUEST_KEYS
    assert access.keys() >= REQUEST_KEYS
    # One correlation id from the caller's X-Request-Id to the worker's log line.
    assert served["correlation_id"] == access["correlation_id"] == "trace-cli-0001"
    assert (access["service"], access["operation"], access["consumer"]) == (
        "civil-status",
        "lookup",
        "demo",
    )
    logs = "".join(gw.lines + wk.lines)
    assert body["caller"]["officer_id"] not in logs


async def test_run_honours_the_log_level(sim_env: tuple[Path, dict[str, str]]) -> None:
    config, env = sim_env
    env = {**env, "LGSP_AMQP_URL": ""}
    port = free_port()
    args = ["--log-format", "json", "--log-level", "WARNING", "run", "--no-sim"]
    async with (
        lgsp_bus(*args, "--config", str(config), "--port", str(port), env=env) as run,
        aiohttp.ClientSession() as session,
    ):
        url = f"http://127.0.0.1:{port}/"

        async def up() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                return (await fetch(session, url + "readyz"))[0] == 200
            return False

        await until(up, 20)
        headers = {"Authorization": f"Bearer {env['LGSP_DEMO_API_KEY']}"}
        body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 2))
        async with session.post(url + "v1/civil-status/lookup", json=body, headers=headers) as r:
            assert r.status == 200
        _, text = await fetch(session, url + "metrics")
        samples = parse(text)
        # One process, one registry: the gateway's and the worker's metrics side by side.
        assert value(samples, "lgsp_requests_total", code="OK") == 1
        assert value(samples, "lgsp_upstream_requests_total", code="OK") == 1
        assert value(samples, "lgsp_build_info", role="all") == 1
        assert await run.stop() == 0
    levels = {e["level"] for e in run.events()}
    assert levels <= {"warning", "error", "critical"}, levels
    assert not any(e["event"] == "gateway.request_finished" for e in run.events())


def test_an_unknown_log_level_is_refused_by_the_parser() -> None:
    from bus.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log-level", "loud", "run"])
    assert build_parser().parse_args(["--log-level", "DEBUG", "run"]).log_level == "debug"
