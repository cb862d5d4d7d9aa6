"""The robust connection: after the broker connection drops, consumers and replies resume.

The most reported failure of aio-pika/FastStream users is consumers silently not resumed
after a reconnect. A TCP proxy between the bus and RabbitMQ cuts every connection; the test
then proves that a new request is consumed and its reply delivered, and that requests in
flight at the cut fail at once with a clear code instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

from bus.broker import QueueSpec
from bus.broker.amqp.broker import AmqpBroker
from bus.broker.base import queue_name
from bus.envelope import Reply, Request
from bus.errors import BrokerUnavailable, DeadlineExceeded
from tests.contract.test_broker_contract import echo, fresh_service, make_request, serving
from tests.support.rabbit import TestVhost
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = await TcpProxy("127.0.0.1", 5672).start()
    yield p
    await p.aclose()


async def wait_ready(broker: AmqpBroker, bound_s: float) -> float:
    started = time.monotonic()
    while not broker.ready:
        if time.monotonic() - started > bound_s:
            raise AssertionError(f"broker not ready within {bound_s}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def request_until_ok(broker: AmqpBroker, service: str, bound_s: float) -> Reply:
    """Retry like a client would, until the bus answers again."""
    end = time.monotonic() + bound_s
    while True:
        try:
            return await broker.request(make_request(service, {"after": "cut"}, timeout=2))
        except (BrokerUnavailable, DeadlineExceeded):
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


async def test_consumers_and_replies_resume_after_connection_drop(
    rabbit_vhost: TestVhost, proxy: TcpProxy
) -> None:
    url = rabbit_vhost.url(port=proxy.port)
    service = fresh_service()
    client = AmqpBroker(url, name="test-client")
    server = AmqpBroker(url, name="test-worker")
    await client.connect()
    await server.connect()
    await client.declare([QueueSpec(service)])
    stop = asyncio.Event()
    handled: list[str] = []

    async def handler(req: Request) -> Reply:
        handled.append(req.request_id)
        if req.body.get("slow"):
            await asyncio.sleep(1.0)
        return await echo(req)

    serving = asyncio.create_task(server.serve(service, handler, prefetch=4, stop=stop))
    try:
        before = await client.request(make_request(service, {"before": "cut"}))
        assert before.ok

        in_flight = asyncio.create_task(
            client.request(make_request(service, {"slow": True}, timeout=8))
        )
        await asyncio.sleep(0.3)
        connections_before = proxy.connections_made
        cut_at = time.monotonic()
        proxy.cut()
        # A request whose reply channel died fails at once, not at its 8 s deadline.
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(in_flight, timeout=3)
        assert time.monotonic() - cut_at < 3

        await wait_ready(client, 10)
        reply = await request_until_ok(client, service, 10)
        resumed_s = time.monotonic() - cut_at
        assert reply.ok
        assert reply.body is not None
        assert reply.body["echo"] == {"after": "cut"}
        # Both processes reconnected (new TCP connections through the proxy).
        assert proxy.connections_made >= connections_before + 2
        assert resumed_s < 10

        # And the consumer keeps working for a batch, not just one message.
        replies = await asyncio.gather(
            *(client.request(make_request(service, {"n": i})) for i in range(20))
        )
        assert all(r.ok for r in replies)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 15)
        await client.aclose()
        await server.aclose()


async def test_publish_while_disconnected_fails_fast(
    rabbit_vhost: TestVhost, proxy: TcpProxy
) -> None:
    client = AmqpBroker(rabbit_vhost.url(port=proxy.port), name="test-client")
    await client.connect()
    service = fresh_service()
    await client.declare([QueueSpec(service)])
    proxy.accepting = False
    proxy.cut()
    await asyncio.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await client.request(make_request(service, {}, timeout=5))
    assert time.monotonic() - started < 1.0
    proxy.accepting = True
    await wait_ready(client, 10)
    await client.aclose()


async def test_replies_fall_back_to_the_consuming_channel_when_the_reply_channel_is_down(
    rabbit_vhost: TestVhost,
) -> None:
    # Workers reply on a channel of their own (no publisher confirms); when it is closed
    # the reply must still reach the caller, over the consuming channel.
    broker = AmqpBroker(rabbit_vhost.url(), name="test-replies")
    await broker.connect()
    try:
        service = fresh_service()
        await broker.declare([QueueSpec(service)])
        async with serving(broker, service, echo):
            first = await broker.request(make_request(service, {"n": 1}))
            replies = broker._serving.reply_channel
            assert replies is not None
            await replies.close()  # closed by us: a robust channel does not reopen it
            assert replies.is_closed
            second = await broker.request(make_request(service, {"n": 2}, timeout=3))
    finally:
        await broker.aclose()
    assert first.body is not None
    assert first.body["echo"] == {"n": 1}
    assert second.body is not None
    assert second.body["echo"] == {"n": 2}


class CountingRecorder:
    """Records the broker's connection reports (a stand-in for the metrics)."""

    def __init__(self) -> None:
        self.connected: list[bool] = []
        self.link_failures = 0
        self.reconnects = 0

    def broker_connection(self, connected: bool) -> None:
        self.connected.append(connected)

    def broker_reconnected(self) -> None:
        self.reconnects += 1

    def link_failed(self) -> None:
        self.link_failures += 1

    def publish_failed(self, reason: str) -> None:
        pass

    def dead_lettered(self, service: str, reason: str) -> None:
        pass


