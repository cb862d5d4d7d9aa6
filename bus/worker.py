"""Worker: consumes service queues, calls the service's adapter, replies, then acknowledges.

Every outcome becomes a reply: the adapter's body, a :mod:`bus.errors` error with its code,
or ``INTERNAL_ERROR`` for an adapter bug — never a lost or hanging request. The adapter call
runs under the request's deadline minus a reply margin, so the caller hears
``UPSTREAM_TIMEOUT`` from the worker before the gateway's own deadline fires.
SIGTERM (``stop``): stop taking messages, finish those in flight within the drain bound;
unfinished ones return to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

import structlog

from adapters.base import Adapter, CallContext, registry
from bus.broker.base import Broker
from bus.config import RoutingConfig
from bus.envelope import Reply, Request
from bus.errors import BusError, InternalError, NotFoundError, UpstreamTimeout

__all__ = ["REPLY_MARGIN_S", "Worker", "open_adapters"]

log = structlog.get_logger("bus.worker")

REPLY_MARGIN_S = 0.25
"""Time kept back from the deadline for the reply to travel back to the gateway."""


async def open_adapters(
    config: RoutingConfig, services: Iterable[str] | None = None
) -> dict[str, Adapter]:
    """Build the adapter of each (selected) service; closes what it opened on failure."""
    opened: dict[str, Adapter] = {}
    try:
        for name in services if services is not None else config.services:
            svc = config.services[name]
            kind = registry.get(svc.adapter)
            if kind is None:
                raise ValueError(f"unknown adapter kind {svc.adapter!r} for service {name}")
            opened[name] = await kind.create(name, svc, config.upstreams[svc.upstream])
    except BaseException:
        for adapter in opened.values():
            await adapter.aclose()
        raise
    return opened


class Worker:
    """Serves requests for a set of services."""

    def __init__(
        self,
        config: RoutingConfig,
        broker: Broker,
        adapters: Mapping[str, Adapter],
        *,
        drain_s: float = 15.0,
    ) -> None:
        self.config = config
        self.broker = broker
        self.adapters = dict(adapters)
        self.drain_s = drain_s
        self.in_flight = 0

    async def handle(self, req: Request) -> Reply:
        """Serve one request; always returns a reply."""
        structlog.contextvars.bind_contextvars(
            correlation_id=req.trace_id or req.request_id,
            service=req.service,
            operation=req.operation,
            consumer=req.consumer,
        )
        started = time.perf_counter()
        self.in_flight += 1
        try:
            body = await self._call(req)
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            log.info("worker.request_served", elapsed_ms=elapsed_ms)
            return Reply(
                req.request_id, req.correlation_id, body=body, meta={"elapsed_ms": elapsed_ms}
            )
        except BusError as exc:
            log.info("worker.request_failed", code=exc.code, attempt=req.attempt)
            return Reply(req.request_id, req.correlation_id, error=exc.to_dict())
        except Exception as exc:  # an adapter bug must still answer the caller
            log.exception("worker.adapter_crashed", error_type=type(exc).__name__)
            error = InternalError("the adapter failed unexpectedly")
            return Reply(req.request_id, req.correlation_id, error=error.to_dict())
        finally:
            self.in_flight -= 1
            structlog.contextvars.clear_contextvars()

    async def _call(self, req: Request) -> dict[str, object]:
        adapter = self.adapters.get(req.service)
        if adapter is None:
            raise NotFoundError(f"this worker does not serve {req.service}", code="UNKNOWN_SERVICE")
        budget = req.remaining() - REPLY_MARGIN_S
        if budget <= 0:
            raise UpstreamTimeout("no time left before the deadline to call the upstream")
        ctx = CallContext(
            request_id=req.request_id,
            correlation_id=req.trace_id or req.correlation_id,
            consumer=req.consumer,
            service=req.service,
            operation=req.operation,
            deadline=req.deadline - REPLY_MARGIN_S,
            attempt=req.attempt,
        )
        try:
            async with asyncio.timeout(budget):
                return await adapter.call(req.operation, req.body, ctx)
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not answer before the deadline") from None

    async def run(self, stop: asyncio.Event, services: Iterable[str] | None = None) -> None:
        """Consume every (selected) service's queue until ``stop``; drain within the bound."""
        names = list(services if services is not None else self.adapters)
        prefetch = self.config.broker.prefetch
        async with asyncio.TaskGroup() as tasks:
            consumers = [
                tasks.create_task(
                    self.broker.serve(name, self.handle, prefetch=prefetch, stop=stop)
                )
                for name in names
            ]
            log.info("worker.started", services=names)
            await stop.wait()
            log.info("worker.draining", in_flight=self.in_flight, bound_s=self.drain_s)
            _, pending = await asyncio.wait(consumers, timeout=self.drain_s)
            for task in pending:
                task.cancel()  # unfinished deliveries are requeued by the broker
        log.info("worker.stopped", abandoned=len(pending))

    async def aclose(self) -> None:
        """Close every adapter."""
        for adapter in self.adapters.values():
            await adapter.aclose()
