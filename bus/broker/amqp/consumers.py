"""Consuming and publishing on a robust channel's underlying aiormq channel.

A consumer there is restored after every reopen; a publish there skips building an
``aio_pika.Message``.

aio-pika's ``Queue.consume`` turns each delivery into an ``aio_pika.IncomingMessage`` (its
properties copied into attributes, its ack/nack helpers) before the callback runs; the bus
reads five properties and the body. :class:`RawConsumer` registers a plain callback that
gets aiormq's ``DeliveredMessage`` instead (``python -m bench.amqp_cost``: the round trip's
CPU on the two sides, README "Cuts for issue 14").

What aio-pika did for its own consumers is done here: after the robust channel reopens
(a reconnect, a failover to another node, a channel renewed after a nack) its queues are
re-declared by aio-pika, then :meth:`RawConsumer._on_reopen` — a ``reopen_callbacks`` entry,
run after that restore — registers the consumer again under the same tag and tells the
owner (``on_registered``: the broker reports ready only then). A registration that fails
is tried again every :data:`RETRY_S` while the channel is open. A consumer the broker
cancels (its queue deleted) is registered again at once; if the queue is gone the channel
closes and its reopen restores queue and consumer. The tag is fixed (``lgsp.<random>``) so
the link check (:mod:`bus.broker.amqp.linkcheck`) can see whether it is still registered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aio_pika
import aiormq
import structlog
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

__all__ = ["Delivery", "InFlight", "RawConsumer", "publish", "quietly"]

log = structlog.get_logger("bus.broker.amqp.consumers")

RETRY_S = 1.0
"""Seconds between two attempts to register a consumer again after a reopen."""

Delivery = DeliveredMessage
"""What a :class:`RawConsumer`'s callback gets: ``.body``, ``.header.properties``,
``.delivery_tag`` and ``.channel`` (the aiormq channel it came on: ack there)."""


class InFlight:
    """The message handlers of one consumer still running; ``drained`` is set while there
    are none (a stopping consumer cancels, then waits for it, then closes its channel)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.drained = asyncio.Event()
        self.drained.set()

    async def run(self, work: Awaitable[None]) -> None:
        """Await ``work`` as one handler in flight (the current task)."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.drained.clear()
        try:
            await work
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self.drained.set()


class RawConsumer:
    """``callback`` for every message of ``queue`` on ``channel``, across reopens."""

    def __init__(
        self,
        channel: aio_pika.RobustChannel,
        queue: str,
        callback: Callable[[Delivery], Coroutine[Any, Any, None]],
        *,
        no_ack: bool,
        on_registered: Callable[[], None] | None = None,
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._callback = callback
        self._no_ack = no_ack
        self._on_registered = on_registered
        self.tag = f"lgsp.{uuid.uuid4().hex}"
        self._active = False
        self._again: asyncio.Future[Any] | None = None

    async def start(self) -> None:
        """Register now, and again after every reopen of the channel, until :meth:`cancel`."""
        self._active = True
        self._channel.reopen_callbacks.add(self._on_reopen)
        await self._register()

    async def cancel(self) -> None:
        """Stop the deliveries (``basic.cancel``); no more re-registration."""
        self._active = False
        self._channel.reopen_callbacks.discard(self._on_reopen)
        if self._again is not None:
            self._again.cancel()
        if self._channel.is_closed:
            return
        underlay = await self._channel.get_underlay_channel()
        if self.tag in getattr(underlay, "consumers", {}):
            await underlay.basic_cancel(self.tag)

    async def _register(self) -> None:
        underlay = await self._channel.get_underlay_channel()
        assert isinstance(underlay, aiormq.Channel)
        if self.tag in underlay.consumers:
            return
        underlay.on_consumer_cancel_callbacks.add(self._on_cancelled)
        await underlay.basic_consume(
            self._queue, self._callback, no_ack=self._no_ack, consumer_tag=self.tag
        )

    async def _on_reopen(self, *_: Any) -> None:
        # aio-pika swallows a reopen callback's exception: a failed registration (a quorum
        # queue still electing its leader after a node loss) is retried here, apart.
        if self._active and await self._register_quietly():
            self._registered()
        elif self._active:
            self._again = asyncio.ensure_future(self._retry())

    async def _retry(self) -> None:
        while self._active and not self._channel.is_closed:
            await asyncio.sleep(RETRY_S)
            if self._active and await self._register_quietly():
                self._registered()
                return
        # Closed: the channel's next reopen registers the consumer again.

    def _registered(self) -> None:
        if self._on_registered is not None:
            self._on_registered()

    def _on_cancelled(self, frame: Basic.Cancel) -> None:
        if frame.consumer_tag != self.tag or not self._active:
            return
        log.warning("broker.consumer_cancelled", queue=self._queue)
        # Not from inside the channel's reader, which delivers this frame. If the queue is
        # gone the channel closes, and its reopen restores queue and consumer.
        self._again = asyncio.ensure_future(self._register_quietly())

    async def _register_quietly(self) -> bool:
        try:
            async with asyncio.timeout(RETRY_S * 5):
                await self._register()
        except (TimeoutError, aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            log.warning("broker.consumer_restore_failed", queue=self._queue, error=repr(exc))
            return False
        return True


async def publish(
    channel: aio_pika.abc.AbstractRobustChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: Basic.Properties,
    *,
    mandatory: bool = False,
) -> None:
    """``Exchange.publish`` without building an ``aio_pika.Message`` (≈ 14 µs a message,
    ``bench``): the same frames on the robust channel's current underlying channel, the same
    confirm, return (``PublishError``) and nack (``DeliveryError``) handling."""
    if channel.is_closed:
        raise aio_pika.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=mandatory
    )


async def quietly(action: Awaitable[Any]) -> None:
    """Ack/nack on a channel that may have closed meanwhile (the broker requeues then)."""
    try:
        await action
    except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
        log.warning("broker.ack_failed", error=repr(exc))
