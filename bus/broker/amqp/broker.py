"""RabbitMQ broker over aio-pika: quorum queues, publisher confirms, replies, failover.

Topology (declared from ``routing.yaml``): topic exchange ``lgsp.requests``; per service a
durable quorum queue ``lgsp.svc.<service>`` bound to ``<service>.*``, dead-lettering to
``lgsp.dlx`` (direct), which routes to ``lgsp.dlq.<service>``. Queues are declared with
``x-queue-type`` and the dead-letter exchange and routing key only (fixed by the names);
the delivery limit, ``max-length`` + ``reject-publish`` and the DLQ's TTL are the
policies ``lgsp-work-queues`` and
``lgsp-dead-letter-queues``, applied through the management API
(:mod:`bus.broker.amqp.policies`), so a changed ``broker.*`` never conflicts with a queue.
The worker side — consuming, dead letters, reply and ack — is :mod:`bus.broker.amqp.serving`;
the policy's ``delivery-limit`` is the backstop and expires messages whose deadline passed
in the queue.

Requests are persistent, ``mandatory`` and confirmed, and carry the deadline as message
expiration. Replies come back over direct reply-to on the publishing channel; workers
send them on a channel of their own without publisher confirms. Both consumers — the
service consumers and the reply consumer — are registered on aio-pika's underlying aiormq
channels with plain callbacks (:mod:`bus.broker.amqp.consumers`: no ``IncomingMessage``
per message). The connection is robust: aio-pika re-declares the topology after the broker
comes back, then the consumers are registered again (and only then is the broker ready);
requests in flight when the channel dropped fail at once with ``BROKER_UNAVAILABLE``
(their replies can no longer arrive) instead of hanging until the deadline; those already
confirmed say ``detail.queued`` (a worker may still serve them).

Several URLs (``broker.urls``, or commas in ``LGSP_AMQP_URL``) are the nodes of one
cluster: the connection fails over between them (:mod:`bus.broker.amqp.failover`). There the
replies come back over an exclusive, auto-deleted queue ``lgsp.reply.<random>`` of this
connection instead of direct reply-to: RabbitMQ 3.10 closes a worker's whole connection
(``INTERNAL_ERROR``) when it replies to a direct reply-to address whose node has died —
which every redelivery after a node loss would do — while a reply to a queue that no
longer exists is simply dropped. The exclusive queue is re-declared on the new node when
the connection fails over (on one node it cost no more CPU than direct reply-to:
``python -m bench.amqp_cost``, README "Cuts for issue 14").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractRobustChannel,
    AbstractRobustExchange,
    AbstractRobustQueue,
)
from pamqp.commands import Basic

from bus.broker.amqp.consumers import Delivery, RawConsumer, publish, quietly
from bus.broker.amqp.deadletters import claim_dead_letters, purge_dead_letters
from bus.broker.amqp.failover import FailoverConnection, split_urls
from bus.broker.amqp.linkcheck import (
    CHECK_INTERVAL_S,
    CHECK_TIMEOUT_S,
    LinkDead,
    LinkWatchdog,
    with_heartbeat,
)
from bus.broker.amqp.outbox import consume_outbox, declare_outbox
from bus.broker.amqp.policies import apply_policies
from bus.broker.amqp.serving import Serving
from bus.broker.base import (
    DLX,
    NULL_RECORDER,
    REQUESTS_EXCHANGE,
    BrokerRecorder,
    Handler,
    QueueSpec,
    TopologyConflict,
    dlq_arguments,
    dlq_name,
    queue_arguments,
    queue_name,
    queue_policies,
)
from bus.broker.deadletters import MAX_SCAN, ClaimedLetter, Keyring
from bus.broker.outbox import PUBLISH_TIMEOUT_S, DeliveryHandler, OutboxSpec, outbox_queue
from bus.canonical import new_id
from bus.envelope import (
    DecodeError,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from bus.errors import BrokerUnavailable, DeadlineExceeded, Overloaded

__all__ = ["AmqpBroker"]

log = structlog.get_logger("bus.broker.amqp.broker")

REPLY_TO = "amq.rabbitmq.reply-to"
_PERSISTENT = 2
"""AMQP delivery mode of requests and messages (``aio_pika.DeliveryMode.PERSISTENT``)."""
_RENEW_EVERY_S = 1.0
"""At most one renewal of the publishing channel after nacks per this many seconds."""
_LAST_ERRORS = 1000
"""Handler errors remembered per message, for the dead letter's ``x-lgsp-last-error``."""


