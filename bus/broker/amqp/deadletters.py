"""The DLQ on RabbitMQ (aio-pika): dead-lettering with our headers, and holding dead
letters for ``lgsp-bus dlq`` (see :mod:`bus.broker.deadletters` for what they mean).

A dead letter is *copied* to ``lgsp.dlx`` with headers saying why (publisher-confirmed on
the consumer's channel), then the original is acked; RabbitMQ's own dead-lettering
(``reject`` without requeue, with ``x-death`` only) is the fallback if the copy fails.
Dead letters are held with ``basic.get`` without ack on a channel of their own; closing
that channel returns those not acked, in order, to the DLQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from bus.broker.base import DLX, dlq_name
from bus.broker.deadletters import (
    ClaimedLetter,
    Keyring,
    dead_letter_from,
    dead_letter_headers,
    opened,
    seal_letter,
)
from bus.errors import BrokerUnavailable

__all__ = ["claim_dead_letters", "copy_to_dlq", "purge_dead_letters"]

log = structlog.get_logger("bus.broker.amqp.broker")

_CHANNEL_ERRORS = (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError)


async def _quietly(action: Any) -> None:
    try:
        await action
    except _CHANNEL_ERRORS as exc:
        log.warning("broker.ack_failed", error=repr(exc))


async def copy_to_dlq(
    channel: AbstractRobustChannel,
    service: str,
    message: AbstractIncomingMessage,
    reason: str,
    error: str,
    attempts: int,
    keyring: Keyring | None = None,
) -> None:
    """Dead-letter ``message`` with why (``x-lgsp-dead-*`` headers), sealed under
    ``keyring`` (if given), then ack it."""
    headers = dead_letter_headers(message.headers or {}, reason, error, attempts)
    headers, body = seal_letter(keyring, service, headers, message.body)
    copy = aio_pika.Message(
        body,
        headers=headers,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    try:
        async with asyncio.timeout(5):
            dlx = await channel.get_exchange(DLX, ensure=False)
            await dlx.publish(copy, routing_key=service)
    except (TimeoutError, *_CHANNEL_ERRORS) as exc:
        log.warning("broker.dead_letter_copy_failed", service=service, error=repr(exc))
        await _quietly(message.reject(requeue=False))  # → lgsp.dlx with x-death only
    else:
        await _quietly(message.ack())
    log.warning("broker.dead_lettered", service=service, reason=reason, attempts=attempts)


@asynccontextmanager
async def _dlq(
    connection: AbstractRobustConnection | None, service: str
) -> AsyncIterator[AbstractQueue]:
    if connection is None:
        raise BrokerUnavailable("broker is not connected")
    channel = await connection.channel(publisher_confirms=False)
    try:
        try:
            # robust=False: an operator's passing look must not join the reconnect set.
            yield await channel.declare_queue(dlq_name(service), passive=True, robust=False)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise BrokerUnavailable(f"no DLQ for {service}", code="NO_ROUTE") from exc
    finally:
        await _quietly(channel.close())


@asynccontextmanager
async def claim_dead_letters(
    connection: AbstractRobustConnection | None,
    service: str,
    limit: int,
    keyring: Keyring | None = None,
) -> AsyncIterator[list[ClaimedLetter]]:
    """Hold up to ``limit`` dead letters of ``service``, oldest first (opened under
    ``keyring``: see :func:`~bus.broker.deadletters.opened`)."""
    async with _dlq(connection, service) as queue:
        held: list[ClaimedLetter] = []
        while len(held) < limit:
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            letter = dead_letter_from(
                service, message.body, dict(message.headers or {}), message.correlation_id
            )
            held.append(ClaimedLetter(opened(keyring, letter), message.ack))
        yield held


async def purge_dead_letters(connection: AbstractRobustConnection | None, service: str) -> int:
    """Delete every dead letter of ``service``; returns how many."""
    async with _dlq(connection, service) as queue:
        result = await queue.purge()
        return int(result.message_count or 0)
