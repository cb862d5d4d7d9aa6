"""One-way throughput: sends/s and event fan-out to 1, 10, 50 webhook subscribers, each
against a bare aio-pika publisher (persistent, confirmed, to a quorum queue) in the same run.

Run: ``.venv/bin/python -m bench.oneway_cost [--events 300] [--sends 1000]`` (needs the
local RabbitMQ; makes and deletes its own vhost). Everything runs in this one process —
HTTP clients, gateway, delivery worker, subscribers — on the shared machine, so the figure
to read is the ratio to the bare publisher of the same run, not the absolute rate.

* ``bare``: messages/s of ``basic_publish`` + confirm, 32 in flight;
* ``sends``: 202s/s of ``POST /v1/<service>/<op>`` (``mode: send``, 32 clients), then
  deliveries/s until the (loopback) upstream has them all;
* ``fanout N``: events/s published (32 clients) and deliveries/s until each of N webhook
  subscribers has every event (N × events deliveries). One partition per subscription
  here (``delivery.partitions: 1``), so each subscriber takes one event at a time: the
  per-subscriber ordering is what the fan-out pays for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from pamqp.commands import Basic

from adapters.base import parse_routing, request_models
from bench.rabbit import BenchVhost
from bus.broker import open_broker, queue_specs
from bus.broker.outbox import outbox_specs
from bus.config import RoutingConfig
from bus.delivery.runner import Deliveries
from bus.errors import BusError
from bus.gateway.app import Gateway, Runtime, build_app
from bus.gateway.server import bound_port, http_site
from bus.store import open_store
from bus.worker.worker import Worker, open_adapters

IN_FLIGHT = 32
KEY = "bench-" + uuid.uuid4().hex
TYPE = "citizen.record.changed"
SCHEMA = {
    "type": "object",
    "required": ["event_id"],
    "properties": {"event_id": {"type": "string"}},
}


async def bare(url: str, messages: int) -> float:
    """Messages/s of a bare confirmed publisher."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(
            "bench.bare", durable=True, arguments={"x-queue-type": "quorum"}
        )
        underlay = await channel.get_underlay_channel()
        props = Basic.Properties(content_type="application/json", delivery_mode=2)
        body = b'{"event_id":"' + b"0" * 36 + b'","change_type":"BIRTH_REGISTERED"}'
        return await _rate(
            messages,
            lambda: underlay.basic_publish(body, routing_key="bench.bare", properties=props),
        )


async def _rate(count: int, one: Callable[[], Awaitable[Any]]) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def run() -> None:
        async with slots:
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(count)))
    return count / (time.perf_counter() - started)


def config(hooks: list[str], upstream: str) -> RoutingConfig:
    consumers: dict[str, Any] = {
        "portal": {
            "api_keys": [{"key": "env:LGSP_BENCH_KEY"}],
            "publish": [TYPE],
            "allow": {"status": ["push"]},
        },
    }
    for i, url in enumerate(hooks):
        consumers[f"sub{i}"] = {
            "subscriptions": {
                "main": {
                    "kind": "webhook",
                    "events": [TYPE],
                    "url": url,
                    "secret": "env:LGSP_BENCH_KEY",
                    "allow_plain_http": True,
                }
            }
        }
    return parse_routing({
        "version": 1,
        "delivery": {"partitions": 1},  # 50 subscribers: 50 quorum queues, not 200
        "events": {TYPE: {"schema": SCHEMA}},
        "consumers": consumers,
        "upstreams": {"up": {"url": upstream, "allow_plain_http": True}},
        "services": {"status": {"adapter": "rest", "upstream": "up", "personal_data": False,
                                "operations": {"push": {"mode": "send", "options": {
                                    "method": "POST", "path": "in",
                                    "fields": {"n": {"type": "integer", "required": True}},
                                    "body": {"n": "n"}}}}}},
    })  # fmt: skip


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    async def hit(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        self.changed.set()
        return web.json_response({"ok": True})

    async def reach(self, n: int) -> None:
        while self.count < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 60)