async def test_half_open_link_is_detected_and_reconnected(
    rabbit_vhost: TestVhost, proxy: TcpProxy
) -> None:
    # The link's bytes are dropped for a while with TCP kept (a half-open link): without a
    # self-check the client stays "ready" and every request waits out its deadline for good.
    recorder = CountingRecorder()
    client = AmqpBroker(
        rabbit_vhost.url(port=proxy.port),
        name="test-client",
        recorder=recorder,
        check_interval_s=0.5,
        check_timeout_s=1.0,
    )
    server = AmqpBroker(rabbit_vhost.url(), name="test-worker")
    await client.connect()
    await server.connect()
    service = fresh_service()
    await client.declare([QueueSpec(service)])
    try:
        async with serving(server, service, echo):
            assert (await client.request(make_request(service, {"n": 0}))).ok
            proxy.blackhole = True
            waiting = asyncio.create_task(client.request(make_request(service, {}, timeout=30)))
            # The check finds the dead link: not ready, the waiting request fails with a
            # clear code long before its 30 s deadline.
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(waiting, timeout=10)
            assert not client.ready
            assert recorder.link_failures >= 1
            assert False in recorder.connected
            await asyncio.sleep(2)
            proxy.blackhole = False
            await wait_ready(client, 30)
            reply = await request_until_ok(client, service, 20)
            assert reply.ok
            assert reply.body is not None
            assert reply.body["echo"] == {"after": "cut"}
            assert recorder.reconnects >= 1
            replies = await asyncio.gather(
                *(client.request(make_request(service, {"n": i})) for i in range(10))
            )
            assert all(r.ok for r in replies)
    finally:
        await client.aclose()
        await server.aclose()


async def test_a_reopened_publishing_channel_gets_its_reply_consumer_back(
    rabbit_vhost: TestVhost,
) -> None:
    # The reply consumer sits on the underlying channel (bus.broker.amqp.consumers): when the
    # robust channel reopens (here: renewed as after a nack) it must be registered again.
    broker = AmqpBroker(rabbit_vhost.url(), name="test-renew")
    await broker.connect()
    try:
        service = fresh_service()
        await broker.declare([QueueSpec(service)])
        async with serving(broker, service, echo):
            assert (await broker.request(make_request(service, {"n": 1}))).ok
            await broker._renew()
            await wait_ready(broker, 10)
            replies = await asyncio.gather(
                *(broker.request(make_request(service, {"n": i}, timeout=5)) for i in range(5))
            )
    finally:
        await broker.aclose()
    assert all(r.ok for r in replies)


async def test_a_service_queue_deleted_under_its_worker_is_declared_and_consumed_again(
    rabbit_vhost: TestVhost,
) -> None:
    # RabbitMQ cancels the consumers of a deleted queue: the worker registers again, which
    # closes its channel (no such queue), whose reopen declares the queue and consumes it.
    broker = AmqpBroker(rabbit_vhost.url(), name="test-cancel")
    await broker.connect()
    try:
        service = fresh_service()
        await broker.declare([QueueSpec(service)])
        async with serving(broker, service, echo):
            assert (await broker.request(make_request(service, {"n": 1}))).ok
            connection = await aio_pika.connect(rabbit_vhost.url())
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(queue_name(service))
            reply = await request_until_ok(broker, service, 15)
    finally:
        await broker.aclose()
    assert reply.ok
    assert reply.body is not None
    assert reply.body["echo"] == {"after": "cut"}


async def test_a_request_lost_before_its_confirm_is_not_reported_queued(
    rabbit_vhost: TestVhost, proxy: TcpProxy
) -> None:
    # detail.queued tells the caller a worker may still serve the request; a publish whose
    # confirm never came (the link went dead first) may never have been queued.
    client = AmqpBroker(
        rabbit_vhost.url(port=proxy.port),
        name="test-client",
        check_interval_s=0.5,
        check_timeout_s=1.0,
    )
    await client.connect()
    service = fresh_service()
    await client.declare([QueueSpec(service)])
    try:
        proxy.blackhole = True
        with pytest.raises(BrokerUnavailable) as lost:
            await asyncio.wait_for(
                client.request(make_request(service, {}, timeout=30)), timeout=10
            )
    finally:
        proxy.blackhole = False
        await client.aclose()
    assert lost.value.code == "BROKER_UNAVAILABLE"
    assert not lost.value.detail.get("queued")
