"""Consumes every outbox queue of the config with its target, until stopped.

Ordered queues (ordered sends, every subscription) are consumed one message at a time
(``prefetch`` 1, a single active consumer across processes); unordered send queues
``delivery.prefetch`` at a time. Each partition reports the publish time of the message it
holds (``lgsp_delivery_oldest_seconds``). On ``stop`` held messages go back to their
queues at once; deliveries in an attempt finish within the drain bound.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import aiohttp
import structlog

from bus.broker.base import Broker, Handler
from bus.broker.outbox import (
    ACCEPTED_AT,
    PUBLISHED_AT,
    Delivery,
    DeliveryHandler,
    Disposition,
    OutboxSpec,
    outbox_specs,
)
from bus.config import RoutingConfig
from bus.delivery.recorder import DeliveryReport
from bus.delivery.sources import SourcePoller
from bus.delivery.targets import PullTarget, SendTarget, WebhookTarget
from bus.store.base import Store

__all__ = ["Deliveries"]

log = structlog.get_logger("bus.delivery.runner")


class Deliveries:
    """The delivery side of one worker process."""

    def __init__(
        self,
        config: RoutingConfig,
        broker: Broker,
        store: Store,
        send_handler: Handler | None,
        *,
        report: DeliveryReport | None = None,
        drain_s: float = 15.0,
        subject_key: bytes | None = None,
    ) -> None:
        self.config, self.broker, self.store = config, broker, store
        self.send_handler = send_handler
        self.report = report or DeliveryReport()
        self.drain_s = drain_s
        self.specs = outbox_specs(config)
        self.subject_key = subject_key
        """The audit key: scheduled pulls name citizens by its HMAC (no key: no sources)."""

    def _target(
        self, spec: OutboxSpec, session: aiohttp.ClientSession, stop: asyncio.Event
    ) -> DeliveryHandler | None:
        kind, _, rest = spec.key.partition(".")
        if kind == "send":
            if self.send_handler is None:
                return None
            return SendTarget(self.config, self.store, self.send_handler, self.report, stop)
        consumer, name, _p = rest.split(".")
        sub = self.config.consumers[consumer].subscriptions[name]
        args = (self.config, self.store, consumer, name, self.report, stop)
        if sub.kind == "webhook":
            return WebhookTarget(*args, session=session)
        return PullTarget(*args)

    def _watched(self, key: str, target: DeliveryHandler) -> DeliveryHandler:
        metrics = self.report.metrics

        async def handle(delivery: Delivery) -> Disposition:
            sent = delivery.headers.get(PUBLISHED_AT) or delivery.headers.get(ACCEPTED_AT)
            since = sent / 1000 if isinstance(sent, int) else time.time()
            metrics.delivery_holding(key, since)
            try:
                return await target(delivery)
            finally:
                metrics.delivery_holding(key, None)

        return handle

    async def run(self, stop: asyncio.Event) -> None:
        """Declare the outbox topology, consume every queue until ``stop``, then drain."""
        if not self.specs and not self.config.sources:
            return
        await self.broker.declare_outbox(self.specs)
        consumers_stop = asyncio.Event()  # held messages let go at once on stop
        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
            )
            tasks: list[asyncio.Task[None]] = []
            for spec in self.specs:
                target = self._target(spec, session, consumers_stop)
                if target is None:
                    continue
                prefetch = 1 if spec.ordered else self.config.delivery.prefetch
                tasks.append(
                    asyncio.create_task(
                        self.broker.consume(
                            spec.key,
                            self._watched(spec.key, target),
                            prefetch=prefetch,
                            stop=consumers_stop,
                        )
                    )
                )
            if self.config.sources and (self.subject_key is None or self.send_handler is None):
                log.error("delivery.sources_disabled", reason="no audit.subject_key")
            elif self.send_handler is not None and self.subject_key is not None:
                for name in self.config.sources:
                    poller = SourcePoller(
                        name,
                        self.config,
                        self.store,
                        self.broker,
                        self.send_handler,
                        self.subject_key,
                    )
                    tasks.append(asyncio.create_task(poller.run(consumers_stop)))
            log.info("delivery.started", queues=len(tasks))
            await stop.wait()
            consumers_stop.set()
            _, pending = await asyncio.wait(tasks, timeout=self.drain_s) if tasks else ((), set())
            for task in pending:
                task.cancel()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("delivery.consumer_failed", error=repr(task.exception()))
        log.info("delivery.stopped")
