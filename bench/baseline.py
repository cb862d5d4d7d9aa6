"""Baseline A: the least a bus on RabbitMQ can do, written here in two small processes.

``python -m bench.baseline gateway``: an aiohttp handler publishes the request body to a
topic exchange — persistent, ``mandatory``, publisher-confirmed, expiring at the deadline,
``reply_to`` direct reply-to — and answers with the reply. ``python -m bench.baseline
consumer``: consumes the quorum queue with the bus's queue arguments and prefetch, turns the
civil-status lookup into the MOJ query, GETs the simulator with aiohttp, replies, then acks.
The same broker, exchange type, queue type and arguments, message properties and channel
settings as ``bus/broker/amqp.py``; no auth, ACL, validation, mapping, audit, metrics or
logging — that difference is what the bus's ratio to this baseline measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiohttp
import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from bus.broker.base import QueueSpec, queue_arguments

__all__ = ["main", "moj_query"]

EXCHANGE = "bench.requests"
DLX = "lgsp.dlx"
REPLY_TO = "amq.rabbitmq.reply-to"
SERVICE = "bench-baseline"
ROUTING_KEY = f"{SERVICE}.lookup"
_PATHS = {"BIRTH": "khaisinh", "MARRIAGE": "kethon", "DEATH": "khaitu"}
TOKEN_ENV = "LGSP_SIM_CIVIL_STATUS_TOKEN"  # noqa: S105 - a variable name


def moj_query(request: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A canonical ``by_registration`` lookup → (MOJ path, query parameters)."""
    reg = request["by_registration"]
    params = {"noiDangKy": reg["authority_code"], "so": reg["number"]}
    if reg.get("book"):
        params["quyenSo"] = reg["book"]
    if reg.get("registration_date"):
        year, month, day = reg["registration_date"].split("-")
        params["ngayDangKy"] = f"{day}/{month}/{year}"
    return f"/api/hotich/{_PATHS[request['record_type']]}", params


async def _connect(url: str) -> aio_pika.abc.AbstractRobustConnection:
    return await aio_pika.connect_robust(
        url, client_properties={"connection_name": "bench-baseline"}, timeout=10
    )


async def _declare(channel: aio_pika.abc.AbstractChannel, spec: QueueSpec) -> Any:
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(
        f"bench.svc.{SERVICE}", durable=True, arguments=queue_arguments(spec)
    )
    await queue.bind(EXCHANGE, routing_key=f"{SERVICE}.*")
    return exchange


async def gateway(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve ``POST /lookup`` (and ``GET /healthz``) until ``stop``."""
    connection = await _connect(args.amqp)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await _declare(channel, QueueSpec(SERVICE, max_length=args.max_length))
    pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message)

    replies = await channel.declare_queue(REPLY_TO, passive=True)
    await replies.consume(on_reply, no_ack=True)

    async def lookup(request: web.Request) -> web.Response:
        body = await request.read()
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        pending[correlation_id] = future
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=correlation_id,
            message_id=correlation_id,
            reply_to=REPLY_TO,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=args.timeout_s,
            timestamp=int(time.time()),
        )
        try:
            async with asyncio.timeout(args.timeout_s):
                await exchange.publish(message, ROUTING_KEY, mandatory=True)
                reply = await future
        except TimeoutError:
            return web.json_response({"error": "timeout"}, status=504)
        finally:
            pending.pop(correlation_id, None)
        status = int(str((reply.headers or {}).get("status", 200)))
        return web.Response(body=reply.body, status=status, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/lookup", lookup)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await connection.close()


async def consumer(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Consume the baseline queue until ``stop``."""
    connection = await _connect(args.amqp)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=args.prefetch)
    await _declare(channel, QueueSpec(SERVICE, max_length=args.max_length))
    queue = await channel.declare_queue(f"bench.svc.{SERVICE}", passive=True)
    # The token comes from the environment, like the bus's, so it is not on a command line.
    headers = {"Authorization": f"Bearer {os.environ.get(TOKEN_ENV, '')}"}
    connector = aiohttp.TCPConnector(limit=args.max_connections)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def on_message(message: AbstractIncomingMessage) -> None:
        status = 502
        payload = b'{"error": "upstream"}'
        try:
            path, params = moj_query(orjson.loads(message.body))
            async with session.get(args.upstream + path, params=params, headers=headers) as r:
                payload, status = await r.read(), r.status
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            pass
        if message.reply_to:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    payload,
                    correlation_id=message.correlation_id,
                    content_type="application/json",
                    headers={"status": status},
                ),
                routing_key=message.reply_to,
            )
        await message.ack()

    await queue.consume(on_message)
    try:
        await stop.wait()
    finally:
        await session.close()
        await connection.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("role", choices=["gateway", "consumer"])
    parser.add_argument("--amqp", required=True, help="AMQP URL (vhost of the run)")
    parser.add_argument("--port", type=int, default=0, help="gateway: HTTP port")
    parser.add_argument("--upstream", default="", help="consumer: simulator base URL")
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=10_000)
    parser.add_argument("--timeout-s", type=float, default=10.0)
    return parser


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    role = gateway if args.role == "gateway" else consumer
    await role(args, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.baseline gateway|consumer …``."""
    args = _parser().parse_args(argv)
    args.upstream = args.upstream.rstrip("/")
    try:
        import uvloop  # the bus runs on uvloop when it is installed: so does the baseline
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
