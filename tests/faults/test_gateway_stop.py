"""SIGTERM on the gateway (21.3): stop accepting at once, finish what is in flight.

``run_gateway`` is the gateway role of ``lgsp-bus gateway``/``run``; setting its ``stop``
event is what the SIGTERM handler does. A request held by a slow worker is in flight at
the stop: it must still be answered, while new connections are refused and a request on a
kept-alive connection gets ``503 SHUTTING_DOWN`` with ``/readyz`` 503.
"""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
import pytest

from adapters.base import parse_routing
from bus.broker import open_broker, queue_specs
from bus.cli.roles import run_gateway
from bus.envelope import Reply, Request
from tests.faults.test_faults import KEY_ENV, _secrets, fault_config, fresh_service, good

__all__ = ["_secrets"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_stops_accepting_at_once_and_finishes_in_flight_work() -> None:
    service = fresh_service()
    config = parse_routing(fault_config("http://127.0.0.1:9/", service=service, timeout_s=20))
    broker = open_broker(None)
    await broker.connect()
    await broker.declare(queue_specs(config))
    release = asyncio.Event()
    held = asyncio.Event()

    async def slow(req: Request) -> Reply:
        held.set()
        await release.wait()
        return Reply(req.request_id, req.correlation_id, body={"record_type": "BIRTH"})

    worker_stop = asyncio.Event()
    serving = asyncio.create_task(broker.serve(service, slow, prefetch=4, stop=worker_stop))
    port, stop, listening = free_port(), asyncio.Event(), asyncio.Event()
    gateway = asyncio.create_task(run_gateway(config, broker, "127.0.0.1", port, stop, listening))
    await asyncio.wait_for(listening.wait(), 10)
    url = f"http://127.0.0.1:{port}/"
    auth = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    try:
        async with aiohttp.ClientSession() as keep, aiohttp.ClientSession() as fresh:
            async with keep.get(url + "readyz") as r:
                assert r.status == 200
            in_flight = asyncio.create_task(
                keep.post(f"{url}v1/{service}/lookup", json=good(1), headers=auth)
            )
            await asyncio.wait_for(held.wait(), 10)
            async with aiohttp.ClientSession() as other:  # a second kept-alive connection
                async with other.get(url + "readyz") as r:
                    assert r.status == 200
                stop.set()  # what SIGTERM does
                for _ in range(100):  # the role reacts on its next loop turn
                    await asyncio.sleep(0.02)
                    async with other.get(url + "readyz") as r:
                        if r.status == 503:
                            ready = await r.json()
                            break
                else:
                    raise AssertionError("/readyz still 200 after the stop")
                assert ready["checks"]["accepting"] is False
                async with other.post(f"{url}v1/{service}/lookup", json=good(2), headers=auth) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == "SHUTTING_DOWN"
                    assert r.headers["Retry-After"] == "1"
            with pytest.raises(aiohttp.ClientConnectionError):
                async with fresh.get(url + "healthz", timeout=aiohttp.ClientTimeout(total=5)):
                    pass
            assert not gateway.done()  # still finishing the request in flight
            release.set()
            response = await asyncio.wait_for(in_flight, 10)
            assert response.status == 200
            assert (await response.json())["record_type"] == "BIRTH"
            response.release()
        await asyncio.wait_for(gateway, 10)
    finally:
        release.set()
        stop.set()
        worker_stop.set()
        await asyncio.wait_for(serving, 10)
        await broker.aclose()
