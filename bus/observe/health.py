"""HTTP surfaces for operations: ``/metrics`` on any app, and the worker's own small server.

A worker serves no API, but Kubernetes, systemd and Prometheus still need to ask it
"alive?", "ready?" and "what are your numbers?" — ``lgsp-bus worker --http-port`` serves
:func:`build_worker_app` for that. The worker also samples its queues' depths (work queue
and DLQ) every :data:`SAMPLE_INTERVAL_S` into ``lgsp_queue_messages`` and
``lgsp_dlq_messages``, since only the broker knows them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from bus.broker.base import Broker
from bus.config import RoutingConfig
from bus.errors import BusError
from bus.observe.metrics import CONTENT_TYPE, Metrics

__all__ = [
    "SAMPLE_INTERVAL_S",
    "WorkerStatus",
    "add_metrics_route",
    "build_worker_app",
    "sample_queues",
]

log = structlog.get_logger("bus.observe.health")

SAMPLE_INTERVAL_S = 15.0
"""How often a worker reads its queues' depths (Prometheus' usual scrape interval)."""
SAMPLE_TIMEOUT_S = 5.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def add_metrics_route(app: web.Application, metrics: Metrics) -> None:
    """Serve ``metrics`` at ``GET /metrics`` of ``app`` (before the app starts)."""

    async def handle(request: web.Request) -> web.Response:
        # Rendering walks every series; cheap at our cardinality, but keep it off the
        # loop's critical path anyway.
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", handle)


@dataclass
class WorkerStatus:
    """What the worker's ``/readyz`` reports; the runner keeps it current."""

    config: RoutingConfig
    broker: Broker
    services: list[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the worker stops consuming (then it is no longer ready)."""
    readiness: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    """Extra detail providers (e.g. circuit breaker states per upstream)."""
    in_flight: Callable[[], int] = lambda: 0


WORKER_STATUS = web.AppKey("worker_status", WorkerStatus)


async def _healthz(request: web.Request) -> web.Response:
    """Process alive (the event loop answers)."""
    return _json({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready: broker connected, config loaded, consuming (not draining)."""
    status = request.app[WORKER_STATUS]
    checks = {
        "broker": status.broker.ready,
        "config": bool(status.config.services),
        "consuming": not status.stop.is_set(),
    }
    ready = all(checks.values())
    detail: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "role": "worker",
        "checks": checks,
        "in_flight": status.in_flight(),
        "services": status.services,
    }
    for provider in status.readiness:
        detail.update(provider())
    return _json(detail, 200 if ready else 503)


def build_worker_app(status: WorkerStatus, metrics: Metrics | None) -> web.Application:
    """``/healthz``, ``/readyz`` and (with ``metrics``) ``/metrics`` for a worker process."""
    app = web.Application()
    app[WORKER_STATUS] = status
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    if metrics is not None:
        add_metrics_route(app, metrics)
    return app


async def sample_queues(
    broker: Broker,
    services: Sequence[str] | Iterable[str],
    metrics: Metrics,
    stop: asyncio.Event,
    interval_s: float = SAMPLE_INTERVAL_S,
) -> None:
    """Record the depth of each service's queue and DLQ every ``interval_s`` until ``stop``."""
    names = list(services)
    while not stop.is_set():
        for service in names:
            try:
                async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                    ready, dead = await broker.message_counts(service)
            except (BusError, TimeoutError) as exc:
                # A broker outage shows in lgsp_broker_connected; keep the last sample.
                log.debug("health.sample_failed", service=service, error=str(exc))
                continue
            metrics.queue_depths(service, ready, dead)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
