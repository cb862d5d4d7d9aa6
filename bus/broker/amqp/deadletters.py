"""The DLQ on RabbitMQ (aio-pika): dead-lettering with our headers, and holding dead
letters for ``lgsp-bus dlq`` (see :mod:`bus.broker.deadletters` for what they mean).

A dead letter is *copied* to ``lgsp.dlx`` with headers saying why (publisher-confirmed on
the consumer's channel), then the original is acked; RabbitMQ's own dead-lettering
(``reject`` without requeue, with ``x-death`` only) is the fallback if the copy fails.
Dead letters are held with ``basic.get`` without ack on a channel of their own; those not
acked are put back unchanged, in order (a confirmed copy, then the original acked), so a
look (``dlq list``/``show``) never counts a delivery on the quorum DLQ.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
    MAX_SCAN,
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
DELIVERY_COUNT = "x-delivery-count"
EXPIRES_AT = "x-lgsp-dlq-expires-at"
"""Epoch ms when a dead letter put back after a look expires (its first ``dlq_ttl_s``)."""


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
    connection: AbstractRobustConnection | None, service: str, *, confirms: bool = False
) -> AsyncIterator[tuple[AbstractRobustChannel, AbstractQueue]]:
    if connection is None:
        raise BrokerUnavailable("broker is not connected")
    channel = await connection.channel(publisher_confirms=confirms)
    try:
        try:
            # robust=False: an operator's passing look must not join the reconnect set.
            queue = await channel.declare_queue(dlq_name(service), passive=True, robust=False)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise BrokerUnavailable(f"no DLQ for {service}", code="NO_ROUTE") from exc
        yield channel, queue
    finally:
        await _quietly(channel.close())


def _as_dead(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The headers of a held letter as it was dead-lettered (no DLQ bookkeeping)."""
    headers = dict(message.headers or {})
    headers.pop(EXPIRES_AT, None)
    if message.redelivered:
        headers.pop(DELIVERY_COUNT, None)  # the DLQ's count of holds, not the original's
    return headers


def _unchanged_copy(
    message: AbstractIncomingMessage, letter: ClaimedLetter, ttl_s: float | None
) -> aio_pika.Message:
    """The dead letter as it was: its headers without the DLQ's own delivery count (a
    count the DLQ added on holding it again), and the rest of its time in the DLQ."""
    headers = dict(message.headers or {})
    if message.redelivered:
        headers.pop(DELIVERY_COUNT, None)  # the DLQ's count of holds, not the original's
    expires = headers.get(EXPIRES_AT)
    dead_at = letter.letter.dead_at
    if not isinstance(expires, int) and ttl_s is not None and dead_at is not None:
        expires = headers[EXPIRES_AT] = int((dead_at + ttl_s) * 1000)
    expiration = None
    if isinstance(expires, int):
        expiration = max(1, expires - int(time.time() * 1000)) / 1000
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        reply_to=message.reply_to,
        expiration=expiration,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


@asynccontextmanager
async def claim_dead_letters(
    connection: AbstractRobustConnection | None,
    service: str,
    limit: int,
    keyring: Keyring | None = None,
    ttl_s: float | None = None,
) -> AsyncIterator[list[ClaimedLetter]]:
    """Hold up to ``limit`` dead letters of ``service``, oldest first (opened under
    ``keyring``: see :func:`~bus.broker.deadletters.opened`).

    Those not acked are put back unchanged at the end: every letter held (up to
    :data:`MAX_SCAN`, so the DLQ keeps its order) is published again, in order and
    confirmed, then the original acked. Returning them instead (closing the channel) would
    count a delivery each time on the quorum DLQ: ``x-delivery-count`` would grow with every
    look (and RabbitMQ 4 drops a message delivered 20 times). ``ttl_s``: ``dlq_ttl_s``, so a
    letter put back keeps its expiry (``x-lgsp-dlq-expires-at``) instead of a new one."""
    async with _dlq(connection, service, confirms=True) as (channel, queue):
        held: list[tuple[AbstractIncomingMessage, ClaimedLetter]] = []
        acked: set[int] = set()
        while len(held) < MAX_SCAN:
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            letter = dead_letter_from(
                service, message.body, _as_dead(message), message.correlation_id
            )
            held.append(
                (message, ClaimedLetter(opened(keyring, letter), _acker(message, len(held), acked)))
            )
        try:
            yield [claimed for _, claimed in held[:limit]]
        finally:
            back = [(m, c) for i, (m, c) in enumerate(held) if i not in acked]
            await _put_back(channel, service, back, ttl_s)


def _acker(
    message: AbstractIncomingMessage, index: int, acked: set[int]
) -> Callable[[], Awaitable[None]]:
    async def ack() -> None:
        await message.ack()
        acked.add(index)

    return ack


async def _put_back(
    channel: AbstractRobustChannel,
    service: str,
    held: list[tuple[AbstractIncomingMessage, ClaimedLetter]],
    ttl_s: float | None,
) -> None:
    """Publish an unchanged copy of each held letter (in order, confirmed), then ack the
    originals; if that fails, closing the channel returns the rest (counted, not lost)."""
    if not held:
        return
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        _unchanged_copy(m, c, ttl_s), routing_key=dlq_name(service)
                    )
                    for m, c in held
                )
            )
    except (TimeoutError, *_CHANNEL_ERRORS) as exc:
        log.warning("broker.dead_letters_put_back_failed", service=service, error=repr(exc))
        return
    for message, _ in held:
        await _quietly(message.ack())


async def purge_dead_letters(connection: AbstractRobustConnection | None, service: str) -> int:
    """Delete every dead letter of ``service``; returns how many."""
    async with _dlq(connection, service) as (_, queue):
        result = await queue.purge()
        return int(result.message_count or 0)
