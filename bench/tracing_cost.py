"""CPU cost of tracing per request: the bus with tracing off, then on, in alternating rounds.

Run: ``.venv/bin/python -m bench.tracing_cost [--requests 2000] [--rounds 3]``.
One process holds the gateway, the worker (in-memory broker), the MOJ simulator and the
client (8 requests in flight); a second process is the OTLP/HTTP receiver, which answers
without parsing, so its work is not counted. Each round sends ``--requests`` civil-status
lookups and prints this process's CPU per request (``time.process_time``: every thread,
the exporter's included) and the ratio on/off of the same pair of rounds. Off, no span
object is made (``bus/observe/tracing.py``); on, each request makes three spans
(gateway, worker, upstream call) and exports them in batches.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import sys
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from adapters.base import parse_routing, request_models
from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import build_app as build_simulator
from bus import logs
from bus.broker import open_broker, queue_specs
from bus.config import RoutingConfig
from bus.gateway.app import Gateway, Runtime, build_app
from bus.gateway.server import bound_port, http_site
from bus.observe import tracing
from bus.worker.worker import Worker, open_adapters

IN_FLIGHT = 8
_RECEIVER = """
import sys
from aiohttp import web
async def traces(request):
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")
app = web.Application()
app.router.add_post("/v1/traces", traces)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(sim_url: str, receiver: str) -> RoutingConfig:
    return parse_routing(
        {
            "version": 1,
            "consumers": {
                "bench": {
                    "api_keys": [{"key": "env:BENCH_TRACE_KEY"}],
                    "allow": {"civil-status": ["lookup"]},
                }
            },
            "upstreams": {
                "moj": {
                    "url": sim_url,
                    "allow_plain_http": True,
                    "auth": {"kind": "bearer", "token": "env:BENCH_TRACE_TOKEN"},
                }
            },
            "services": {
                "civil-status": {
                    "adapter": "civil_status",
                    "upstream": "moj",
                    "operations": {"lookup": {"timeout_s": 10}},
                }
            },
            "tracing": {"enabled": True, "endpoint": receiver},
        }
    )


def _body(i: int) -> dict[str, Any]:
    return {
        "request_id": f"req-{uuid.uuid4().hex[:16]}",
        "record_type": "BIRTH",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-2026-0001",
            "legal_basis": "LEGAL_DUTY",
        },
        "by_registration": sample_registration(0, RecordType.BIRTH, i % 2000),
    }


async def _round(session: aiohttp.ClientSession, url: str, key: str, n: int) -> float:
    """CPU µs per request of ``n`` requests (all answered 200)."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            headers = {"Authorization": f"Bearer {key}"}
            async with session.post(url, json=_body(i), headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

    cpu0 = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return 1e6 * (time.process_time() - cpu0) / n


async def _main(requests: int, rounds: int) -> None:
    key, token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    os.environ.update({"BENCH_TRACE_KEY": key, "BENCH_TRACE_TOKEN": token})
    port = _free_port()
    receiver = await asyncio.create_subprocess_exec(sys.executable, "-c", _RECEIVER, str(port))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(receiver.wait)
        stack.callback(receiver.terminate)
        sim = await stack.enter_async_context(
            http_site(build_simulator(token=token), "127.0.0.1", 0)
        )
        config = _config(
            f"http://127.0.0.1:{bound_port(sim)}/", f"http://127.0.0.1:{port}/v1/traces"
        )
        broker = open_broker(None)
        await broker.connect()
        stack.push_async_callback(broker.aclose)
        await broker.declare(queue_specs(config))
        worker = Worker(config, broker, await open_adapters(config), drain_s=5)
        stack.push_async_callback(worker.aclose)
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.run(stop))
        stack.push_async_callback(asyncio.wait_for, serving, 15)
        stack.callback(stop.set)
        gateway = Gateway(broker, Runtime.build(config, models=request_models(config)))
        site = await stack.enter_async_context(http_site(build_app(gateway), "127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_port(site)}/v1/civil-status/lookup"
        session = await stack.enter_async_context(aiohttp.ClientSession())
        await _round(session, url, key, 200)  # warm-up: connections, caches
        ratios = []
        for _ in range(rounds):
            off = await _round(session, url, key, requests)
            tracing.configure(config, "bench")
            try:
                on = await _round(session, url, key, requests)
            finally:
                tracing.shutdown()  # flushes the last batch (counted in neither round)
            ratios.append(on / off)
            print(f"tracing off {off:7.1f} µs/request   on {on:7.1f} µs/request   ×{on / off:.3f}")
        print(f"median ratio on/off ×{statistics.median(ratios):.3f} over {rounds} round pairs")


def main() -> None:
    """Parse arguments and run the rounds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with open(os.devnull, "w") as devnull:  # logs rendered as in production, not shown
        logs.configure("json", "info", stream=devnull)
        _run(args.requests, args.rounds)


def _run(requests: int, rounds: int) -> None:
    try:  # the bus runs on uvloop when it is installed: so does this
        import uvloop
    except ImportError:
        asyncio.run(_main(requests, rounds))
    else:
        uvloop.run(_main(requests, rounds))


if __name__ == "__main__":
    main()
