"""The Broker's one-way methods (publish, consume, declare_outbox, outbox_counts), on the
memory broker and the real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from bus.broker import Broker
from bus.broker.outbox import (
    ACK,
    EVENTS_EXCHANGE,
    REQUEUE,
    SENDS_EXCHANGE,
    Delivery,
    Disposition,
    OutboxSpec,
)
from bus.errors import BrokerUnavailable
from tests.support.polling import until

DeliveryHandler = Callable[[Delivery], Awaitable[Disposition]]


def key(kind: str = "send") -> str:
    return f"{kind}.t{uuid.uuid4().hex[:8]}.op.0"


async def consuming(
    broker: Broker, k: str, handler: DeliveryHandler, prefetch: int = 1
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(broker.consume(k, handler, prefetch=prefetch, stop=stop))
    await asyncio.sleep(0.2)  # let the consumer register
    return stop, task


async def test_a_confirmed_send_is_handed_over_with_its_headers_and_acked(broker: Broker) -> None:
    k = key()
    await broker.declare_outbox([OutboxSpec(k, ((SENDS_EXCHANGE, k),), ordered=False)])
    await broker.publish(
        SENDS_EXCHANGE, k, b'{"a":1}', {"x-test": "v"}, message_id="m1", mandatory=True
    )
    got: list[Delivery] = []

    async def handler(d: Delivery) -> Disposition:
        got.append(d)
        return ACK

    stop, task = await consuming(broker, k, handler, prefetch=4)
    await until(lambda: _true(bool(got)))
    stop.set()
    await asyncio.wait_for(task, 15)
    assert (got[0].key, got[0].body, got[0].message_id) == (k, b'{"a":1}', "m1")
    assert got[0].headers["x-test"] == "v"
    assert not got[0].redelivered
    assert await broker.outbox_counts(k) == (0, 0)


async def _true(value: bool) -> bool:
    return value


async def test_a_released_message_comes_back_first_to_the_next_consumer(broker: Broker) -> None:
    k = key()
    await broker.declare_outbox([OutboxSpec(k, ((SENDS_EXCHANGE, k),), ordered=True)])
    for i in range(4):
        await broker.publish(
            SENDS_EXCHANGE, k, str(i).encode(), {}, message_id=f"m{i}", mandatory=True
        )
    seen: list[tuple[bytes, bool]] = []
    held = asyncio.Event()

    async def releasing(d: Delivery) -> Disposition:
        seen.append((d.body, d.redelivered))
        held.set()
        return REQUEUE  # the worker stops while it holds m0

    async def acking(d: Delivery) -> Disposition:
        seen.append((d.body, d.redelivered))
        return ACK

    stop, task = await consuming(broker, k, releasing)
    await asyncio.wait_for(held.wait(), 15)
    await asyncio.sleep(0.3)  # nothing else is handed out while m0 is held (prefetch 1)
    stop.set()
    await asyncio.wait_for(task, 15)
    stop, task = await consuming(broker, k, acking)
    await until(lambda: _true(len(seen) >= 5))
    stop.set()
    await asyncio.wait_for(task, 15)
    assert seen == [(b"0", False), (b"0", True), (b"1", False), (b"2", False), (b"3", False)]


async def test_dead_and_raising_handlers(broker: Broker) -> None:
    k = key()
    await broker.declare_outbox([OutboxSpec(k, ((SENDS_EXCHANGE, k),), ordered=True)])
    await broker.publish(SENDS_EXCHANGE, k, b"poison", {}, message_id="p", mandatory=True)
    await broker.publish(SENDS_EXCHANGE, k, b"boom", {}, message_id="b", mandatory=True)
    await broker.publish(SENDS_EXCHANGE, k, b"fine", {}, message_id="f", mandatory=True)
    calls: list[bytes] = []

    async def handler(d: Delivery) -> Disposition:
        calls.append(d.body)
        if d.body == b"poison":
            return Disposition("dead", "rejected", "cannot read it")
        if d.body == b"boom" and calls.count(b"boom") == 1:
            raise RuntimeError("a handler bug")  # requeued, handled again
        return ACK

    stop, task = await consuming(broker, k, handler)
    await until(lambda: _true(b"fine" in calls))
    stop.set()
    await asyncio.wait_for(task, 15)
    assert calls == [b"poison", b"boom", b"boom", b"fine"]
    await until(lambda: _counts(broker, k, (0, 1)))
    async with broker.dead_letters_claim(k) as held:  # type: ignore[attr-defined]
        assert [(c.letter.reason, c.letter.last_error) for c in held] == [
            ("rejected", "cannot read it")
        ]


async def _counts(broker: Broker, k: str, want: tuple[int, int]) -> bool:
    return await broker.outbox_counts(k) == want


async def test_events_fan_out_to_every_bound_queue_and_unbound_is_per_mandatory(
    broker: Broker,
) -> None:
    etype = f"t{uuid.uuid4().hex[:6]}.changed"
    a, b = key("sub"), key("sub")
    await broker.declare_outbox(
        [OutboxSpec(q, ((EVENTS_EXCHANGE, f"{etype}.0"),), ordered=True) for q in (a, b)]
    )
    await broker.publish(EVENTS_EXCHANGE, f"{etype}.0", b"e", {}, message_id="e1", mandatory=False)
    await until(lambda: _counts(broker, a, (1, 0)))
    await until(lambda: _counts(broker, b, (1, 0)))
    # Nobody subscribed: an event is dropped quietly; a send is refused.
    await broker.publish(EVENTS_EXCHANGE, f"{etype}.1", b"e", {}, message_id="e2", mandatory=False)
    with pytest.raises(BrokerUnavailable) as refused:
        await broker.publish(SENDS_EXCHANGE, key(), b"s", {}, message_id="s1", mandatory=True)
    assert refused.value.code == "NO_ROUTE"


async def test_an_ordered_queue_has_one_active_consumer(broker: Broker) -> None:
    k = key()
    await broker.declare_outbox([OutboxSpec(k, ((SENDS_EXCHANGE, k),), ordered=True)])
    got: dict[str, list[bytes]] = {"one": [], "two": []}

    def handler(name: str) -> DeliveryHandler:
        async def handle(d: Delivery) -> Disposition:
            got[name].append(d.body)
            return ACK

        return handle

    first = await consuming(broker, k, handler("one"))
    second = await consuming(broker, k, handler("two"))
    for i in range(6):
        await broker.publish(
            SENDS_EXCHANGE, k, str(i).encode(), {}, message_id=str(i), mandatory=True
        )
    await until(lambda: _true(len(got["one"]) + len(got["two"]) == 6))
    for stop, task in (first, second):
        stop.set()
        await asyncio.wait_for(task, 15)
    assert got["two"] == []
    assert got["one"] == [str(i).encode() for i in range(6)]