class AmqpBroker:
    """A :class:`~bus.broker.base.Broker` on RabbitMQ."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "lgsp-bus",
        recorder: BrokerRecorder = NULL_RECORDER,
        check_interval_s: float = CHECK_INTERVAL_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._urls = [with_heartbeat(u) for u in split_urls(url)]
        if not self._urls:
            raise ValueError("no AMQP URL given")
        self._reply_to = REPLY_TO if len(self._urls) == 1 else f"lgsp.reply.{uuid.uuid4().hex}"
        """Where workers send this process's replies: direct reply-to on one node; on a
        cluster an exclusive queue of this connection (see the module docstring)."""
        self._name = name
        self._recorder = recorder
        self._connection: FailoverConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._confirmed_ids: set[str] = set()
        """Correlation ids of the pending requests whose publish RabbitMQ confirmed."""
        self._specs: dict[str, QueueSpec] = {}
        self._reply_consumer_ready = False
        self._connect_lock = asyncio.Lock()
        self._serving = Serving(recorder)
        """The worker side (:mod:`bus.broker.amqp.serving`)."""
        self._replies: RawConsumer | None = None
        self._watchdog = LinkWatchdog(
            self._check_link,
            self._link_dead,
            interval_s=check_interval_s,
            timeout_s=check_timeout_s,
        )
        self._policies_for: QueueSpec | None = None
        """The settings whose policies this broker applied last (applied once per change)."""
        self._renewing: asyncio.Future[None] | None = None
        self._renewed_at = 0.0

    # -- connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, open the publishing channel and start the reply consumer."""
        async with self._connect_lock:
            if self._connection is not None:
                return
            connection = await self._first_connection()
            self._connection = connection
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            assert isinstance(channel, aio_pika.RobustChannel)
            self._channel = channel
            channel.close_callbacks.add(self._on_channel_lost)
            exchange = await channel.declare_exchange(
                REQUESTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            assert isinstance(exchange, aio_pika.RobustExchange)
            self._exchange = exchange
            await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
            # Consume the replies (no-ack) on the channel we publish on; a cluster's reply
            # queue is declared through the robust channel: re-declared on reconnect (on
            # another node) before the consumer is registered again (amqp.consumers).
            if self._reply_to != REPLY_TO:
                await channel.declare_queue(
                    self._reply_to,
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-queue-type": "classic"},
                )
            self._replies = RawConsumer(
                channel,
                self._reply_to,
                self._on_reply,
                no_ack=True,
                on_registered=self._on_channel_back,
            )
            await self._replies.start()
            self._reply_consumer_ready = True
            log.info("broker.connected", url=_redact(str(connection.node)), nodes=len(self._urls))
            self._recorder.broker_connection(True)
            self._watchdog.start()

    async def _first_connection(self) -> FailoverConnection:
        """A robust connection to the first node that answers, tried in the list's order;
        it fails over to the others later (:mod:`bus.broker.amqp.failover`)."""
        failures: list[str] = []
        for start in range(len(self._urls)):
            nodes = self._urls[start:] + self._urls[:start]
            try:
                connection = await aio_pika.connect_robust(
                    nodes[0],
                    client_properties={"connection_name": self._name},
                    timeout=10 if len(nodes) == 1 else 5,
                    reconnect_interval=1,
                    connection_class=FailoverConnection,
                    nodes=nodes,
                )
            except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
                failures.append(f"{_redact(nodes[0])}: {exc!r}")
                continue
            assert isinstance(connection, FailoverConnection)
            return connection
        raise BrokerUnavailable(f"cannot connect to RabbitMQ: {'; '.join(failures)}")

    def _on_channel_lost(self, *_: Any) -> None:
        self._reply_consumer_ready = False
        self._recorder.broker_connection(False)
        if self._pending:
            log.warning("broker.channel_lost", pending=len(self._pending))
        self._fail_pending()

    def _fail_pending(self) -> None:
        """Fail the waiting requests: ``detail.queued`` only for those RabbitMQ confirmed (a
        publish whose confirm was lost with the channel may never have been queued)."""
        for correlation_id, future in self._pending.items():
            if future.done():
                continue
            if correlation_id in self._confirmed_ids:
                future.set_exception(
                    BrokerUnavailable(
                        "connection to the broker was lost while waiting for the reply; "
                        "the request was queued and may still be processed: repeat it with "
                        "the same request_id for its answer",
                        detail={"queued": True},
                    )
                )
            else:
                future.set_exception(
                    BrokerUnavailable(
                        "connection to the broker was lost before it confirmed the request; "
                        "repeat it with the same request_id"
                    )
                )

    async def _check_link(self) -> None:
        """One round trip on the publishing channel, and the reply consumer still there
        (:mod:`bus.broker.amqp.linkcheck`). Skipped while the connection is reconnecting."""
        connection, channel = self._connection, self._channel
        if connection is None or channel is None or connection.is_closed or channel.is_closed:
            return  # down and known to be down: the robust connection is on it
        if not self._reply_consumer_ready:
            return  # reopening
        underlay = await channel.get_underlay_channel()
        consumers = getattr(underlay, "consumers", {})  # aiormq.Channel's registered consumers
        if self._replies is not None and self._replies.tag not in consumers:
            raise LinkDead("the reply consumer is no longer registered")
        await underlay.exchange_declare(REQUESTS_EXCHANGE, exchange_type="topic", passive=True)

    async def _link_dead(self, reason: str) -> None:
        """Fail the waiting requests, report not ready, tear the connection down so the
        robust connection reconnects (its channels and consumers are restored)."""
        log.warning("broker.link_dead", reason=reason, pending=len(self._pending))
        self._reply_consumer_ready = False
        self._recorder.broker_connection(False)
        self._recorder.link_failed()
        self._fail_pending()
        connection = self._connection
        transport = connection.transport if connection is not None else None
        if transport is None:
            return
        # What aiormq itself does for a connection that stopped sending frames: stop its
        # reader, which closes the connection without waiting on the dead peer.
        cancel = getattr(getattr(transport.connection, "_reader_task", None), "cancel", None)
        if callable(cancel):
            cancel()

    def _on_channel_back(self, *_: Any) -> None:
        self._reply_consumer_ready = True
        log.info("broker.reconnected")
        self._recorder.broker_reconnected()

    @property
    def ready(self) -> bool:
        """Connected, publishing channel open, reply consumer registered."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
            and self._reply_consumer_ready
        )

    def _require(self) -> tuple[AbstractRobustChannel, AbstractRobustExchange]:
        if self._channel is None or self._exchange is None:
            raise BrokerUnavailable("broker is not connected")
        return self._channel, self._exchange

    # -- topology -----------------------------------------------------------------------

    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        """Apply the queue policies (``broker.*``), then declare each service's quorum
        queue, binding and DLQ with immutable arguments only; a queue left with other
        arguments (by an older bus) raises :class:`TopologyConflict`."""
        channel, _exchange = self._require()
        if specs and specs[0] != self._policies_for:
            await apply_policies(self._urls, queue_policies(specs[0]))
            self._policies_for = specs[0]
        for spec in specs:
            await self._declare_one(channel, spec)
            self._specs[spec.service] = spec

    async def _declare_one(
        self, channel: AbstractRobustChannel, spec: QueueSpec
    ) -> AbstractRobustQueue:
        try:
            dlq = await channel.declare_queue(
                dlq_name(spec.service), durable=True, arguments=dlq_arguments(spec)
            )
            await dlq.bind(DLX, routing_key=spec.service)
            queue = await channel.declare_queue(
                queue_name(spec.service), durable=True, arguments=queue_arguments(spec)
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyConflict(_conflict(exc, self._urls[0])) from None
        await queue.bind(REQUESTS_EXCHANGE, routing_key=f"{spec.service}.*")
        return queue

    # -- client side --------------------------------------------------------------------

    async def _on_reply(self, message: Delivery) -> None:
        correlation_id = message.header.properties.correlation_id
        future = self._pending.get(correlation_id or "")
        if future is None or future.done():
            return  # the caller gave up; nothing waits for this reply
        try:
            future.set_result(decode_reply(message.body, correlation_id or ""))
        except DecodeError as exc:
            future.set_exception(BrokerUnavailable(f"worker sent an unreadable reply: {exc}"))

    async def request(self, req: Request) -> Reply:
        """Publish persistently (mandatory, confirmed) and await the reply until the deadline."""
        channel, exchange = self._require()
        remaining = req.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("deadline passed before the request was sent")
        if not self.ready:
            raise BrokerUnavailable("broker connection is down; try again shortly")
        body, headers = encode_request(req)
        correlation_id = req.correlation_id or new_id()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        properties = Basic.Properties(
            content_type="application/json",
            headers=dict(headers),
            delivery_mode=_PERSISTENT,
            correlation_id=correlation_id,
            reply_to=self._reply_to,
            # Whole milliseconds, at least 1: RabbitMQ drops the message when it expires.
            expiration=str(max(1, round(remaining * 1000))),
            message_id=req.request_id,
            timestamp=datetime.now(UTC).replace(microsecond=0),
        )
        try:
            async with asyncio.timeout(remaining):
                await _unless_lost(
                    future,
                    self._confirmed(
                        channel,
                        exchange.name,
                        req.routing_key,
                        body,
                        properties,
                        mandatory=True,
                        queue=req.service,
                    ),
                )
                self._confirmed_ids.add(correlation_id)
                return await future
        except TimeoutError:
            raise DeadlineExceeded("no reply before the deadline") from None
        finally:
            self._pending.pop(correlation_id, None)
            self._confirmed_ids.discard(correlation_id)

    async def _confirmed(
        self,
        channel: AbstractRobustChannel,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Basic.Properties,
        *,
        mandatory: bool,
        queue: str | None = None,
    ) -> None:
        """Publish and wait for the confirm; failures as :mod:`bus.errors` (``queue``: what a
        full queue is called in the error, default the routing key)."""
        try:
            await publish(channel, exchange, routing_key, body, properties, mandatory=mandatory)
        except aiormq.exceptions.PublishError as exc:
            self._recorder.publish_failed("unroutable")
            raise BrokerUnavailable(
                f"no queue is bound for {routing_key}", code="NO_ROUTE"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            nacked = isinstance(exc.frame, Basic.Nack)
            self._recorder.publish_failed("nack" if nacked else "error")
            if nacked:
                self._renew_after_nack()
                full = queue or routing_key
                raise Overloaded(f"queue for {full} is full", retry_after=1.0) from exc
            raise BrokerUnavailable("broker refused the message") from exc
        except (
            aiormq.exceptions.AMQPError,
            aio_pika.exceptions.ChannelInvalidStateError,
            ConnectionError,
            RuntimeError,
        ) as exc:
            self._recorder.publish_failed("error")
            raise BrokerUnavailable(f"cannot publish to the broker: {exc!r}") from exc

    # -- one-way traffic (bus/broker/amqp/outbox.py) -------------------------------------

    async def declare_outbox(self, specs: Sequence[OutboxSpec]) -> None:
        """Exchanges, outbox queues, bindings, DLQs (on the robust channel: restored after
        a reconnect)."""
        channel, _exchange = self._require()
        await declare_outbox(channel, specs)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        message_id: str,
        mandatory: bool,
    ) -> None:
        """Persistent, confirmed publish (see the Broker protocol)."""
        channel, _exchange = self._require()
        if not self.ready:
            raise BrokerUnavailable("broker connection is down; try again shortly")
        properties = Basic.Properties(
            content_type="application/json",
            headers=dict(headers),
            delivery_mode=_PERSISTENT,
            message_id=message_id,
            timestamp=datetime.now(UTC).replace(microsecond=0),
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._confirmed(
                    channel, exchange, routing_key, body, properties, mandatory=mandatory
                )
        except TimeoutError:
            self._recorder.publish_failed("error")
            raise BrokerUnavailable("the broker did not confirm the message in time") from None

    async def consume(
        self, key: str, handler: DeliveryHandler, *, prefetch: int, stop: asyncio.Event
    ) -> None:
        """Consume outbox ``key`` until ``stop`` (see the Broker protocol)."""
        if self._connection is None:
            raise BrokerUnavailable("broker is not connected")
        await consume_outbox(
            self._connection, key, handler, prefetch=prefetch, stop=stop, recorder=self._recorder
        )

    async def outbox_counts(self, key: str) -> tuple[int, int]:
        """Ready messages in outbox ``key`` and its DLQ."""
        return await self._counts(key, outbox_queue(key))

    def _renew_after_nack(self) -> None:
        """On a cluster, a nack may come from a publishing channel that RabbitMQ 3.10
        leaves rejecting for good: one opened on a node while the quorum queue was
        electing a new leader (after a node loss) nacks every later publish, while a new
        channel is accepted at once. So after a nack the channel is closed and reopened
        (its reply consumer with it), at most once per :data:`_RENEW_EVERY_S`; requests
        waiting on it fail with ``BROKER_UNAVAILABLE`` (``detail.queued``)."""
        now = time.monotonic()
        if len(self._urls) < 2 or self._renewing is not None or now < self._renewed_at:
            return
        self._renewed_at = now + _RENEW_EVERY_S
        self._renewing = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        channel = self._channel
        try:
            if channel is not None and not channel.is_closed:
                log.warning("broker.publisher_renewed", reason="nack")
                await channel.close()
                await channel.reopen()
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            log.warning("broker.publisher_renew_failed", error=repr(exc))
        finally:
            self._renewing = None

    # -- worker side --------------------------------------------------------------------

    async def serve(
        self, service: str, handler: Handler, *, prefetch: int, stop: asyncio.Event
    ) -> None:
        """Consume ``service``'s queue on its own channel until ``stop``; then drain
        (:mod:`bus.broker.amqp.serving`)."""
        if self._connection is None:
            raise BrokerUnavailable("broker is not connected")
        spec = self._specs.get(service)
        async with self._connect_lock:
            if self._serving.reply_channel is None:
                replies = await self._connection.channel(publisher_confirms=False)
                assert isinstance(replies, aio_pika.RobustChannel)
                self._serving.reply_channel = replies
        channel = await self._connection.channel(publisher_confirms=True)
        assert isinstance(channel, aio_pika.RobustChannel)
        await channel.set_qos(prefetch_count=prefetch)
        if spec is None:  # declared by another process: use it as it is
            queue = await channel.declare_queue(queue_name(service), passive=True)
        else:
            queue = await self._declare_one(channel, spec)
        await self._serving.serve(
            channel, queue.name, service, handler, spec, prefetch=prefetch, stop=stop
        )

    @property
    def keyring(self) -> Keyring | None:
        """What dead letters are sealed under (bus/broker/deadletters.py): the worker
        side's copies to a DLQ, and the DLQ operations' opening of them."""
        return self._serving.keyring

    @keyring.setter
    def keyring(self, ring: Keyring | None) -> None:
        self._serving.keyring = ring

    def dead_letters_claim(
        self, service: str, *, limit: int = MAX_SCAN
    ) -> contextlib.AbstractAsyncContextManager[list[ClaimedLetter]]:
        """Hold up to ``limit`` dead letters; those not acked return to the DLQ at the end."""
        spec = self._specs.get(service)
        ttl_s = spec.dlq_ttl_s if spec is not None else None
        return claim_dead_letters(self._connection, service, limit, self.keyring, ttl_s)

    async def dead_letters_purge(self, service: str) -> int:
        """Delete every dead letter of ``service``; returns how many."""
        return await purge_dead_letters(self._connection, service)

    async def message_counts(self, service: str) -> tuple[int, int]:
        """Ready messages in the service's queue and its DLQ (passive declares, own channel)."""
        return await self._counts(service, queue_name(service))

    async def _counts(self, service: str, work_queue: str) -> tuple[int, int]:
        if self._connection is None or not self.ready:
            raise BrokerUnavailable("broker is not connected")
        counts: list[int] = []
        try:
            async with asyncio.timeout(5):
                channel = await self._connection.channel(publisher_confirms=False)
                try:
                    for name in (work_queue, dlq_name(service)):
                        # robust=False: a sampling declare must not join the reconnect set.
                        queue = await channel.declare_queue(name, passive=True, robust=False)
                        counts.append(queue.declaration_result.message_count or 0)
                finally:
                    await quietly(channel.close())
        except (TimeoutError, aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            raise BrokerUnavailable(f"cannot count messages of {service}: {exc!r}") from exc
        return counts[0], counts[1]

    async def aclose(self) -> None:
        """Close the connection; pending requests fail with ``BrokerUnavailable``."""
        await self._watchdog.stop()
        self._on_channel_lost()
        self._serving.reply_channel = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._channel = None
            self._exchange = None


async def _unless_lost(pending: asyncio.Future[Reply], publish: Awaitable[None]) -> None:
    """Await ``publish`` (its confirm), but give up at once when ``pending`` fails first: the
    link was declared dead (:meth:`AmqpBroker._link_dead`) and no confirm will come."""
    task = asyncio.ensure_future(publish)
    try:
        await asyncio.wait((task, pending), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done() and pending.done() and not pending.cancelled() and pending.exception():
        task.cancel()
        raise pending.exception() or BrokerUnavailable("broker link lost")
    await task


def _conflict(exc: BaseException, url: str) -> str:
    """One line: what RabbitMQ found different, and how to migrate."""
    text = str(exc.args[0] if exc.args else exc).splitlines()[0]
    text = text.removeprefix("PRECONDITION_FAILED - ")
    queue = text.split("for queue '", 1)[1].split("'", 1)[0] if "for queue '" in text else "?"
    vhost = unquote(urlsplit(url).path[1:]) or "/"
    return (
        f"RabbitMQ refused to declare queue {queue}: {text}. This bus declares queues with "
        "x-queue-type and the dead-letter exchange/routing key only and keeps broker.* in the "
        "policies lgsp-work-queues/lgsp-dead-letter-queues; the queue was made by an older "
        f"version. Migrate: stop the workers, let the queue drain (or move its messages), "
        f"then rabbitmqctl delete_queue -p {vhost} {queue} and start again"
    )


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"
