"""CPU cost of a publisher confirm per message, on the client and on RabbitMQ.

Run: ``.venv/bin/python bench/confirm_cost.py [--url amqp://…] [--messages 20000]``.
Publishes a reply-sized message to a server-named exclusive queue (``x-max-length`` 10, so
nothing piles up) with 16 in flight, in alternating rounds with and without publisher
confirms, and prints per message the client's CPU (this process, uvloop when installed),
RabbitMQ's CPU (``beam.smp`` from /proc, when visible) and the rate. Why: the worker sends
its replies without confirms (``bus/broker/amqp/serving.py``, ``_reply_and_ack``); this is what
that saves.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aio_pika
from pamqp.commands import Basic

from bench.procstat import cpu_seconds, find_process

IN_FLIGHT = 16
BODY = b'{"record_type":"BIRTH","found":true,"records":[]}' * 8


async def _round(url: str, messages: int, confirms: bool) -> dict[str, float | None]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=confirms)
        queue = await channel.declare_queue("", exclusive=True, arguments={"x-max-length": 10})
        underlay = await channel.get_underlay_channel()
        properties = Basic.Properties(
            content_type="application/json", delivery_mode=1, correlation_id="c" * 32
        )
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one() -> None:
            async with slots:
                await underlay.basic_publish(
                    BODY, exchange="", routing_key=queue.name, properties=properties
                )

        beam = find_process("beam.smp")
        beam0 = cpu_seconds(beam) if beam is not None else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(messages)))
        cpu1, wall1 = time.process_time(), time.perf_counter()
        beam1 = cpu_seconds(beam) if beam is not None else None
    finally:
        await connection.close()
    rabbit = None if beam0 is None or beam1 is None else 1e6 * (beam1 - beam0) / messages
    return {
        "client_us": 1e6 * (cpu1 - cpu0) / messages,
        "rabbit_us": rabbit,
        "per_s": messages / (wall1 - wall0),
    }


async def _main(url: str, messages: int, rounds: int) -> None:
    for _ in range(rounds):
        for confirms in (True, False):
            r = await _round(url, messages, confirms)
            rabbit = "—" if r["rabbit_us"] is None else f"{r['rabbit_us']:.1f}"
            print(
                f"confirms={'on ' if confirms else 'off'}  client {r['client_us']:6.1f} µs/msg"
                f"  RabbitMQ {rabbit} µs/msg  {r['per_s']:8.0f} msg/s"
            )


def main() -> None:
    """Parse arguments and run the rounds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    try:  # the bus runs on uvloop when it is installed: so does this
        import uvloop
    except ImportError:
        asyncio.run(_main(args.url, args.messages, args.rounds))
    else:
        uvloop.run(_main(args.url, args.messages, args.rounds))


if __name__ == "__main__":
    main()