async def scenario(url: str, subscribers: int, events: int, sends: int) -> tuple[float, float]:
    """(publish or accept rate, delivery rate) of one scenario."""
    counter = Counter()
    app = web.Application()
    app.router.add_post("/hook", counter.hit)
    app.router.add_post("/in", counter.hit)
    async with AsyncExitStack() as stack:
        site = await stack.enter_async_context(http_site(app, "127.0.0.1", 0, shutdown_timeout=1))
        base = f"http://127.0.0.1:{bound_port(site)}"
        cfg = config([f"{base}/hook"] * subscribers, base + "/")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        store = open_store(f"sqlite:///{tmp / 'store.sqlite3'}?synchronous=normal")
        await store.connect()
        stack.push_async_callback(store.aclose)
        brokers = [open_broker(url, name=n) for n in ("bench-gw", "bench-wk")]
        for b in brokers:
            for attempt in range(3):  # a node busy with the last round's queue deletions
                try:
                    await b.connect()
                    break
                except BusError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(2)
            stack.push_async_callback(b.aclose)
            await b.declare(queue_specs(cfg))
            await b.declare_outbox(outbox_specs(cfg))
        worker = Worker(cfg, brokers[1], await open_adapters(cfg))
        stack.push_async_callback(worker.aclose)
        stop = asyncio.Event()
        task = asyncio.create_task(Deliveries(cfg, brokers[1], store, worker.handle).run(stop))
        gateway = Gateway(brokers[0], Runtime.build(cfg, models=request_models(cfg)))
        gateway.store = store
        gw = await stack.enter_async_context(
            http_site(build_app(gateway), "127.0.0.1", 0, shutdown_timeout=1)
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        gw_url = f"http://127.0.0.1:{bound_port(gw)}"
        hdrs = {"Authorization": f"Bearer {KEY}"}
        started = time.perf_counter()
        if subscribers:

            async def one() -> None:
                body = {"event_id": str(uuid.uuid4())}
                async with session.post(f"{gw_url}/v1/events/{TYPE}", json=body, headers=hdrs) as r:
                    assert r.status == 202, await r.text()

            accepted = await _rate(events, one)
            await counter.reach(events * subscribers)
            delivered = events * subscribers / (time.perf_counter() - started)
        else:

            async def one() -> None:
                body = {"request_id": uuid.uuid4().hex, "n": 1}
                async with session.post(f"{gw_url}/v1/status/push", json=body, headers=hdrs) as r:
                    assert r.status == 202, await r.text()

            accepted = await _rate(sends, one)
            await counter.reach(sends)
            delivered = sends / (time.perf_counter() - started)
        stop.set()
        await asyncio.wait_for(task, 30)
        return accepted, delivered


async def main(args: argparse.Namespace) -> None:
    os.environ["LGSP_BENCH_KEY"] = KEY
    vhost = BenchVhost()
    await vhost.create()
    try:
        baseline = await bare(vhost.url, args.bare)
        print(f"bare aio-pika publisher (confirmed, quorum): {baseline:8.0f} msg/s")
        accepted, delivered = await scenario(vhost.url, 0, 0, args.sends)
        print(f"one-way sends: {accepted:8.0f} accepted/s ({accepted / baseline:.3f} × bare), "
              f"{delivered:8.0f} delivered/s ({delivered / baseline:.3f} × bare)")  # fmt: skip
        for n in args.fanout:
            accepted, delivered = await scenario(vhost.url, n, args.events, 0)
            print(
                f"fan-out to {n:2d}: {accepted:8.0f} events/s published "
                f"({accepted / baseline:.3f} × bare), "
                f"{delivered:8.0f} deliveries/s ({delivered / baseline:.3f} × bare)"
            )
    finally:
        await vhost.delete()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--bare", type=int, default=5000)
    parser.add_argument(
        "--fanout", type=lambda t: [int(v) for v in t.split(",")], default=[1, 10, 50]
    )
    asyncio.run(main(parser.parse_args()))
