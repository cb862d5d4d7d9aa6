"""The Broker contract, run against every implementation (memory and real RabbitMQ)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest

from bus.broker import Broker, QueueSpec
from bus.broker.base import dlq_name, queue_name
from bus.broker.memory import MemoryBroker
from bus.envelope import Reply, Request, encode_request
from bus.errors import BrokerUnavailable, DeadlineExceeded, Overloaded

Handler = Callable[[Request], Awaitable[Reply]]


def make_request(service: str, body: dict[str, Any], timeout: float = 5.0) -> Request:
    return Request(
        request_id=f"req-{uuid.uuid4().hex[:12]}",
        service=service,
        operation="lookup",
        consumer="tester",
        correlation_id=uuid.uuid4().hex,
        deadline=time.time() + timeout,
        body=body,
    )


async def echo(req: Request) -> Reply:
    return Reply(req.request_id, req.correlation_id, body={"echo": req.body, "id": req.request_id})


def fresh_service() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def serving(
    broker: Broker, service: str, handler: Handler, prefetch: int = 8
) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(broker.serve(service, handler, prefetch=prefetch, stop=stop))
    await asyncio.sleep(0.2)  # let the consumer register
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def publish_raw(
    broker: Broker, url: str | None, service: str, body: bytes, headers: dict[str, Any]
) -> None:
    """Put a message on the queue bypassing the codec (a foreign or broken publisher)."""
    if isinstance(broker, MemoryBroker):
        broker.publish_raw(service, body, headers, "poison-corr")
        return
    assert url is not None
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(body, headers=headers, correlation_id="poison-corr"),
            routing_key=queue_name(service),
        )


async def dead_letter_count(broker: Broker, url: str | None, service: str) -> int:
    if isinstance(broker, MemoryBroker):
        return len(broker.dead_letters(service))
    assert url is not None
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(dlq_name(service), passive=True)
        return queue.declaration_result.message_count or 0


async def test_round_trip_returns_the_handlers_reply(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    async with serving(broker, service, echo):
        req = make_request(service, {"q": "xin chào"})
        reply = await broker.request(req)
    assert reply.ok
    assert reply.request_id == req.request_id
    assert reply.body == {"echo": {"q": "xin chào"}, "id": req.request_id}


async def test_concurrent_replies_reach_their_own_requests(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])

    async def slow_echo(req: Request) -> Reply:
        await asyncio.sleep(0.01 * (hash(req.request_id) % 5))
        return await echo(req)

    async with serving(broker, service, slow_echo, prefetch=16):
        reqs = [make_request(service, {"n": i}) for i in range(60)]
        replies = await asyncio.gather(*(broker.request(r) for r in reqs))
    for req, reply in zip(reqs, replies, strict=True):
        assert reply.request_id == req.request_id
        assert reply.body is not None
        assert reply.body["echo"] == req.body


async def test_error_replies_travel_back(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])

    async def failing(req: Request) -> Reply:
        error = {"code": "UPSTREAM_TIMEOUT", "message": "slow", "retryable": True}
        return Reply(req.request_id, req.correlation_id, error=error)

    async with serving(broker, service, failing):
        reply = await broker.request(make_request(service, {}))
    assert not reply.ok
    assert reply.error is not None
    assert reply.error["code"] == "UPSTREAM_TIMEOUT"


async def test_unroutable_request_fails_at_once(broker: Broker) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        await broker.request(make_request(fresh_service(), {}, timeout=10))
    assert info.value.code == "NO_ROUTE"
    assert time.monotonic() - started < 2.0


async def test_no_reply_ends_at_the_deadline(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])

    async def never(req: Request) -> Reply:
        await asyncio.sleep(2.5)  # far past the deadline; short enough for stop to drain
        return await echo(req)

    async with serving(broker, service, never) as stop:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await broker.request(make_request(service, {}, timeout=0.8))
        elapsed = time.monotonic() - started
        stop.set()
    assert 0.7 <= elapsed < 1.5


async def test_expired_requests_are_never_handled(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    with pytest.raises(DeadlineExceeded):
        await broker.request(make_request(service, {}, timeout=0.3))
    await asyncio.sleep(0.2)
    seen: list[str] = []

    async def record(req: Request) -> Reply:
        seen.append(req.request_id)
        return await echo(req)

    async with serving(broker, service, record):
        fresh = make_request(service, {"fresh": True})
        reply = await broker.request(fresh)
    assert reply.ok
    assert seen == [fresh.request_id]


async def test_prefetch_bounds_concurrent_handlers(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    running = 0
    peak = 0

    async def tracked(req: Request) -> Reply:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return await echo(req)

    async with serving(broker, service, tracked, prefetch=3):
        await asyncio.gather(*(broker.request(make_request(service, {})) for _ in range(15)))
    assert peak == 3


async def test_poison_message_is_dead_lettered_and_the_queue_moves_on(
    broker: Broker, broker_url: str | None
) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    await publish_raw(broker, broker_url, service, b"{not json", {"x-lgsp-service": service})
    _, headers = encode_request(make_request(service, {}))
    await publish_raw(broker, broker_url, service, b"[1, 2]", dict(headers))
    async with serving(broker, service, echo):
        replies = await asyncio.gather(
            *(broker.request(make_request(service, {"n": i})) for i in range(5))
        )
        assert all(r.ok for r in replies)
        for _ in range(50):
            if await dead_letter_count(broker, broker_url, service) == 2:
                break
            await asyncio.sleep(0.1)
    assert await dead_letter_count(broker, broker_url, service) == 2


async def test_failing_handler_is_redelivered_then_dead_lettered(
    broker: Broker, broker_url: str | None
) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service, delivery_limit=2)])
    calls = 0

    async def crash(req: Request) -> Reply:
        nonlocal calls
        calls += 1
        raise RuntimeError("handler bug")

    async with serving(broker, service, crash):
        with pytest.raises(DeadlineExceeded):
            await broker.request(make_request(service, {}, timeout=3))
        for _ in range(50):
            if await dead_letter_count(broker, broker_url, service) == 1:
                break
            await asyncio.sleep(0.1)
    assert await dead_letter_count(broker, broker_url, service) == 1
    # The first delivery plus the redeliveries the limit allows; never an endless loop.
    assert 2 <= calls <= 3


async def test_full_queue_rejects_at_once(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service, max_length=2)])
    accepted: list[asyncio.Task[Reply]] = []
    rejected_after = None
    # RabbitMQ quorum queues enforce the limit approximately: one more may get in.
    for n in range(5):
        task = asyncio.create_task(broker.request(make_request(service, {}, timeout=5)))
        await asyncio.sleep(0.2)
        if task.done():  # answered within 0.2 s, far before its 5 s deadline
            with pytest.raises(Overloaded):
                task.result()
            rejected_after = n
            break
        accepted.append(task)
    assert rejected_after is not None
    assert 2 <= rejected_after <= 3
    for task in accepted:
        task.cancel()
    await asyncio.gather(*accepted, return_exceptions=True)


async def test_stop_finishes_in_flight_work_then_returns(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    entered = asyncio.Event()

    async def slow(req: Request) -> Reply:
        entered.set()
        await asyncio.sleep(0.5)
        return await echo(req)

    stop = asyncio.Event()
    serve = asyncio.create_task(broker.serve(service, slow, prefetch=4, stop=stop))
    pending = asyncio.create_task(broker.request(make_request(service, {"x": 1})))
    await asyncio.wait_for(entered.wait(), 5)
    stop.set()
    reply = await asyncio.wait_for(pending, 5)
    await asyncio.wait_for(serve, 5)
    assert reply.ok


async def test_the_request_arrives_with_its_deadline_facts(broker: Broker) -> None:
    # The worker must know the caller shortened the deadline (the breaker does not count a
    # timeout at it) and when it ends, whatever carries the message.
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    seen: list[Request] = []

    async def keep(req: Request) -> Reply:
        seen.append(req)
        return await echo(req)

    sent = [
        dataclasses.replace(make_request(service, {"n": i}), short_deadline=bool(i))
        for i in range(2)
    ]
    async with serving(broker, service, keep):
        for req in sent:
            assert (await broker.request(req)).ok
    got = {r.request_id: r for r in seen}
    for req in sent:
        assert got[req.request_id].short_deadline is req.short_deadline
        assert abs(got[req.request_id].deadline - req.deadline) < 0.002
