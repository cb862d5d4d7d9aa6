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
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from bus.broker import Broker, open_broker, queue_specs
from bus.config import AuthBearer, AuthC06, RoutingConfig, resolve_secret
from bus.gateway import Runtime, build_app, wait_idle
from bus.worker import Worker, open_adapters

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

log = structlog.get_logger("bus.runner")

DEMO_SECRETS = ("LGSP_DEMO_API_KEY", "LGSP_SIM_CIVIL_STATUS_TOKEN", "LGSP_SIM_POPULATION_SECRET")
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


@asynccontextmanager
async def http_site(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 15.0
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on host:port; on exit stop accepting and wait for in-flight requests."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    try:
        yield runner
    finally:
        await runner.cleanup()


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's first site listens on (for port 0)."""
    return int(runner.addresses[0][1])


@dataclass(frozen=True)
class Simulator:
    """A simulator to start for a loopback upstream of the config."""

    kind: str
    host: str
    port: int
    build: Callable[[], web.Application]


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
            from adapters.civil_status.simulator import build_app as build_civil

            build = partial(build_civil, token=resolve_secret(auth.token), latency_ms=latency_ms)
            sims[key] = Simulator("civil-status", *key, build)
        elif svc.adapter == "population_db" and isinstance(auth, AuthC06):
            from adapters.population_db.simulator import build_app as build_population

            build = partial(
                build_population,
                username=auth.username,
                secret=resolve_secret(auth.secret),
                latency_ms=latency_ms,
            )
            sims[key] = Simulator("population", *key, build)
    return list(sims.values())


@asynccontextmanager
async def connected_broker(config: RoutingConfig, amqp_url: str | None) -> AsyncIterator[Broker]:
    """A connected broker with the config's topology declared."""
    broker = open_broker(amqp_url)
    await broker.connect()
    try:
        await broker.declare(queue_specs(config))
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
) -> None:
    """Serve the gateway until ``stop``; then drain in-flight requests within the grace."""
    runtime = Runtime.build(config, broker)
    grace = config.gateway.shutdown_grace_s
    async with http_site(build_app(runtime), host, port, shutdown_timeout=grace):
        log.info("gateway.listening", url=f"http://{host}:{port}")
        if listening is not None:
            listening.set()
        await stop.wait()
        log.info("gateway.stopping", in_flight=runtime.in_flight)
        await wait_idle(runtime, grace)


async def run_worker(
    config: RoutingConfig, broker: Broker, stop: asyncio.Event, services: list[str] | None = None
) -> None:
    """Serve the worker until ``stop``; then drain within the grace."""
    adapters = await open_adapters(config, services)
    worker = Worker(config, broker, adapters, drain_s=config.gateway.shutdown_grace_s)
    try:
        await worker.run(stop)
    finally:
        await worker.aclose()


async def run_all(
    config: RoutingConfig,
    *,
    amqp_url: str | None,
    host: str,
    port: int,
    stop: asyncio.Event,
    with_sims: bool = True,
    announce: Callable[[str], Any] = print,
) -> None:
    """Gateway + worker (+ simulators) in one process until ``stop``."""
    async with AsyncExitStack() as stack:
        if with_sims:
            for sim in simulators_for(config):
                await stack.enter_async_context(http_site(sim.build(), sim.host, sim.port))
                announce(f"simulator {sim.kind:<13} http://{sim.host}:{sim.port}/")
        broker = await stack.enter_async_context(connected_broker(config, amqp_url))
        worker_stop = asyncio.Event()
        listening = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(run_worker(config, broker, worker_stop))
            gateway = tasks.create_task(run_gateway(config, broker, host, port, stop, listening))
            await listening.wait()
            announce(f"gateway listening on http://{host}:{port}/")
            await gateway
            # The gateway has drained: only now may the worker stop answering.
            worker_stop.set()
