"""A 3-node RabbitMQ cluster: SIGKILL the node that leads the service queue, under load.

The cluster is started by the test itself (:mod:`tests.support.rabbitcluster`: three fresh nodes,
never the machine's shared one). The worker and one gateway broker are connected to the
queue's leader, a second gateway broker to another node; each knows all three URLs. Two
seconds into a steady load the leader is SIGKILLed. Then:

- every request sent through the surviving node is answered (none lost);
- a request the killed gateway connection had published (confirmed) but whose reply was
  lost fails at once with ``BROKER_UNAVAILABLE`` + ``detail.queued``, and is still served;
- no request reaches the upstream twice (redeliveries after the lost acks are answered
  from :class:`bus.worker.redelivery.Redeliveries`);
- both gateways and the worker serve again on the other nodes. How long that took is
  printed (``pytest -s``) for the README, not asserted (no timed assertions).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from bus.broker import QueueSpec
from bus.broker.amqp.broker import AmqpBroker
from bus.broker.base import queue_name
from bus.envelope import Reply, Request
from bus.errors import BusError
from bus.worker.redelivery import Redeliveries
from tests.contract.test_broker_contract import echo, fresh_service, make_request
from tests.support.rabbitcluster import RABBITMQ_SERVER, RabbitCluster

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    if not RABBITMQ_SERVER.exists():
        message = f"RabbitMQ is not installed ({RABBITMQ_SERVER} is missing): no cluster test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with RabbitCluster() as c:
        yield c


@dataclass
class Load:
    """What one gateway broker sent and got."""

    name: str
    ok: list[tuple[float, str]] = field(default_factory=list)
    """(sent at, request_id) of each answered request."""
    unexpected: list[str] = field(default_factory=list)
    """Error codes other than those of a refusal (none expected)."""
    answered: list[float] = field(default_factory=list)
    """When each answer came."""
    queued: list[str] = field(default_factory=list)
    """Published and confirmed, reply lost with the connection (``detail.queued``)."""
    refused: list[str] = field(default_factory=list)
    """Not acknowledged by the broker (no connection, or nacked while the queue elected a
    leader): the caller was told to retry."""

    def first_ok_after(self, t: float) -> float | None:
        sent = [at for at, _ in self.ok if at > t]
        return min(sent) if sent else None


async def eventually(condition: Callable[[], object], bound_s: float) -> None:
    """Until ``condition()`` holds or ``bound_s`` passed (the asserts after it judge)."""
    end = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > end:
            return
        await asyncio.sleep(0.1)


async def drive(broker: AmqpBroker, service: str, load: Load, stop: asyncio.Event) -> None:
    """One caller: a request at a time until ``stop`` (bounded by the test)."""
    n = 0
    while not stop.is_set():
        n += 1
        req = make_request(service, {"n": n}, timeout=20)
        sent = time.monotonic()
        try:
            reply = await broker.request(req)
        except BusError as exc:
            # Refused, never acknowledged: no connection, or the quorum queue nacked the
            # publish while it had no leader (OVERLOADED, like a full queue). Or queued.
            if exc.code not in ("BROKER_UNAVAILABLE", "OVERLOADED"):
                load.unexpected.append(exc.code)
            (load.queued if exc.detail.get("queued") else load.refused).append(req.request_id)
            await asyncio.sleep(0.05)
            continue
        assert reply.ok, reply.error
        load.ok.append((sent, req.request_id))
        load.answered.append(time.monotonic())


async def test_sigkill_of_the_queue_leader_under_load(cluster: RabbitCluster) -> None:
    service = fresh_service()
    declarer = AmqpBroker(",".join(cluster.urls()), name="test-declare")
    await declarer.connect()
    await declarer.declare([QueueSpec(service, quorum_group_size=3)])
    await declarer.aclose()
    row = cluster.queues(cluster.nodes[1])[queue_name(service)]
    assert sorted(row["members"]) == sorted(n.name for n in cluster.nodes)  # 3 replicas
    leader = cluster.node_named(row["leader"])
    others = [n for n in cluster.nodes if n is not leader]
    on_leader = ",".join([leader.url(), *(n.url() for n in others)])
    on_other = ",".join([n.url() for n in [*others, leader]])

    worker = AmqpBroker(on_leader, name="test-worker")
    gateways = [AmqpBroker(on_leader, name="test-gw-a"), AmqpBroker(on_other, name="test-gw-b")]
    loads = [Load("on the killed node"), Load("on a surviving node")]
    calls: Counter[str] = Counter()
    started: list[float] = []

    async def upstream(req: Request) -> Reply:
        calls[req.request_id] += 1
        started.append(time.monotonic())
        await asyncio.sleep(0.02)
        return await echo(req)

    redeliveries = Redeliveries()

    async def handler(req: Request) -> Reply:
        return await redeliveries.serve(req, upstream)

    stop_worker, stop_load = asyncio.Event(), asyncio.Event()
    try:
        for broker in (worker, *gateways):
            await broker.connect()
        serving = asyncio.create_task(worker.serve(service, handler, prefetch=8, stop=stop_worker))
        callers = [
            asyncio.create_task(drive(gw, service, load, stop_load))
            for gw, load in zip(gateways, loads, strict=True)
            for _ in range(4)
        ]
        try:
            await asyncio.sleep(2)
            assert all(load.ok for load in loads)
            killed_at = time.monotonic()
            cluster.kill(leader)
            # Until both gateways are answered again (bounded), then a second more of load.
            await eventually(
                lambda: all(load.first_ok_after(killed_at + 0.5) for load in loads), 30
            )
            await asyncio.sleep(1)
        finally:
            stop_load.set()
            for failed in await asyncio.gather(*callers, return_exceptions=True):
                if failed is not None:
                    raise failed
        # Queued requests whose replies were lost are still served (bounded wait).
        queued = set(loads[0].queued) | set(loads[1].queued)
        await eventually(lambda: queued <= set(calls), 20)
        stop_worker.set()
        await asyncio.wait_for(serving, 15)
    finally:
        stop_worker.set()
        for broker in (worker, *gateways):
            await broker.aclose()

    survivor = loads[1]
    assert not survivor.queued  # its connection lived: every acknowledged request answered
    for load in loads:
        assert not load.unexpected
        assert load.first_ok_after(killed_at + 0.5) is not None, f"gateway {load.name} stuck"
        assert {rid for _, rid in load.ok} <= set(calls)
    assert queued <= set(calls), "a queued (confirmed) request was lost"
    duplicates = {rid: n for rid, n in calls.items() if n > 1}
    assert not duplicates, f"upstream called twice for {duplicates}"
    resumed = min(t for t in started if t > killed_at)
    figures = {
        "requests answered": sum(len(load.ok) for load in loads),
        "reply lost, still served": len(queued),
        **{f"refused, gateway {load.name}": len(load.refused) for load in loads},
        "redeliveries answered without an upstream call": redeliveries.repeats,
        "worker consuming again after (s)": round(resumed - killed_at, 2),
        **{
            f"gateway {load.name} answered again after (s)": round(
                min(t for t in load.answered if t > killed_at) - killed_at, 2
            )
            for load in loads
        },
    }
    print(f"\ncluster failover figures: {figures}")
