"""A whole bus on loopback for end-to-end tests: simulators, broker, worker, gateway.

The gateway and the worker each get their own broker connection, as separate processes
would; with ``amqp_url=None`` both share one in-memory broker (the embedded default).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from adapters.base import answer_fields, parse_routing, reply_models, request_models
from bus.audit.observer import AuditObserver, Auditor, load_subject_key
from bus.broker import NULL_RECORDER, Broker, open_broker, queue_specs
from bus.broker.outbox import outbox_specs
from bus.config import RoutingConfig
from bus.delivery.recorder import NULL_METRICS, DeliveryReport
from bus.delivery.runner import Deliveries
from bus.exchange import ExchangeObserver
from bus.gateway.app import Gateway, Runtime, build_app, instrument_gateway
from bus.gateway.server import bound_port, http_site
from bus.observe.metrics import Metrics
from bus.observe.observer import MetricsObserver
from bus.store import Store
from bus.worker.worker import Worker, open_adapters
from tests.support.procs import reap

__all__ = ["BusStack", "running_bus", "serve_app", "stack_config", "terminate"]


async def terminate(proc: asyncio.subprocess.Process, bound_s: float = 20) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it is still there after ``bound_s``."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), bound_s)
    except TimeoutError:
        await reap(proc)


@asynccontextmanager
async def serve_app(
    app: web.Application, *, ssl_context: ssl.SSLContext | None = None, json_errors: bool = False
) -> AsyncIterator[str]:
    """Serve an app on an ephemeral loopback port (HTTPS with ``ssl_context``); yields its
    base URL. ``json_errors``: HTTP parse errors in the gateway's shape, as in production."""
    async with http_site(
        app, "127.0.0.1", 0, shutdown_timeout=2, ssl_context=ssl_context, json_errors=json_errors
    ) as runner:
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{bound_port(runner)}/"


def stack_config(
    *,
    civil_url: str,
    token_env: str,
    key_env: str,
    timeout_s: float = 5.0,
    extra_services: dict[str, Any] | None = None,
    extra_upstreams: dict[str, Any] | None = None,
    allow: dict[str, list[str]] | None = None,
) -> RoutingConfig:
    """A routing config pointing at the test's simulators."""
    data: dict[str, Any] = {
        "version": 1,
        "gateway": {"shutdown_grace_s": 5},
        "broker": {"prefetch": 16, "delivery_limit": 3},
        "consumers": {
            "portal": {
                "api_keys": [{"key": f"env:{key_env}"}],
                "allow": allow or {"civil-status": ["lookup"]},
            },
            "outsider": {"api_keys": [{"key": f"env:{key_env}_OUTSIDER"}], "allow": {}},
        },
        "upstreams": {
            "moj": {
                "url": civil_url,
                "allow_plain_http": True,
                "auth": {"kind": "bearer", "token": f"env:{token_env}"},
            },
            **(extra_upstreams or {}),
        },
        "services": {
            "civil-status": {
                "adapter": "civil_status",
                "upstream": "moj",
                "operations": {"lookup": {"timeout_s": timeout_s}},
            },
            **(extra_services or {}),
        },
    }
    return parse_routing(data)


@dataclass
class BusStack:
    """A running bus: its URL, an HTTP session with the consumer's key, the parts."""

    url: str
    session: aiohttp.ClientSession
    key: str
    gateway: Gateway
    worker: Worker
    worker_broker: Broker

    async def post(
        self, path: str, body: Any, *, key: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST JSON (or raw bytes) with the consumer's key; returns status and JSON body."""
        hdrs = {"Authorization": f"Bearer {key if key is not None else self.key}"}
        hdrs.update(headers or {})
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        if isinstance(body, bytes):
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.post(self.url + path.lstrip("/"), headers=hdrs, **kwargs) as r:
            return r.status, await r.json()


@asynccontextmanager
async def running_bus(
    config: RoutingConfig,
    amqp_url: str | None,
    key: str,
    *,
    gateway_metrics: Metrics | None = None,
    worker_metrics: Metrics | None = None,
    ssl_context: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
    auditor: Auditor | None = None,
    store: Store | None = None,
) -> AsyncIterator[BusStack]:
    """Start worker + gateway on ``config``; stop both (draining) on exit.

    With ``auditor`` the gateway writes the audit trail as ``lgsp-bus run`` does (first
    observer; its store is ``runtime.store``; its state in ``/readyz``).

    With metrics, the gateway serves ``/metrics`` and both record as in production (on the
    in-memory broker the one shared broker reports to ``gateway_metrics``)."""
    gw_rec = gateway_metrics if gateway_metrics is not None else NULL_RECORDER
    wk_rec = worker_metrics if worker_metrics is not None else NULL_RECORDER
    async with AsyncExitStack() as stack:
        if amqp_url is None:
            shared = open_broker(None, recorder=gw_rec)
            gateway_broker = worker_broker = shared
        else:
            gateway_broker = open_broker(amqp_url, name="test-gateway", recorder=gw_rec)
            worker_broker = open_broker(amqp_url, name="test-worker", recorder=wk_rec)
        for b in {id(gateway_broker): gateway_broker, id(worker_broker): worker_broker}.values():
            await b.connect()
            stack.push_async_callback(b.aclose)
        await gateway_broker.declare(queue_specs(config))
        await worker_broker.declare(queue_specs(config))
        adapters = await open_adapters(config)
        worker = Worker(config, worker_broker, adapters, drain_s=5, metrics=worker_metrics)
        stack.push_async_callback(worker.aclose)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker.run(stop))]
        specs = outbox_specs(config)
        delivery_store = store if store is not None else auditor.store if auditor else None
        if specs:
            await gateway_broker.declare_outbox(specs)
            await worker_broker.declare_outbox(specs)
        if (specs or config.sources) and delivery_store is not None:  # as `lgsp-bus worker`
            metrics = worker_metrics.deliveries if worker_metrics is not None else NULL_METRICS
            deliveries = Deliveries(
                config,
                worker_broker,
                delivery_store,
                worker.handle,
                report=DeliveryReport(metrics, auditor),
                drain_s=5,
                subject_key=load_subject_key(config),
            )
            tasks.append(asyncio.create_task(deliveries.run(stop)))

        async def stop_worker() -> None:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)

        stack.push_async_callback(stop_worker)
        observers: list[ExchangeObserver] = (
            [MetricsObserver(gateway_metrics)] if gateway_metrics is not None else []
        )
        if auditor is not None:
            observers.insert(0, AuditObserver(auditor, config))
        runtime = Runtime.build(
            config,
            observers,
            models=request_models(config),
            replies=reply_models(config),
            answer_fields=answer_fields(config),
        )
        gateway = Gateway(gateway_broker, runtime)
        gateway.readiness.append(worker.readiness)  # as in `lgsp-bus run`: breakers in /readyz
        if auditor is not None:
            gateway.store = auditor.store
            gateway.readiness.append(auditor.readiness)
        if store is not None:  # idempotency and async mode without an audit trail
            gateway.store = store
        app = build_app(gateway)
        if gateway_metrics is not None:
            instrument_gateway(app, gateway_metrics)
        url = await stack.enter_async_context(
            serve_app(app, ssl_context=ssl_context, json_errors=True)
        )
        connector = aiohttp.TCPConnector(ssl=client_ssl) if client_ssl is not None else None
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        yield BusStack(url, session, key, gateway, worker, worker_broker)


def new_secret() -> str:
    """A random secret for a test's environment variables."""
    return secrets.token_urlsafe(16)
