"""CPU cost of one request-reply round trip over RabbitMQ: the bus's broker path and variants.

Run: ``.venv/bin/python -m bench.amqp_cost [--url amqp://…] [--requests 5000] [--rounds 2]``.
The requester (the gateway side) runs in this process, the consumer (the worker side) in a
child process (``python -m bench.amqp_cost worker …``), 16 requests in flight, a
reply-sized answer, on a vhost of its own (:mod:`bench.rabbit`). Per round trip it prints the
requester's CPU (``time.process_time``), the worker's and RabbitMQ's (``beam.smp`` from
/proc, when visible) in µs, and the rate.

Rows:

* ``bus``: :class:`bus.broker.amqp.broker.AmqpBroker` on both sides, as configured by
  default (one node), an echo handler — the real code, envelopes encoded and decoded;
* ``<gateway> / <worker>``: the same frames (topic exchange, persistent, mandatory,
  confirmed request with expiration and headers; an unconfirmed reply on a channel of its
  own, then the ack) written against aio-pika directly, to compare the ways to do them:
  gateway ``pika-direct`` (the reply consumer through aio-pika's queue, ``IncomingMessage``
  per reply, direct reply-to), ``pika-named`` (the same on a named exclusive reply queue),
  ``raw-direct``/``raw-named`` (the reply consumer registered on the underlying aiormq
  channel with a plain callback); worker ``pika`` (the request consumer through aio-pika,
  ``IncomingMessage`` and ``message.ack()``) or ``raw`` (``basic_consume`` with a plain
  callback, ``basic_ack`` on the delivering channel).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from bench.procstat import cpu_seconds, find_process
from bench.rabbit import BenchVhost
from bus.broker.amqp.broker import AmqpBroker
from bus.broker.base import QueueSpec, queue_arguments, queue_name
from bus.envelope import Reply, Request, encode_request

IN_FLIGHT = 16
EXCHANGE = "bench.amqp"
REPLY_TO = "amq.rabbitmq.reply-to"
REPLY = b'{"record_type":"BIRTH","found":true,"records":[]}' * 8
BODY = {"record_type": "BIRTH", "by_registration": {"authority_code": "HN-001", "number": "12"}}
GATEWAYS = ("pika-direct", "pika-named", "raw-direct", "raw-named")
WORKERS = ("pika", "raw")


def _request(service: str) -> Request:
    return Request(
        request_id=uuid.uuid4().hex,
        service=service,
        operation="lookup",
        consumer="bench",
        correlation_id=uuid.uuid4().hex,
        deadline=time.time() + 30,
        body=BODY,
    )


async def _echo(req: Request) -> Reply:
    return Reply(req.request_id, req.correlation_id, body={"echo": req.body})


# -- the worker side (a child process) ----------------------------------------------------


async def _worker(url: str, mode: str, service: str) -> None:
    if mode == "bus":
        broker = AmqpBroker(url, name="bench-worker")
        await broker.connect()
        stop = asyncio.Event()
        serving = asyncio.ensure_future(broker.serve(service, _echo, prefetch=32, stop=stop))
        await asyncio.sleep(0.5)
        await _ready_until_stdin_closes()
        stop.set()
        await serving
        await broker.aclose()
        return
    connection = await aio_pika.connect_robust(url)
    replies = await (await connection.channel(publisher_confirms=False)).get_underlay_channel()
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=32)
    queue = await channel.declare_queue(queue_name(service), passive=True)

    def props(correlation_id: str | None) -> Basic.Properties:
        return Basic.Properties(
            content_type="application/json", delivery_mode=1, correlation_id=correlation_id
        )

    async def on_message(message: AbstractIncomingMessage) -> None:
        await replies.basic_publish(
            REPLY,
            exchange="",
            routing_key=message.reply_to or "",
            properties=props(message.correlation_id),
        )
        await message.ack()

    async def on_delivery(message: DeliveredMessage) -> None:
        p = message.header.properties
        await replies.basic_publish(
            REPLY, exchange="", routing_key=p.reply_to or "", properties=props(p.correlation_id)
        )
        await message.channel.basic_ack(message.delivery_tag or 0)

    if mode == "pika":
        await queue.consume(on_message)
    else:
        await (await channel.get_underlay_channel()).basic_consume(queue.name, on_delivery)
    await _ready_until_stdin_closes()
    await connection.close()


async def _ready_until_stdin_closes() -> None:
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- the gateway side ---------------------------------------------------------------------


async def _gateway(url: str, mode: str, service: str) -> tuple[Callable[[], Awaitable[None]], Any]:
    """A function making one round trip, and the connection to close after."""
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    underlay = await channel.get_underlay_channel()
    pending: dict[str, asyncio.Future[bytes]] = {}
    if mode.endswith("named"):
        queue = await channel.declare_queue(
            f"bench.reply.{uuid.uuid4().hex}",
            exclusive=True,
            auto_delete=True,
            arguments={"x-queue-type": "classic"},
        )
    else:
        queue = await channel.declare_queue(REPLY_TO, passive=True)

    def settle(correlation_id: str | None, body: bytes) -> None:
        future = pending.get(correlation_id or "")
        if future is not None and not future.done():
            future.set_result(body)

    async def on_reply(message: AbstractIncomingMessage) -> None:
        settle(message.correlation_id, message.body)

    async def on_delivery(message: DeliveredMessage) -> None:
        settle(message.header.properties.correlation_id, message.body)

    if mode.startswith("pika"):
        await queue.consume(on_reply, no_ack=True)
    else:
        await underlay.basic_consume(queue.name, on_delivery, no_ack=True)
    reply_to = queue.name

    async def one() -> None:
        req = _request(service)
        body, headers = encode_request(req)
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        pending[correlation_id] = future
        properties = Basic.Properties(
            content_type="application/json",
            headers=dict(headers),
            delivery_mode=2,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration="30000",
            message_id=req.request_id,
        )
        try:
            await underlay.basic_publish(
                body,
                exchange=EXCHANGE,
                routing_key=req.routing_key,
                properties=properties,
                mandatory=True,
            )
            await future
        finally:
            pending.pop(correlation_id, None)

    return one, connection


async def _bus_gateway(url: str, service: str) -> tuple[Callable[[], Awaitable[None]], Any]:
    broker = AmqpBroker(url, name="bench-gateway")
    await broker.connect()

    async def one() -> None:
        reply = await broker.request(_request(service))
        assert reply.ok

    class Closer:
        async def close(self) -> None:
            await broker.aclose()

    return one, Closer()


# -- measuring ----------------------------------------------------------------------------


async def _measure(one: Callable[[], Awaitable[None]], requests: int, worker_pid: int) -> str:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def bounded() -> None:
        async with slots:
            await one()

    await asyncio.gather(*(bounded() for _ in range(200)))  # warm-up
    beam = find_process("beam.smp")
    beam0 = cpu_seconds(beam) if beam is not None else None
    worker0 = cpu_seconds(worker_pid) or 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(requests)))
    cpu1, wall1 = time.process_time(), time.perf_counter()
    worker1 = cpu_seconds(worker_pid) or 0.0
    beam1 = cpu_seconds(beam) if beam is not None else None
    rabbit = "—" if beam0 is None or beam1 is None else f"{1e6 * (beam1 - beam0) / requests:6.1f}"
    gateway, worker = 1e6 * (cpu1 - cpu0) / requests, 1e6 * (worker1 - worker0) / requests
    return (
        f"gateway {gateway:6.1f}  worker {worker:6.1f}  both {gateway + worker:6.1f} µs"
        f"  RabbitMQ {rabbit} µs  {requests / (wall1 - wall0):6.0f} req/s"
    )


async def _with_worker(url: str, mode: str, service: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.amqp_cost",
        "worker",
        "--url",
        url,
        "--mode",
        mode,
        "--service",
        service,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"ready":
        raise RuntimeError(f"worker {mode} did not start")
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 30)


async def _row(url: str, worker: str, gateway: str, service: str, requests: int) -> None:
    proc = await _with_worker(url, worker, service)
    try:
        if worker == "bus":
            one, closer = await _bus_gateway(url, service)
        else:
            one, closer = await _gateway(url, gateway, service)
        try:
            line = await _measure(one, requests, proc.pid)
        finally:
            await closer.close()
    finally:
        await _stop(proc)
    name = "bus" if worker == "bus" else f"{gateway} / {worker}"
    print(f"{name:20s} {line}", flush=True)


async def _main(requests: int, rounds: int, only: str | None) -> None:
    vhost = BenchVhost()
    await vhost.create()
    try:
        service = "bench-amqp"
        spec = QueueSpec(service)
        broker = AmqpBroker(vhost.url, name="bench-declare")  # the bus's topology and policies
        await broker.connect()
        await broker.declare([spec])
        await broker.aclose()
        connection = await aio_pika.connect(vhost.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                queue_name(service), durable=True, arguments=queue_arguments(spec)
            )
            await queue.bind(exchange, routing_key=f"{service}.*")
        rows = [("bus", "")] + [(w, g) for w in WORKERS for g in GATEWAYS]
        for _ in range(rounds):
            for worker, gateway in rows:
                if only is None or only in f"{gateway} / {worker}":
                    await _row(vhost.url, worker, gateway, service, requests)
    finally:
        await vhost.delete()


def main() -> None:
    """Parse arguments; run the rounds (or, as ``worker``, one worker side)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="run", choices=("run", "worker"))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="rows whose name contains this (e.g. bus, raw)")
    parser.add_argument("--url", help="worker only: the vhost's URL")
    parser.add_argument("--mode", choices=("bus", *WORKERS), help="worker only")
    parser.add_argument("--service", help="worker only")
    args = parser.parse_args()
    if args.role == "worker":
        # stdout is the "ready" line to the parent; the bus's log lines go to stderr.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
        main_coro: Awaitable[None] = _worker(args.url, args.mode, args.service)
    else:
        main_coro = _main(args.requests, args.rounds, args.only)
    try:  # the bus runs on uvloop when it is installed: so does this
        import uvloop
    except ImportError:
        asyncio.run(main_coro)  # type: ignore[arg-type]
    else:
        uvloop.run(main_coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
