"""A gateway SIGKILLed with requests in flight (issue 21.2): ``lgsp-bus gateway`` and
``lgsp-bus worker`` subprocesses on this run's RabbitMQ vhost, the MOJ simulator (slow, so
every request is at the upstream when the gateway dies), the store on each backend.

Every request that reached the national DB must have left an audit record of its subject
before it was published — the ``STARTED`` record — although no answer was ever given; a
reader counts each once, with outcome ``UNKNOWN``; the chains verify.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapters.civil_status.data import sample_person
from adapters.civil_status.models import RecordType
from bus.audit.accesses import STARTED, UNKNOWN, accesses
from bus.audit.chain import subject_key
from bus.audit.observer import verify_store
from bus.store import Store
from bus.store.base import AuditRecord
from tests.e2e.test_e2e_civil_status import lookup
from tests.faults.test_faults import KEY_ENV, Sim, _secrets, fault_config, fresh_service, simulator
from tests.faults.test_faults_workers import worker_processes
from tests.support.procs import reap, wait_ready
from tests.support.rabbit import TestVhost

pytestmark = pytest.mark.rabbitmq
__all__ = ["_secrets"]  # the processes read key and token from the environment it sets

AUDIT_ENV = "T_FAULT_AUDIT_KEY"
AUDIT_KEY = "gateway-kill-audit-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def gateway_process(
    tmp_path: Path, config: dict[str, Any], amqp_url: str, store_url: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``lgsp-bus gateway`` on a free port; yields (process, base URL) once ready."""
    routing = tmp_path / "gateway-routing.yaml"
    routing.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    env = {**os.environ, "LGSP_AMQP_URL": amqp_url, "LGSP_STORE_URL": store_url}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bus.cli.main", "--log-format", "json", "gateway",
            "--config", str(routing), "--no-watch", "--port", str(port),
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        await wait_ready(proc, url, log_path)
        yield proc, url
    finally:
        await reap(proc)  # not proc.kill(): it can reap the SIGKILLed gateway first


async def exchange_records(store: Store) -> list[AuditRecord]:
    return [
        rec
        for head in await store.audit_chains()
        for rec in await store.audit_records(head.chain, head.anchor_seq, 10_000)
        if rec.kind == "exchange"
    ]


async def test_a_gateway_killed_mid_request_has_audited_every_upstream_lookup(
    rabbit_vhost: TestVhost,
    tmp_path: Path,
    store_url: str,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(AUDIT_ENV, AUDIT_KEY)
    requests = 12
    people = [sample_person(0, RecordType.BIRTH, 40 + i)["id_number"] for i in range(requests)]
    async with AsyncExitStack() as stack:
        sim: Sim = await stack.enter_async_context(simulator(latency_ms=4000))
        data = fault_config(sim.url, service=fresh_service(), timeout_s=15.0)
        data["audit"] = {"subject_key": f"env:{AUDIT_ENV}"}  # personal data: fail_closed
        service = next(iter(data["services"]))
        await stack.enter_async_context(
            worker_processes(tmp_path, data, rabbit_vhost.url(), ("a",))
        )
        proc, url = await stack.enter_async_context(
            gateway_process(tmp_path, data, rabbit_vhost.url(), store_url)
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}

        async def call(id_number: str) -> int:
            body = lookup(by_person={"id_number": id_number})
            hdrs = {**headers, "X-Request-Id": uuid.uuid4().hex}
            try:
                async with session.post(f"{url}v1/{service}/lookup", json=body, headers=hdrs) as r:
                    await r.read()
                    return r.status
            except aiohttp.ClientError:
                return 0  # the gateway died: never answered

        calls = [asyncio.create_task(call(p)) for p in people]
        deadline = time.monotonic() + 20
        while sim.calls < requests:  # every lookup is at the national DB, none answered
            assert time.monotonic() < deadline, f"{sim.calls} of {requests} at the upstream"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        statuses = await asyncio.gather(*calls)
    assert statuses == [0] * requests, "killed before any answer"
    reached = sim.calls
    assert reached == requests

    records = await exchange_records(store)
    key = AUDIT_KEY.encode("utf-8")
    audited = Counter(r.subject_key for r in records)
    missing = sum(audited[subject_key(key, p)] == 0 for p in people)
    assert missing == 0, f"{missing} of {reached} upstream lookups have no audit record"
    # Each is one STARTED record (its final record was never written) with who asked, why
    # and under which credential; a reader counts it once, outcome UNKNOWN.
    assert Counter(r.outcome for r in records) == {STARTED: requests}
    assert {(r.consumer, r.service, r.operation) for r in records} == {
        ("portal", service, "lookup")
    }
    assert all(r.purpose["legal_basis"] == "LEGAL_DUTY" for r in records)
    assert all(r.detail.get("credential") for r in records)
    seen = accesses(records)
    assert len(seen) == requests
    assert {r.outcome for r in seen} == {UNKNOWN}
    assert all(report.problem is None for report in await verify_store(store))
