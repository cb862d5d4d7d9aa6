"""In-process broker: the embedded default and the fast test backend. It keeps the AMQP
semantics that matter to callers: messages travel encoded (so poison messages exist here
too), queues have a length limit (reject-publish), deliveries are redelivered when a
handler fails and dead-lettered (sealed) after the delivery limit, expired messages are
never handed out, unacknowledged messages return to the queue when a consumer stops.
Nothing survives the process (RabbitMQ is for that): a send or event answered ``202``
here is lost if the process stops before its delivery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from bus.broker.base import NULL_RECORDER, BrokerRecorder, Handler, QueueSpec
from bus.broker.deadletters import (
    MAX_SCAN,
    ClaimedLetter,
    DeadLetter,
    Keyring,
    dead_letter_headers,
    opened,
    sealed_letter,
)
from bus.broker.outbox import Delivery, DeliveryHandler, OutboxSpec, outbox_queue
from bus.canonical import new_id
from bus.envelope import (
    DecodeError,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from bus.errors import BrokerUnavailable, DeadlineExceeded, Overloaded

__all__ = ["DeadLetter", "MemoryBroker"]

log = structlog.get_logger("bus.broker.memory")


@dataclass(slots=True)
class _Message:
    body: bytes
    headers: dict[str, Any]
    correlation_id: str | None
    expires_at: float
    delivery_count: int = 0


@dataclass
class _Queue:
    spec: QueueSpec
    ready: deque[_Message] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    dead: list[DeadLetter] = field(default_factory=list)


async def _acquired(slots: asyncio.Semaphore, stop: asyncio.Event) -> bool:
    """A slot, unless ``stop`` comes first."""
    acquire, stopper = asyncio.ensure_future(slots.acquire()), asyncio.ensure_future(stop.wait())
    await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not acquire.done() or acquire.cancelled():
        acquire.cancel()
        return False
    if stop.is_set():
        slots.release()
    return not stop.is_set()


class MemoryBroker:
    """A :class:`~bus.broker.base.Broker` inside this process."""

    def __init__(self, *, recorder: BrokerRecorder = NULL_RECORDER) -> None:
        self._recorder = recorder
        self._queues: dict[str, _Queue] = {}
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._closed = False
        self._bindings: dict[tuple[str, str], set[str]] = {}  # (exchange, key) → outbox keys
        self._active: dict[str, asyncio.Lock] = {}  # ordered outbox: its one active consumer
        self._ordered: set[str] = set()
        self.keyring: Keyring | None = None  # dead letters sealed under it (deadletters.py)

    async def connect(self) -> None:
        """Nothing to connect to."""
        self._closed = False
        self._recorder.broker_connection(True)

    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        """Create the queues that do not exist yet."""
        for spec in specs:
            self._queues.setdefault(spec.service, _Queue(spec))

    @property
    def ready(self) -> bool:
        """Always ready until closed."""
        return not self._closed

    def dead_letters(self, service: str) -> list[DeadLetter]:
        """Messages dead-lettered for ``service`` (the DLQ)."""
        queue = self._queues.get(service)
        return list(queue.dead) if queue else []

    def depth(self, service: str) -> int:
        """Messages waiting in the service's queue."""
        queue = self._queues.get(service)
        return len(queue.ready) if queue else 0

    async def message_counts(self, service: str) -> tuple[int, int]:
        """Messages waiting in the service's queue and in its DLQ."""
        return self.depth(service), len(self.dead_letters(service))

    async def request(self, req: Request) -> Reply:
        """Enqueue ``req`` and wait for the reply until its deadline."""
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        queue = self._queues.get(req.service)
        if queue is None:
            self._recorder.publish_failed("unroutable")
            raise BrokerUnavailable(f"no queue is bound for {req.routing_key}", code="NO_ROUTE")
        if len(queue.ready) >= queue.spec.max_length:
            self._recorder.publish_failed("nack")
            raise Overloaded(f"queue for {req.service} is full", retry_after=1.0)
        remaining = req.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("deadline passed before the request was sent")
        body, headers = encode_request(req)
        correlation_id = req.correlation_id or new_id()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            self._enqueue(queue, _Message(body, headers, correlation_id, req.deadline))
            async with asyncio.timeout(remaining):
                return await future
        except TimeoutError:
            raise DeadlineExceeded("no reply before the deadline") from None
        finally:
            self._pending.pop(correlation_id, None)

    def publish_raw(
        self, service: str, body: bytes, headers: dict[str, Any], correlation_id: str | None
    ) -> None:
        """Put an arbitrary message on a service queue (tests: poison messages)."""
        self._enqueue(
            self._queues[service], _Message(body, headers, correlation_id, time.time() + 3600)
        )

    @staticmethod
    def _enqueue(queue: _Queue, message: _Message) -> None:
        queue.ready.append(message)
        queue.arrived.set()

    async def _next(self, queue: _Queue, stop: asyncio.Event) -> _Message | None:
        while not queue.ready:
            queue.arrived.clear()
            waiter = asyncio.ensure_future(queue.arrived.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                return None
        return queue.ready.popleft()

    async def serve(
        self, service: str, handler: Handler, *, prefetch: int, stop: asyncio.Event
    ) -> None:
        """Consume ``service``'s queue until ``stop`` is set; drain in-flight work."""
        queue = self._queues[service]
        slots = asyncio.Semaphore(prefetch)
        async with asyncio.TaskGroup() as tasks:
            while not stop.is_set():
                await slots.acquire()
                message = await self._next(queue, stop)
                if message is None:
                    slots.release()
                    break
                tasks.create_task(self._deliver(queue, message, handler, slots))

    async def _deliver(
        self, queue: _Queue, message: _Message, handler: Handler, slots: asyncio.Semaphore
    ) -> None:
        try:
            if message.expires_at <= time.time():
                log.info("broker.message_expired", service=queue.spec.service)
                return
            message.delivery_count += 1
            try:
                req = decode_request(message.body, message.headers, message.correlation_id)
            except DecodeError as exc:
                self._dead_letter(queue, message, "rejected", str(exc))
                return
            try:
                reply = await handler(req)
            except asyncio.CancelledError:
                self._requeue(queue, message)
                raise
            except Exception as exc:  # a handler bug: redeliver, then dead-letter
                log.error("broker.handler_failed", service=queue.spec.service, error=repr(exc))
                if message.delivery_count >= queue.spec.delivery_limit:
                    self._dead_letter(queue, message, "delivery_limit", repr(exc))
                else:
                    self._requeue(queue, message)
                return
            self._reply(reply)
        finally:
            slots.release()

    def _requeue(self, queue: _Queue, message: _Message) -> None:
        queue.ready.appendleft(message)
        queue.arrived.set()

    def _dead_letter(self, queue: _Queue, message: _Message, reason: str, error: str) -> None:
        service = queue.spec.service
        log.warning("broker.dead_lettered", service=service, reason=reason)
        self._recorder.dead_lettered(service, reason)
        headers = dead_letter_headers(message.headers, reason, error, message.delivery_count)
        sealed = sealed_letter(self.keyring, service, message.body, headers, message.correlation_id)
        queue.dead.append(sealed)

    @asynccontextmanager
    async def dead_letters_claim(
        self, service: str, *, limit: int = MAX_SCAN
    ) -> AsyncIterator[list[ClaimedLetter]]:
        """Hold up to ``limit`` dead letters; unacked ones go back (in order) at the end."""
        queue = self._queues.get(service)
        if queue is None:
            raise BrokerUnavailable(f"no DLQ for {service}", code="NO_ROUTE")
        held, queue.dead[:limit] = queue.dead[:limit], []
        acked: set[int] = set()

        def acker(index: int) -> ClaimedLetter:
            async def ack() -> None:
                acked.add(index)

            return ClaimedLetter(opened(self.keyring, held[index]), ack)

        try:
            yield [acker(i) for i in range(len(held))]
        finally:
            queue.dead[:0] = [letter for i, letter in enumerate(held) if i not in acked]

    async def dead_letters_purge(self, service: str) -> int:
        """Delete every dead letter of ``service``."""
        queue = self._queues.get(service)
        if queue is None:
            return 0
        count = len(queue.dead)
        queue.dead.clear()
        return count

    def _reply(self, reply: Reply) -> None:
        # Round-trip through the codec so both brokers hand the gateway the same shape.
        decoded = decode_reply(encode_reply(reply), reply.correlation_id)
        future = self._pending.get(reply.correlation_id)
        if future is not None and not future.done():
            future.set_result(decoded)

    # -- one-way traffic ------------------------------------------------------------------

    async def declare_outbox(self, specs: Sequence[OutboxSpec]) -> None:
        """Create outbox queues and their bindings (idempotent)."""
        for spec in specs:
            self._queues.setdefault(
                spec.key, _Queue(QueueSpec(spec.key, max_length=spec.max_length))
            )
            for binding in spec.bindings:
                self._bindings.setdefault(binding, set()).add(spec.key)
            self._bindings.setdefault(("", outbox_queue(spec.key)), set()).add(spec.key)
            if spec.ordered:
                self._ordered.add(spec.key)

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
        """Enqueue on every bound outbox queue (all or none: a full one refuses first)."""
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        keys = sorted(self._bindings.get((exchange, routing_key), ()))
        if not keys:
            if mandatory:
                self._recorder.publish_failed("unroutable")
                raise BrokerUnavailable(f"no queue is bound for {routing_key}", code="NO_ROUTE")
            return
        queues = [self._queues[k] for k in keys]
        if any(len(q.ready) >= q.spec.max_length for q in queues):
            self._recorder.publish_failed("nack")
            raise Overloaded("an outbox queue is full", retry_after=1.0)
        for queue in queues:
            self._enqueue(queue, _Message(body, dict(headers), message_id, float("inf")))

    async def consume(
        self, key: str, handler: DeliveryHandler, *, prefetch: int, stop: asyncio.Event
    ) -> None:
        """Serve outbox ``key`` (an ordered one: one consumer at a time, one message)."""
        if key not in self._ordered:
            await self._consume(key, handler, prefetch, stop)
            return
        lock = self._active.setdefault(key, asyncio.Lock())
        acquire, stopper = asyncio.ensure_future(lock.acquire()), asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not acquire.done() or acquire.cancelled():
            acquire.cancel()
            return
        try:
            await self._consume(key, handler, 1, stop)
        finally:
            lock.release()

    async def _consume(
        self, key: str, handler: DeliveryHandler, prefetch: int, stop: asyncio.Event
    ) -> None:
        queue = self._queues[key]
        slots = asyncio.Semaphore(prefetch)
        released: list[_Message] = []  # unacknowledged: back at the head when this stops
        try:
            async with asyncio.TaskGroup() as tasks:
                while not stop.is_set():
                    if not await _acquired(slots, stop):
                        break
                    message = await self._next(queue, stop)
                    if message is None:
                        slots.release()
                        break
                    tasks.create_task(
                        self._hand_over(queue, message, handler, slots, stop, released)
                    )
        finally:
            queue.ready.extendleft(reversed(released))
            if released:
                queue.arrived.set()

    async def _hand_over(
        self,
        queue: _Queue,
        message: _Message,
        handler: DeliveryHandler,
        slots: asyncio.Semaphore,
        stop: asyncio.Event,
        released: list[_Message],
    ) -> None:
        key = queue.spec.service
        message.delivery_count += 1
        delivery = Delivery(
            key,
            message.body,
            dict(message.headers),
            message.correlation_id or "",
            message.delivery_count > 1,
        )
        disposition = None
        try:
            while disposition is None and not stop.is_set():
                try:
                    disposition = await handler(delivery)
                except Exception as exc:  # asked again, as on RabbitMQ (never to the back)
                    log.error("broker.delivery_handler_failed", key=key, error=repr(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.CancelledError:
            released.append(message)
            raise
        if disposition is None or disposition.action == "requeue":
            released.append(message)  # holds its slot, as an unacked AMQP delivery does
            return
        if disposition.action == "dead":
            self._dead_letter(queue, message, disposition.reason, disposition.error)
        slots.release()

    async def outbox_counts(self, key: str) -> tuple[int, int]:
        """Messages waiting in outbox ``key`` and in its DLQ."""
        return await self.message_counts(key)

    async def aclose(self) -> None:
        """Fail every pending request."""
        self._closed = True
        self._recorder.broker_connection(False)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrokerUnavailable("broker closed"))
        self._pending.clear()
