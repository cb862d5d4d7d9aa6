"""Process roles: gateway, worker, simulators, and ``run`` (all of them in one process).

Each role is an async function that serves until its ``stop`` event is set (SIGTERM/SIGINT
in the CLI), then shuts down in order: stop accepting HTTP, let in-flight requests finish
within the configured grace, stop consuming and drain the worker, close the broker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from adapters.base import answer_fields, reply_models, request_models
from adapters.civil_status.simulator import build_app as build_civil
from adapters.population_db.simulator import build_app as build_population
from adapters.procedure.simulator import BASE_PATH as PROCEDURE_PATH
from adapters.procedure.simulator import build_app as build_procedure
from bus.audit.observer import AuditObserver, Auditor, audit_trail, load_subject_key
from bus.broker import NULL_RECORDER, Broker, BrokerRecorder, open_broker, queue_specs
from bus.broker.outbox import outbox_specs
from bus.cli.reloading import follow_gateway, follow_worker
from bus.config import AuthBearer, AuthC06, RoutingConfig, resolve_secret
from bus.delivery.recorder import DeliveryReport
from bus.delivery.runner import Deliveries
from bus.exchange import ExchangeObserver
from bus.gateway.app import Gateway, Runtime, build_app, instrument_gateway
from bus.gateway.server import bound_port, http_site, server_ssl_context, stop_accepting
from bus.observe.accesslog import AccessLogObserver
from bus.observe.deliveries import sample_outbox
from bus.observe.health import WorkerStatus, build_worker_app, sample_queues
from bus.observe.metrics import Metrics
from bus.observe.observer import MetricsObserver
from bus.reload.reloader import ConfigReloader
from bus.store import dead_letter_keyring, store_url_from_env
from bus.worker.worker import Worker, open_adapters

__all__ = [
    "DEMO_SECRETS",
    "Simulator",
    "http_site",
    "install_signal_handlers",
    "run_all",
    "run_gateway",
    "run_worker",
    "simulators_for",
]

log = structlog.get_logger("bus.cli.roles")

DEMO_SECRETS = (
    "LGSP_DEMO_API_KEY",
    "LGSP_SIM_CIVIL_STATUS_TOKEN",
    "LGSP_SIM_POPULATION_SECRET",
    "LGSP_SIM_PROCEDURE_TOKEN",  # the commented X-Road provider example
    "LGSP_AUDIT_KEY",
)
"""Environment variables the shipped routing.yaml refers to; ``run`` fills unset ones."""


def ensure_demo_secrets() -> dict[str, str]:
    """Give every unset demo secret a random value; return the ones it generated."""
    generated: dict[str, str] = {}
    for name in DEMO_SECRETS:
        if not os.environ.get(name):
            os.environ[name] = generated[name] = secrets.token_urlsafe(18)
    return generated


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@dataclass(frozen=True)
class Simulator:
    """A simulator to start for a loopback upstream of the config."""

    kind: str
    host: str
    port: int
    build: Callable[[], web.Application]
    setting: str = ""
    """What chose the port (the upstream's URL, or the run's --…-sim-port)."""


SIM_PORT_ENV = {
    "civil-status": "LGSP_SIM_CIVIL_STATUS_PORT",
    "population": "LGSP_SIM_POPULATION_PORT",
}
"""Per simulator kind: the environment variable of ``run``'s ``--<kind>-sim-port``."""
_SIM_ADAPTERS = {"civil_status": "civil-status", "population_db": "population"}


def with_sim_ports(config: RoutingConfig, ports: dict[str, int]) -> RoutingConfig:
    """``config`` with the loopback upstreams of these simulator kinds on these ports (so
    two dev instances can run side by side); other upstreams unchanged."""
    upstreams = dict(config.upstreams)
    for svc in config.services.values():
        port = ports.get(_SIM_ADAPTERS.get(svc.adapter, ""))
        upstream = upstreams[svc.upstream]
        parts = urlsplit(upstream.url)
        if port is None or parts.hostname not in ("127.0.0.1", "localhost"):
            continue
        url = parts._replace(netloc=f"{parts.hostname}:{port}").geturl()
        upstreams[svc.upstream] = upstream.model_copy(update={"url": url})
    return config.model_copy(update={"upstreams": upstreams})


