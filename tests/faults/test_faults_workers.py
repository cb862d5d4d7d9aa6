"""Worker processes killed and stopped under load: ``lgsp-bus worker`` subprocesses on this
run's RabbitMQ vhost, the MOJ simulator behind a TCP proxy, a gateway in the test process.

Who answered what is read from the workers' own JSON logs (``worker.request_served`` with
the request's correlation id), so duplicates are counted where they would happen. Only the
worker processes these tests start are ever signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from adapters.base import parse_routing
from tests.faults.test_faults import (  # _secrets: the autouse fixture setting key and token
    Client,
    Result,
    Sim,
    _secrets,
    fault_config,
    figures,
    fresh_service,
    gateway_only,
    good,
    simulator,
    until,
)
from tests.support.procs import reap
from tests.support.rabbit import TestVhost

pytestmark = pytest.mark.rabbitmq
__all__ = ["_secrets"]  # the workers read key and token from the environment it sets


@dataclass
class WorkerProcess:
    """One ``lgsp-bus worker`` started by this test."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines so far (of one event, if given)."""
        out = []
        for line in self.log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                    out.append(entry)
        return out

    def served(self) -> Counter[str]:
        """Answers this worker produced, per correlation id."""
        return Counter(str(e.get("correlation_id")) for e in self.events("worker.request_served"))

    async def stopped(self, bound_s: float) -> int:
        """Wait for the process to exit; its exit code."""
        return await asyncio.wait_for(self.proc.wait(), bound_s)


@asynccontextmanager
async def worker_processes(
    tmp_path: Path, config: dict[str, Any], amqp_url: str, names: tuple[str, ...]
) -> AsyncIterator[dict[str, WorkerProcess]]:
    """Start one worker process per name; kill whatever is still running on exit."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "LGSP_AMQP_URL": amqp_url}
    workers: dict[str, WorkerProcess] = {}
    try:
        for name in names:
            log = tmp_path / f"worker-{name}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bus.cli.main",
                    "--log-format",
                    "json",
                    "worker",
                    "--config",
                    str(routing),
                    "--no-watch",
                    "--http-port",
                    "-1",
                    stdout=out,
                    stderr=out,
                    env=env,
                )
            workers[name] = WorkerProcess(name, proc, log)
        for w in workers.values():
            await until(lambda w=w: bool(w.events("broker.consuming")), 20, f"worker {w.name}")
        yield workers
    finally:
        for w in workers.values():
            await reap(w.proc)


def duplicates(*workers: WorkerProcess) -> dict[str, int]:
    """Correlation ids answered more than once, across the workers."""
    total: Counter[str] = Counter()
    for w in workers:
        total.update(w.served())
    return {cid: n for cid, n in total.items() if n > 1}


@contextlib.contextmanager
def on_failure_show(*workers: WorkerProcess) -> Iterator[None]:
    """Print the workers' logs if the test fails (they explain what happened)."""
    try:
        yield
    except BaseException:
        for w in workers:
            print(f"--- worker {w.name} log ---\n{w.log.read_text(errors='replace')[-4000:]}")
        raise


async def test_worker_killed_mid_request_is_redelivered_and_answered_once(
    rabbit_vhost: TestVhost, tmp_path: Path
) -> None:
    requests, timeout_s = 8, 15.0
    async with AsyncExitStack() as stack:
        sim: Sim = await stack.enter_async_context(simulator(latency_ms=2500))
        data = fault_config(sim.url, service=fresh_service(), timeout_s=timeout_s)
        client, _ = await stack.enter_async_context(
            gateway_only(parse_routing(data), rabbit_vhost.url())
        )
        workers = await stack.enter_async_context(
            worker_processes(tmp_path, data, rabbit_vhost.url(), ("a", "b"))
        )
        a, b = workers["a"], workers["b"]
        with on_failure_show(a, b):
            calls = [asyncio.create_task(client.call(good(i))) for i in range(requests)]
            await until(lambda: sim.calls >= requests, 10, "every request at the upstream")
            a.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            assert await a.stopped(5) == -signal.SIGKILL
            results: list[Result] = await asyncio.gather(*calls)
            answered_s = max(r.ended for r in results) - killed_at
            assert all(r.status == 200 for r in results), [r.code for r in results]
            held_by_a = sim.calls - requests  # B called the upstream again for each of them
            assert held_by_a >= 1, "worker a held none of the requests when it was killed"
            assert not a.served(), "a was killed before it could answer"
            assert not duplicates(a, b)
            assert sum(b.served().values()) == requests
    figures(
        "worker-sigkill",
        requests=requests,
        held_by_killed_worker=held_by_a,
        redelivered_and_answered=held_by_a,
        lost=0,
        duplicated=0,
        last_answer_after_kill_s=round(answered_s, 2),
    )


