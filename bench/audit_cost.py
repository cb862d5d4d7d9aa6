"""Requests/s through the whole path with the audit trail off, fail_closed and fail_open.

Run: ``.venv/bin/python bench/audit_cost.py [--seconds 5] [--rounds 3] [--concurrency 16]
[--modes off,fail_closed,fail_open] [--store sqlite|postgresql://…] [--idempotency]``.

Each round starts a fresh bus in a subprocess (civil-status simulator + in-memory broker +
worker + gateway, composed as ``lgsp-bus run`` composes them, uvloop if installed) and
drives it from this process with ``--concurrency`` clients posting ``civil-status.lookup``
by person (subject IDs vary, so records carry subject keys) for ``--seconds`` after a
one-second warm-up. Modes alternate round by round (off, fail_closed, fail_open, off, …) so
drift on a shared machine hits every mode alike. Mode ``off`` has no audit observer at all;
the others write one record per request into a fresh store (a SQLite file with
synchronous=FULL, or the PostgreSQL database given, emptied first). The request-result
store (idempotency) is left out of every mode, so the difference is the audit trail's
alone — unless ``--idempotency``: then every mode keeps request results in the store, as
``lgsp-bus run`` does (the audit trail's store), and an audited request's claim and answer
ride in its audit records' commits (two commits a request, for its two records). Two
processes share the machine: read the ratios, not the absolute figures; the bus's CPU
time per request (from /proc, all its threads) is the steadier of the two on a busy
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from adapters.base import parse_routing, request_models
from adapters.civil_status.data import sample_person
from adapters.civil_status.models import RecordType

KEY = "bench-consumer-key-0123456789"
AUDIT_KEY = "bench-audit-key-0123456789"
TOKEN = "bench-sim-token"  # noqa: S105 - the simulator's, made up here


# -- the bus (subprocess) --------------------------------------------------------------------


def _config(sim_port: int, mode: str) -> Any:

    service: dict[str, Any] = {
        "adapter": "civil_status",
        "upstream": "moj",
        "operations": {"lookup": {"timeout_s": 10}},
    }
    if mode != "off":
        service["audit"] = mode
    return parse_routing(
        {
            "version": 1,
            "audit": {"subject_key": "env:B_AUDIT"},
            "consumers": {
                "portal": {"api_keys": [{"key": "env:B_KEY"}], "allow": {"civil-status": ["*"]}}
            },
            "upstreams": {
                "moj": {
                    "url": f"http://127.0.0.1:{sim_port}/",
                    "allow_plain_http": True,
                    "auth": {"kind": "bearer", "token": "env:B_TOKEN"},
                }
            },
            "services": {"civil-status": service},
        }
    )


class CommitTimes:
    """An audit recorder keeping each commit's duration."""

    def __init__(self) -> None:
        self.ms: list[float] = []

    def audit_written(self, seconds: float, records: int = 1) -> None:
        """One commit of ``records``."""
        self.ms.append(seconds * 1000)

    def audit_write_failed(self) -> None:
        """A failed commit (none expected here)."""

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of commit times, ms."""
        ordered = sorted(self.ms) or [0.0]
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def serve(mode: str, port: int, store_url: str, idempotency: bool = False) -> None:
    """One bus in this process until stdin closes."""
    from contextlib import AsyncExitStack

    from adapters.civil_status.simulator import build_app as build_sim
    from bus.audit.observer import AuditObserver, audit_trail
    from bus.broker import open_broker, queue_specs
    from bus.exchange import ExchangeObserver
    from bus.gateway.app import Gateway, Runtime, build_app
    from bus.gateway.server import bound_port, http_site
    from bus.store import open_store
    from bus.worker.worker import Worker, open_adapters

    os.environ.update(B_KEY=KEY, B_TOKEN=TOKEN, B_AUDIT=AUDIT_KEY)
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(http_site(build_sim(token=TOKEN), "127.0.0.1", 0))
        config = _config(bound_port(sim), mode)
        broker = open_broker(None)
        await broker.connect()
        stack.push_async_callback(broker.aclose)
        await broker.declare(queue_specs(config))
        worker = Worker(config, broker, await open_adapters(config), drain_s=2)
        stack.push_async_callback(worker.aclose)
        observers: list[ExchangeObserver] = []
        if mode != "off":
            auditor = await stack.enter_async_context(audit_trail(config, store_url))
            observers.append(AuditObserver(auditor, config))
            commits = CommitTimes()
            auditor.recorder = commits
            # Printed when the bus stops: how well the group commit grouped, how long a
            # commit took (wall time, as a waiting request sees it).
            stack.callback(
                lambda: print(
                    f"  ({mode}: {auditor.written} records in {auditor.commits} commits, "
                    f"{auditor.written / max(auditor.commits, 1):.1f} per commit, commit "
                    f"p50 {commits.quantile(0.5):.1f} ms p99 {commits.quantile(0.99):.1f} ms)",
                    file=sys.stderr,
                )
            )
        gateway = Gateway(broker, Runtime.build(config, observers, models=request_models(config)))
        if idempotency and mode != "off":
            gateway.store = auditor.store
        elif idempotency:
            gateway.store = open_store(store_url)
            await gateway.store.connect()
            stack.push_async_callback(gateway.store.aclose)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker.run(stop))
            async with http_site(build_app(gateway), "127.0.0.1", port, shutdown_timeout=2):
                print("ready", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            stop.set()


# -- the load (this process) -----------------------------------------------------------------


def _body(i: int) -> dict[str, Any]:
    person = sample_person(0, RecordType.BIRTH, i % 2000)
    return {
        "request_id": f"bench-{uuid.uuid4().hex[:16]}",
        "record_type": "BIRTH",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-1",
            "legal_basis": "LEGAL_DUTY",
        },
        "by_person": {"id_number": person["id_number"]},
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    url: str, seconds: float, concurrency: int, pid: int
) -> tuple[int, int, list[float], float]:
    """(200 answers, other answers, latencies in ms, the bus's CPU seconds) over
    ``seconds`` after a warm-up."""
    ok = other = 0
    latencies: list[float] = []
    counter = iter(range(10**9))
    warm_until = time.monotonic() + 1.0
    end = warm_until + seconds
    headers = {"Authorization": f"Bearer {KEY}"}
    cpu: list[float] = []

    async def sample() -> None:
        await asyncio.sleep(warm_until - time.monotonic())
        cpu.append(cpu_seconds(pid))
        await asyncio.sleep(end - time.monotonic())
        cpu.append(cpu_seconds(pid))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal ok, other
        while (started := time.monotonic()) < end:
            async with session.post(url, json=_body(next(counter))) as r:
                await r.read()
            if started >= warm_until:
                latencies.append((time.monotonic() - started) * 1000)
                if r.status == 200:
                    ok += 1
                else:
                    other += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await asyncio.gather(sample(), *(client(session) for _ in range(concurrency)))
    return ok, other, latencies, cpu[1] - cpu[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _empty_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS lgsp_audit_records, lgsp_audit_chains")
    finally:
        await conn.close()


async def one_round(
    mode: str, store: str, seconds: float, concurrency: int, idempotency: bool = False
) -> dict[str, Any]:
    """Start a bus in ``mode``, drive it, stop it."""
    with tempfile.TemporaryDirectory() as tmp:
        if store.startswith("postgres"):
            store_url = store
            await _empty_postgres(store)
        else:
            store_url = f"sqlite:///{Path(tmp) / 'audit.sqlite3'}"
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", mode, "--port", str(port), "--store", store_url,
            *(["--idempotency"] if idempotency else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        try:
            url = f"http://127.0.0.1:{port}/v1/civil-status/lookup"
            ok, other, lat, cpu = await drive(url, seconds, concurrency, proc.pid)
        finally:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30)
    lat.sort()
    return {
        "rps": ok / seconds,
        "cpu_ms": cpu * 1000 / max(ok + other, 1),
        "errors": other,
        "p50": lat[len(lat) // 2] if lat else 0.0,
        "p99": lat[int(len(lat) * 0.99)] if lat else 0.0,
    }


async def bench(args: argparse.Namespace) -> None:
    """Alternate the modes round by round; print each round and the means."""
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rnd in range(args.rounds):
        for mode in modes:
            r = await one_round(mode, args.store, args.seconds, args.concurrency, args.idempotency)
            results[mode].append(r)
            print(
                f"round {rnd + 1} {mode:<12} {r['rps']:7.1f} req/s  "
                f"bus CPU {r['cpu_ms']:.3f} ms/req  p50 {r['p50']:5.1f} ms  "
                f"p99 {r['p99']:6.1f} ms  non-200 {r['errors']}",
                flush=True,
            )
    store = "postgresql" if args.store.startswith("postgres") else "sqlite (synchronous=FULL)"
    kept = ", request results kept (idempotency)" if args.idempotency else ""
    print(f"\nstore {store}{kept}, {args.concurrency} clients, {args.seconds:g} s x {args.rounds}")
    print("(medians over the rounds)")
    base = statistics.median(r["rps"] for r in results[modes[0]])
    base_cpu = statistics.median(r["cpu_ms"] for r in results[modes[0]])
    for mode in modes:
        rps = statistics.median(r["rps"] for r in results[mode])
        cpu = statistics.median(r["cpu_ms"] for r in results[mode])
        p99 = statistics.median(r["p99"] for r in results[mode])
        print(
            f"{mode:<12} {rps:7.1f} req/s ({rps / base:.2f} x {modes[0]})  "
            f"bus CPU {cpu:.3f} ms/req ({cpu / base_cpu:.2f} x)  p99 {p99:6.1f} ms"
        )


def main() -> None:
    """Entry point (also the bus subprocess, with ``--serve``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", default="off,fail_closed,fail_open")
    parser.add_argument("--store", default="sqlite", help="sqlite, or a postgresql:// URL")
    parser.add_argument(
        "--idempotency",
        action="store_true",
        help="keep request results in the store as lgsp-bus run does (default: left out)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        from bus import logs

        logs.configure("json", "warning")
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(args.serve, args.port, args.store, args.idempotency))
        else:
            uvloop.run(serve(args.serve, args.port, args.store, args.idempotency))
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