def simulators_for(config: RoutingConfig, *, latency_ms: float = 0.0) -> list[Simulator]:
    """Simulators for the services whose upstream is a loopback URL of a simulated kind."""
    sims: dict[tuple[str, int], Simulator] = {}
    for svc in config.services.values():
        upstream = config.upstreams[svc.upstream]
        parts = urlsplit(upstream.url)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
            continue
        key = (parts.hostname, parts.port)
        auth = upstream.auth
        if svc.adapter == "civil_status" and isinstance(auth, AuthBearer):
            build = partial(build_civil, token=resolve_secret(auth.token), latency_ms=latency_ms)
            setting = f"upstreams.{svc.upstream}.url or --civil-status-sim-port"
            sims[key] = Simulator("civil-status", *key, build, setting)
        elif svc.adapter == "population_db" and isinstance(auth, AuthC06):
            build = partial(
                build_population,
                username=auth.username,
                secret=resolve_secret(auth.secret),
                latency_ms=latency_ms,
            )
            setting = f"upstreams.{svc.upstream}.url or --population-sim-port"
            sims[key] = Simulator("population", *key, build, setting)
        elif (
            svc.adapter == "rest" and parts.path == PROCEDURE_PATH and isinstance(auth, AuthBearer)
        ):
            build = partial(build_procedure, token=resolve_secret(auth.token))
            sims[key] = Simulator("procedure", *key, build, f"upstreams.{svc.upstream}.url")
    return list(sims.values())


@asynccontextmanager
async def connected_broker(
    config: RoutingConfig, amqp_url: str | None, recorder: BrokerRecorder = NULL_RECORDER
) -> AsyncIterator[Broker]:
    """A connected broker with the config's topology declared."""
    broker = open_broker(amqp_url, recorder=recorder)
    broker.keyring = dead_letter_keyring(config, store_url_from_env())
    await broker.connect()
    try:
        await broker.declare(queue_specs(config))
        await broker.declare_outbox(outbox_specs(config))  # sends and events (bus/delivery)
        yield broker
    finally:
        await broker.aclose()


async def run_gateway(
    config: RoutingConfig,
    broker: Broker,
    host: str,
    port: int,
    stop: asyncio.Event,
    listening: asyncio.Event | None = None,
    *,
    metrics: Metrics | None = None,
    readiness: list[Callable[[], dict[str, Any]]] | None = None,
    auditor: Auditor | None = None,
    reloader: ConfigReloader | None = None,
) -> None:
    """Serve the gateway until ``stop``; then drain in-flight requests within the grace.

    ``readiness``: extra ``/readyz`` detail providers, shared as one list (``run`` adds the
    in-process worker's breakers to it once the worker exists). ``auditor``: the audit
    trail (see :func:`bus.audit.audit_trail`); its store becomes ``Gateway.store``."""
    observers: list[ExchangeObserver] = [AccessLogObserver()]
    if auditor is not None:
        # First: if it withholds an answer (fail_closed), the others see AUDIT_UNAVAILABLE.
        observers.insert(0, AuditObserver(auditor, config))
    if metrics is not None:
        observers.append(MetricsObserver(metrics))
    runtime = Runtime.build(
        config,
        observers,
        models=request_models(config),
        replies=reply_models(config),
        answer_fields=answer_fields(config),
    )
    gateway = Gateway(broker, runtime, readiness=readiness if readiness is not None else [])
    if auditor is not None:
        gateway.store = auditor.store
        gateway.readiness.append(auditor.readiness)
        if metrics is not None:
            auditor.recorder = metrics
            metrics.watch_audit_backlog(auditor.backlog_size)
    grace = config.gateway.shutdown_grace_s
    app = build_app(gateway)
    if reloader is not None:  # hot reload: runtime swaps, /admin/*, readiness, audit
        follow_gateway(reloader, app, auditor)
        handles = reloader.handles  # what the operators' console shows and acts on
        handles.broker, handles.metrics, handles.readiness = broker, metrics, gateway.readiness
    if metrics is not None:
        instrument_gateway(app, metrics)
    tls = config.gateway.tls
    ssl_context = server_ssl_context(tls) if tls is not None else None
    scheme = "https" if tls is not None else "http"
    async with http_site(
        app,
        host,
        port,
        shutdown_timeout=grace,
        ssl_context=ssl_context,
        json_errors=True,
        setting="--host/--port",
        keepalive_s=config.gateway.keepalive_timeout_s,
        read_timeout_s=config.gateway.request_read_timeout_s,
    ) as site:
        log.info("gateway.listening", url=f"{scheme}://{host}:{bound_port(site)}")
        if listening is not None:
            listening.set()
        await stop.wait()
        # At once: not ready, new calls refused, the listener closed; then the calls in
        # flight finish within the grace.
        gateway.stopping = True
        await stop_accepting(site)
        log.info("gateway.stopping", in_flight=gateway.in_flight)
        await gateway.wait_idle(grace)