async def test_sigterm_under_load_loses_and_duplicates_nothing(
    rabbit_vhost: TestVhost, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=300))
        data = fault_config(sim.url, service=fresh_service(), timeout_s=10)
        client, _ = await stack.enter_async_context(
            gateway_only(parse_routing(data), rabbit_vhost.url())
        )
        workers = await stack.enter_async_context(
            worker_processes(tmp_path, data, rabbit_vhost.url(), ("a", "b"))
        )
        a, b = workers["a"], workers["b"]
        with on_failure_show(a, b):
            results = await load_with_sigterm(client, a, run_s=6.0, sigterm_at_s=2.0)
            lost = [r for r in results if r.status != 200]
            assert not lost, [r.code for r in lost][:5]
            draining = a.events("worker.draining")
            stopped = a.events("worker.stopped")
            assert draining
            assert stopped
            assert stopped[0]["abandoned"] == 0
            assert not duplicates(a, b)
            answered = a.served() + b.served()
            assert sum(answered.values()) == len(results)
    figures(
        "sigterm-under-load",
        requests=len(results),
        lost=len(lost),
        duplicated=0,
        in_flight_at_sigterm=draining[0]["in_flight"],
        served_by_stopped_worker=sum(a.served().values()),
        served_by_other=sum(b.served().values()),
    )


async def test_sigterm_past_the_drain_bound_returns_work_to_the_queue(
    rabbit_vhost: TestVhost, tmp_path: Path
) -> None:
    requests = 6
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=3000))
        data = fault_config(
            sim.url, service=fresh_service(), timeout_s=15, gateway={"shutdown_grace_s": 1}
        )
        client, _ = await stack.enter_async_context(
            gateway_only(parse_routing(data), rabbit_vhost.url())
        )
        workers = await stack.enter_async_context(
            worker_processes(tmp_path, data, rabbit_vhost.url(), ("a", "b"))
        )
        a, b = workers["a"], workers["b"]
        with on_failure_show(a, b):
            calls = [asyncio.create_task(client.call(good(i))) for i in range(requests)]
            await until(lambda: sim.calls >= requests, 10, "every request at the upstream")
            a.proc.send_signal(signal.SIGTERM)
            term_at = time.monotonic()
            assert await a.stopped(10) == 0
            exited_s = time.monotonic() - term_at
            results = await asyncio.gather(*calls)
            assert all(r.status == 200 for r in results), [r.code for r in results]
            abandoned = a.events("worker.stopped")[0]["abandoned"]
            assert abandoned >= 1
            assert not a.served()  # cut off mid-call: it never answered
            assert not duplicates(a, b)
            assert sum(b.served().values()) == requests
    figures(
        "sigterm-past-drain-bound",
        requests=requests,
        returned_to_queue=sim.calls - requests,
        worker_exit_after_sigterm_s=round(exited_s, 2),
        lost=0,
        duplicated=0,
    )


async def load_with_sigterm(
    client: Client, target: WorkerProcess, *, run_s: float, sigterm_at_s: float
) -> list[Result]:
    """Steady load from 6 clients; SIGTERM ``target`` part-way; every result."""
    results: list[Result] = []
    end = time.monotonic() + run_s

    async def steady(n: int) -> None:
        i = 0
        while time.monotonic() < end:
            results.append(await client.call(good(n * 100 + i)))
            i += 1

    load = [asyncio.create_task(steady(n)) for n in range(6)]
    await asyncio.sleep(sigterm_at_s)
    target.proc.send_signal(signal.SIGTERM)
    assert await target.stopped(15) == 0
    await asyncio.gather(*load)
    return results
