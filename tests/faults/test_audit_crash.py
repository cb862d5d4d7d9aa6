"""Crash test: ``lgsp-bus run`` (a real process, fail_closed audit) is SIGKILLed under load.
Every request the client saw answered must have its durable record, and ``audit verify``
must pass — after the crash, and again after a restart on the same store."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from adapters.civil_status.data import sample_person
from adapters.civil_status.models import RecordType
from bus.audit.accesses import STARTED
from bus.store import Store
from tests.support.paths import REPO
from tests.support.procs import reap, wait_ready

ROOT = REPO
DEMO_KEY = "crash-demo-key-0123456789"
PURPOSE = {"procedure_code": "1.001234", "dossier_id": "HS-1", "legal_basis": "LEGAL_DUTY"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def routing_yaml(tmp: Path) -> Path:
    """The shipped routing.yaml with the simulators on free ports."""
    text = (ROOT / "routing.yaml").read_text(encoding="utf-8")
    text = text.replace("127.0.0.1:8482", f"127.0.0.1:{free_port()}")
    text = text.replace("127.0.0.1:8481", f"127.0.0.1:{free_port()}")
    path = tmp / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def bus_env(store_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGSP_")}
    env.update(
        LGSP_STORE_URL=store_url,
        LGSP_AUDIT_KEY="crash-audit-key-0123456789",
        LGSP_DEMO_API_KEY=DEMO_KEY,
        LGSP_SIM_CIVIL_STATUS_TOKEN="crash-sim-token",
        LGSP_SIM_POPULATION_SECRET="crash-sim-secret",
    )
    return env


@asynccontextmanager
async def bus_process(tmp: Path, store_url: str, name: str) -> AsyncIterator[tuple[Any, str]]:
    """``lgsp-bus run`` on a free port; yields (process, base URL) once ready."""
    port = free_port()
    log = (tmp / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bus.cli.main", "--log-format", "json", "run",
        "--config", str(routing_yaml(tmp)), "--port", str(port),
        stdout=log, stderr=log, env=bus_env(store_url), cwd=tmp,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        await wait_ready(proc, url, tmp / f"{name}.log")
        yield proc, url
    finally:
        await reap(proc)
        log.close()


def body(i: int) -> dict[str, Any]:
    person = sample_person(0, RecordType.BIRTH, i % 200)
    return {
        "request_id": f"crash-{uuid.uuid4().hex[:16]}",
        "record_type": "BIRTH",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": PURPOSE,
        "by_person": {"id_number": person["id_number"]},
    }


async def load(url: str, answered: dict[str, int], stop: asyncio.Event, clients: int = 16) -> None:
    """Clients posting until ``stop`` or the bus dies; ``answered``: request_id → status."""
    headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    counter = iter(range(1_000_000))

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            b = body(next(counter))
            try:
                async with session.post(url + "v1/civil-status/lookup", json=b) as r:
                    await r.read()
                    answered[b["request_id"]] = r.status
            except (TimeoutError, aiohttp.ClientError):
                return  # the bus is gone: this request was never answered

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


async def audit_cli(store_url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bus.cli.main", "audit", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=bus_env(store_url),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def recorded_request_ids(store: Store) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for head in await store.audit_chains():
        after = head.anchor_seq
        while True:
            page = await store.audit_records(head.chain, after, 5000)
            for rec in page:
                if rec.kind == "exchange" and rec.request_id:
                    out.setdefault(rec.request_id, []).append((rec.outcome, rec.status))
            if len(page) < 5000:
                break
            after = page[-1].seq
    return out


async def test_sigkill_under_load_loses_no_answered_record(
    tmp_path: Path, store_url: str, store: Store
) -> None:
    answered: dict[str, int] = {}
    stop = asyncio.Event()
    async with bus_process(tmp_path, store_url, "first") as (proc, url):
        driver = asyncio.create_task(load(url, answered, stop))
        while len(answered) < 300:  # under load, well past start-up
            assert not driver.done()
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(driver, 20)
    assert proc.returncode == -signal.SIGKILL
    records = await recorded_request_ids(store)
    missing = [rid for rid in answered if rid not in records]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no record"
    for rid, status in answered.items():
        # Exactly one final record each, after its STARTED record (written before the
        # request was published, issue 21.2).
        started = [r for r in records[rid] if r[0] == STARTED]
        ((outcome, recorded_status),) = [r for r in records[rid] if r[0] != STARTED]
        assert started == [(STARTED, 0)]
        assert recorded_status == status
        assert (outcome == "OK") == (status == 200)
    assert sum(status == 200 for status in answered.values()) >= 300
    code, out = await audit_cli(store_url, "verify")
    assert code == 0, out

    # Restart on the same store: the dead process's chain is still leased, so the new one
    # writes another chain; everything verifies.
    after: dict[str, int] = {}
    async with bus_process(tmp_path, store_url, "second") as (proc, url):
        stop2 = asyncio.Event()
        driver = asyncio.create_task(load(url, after, stop2, clients=4))
        while len(after) < 20:
            assert not driver.done()
            await asyncio.sleep(0.05)
        stop2.set()
        await asyncio.wait_for(driver, 20)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    records = await recorded_request_ids(store)
    assert all(rid in records for rid in after)
    code, out = await audit_cli(store_url, "verify")
    assert code == 0, out
    assert "2 chain(s)" in out