async def run_worker(
    config: RoutingConfig,
    broker: Broker,
    stop: asyncio.Event,
    services: list[str] | None = None,
    *,
    metrics: Metrics | None = None,
    http: tuple[str, int] | None = None,
    readiness: list[Callable[[], dict[str, Any]]] | None = None,
    reloader: ConfigReloader | None = None,
    auditor: Auditor | None = None,
) -> None:
    """Serve the worker until ``stop``; then drain within the grace.

    With ``metrics`` it samples its queues' depths; with ``http`` (host, port) it serves
    ``/healthz``, ``/readyz`` and ``/metrics`` there until it has drained.
    """
    adapters = await open_adapters(config, services)
    worker = Worker(
        config, broker, adapters, drain_s=config.gateway.shutdown_grace_s, metrics=metrics
    )
    if readiness is not None:
        readiness.append(worker.readiness)
    names = list(adapters)
    if reloader is not None and reloader.handles.broker is None:  # a worker on its own
        reloader.handles.broker, reloader.handles.metrics = broker, metrics
        reloader.handles.readiness.append(worker.readiness)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(worker.aclose)
        if http is not None:
            status = WorkerStatus(
                config,
                broker,
                names,
                stop,
                readiness=[worker.readiness],  # circuit breakers per upstream
                in_flight=lambda: worker.in_flight,
            )
            worker_app = build_worker_app(status, metrics)
            if reloader is not None:  # /admin/* and the reload state on the worker's port
                follow_worker(reloader, worker, services, app=worker_app, status=status)
            site = await stack.enter_async_context(
                http_site(worker_app, *http, shutdown_timeout=2, setting="--http-host/--http-port")
            )
            log.info("worker.http_listening", url=f"http://{http[0]}:{bound_port(site)}")
        elif reloader is not None:
            follow_worker(reloader, worker, services)
        specs = outbox_specs(config)
        one_way = bool(specs or config.sources)
        if one_way and auditor is None:  # sends and events need the store and the audit trail
            auditor = await stack.enter_async_context(audit_trail(config))
        async with asyncio.TaskGroup() as tasks:
            if metrics is not None:
                metrics.config_applied(config, time.time())
                tasks.create_task(sample_queues(broker, names, metrics, stop))
            if one_way and auditor is not None:
                report = DeliveryReport(
                    metrics.deliveries if metrics is not None else DeliveryReport().metrics,
                    auditor,
                )
                deliveries = Deliveries(
                    config,
                    broker,
                    auditor.store,
                    worker.handle,
                    report=report,
                    drain_s=config.gateway.shutdown_grace_s,
                    subject_key=load_subject_key(config),
                )
                tasks.create_task(deliveries.run(stop))
                if metrics is not None:
                    tasks.create_task(sample_outbox(broker, specs, metrics.deliveries, stop))
            await worker.run(stop)


async def run_all(
    config: RoutingConfig,
    *,
    amqp_url: str | None,
    host: str,
    port: int,
    stop: asyncio.Event,
    with_sims: bool = True,
    announce: Callable[[str], Any] = print,
    metrics: Metrics | None = None,
    reloader: ConfigReloader | None = None,
) -> None:
    """Gateway + worker (+ simulators) in one process until ``stop``; one ``metrics`` for
    both, served at the gateway's ``/metrics``."""
    async with AsyncExitStack() as stack:
        if with_sims:
            for sim in simulators_for(config):
                site = http_site(sim.build(), sim.host, sim.port, setting=sim.setting)
                await stack.enter_async_context(site)
                announce(f"simulator {sim.kind:<13} http://{sim.host}:{sim.port}/")
        auditor = await stack.enter_async_context(audit_trail(config))
        announce(f"store {auditor.store!r}, audit chain {auditor.chain}")
        recorder = metrics if metrics is not None else NULL_RECORDER
        broker = await stack.enter_async_context(connected_broker(config, amqp_url, recorder))
        worker_stop = asyncio.Event()
        listening = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            readiness: list[Callable[[], dict[str, Any]]] = []  # the worker's breakers
            tasks.create_task(
                run_worker(
                    config,
                    broker,
                    worker_stop,
                    metrics=metrics,
                    readiness=readiness,
                    reloader=reloader,
                    auditor=auditor,
                )
            )
            gateway = tasks.create_task(
                run_gateway(
                    config,
                    broker,
                    host,
                    port,
                    stop,
                    listening,
                    metrics=metrics,
                    readiness=readiness,
                    auditor=auditor,
                    reloader=reloader,
                )
            )
            await listening.wait()
            scheme = "https" if config.gateway.tls is not None else "http"
            announce(f"gateway listening on {scheme}://{host}:{port}/")
            await gateway
            # The gateway has drained: only now may the worker stop answering.
            worker_stop.set()
