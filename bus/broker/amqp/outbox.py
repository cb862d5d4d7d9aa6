"""One-way traffic on RabbitMQ (see :mod:`bus.broker.outbox` for the topology): declaring
the outbox queues, and consuming one with a delivery handler.

Outbox queues are quorum queues without ``x-delivery-limit`` (attempts are counted by the
delivery policy in the store); ordered ones have ``x-single-active-consumer`` (one
consumer across every worker process, the others stand by) and are consumed with
prefetch 1. A message is never ``nack``-ed back (RabbitMQ 3.10's quorum queues put a
requeued message at the *back*, behind later messages of its key): a message the handler
releases (``requeue``: the worker is stopping) or a handler that keeps raising leaves it
unacknowledged, and closing the channel returns it to the *head* of its queue — as a
worker that dies does. A message held between attempts longer than RabbitMQ's
``consumer_timeout`` (30 min by default) makes RabbitMQ close the channel: it returns to
the head too, the robust channel reopens and the next attempt follows the stored
schedule (``deploy/rabbitmq`` raises the timeout so this is rare).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from bus.broker.amqp.consumers import InFlight
from bus.broker.amqp.deadletters import copy_to_dlq
from bus.broker.base import DLX, BrokerRecorder, dlq_name
from bus.broker.outbox import (
    EVENTS_EXCHANGE,
    SENDS_EXCHANGE,
    Delivery,
    DeliveryHandler,
    Disposition,
    OutboxSpec,
    outbox_queue,
)
from bus.errors import BrokerUnavailable

__all__ = ["consume_outbox", "declare_outbox", "outbox_arguments"]

log = structlog.get_logger("bus.broker.amqp.outbox")

_ERRORS = (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError)
HANDLER_RETRY_S = 1.0


def outbox_arguments(spec: OutboxSpec) -> dict[str, Any]:
    """Arguments of an outbox queue."""
    args: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-max-length": spec.max_length,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": spec.key,
    }
    if spec.ordered:
        args["x-single-active-consumer"] = True
    return args


async def declare_outbox(channel: AbstractRobustChannel, specs: Sequence[OutboxSpec]) -> None:
    """Exchanges, queues, bindings and DLQs of ``specs`` (idempotent)."""
    await channel.declare_exchange(SENDS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    for spec in specs:
        dlq = await channel.declare_queue(
            dlq_name(spec.key),
            durable=True,
            arguments={"x-queue-type": "quorum", "x-message-ttl": spec.dlq_ttl_s * 1000},
        )
        await dlq.bind(DLX, routing_key=spec.key)
        queue = await channel.declare_queue(
            outbox_queue(spec.key), durable=True, arguments=outbox_arguments(spec)
        )
        for exchange, routing_key in spec.bindings:
            await queue.bind(exchange, routing_key=routing_key)


async def consume_outbox(
    connection: AbstractRobustConnection,
    key: str,
    handler: DeliveryHandler,
    *,
    prefetch: int,
    stop: asyncio.Event,
    recorder: BrokerRecorder,
) -> None:
    """Consume outbox ``key`` on a channel of its own until ``stop``, then drain."""
    channel = await connection.channel(publisher_confirms=True)  # DLQ copies are confirmed
    assert isinstance(channel, aio_pika.RobustChannel)
    try:
        queue = await channel.declare_queue(outbox_queue(key), passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise BrokerUnavailable(f"no outbox queue {key}", code="NO_ROUTE") from exc
    await channel.set_qos(prefetch_count=prefetch)
    in_flight = InFlight()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await in_flight.run(_hand_over(channel, key, message, handler, recorder, stop))

    tag = await queue.consume(on_message)
    log.info("broker.outbox_consuming", key=key)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(TimeoutError, *_ERRORS):
            await asyncio.wait_for(queue.cancel(tag), timeout=5)
        try:
            await in_flight.drained.wait()
        finally:
            await channel.close()  # unacknowledged deliveries return to the queue


async def _hand_over(
    channel: AbstractRobustChannel,
    key: str,
    message: AbstractIncomingMessage,
    handler: DeliveryHandler,
    recorder: BrokerRecorder,
    stop: asyncio.Event,
) -> None:
    headers = dict(message.headers or {})
    delivery = Delivery(
        key, message.body, headers, message.message_id or "", bool(message.redelivered)
    )
    disposition = await _handled(key, delivery, handler, stop)
    if disposition is None or disposition.action == "requeue":
        return  # left unacknowledged: back at the head of its queue when the channel closes
    if disposition.action == "ack":
        await _quietly(message.ack())
    else:
        attempts = headers.get("x-delivery-count")
        count = attempts + 1 if isinstance(attempts, int) else 1
        await copy_to_dlq(channel, key, message, disposition.reason, disposition.error, count)
        recorder.dead_lettered(key, disposition.reason)


async def _handled(
    key: str, delivery: Delivery, handler: DeliveryHandler, stop: asyncio.Event
) -> Disposition | None:
    """The handler's answer; a handler that raises is asked again (after a pause) until
    ``stop`` — never nacked, which would send the message to the back of its queue."""
    while True:
        try:
            return await handler(delivery)
        except Exception as exc:
            log.error("broker.delivery_handler_failed", key=key, error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HANDLER_RETRY_S)
        if stop.is_set():
            return None


async def _quietly(action: Any) -> None:
    try:
        await action
    except _ERRORS as exc:
        log.warning("broker.ack_failed", error=repr(exc))
