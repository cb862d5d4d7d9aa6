"""A worker serves each delivered request once, even when the broker delivers it again.

A request is redelivered when the broker did not get its ack: the node the worker was
connected to died after the worker called the upstream and sent the reply, but before the
ack reached the queue's (new) leader. Served again, it would call the upstream twice.
:class:`Redeliveries` remembers, by the request's correlation id (fresh per gateway
request, kept by every redelivery), the replies this worker gave until each request's
deadline, and the requests it is serving now: a redelivery gets the same reply again, or
waits for the one being served, and the upstream is called once.

Limits: per worker process and in memory (:data:`REMEMBERED_MAX` replies, the oldest
forgotten first). A redelivery that reaches another worker process, or this one after a
restart, is served again there: across workers delivery stays at-least-once, and the
gateway's idempotency (the store) still answers the caller once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import structlog

from bus.envelope import Reply, Request

__all__ = ["REMEMBERED_MAX", "Redeliveries"]

log = structlog.get_logger("bus.worker.redelivery")

REMEMBERED_MAX = 10_000
"""Replies a worker remembers for redeliveries (each until its request's deadline)."""


class Redeliveries:
    """Replies given and requests in progress, by correlation id."""

    def __init__(self, bound: int = REMEMBERED_MAX) -> None:
        self.bound = bound
        self.repeats = 0
        """Deliveries answered from memory or joined to one in progress (no upstream call)."""
        self._replies: OrderedDict[str, tuple[float, Reply]] = OrderedDict()
        self._running: dict[str, asyncio.Future[Reply]] = {}

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> Reply | None:
        """The reply given for ``key``, if its deadline has not passed."""
        found = self._replies.get(key)
        if found is None:
            return None
        if found[0] < time.time():
            del self._replies[key]
            return None
        return found[1]

    def put(self, key: str, deadline: float, reply: Reply) -> None:
        """Remember ``reply`` until ``deadline``; forget the expired and the oldest past
        the bound (in the order they were answered)."""
        self._replies[key] = (deadline, reply)
        self._replies.move_to_end(key)
        now = time.time()
        while self._replies:
            oldest, (deadline_of_oldest, _) = next(iter(self._replies.items()))
            if deadline_of_oldest >= now and len(self._replies) <= self.bound:
                break
            del self._replies[oldest]

    async def serve(self, req: Request, handler: Callable[[Request], Awaitable[Reply]]) -> Reply:
        """``handler(req)``, unless ``req`` was answered (its reply again) or is being
        served (wait for that reply). The call runs in a task of its own that a
        cancellation of this delivery (its channel died with a broker node) does not stop:
        the upstream call finishes, its reply is remembered, and the redelivery gets it."""
        key = req.correlation_id
        answered = self.get(key)
        if answered is not None:
            self.repeats += 1
            log.info("worker.redelivery_answered", service=req.service)
            return answered
        running = self._running.get(key)
        if running is not None:
            await asyncio.wait({running})
            if not running.cancelled() and running.exception() is None:
                self.repeats += 1
                log.info("worker.redelivery_joined", service=req.service)
                return running.result()
        task = asyncio.ensure_future(handler(req))
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, req.deadline, done))
        return await asyncio.shield(task)

    def _finished(self, key: str, deadline: float, task: asyncio.Future[Reply]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled() and task.exception() is None:
            self.put(key, deadline, task.result())
