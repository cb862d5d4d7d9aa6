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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from adapters.base import Adapter, CallContext, registry
from adapters.common.http import forwarding
from bus.broker.base import Broker
from bus.config import OperationConfig, RoutingConfig
from bus.envelope import REPLY_MARGIN_S, Reply, Request
from bus.errors import (
    BusError,
    DeadlineExceeded,
    InternalError,
    NotFoundError,
    UpstreamTimeout,
    for_caller,
)
from bus.logs import forget_pii, pii_of, remember_pii_here
from bus.observe import tracing
from bus.worker.redelivery import Redeliveries
from bus.worker.resilience import Breakers, call_with_retry
from bus.xroad import outbound_headers

if TYPE_CHECKING:
    from bus.observe.metrics import Metrics

__all__ = ["REPLY_MARGIN_S", "Worker", "open_adapters"]

log = structlog.get_logger("bus.worker.worker")


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
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.broker = broker
        self.adapters = dict(adapters)
        self.drain_s = drain_s
        self.in_flight = 0
        self.metrics = metrics
        self.breakers = Breakers(config, self.adapters, recorder=metrics)
        self.use_breakers(self.breakers)
        # Per-service consumers, so a config reload can add and remove services live.
        self._tasks: asyncio.TaskGroup | None = None
        self._stops: dict[str, asyncio.Event] = {}
        self._consumers: dict[str, asyncio.Task[None]] = {}
        self.redeliveries = Redeliveries()

    def use_breakers(self, breakers: Breakers) -> None:
        """Put ``breakers`` in force (at start, and when a reload replaces them) and show
        each one's state in ``lgsp_circuit_breaker_state``; upstreams left behind lose it."""
        retired = set(self.breakers.states()) - set(breakers.states())
        self.breakers = breakers
        if self.metrics is not None:
            self.metrics.breakers_in_force(breakers.states(), retired)

    def readiness(self) -> dict[str, Any]:
        """``/readyz`` detail: each upstream's circuit breaker (an open one is not unready:
        its calls fail fast with ``CIRCUIT_OPEN`` while the rest of the bus serves)."""
        return {"breakers": self.breakers.snapshot()}

    async def handle(self, req: Request) -> Reply:
        """Serve one request; always returns a reply. A redelivery of a request this worker
        answered (its ack was lost with a broker node) gets the same reply again, and one
        of a request it is still serving waits for that: the upstream is called once."""
        return await self.redeliveries.serve(
            req, self._traced if tracing.enabled() else self._serve
        )

    async def _traced(self, req: Request) -> Reply:
        """:meth:`_serve` in a ``worker.request`` span, a child of the gateway's."""
        attributes = {
            "lgsp.service": req.service,
            "lgsp.operation": req.operation,
            "lgsp.consumer": req.consumer,
            "lgsp.correlation_id": req.trace_id,
            "lgsp.attempt": req.attempt,
        }
        with tracing.span("worker.request", "consumer", attributes, req.traceparent) as span:
            reply = await self._serve(req)
            error = reply.error or {}
            tracing.outcome(span, str(error.get("code", "OK")))
            return reply

    async def _serve(self, req: Request) -> Reply:
        structlog.contextvars.bind_contextvars(
            correlation_id=req.trace_id or req.request_id,
            service=req.service,
            operation=req.operation,
            consumer=req.consumer,
        )
        started = time.perf_counter()
        self.in_flight += 1
        pii = remember_pii_here(pii_of(req.body))  # masked in every log line of this call
        try:
            body = await self._call(req)
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            log.info("worker.request_served", elapsed_ms=elapsed_ms)
            return Reply(
                req.request_id, req.correlation_id, body=body, meta={"elapsed_ms": elapsed_ms}
            )
        except BusError as exc:
            # The adapter's message (masked like every log line) is for operators; the caller
            # gets the code and a fixed text (bus.errors.for_caller).
            log.info(
                "worker.request_failed", code=exc.code, attempt=req.attempt, said=exc.message[:200]
            )
            wire = for_caller(exc)
            if exc.retry_after is not None:  # e.g. CIRCUIT_OPEN: the caller's Retry-After
                wire["retry_after_s"] = round(exc.retry_after, 3)
            return Reply(req.request_id, req.correlation_id, error=wire)
        except Exception as exc:  # an adapter bug must still answer the caller
            log.exception("worker.adapter_crashed", error_type=type(exc).__name__)
            error = InternalError("the adapter failed unexpectedly")
            return Reply(req.request_id, req.correlation_id, error=error.to_dict())
        finally:
            self.in_flight -= 1
            forget_pii(pii)
            structlog.contextvars.clear_contextvars()

    async def _call(self, req: Request) -> dict[str, object]:
        adapter = self.adapters.get(req.service)
        if adapter is None:
            raise NotFoundError(f"this worker does not serve {req.service}", code="UNKNOWN_SERVICE")
        budget = req.remaining() - REPLY_MARGIN_S
        if budget <= 0:
            # Expired work is never started: nobody waits for its answer any more.
            raise DeadlineExceeded("no time left before the deadline; the upstream was not called")
        ctx = CallContext(
            request_id=req.request_id,
            correlation_id=req.trace_id or req.correlation_id,
            consumer=req.consumer,
            service=req.service,
            operation=req.operation,
            deadline=req.deadline - REPLY_MARGIN_S,
            attempt=req.attempt,
            officer=req.officer,
            xroad_headers=outbound_headers(
                self.config, req.service, req.consumer, req.request_id, req.officer
            ),
        )
        code, started = "INTERNAL_ERROR", time.perf_counter()
        if self.metrics is not None:
            self.metrics.worker_started(req.service)
        try:
            with forwarding(ctx.xroad_headers):
                body = await self._attempts(adapter, req, ctx)
            code = "OK"
            return body
        except TimeoutError:
            code = "UPSTREAM_TIMEOUT"
            raise UpstreamTimeout("the upstream did not answer before the deadline") from None
        except BusError as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.worker_finished(req.service)
                elapsed = time.perf_counter() - started
                self.metrics.upstream_call(req.service, req.operation, code, elapsed)

    async def _attempts(self, adapter: Adapter, req: Request, ctx: CallContext) -> dict[str, Any]:
        """The adapter call under the operation's retry policy and the upstream's breaker;
        every attempt ends by the request's deadline minus the reply margin."""
        svc = self.config.services.get(req.service)
        op = svc.operations.get(req.operation) if svc is not None else None
        policy = op if op is not None else OperationConfig()

        async def call(number: int, attempt_end: float) -> dict[str, Any]:
            try:
                async with asyncio.timeout(attempt_end - time.time()):
                    return await adapter.call(
                        req.operation, req.body, replace(ctx, deadline=attempt_end, attempt=number)
                    )
            except TimeoutError:
                raise UpstreamTimeout("the upstream did not answer in time") from None

        async def attempt(number: int, attempt_end: float) -> dict[str, Any]:
            if not tracing.enabled():
                return await call(number, attempt_end)
            attributes = {
                "lgsp.service": req.service,
                "lgsp.operation": req.operation,
                "lgsp.upstream": svc.upstream if svc is not None else None,
                "lgsp.attempt": number,
            }
            with tracing.span("upstream.call", "client", attributes) as span:
                try:
                    body = await call(number, attempt_end)
                except BusError as exc:
                    tracing.outcome(span, exc.code)
                    raise
                tracing.outcome(span, "OK")
                return body

        def on_retry(number: int, exc: BaseException) -> None:
            code = exc.code if isinstance(exc, BusError) else type(exc).__name__
            log.info("worker.retrying", attempt=number, code=code)
            if self.metrics is not None:
                self.metrics.upstream_retry(req.service, req.operation)

        return await call_with_retry(
            attempt,
            policy=policy.retry,
            idempotent=policy.idempotent,
            deadline=ctx.deadline,
            breaker=self.breakers.for_service(req.service),
            on_retry=on_retry,
            caller_deadline=req.short_deadline,
        )

    async def run(self, stop: asyncio.Event, services: Iterable[str] | None = None) -> None:
        """Consume every (selected) service's queue until ``stop``; drain within the bound."""
        names = list(services if services is not None else self.adapters)
        pending: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            for name in names:
                self.consume(name)
            log.info("worker.started", services=names)
            await stop.wait()
            self._tasks = None
            log.info("worker.draining", in_flight=self.in_flight, bound_s=self.drain_s)
            for service_stop in self._stops.values():
                service_stop.set()
            if self._consumers:
                _, pending = await asyncio.wait(self._consumers.values(), timeout=self.drain_s)
            for task in pending:
                task.cancel()  # unfinished deliveries are requeued by the broker
        log.info("worker.stopped", abandoned=len(pending))

    def consume(self, service: str) -> None:
        """Start consuming ``service``'s queue while :meth:`run` runs (a reload adds one)."""
        if self._tasks is None:
            raise RuntimeError("the worker is not running")
        running = self._consumers.get(service)
        if running is not None and not running.done():
            return
        stop = self._stops[service] = asyncio.Event()
        serve = self.broker.serve(
            service, self.handle, prefetch=self.config.broker.prefetch, stop=stop
        )
        self._consumers[service] = self._tasks.create_task(serve)

    async def stop_consuming(self, service: str) -> None:
        """Stop consuming ``service``; its in-flight messages finish within the drain bound."""
        stop, task = self._stops.pop(service, None), self._consumers.pop(service, None)
        if stop is None or task is None:
            return
        stop.set()
        _, pending = await asyncio.wait({task}, timeout=self.drain_s)
        for left in pending:
            left.cancel()  # unfinished deliveries are requeued by the broker

    async def aclose(self) -> None:
        """Close every adapter."""
        for adapter in self.adapters.values():
            await adapter.aclose()
