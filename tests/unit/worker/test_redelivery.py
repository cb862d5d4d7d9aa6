"""A worker serves each delivered request once (bus/worker/redelivery.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bus.envelope import Reply, Request
from bus.worker.redelivery import Redeliveries
from tests.contract.test_broker_contract import make_request


def counting() -> tuple[list[str], Callable[[Request], Awaitable[Reply]]]:
    calls: list[str] = []

    async def handler(req: Request) -> Reply:
        calls.append(req.request_id)
        await asyncio.sleep(0.05)
        return Reply(req.request_id, req.correlation_id, body={"n": len(calls)})

    return calls, handler


async def test_a_redelivery_gets_the_same_reply_without_a_second_call() -> None:
    calls, handler = counting()
    memory = Redeliveries()
    req = make_request("svc", {})
    first = await memory.serve(req, handler)
    again = await memory.serve(req, handler)
    assert again == first
    assert calls == [req.request_id]
    assert memory.repeats == 1
    other = await memory.serve(make_request("svc", {}), handler)
    assert other.body == {"n": 2}  # another request is served


async def test_a_redelivery_during_the_call_waits_for_it() -> None:
    calls, handler = counting()
    memory = Redeliveries()
    req = make_request("svc", {})
    replies = await asyncio.gather(*(memory.serve(req, handler) for _ in range(3)))
    assert len(calls) == 1
    assert len({id(r) for r in replies}) == 1


async def test_a_cancelled_delivery_lets_the_call_finish_for_the_redelivery() -> None:
    calls, handler = counting()
    memory = Redeliveries()
    req = make_request("svc", {})
    delivery = asyncio.ensure_future(memory.serve(req, handler))
    await asyncio.sleep(0.01)
    delivery.cancel()  # its channel died with a broker node
    redelivered = await memory.serve(req, handler)
    assert redelivered.body == {"n": 1}
    assert len(calls) == 1


async def test_replies_are_kept_until_the_deadline_and_bounded() -> None:
    memory = Redeliveries(bound=2)
    reply = Reply("r", "c", body={})
    memory.put("expired", time.time() - 1, reply)
    assert memory.get("expired") is None
    for key in ("a", "b", "c"):
        memory.put(key, time.time() + 60, reply)
    assert len(memory) == 2
    assert memory.get("a") is None  # the oldest went first
    assert memory.get("c") is reply
