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
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from bus.broker.base import Broker
from bus.config import RoutingConfig, resolve_secret
from bus.errors import BusError
from bus.observe.metrics import CONTENT_TYPE, Metrics

__all__ = [
    "OBSERVE_TOKEN",
    "SAMPLE_INTERVAL_S",
    "WorkerStatus",
    "add_metrics_route",
    "build_worker_app",
    "guard_observability",
    "may_observe",
    "public_readiness",
    "sample_queues",
]

log = structlog.get_logger("bus.observe.health")

SAMPLE_INTERVAL_S = 15.0
"""How often a worker reads its queues' depths (Prometheus' usual scrape interval)."""
SAMPLE_TIMEOUT_S = 5.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


OBSERVE_TOKEN = web.AppKey("observe_token", str)
"""The ``observe.metrics_token`` value an app's ``/metrics`` and ``/readyz`` detail need."""


def guard_observability(app: web.Application, config: RoutingConfig) -> None:
    """With ``observe.metrics_token``, ``/metrics`` and the detail of ``/readyz`` need it as a
    bearer token (blocking read of a ``file:`` reference: call at start only)."""
    ref = config.observe.metrics_token
    if ref is not None:
        app[OBSERVE_TOKEN] = resolve_secret(ref)


def may_observe(request: web.Request) -> bool:
    """Whether the request may see metrics and readiness detail."""
    token = request.app.get(OBSERVE_TOKEN)
    if token is None:
        return True
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def _unauthenticated() -> web.Response:
    body = {"error": {"code": "UNAUTHENTICATED", "message": "send the metrics token"}}
    response = _json(body, 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="lgsp-bus-metrics"'
    return response


def public_readiness(request: web.Request, detail: dict[str, Any], status: int) -> web.Response:
    """``/readyz``: the whole ``detail`` to whoever may observe, else status and checks."""
    if not may_observe(request):
        detail = {"status": detail["status"], "checks": detail["checks"]}
    return _json(detail, status)


def add_metrics_route(app: web.Application, metrics: Metrics) -> None:
    """Serve ``metrics`` at ``GET /metrics`` of ``app`` (before the app starts); with
    :func:`guard_observability`, only to the token's bearer."""

    async def handle(request: web.Request) -> web.Response:
        if not may_observe(request):
            return _unauthenticated()
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
    return public_readiness(request, detail, 200 if ready else 503)


def build_worker_app(status: WorkerStatus, metrics: Metrics | None) -> web.Application:
    """``/healthz``, ``/readyz`` and (with ``metrics``) ``/metrics`` for a worker process."""
    app = web.Application()
    app[WORKER_STATUS] = status
    guard_observability(app, status.config)
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
