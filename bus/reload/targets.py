"""The parts a config reload swaps (the gateway's runtime, the worker's services), and the
wiring of hot reload into the process roles (:func:`follow_gateway`, :func:`follow_worker`
for ``bus/runner.py``; :func:`reloading` and :func:`add_arguments` for ``bus/cli.py``).

:class:`GatewayTarget` builds the next :class:`~bus.gateway.Runtime` (API keys resolved,
request models built) and puts it in the app's :class:`~bus.gateway.RuntimeSlot`; a request
keeps the runtime it started with. Whatever the runner attached to the old runtime after
building it (store, readiness providers, observers) is carried over; an object with a
``with_config(config)`` method (or a ``from_config`` class method) is rebuilt for the new
config rather than copied, so per-route policies (audit, rate limits) follow the file.

:class:`WorkerTarget` compares the services the worker should serve under the new config
with those it serves: it opens adapters for new services and for services whose settings
or upstream changed, declares new queues, and on commit starts consuming the new ones.
A replaced adapter is closed once no call can still be using it — after the old config's
deadline cap (a call that picked it up before the swap ends by its deadline; retries wait
between attempts, so "no call in it right now" would not be enough); a removed service is
consumed for one more of its longest deadlines (messages queued under the old config still
get an answer), then its consumer stops and its adapter closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from adapters.base import Adapter, request_models
from bus.broker.base import queue_specs
from bus.config import RoutingConfig
from bus.gateway.app import RUNTIME_SLOT, Runtime, RuntimeSlot
from bus.reload.reloader import ConfigReloader, ReloadRecorder
from bus.worker.worker import REPLY_MARGIN_S, Worker, open_adapters

__all__ = [
    "GatewayTarget",
    "WorkerTarget",
    "add_arguments",
    "follow_gateway",
    "follow_worker",
    "hot_reload",
    "rebind",
    "reloading",
]

log = structlog.get_logger("bus.reload.reloader")

_STATE = frozenset({"config", "auth", "models", "in_flight", "idle"})
"""Runtime fields that belong to one runtime and are never carried over."""


def rebind(value: Any, config: RoutingConfig) -> Any:
    """``value`` for ``config``: rebuilt if it knows how, else the same object."""
    if isinstance(value, list):
        items = [rebind(item, config) for item in value]
        # Unchanged lists stay the same object: the runner shares some (readiness) and
        # appends to them later.
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    with_config = getattr(value, "with_config", None)
    if callable(with_config):
        return with_config(config)
    from_config = getattr(type(value), "from_config", None)
    if callable(from_config):
        return from_config(config)
    return value


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


class GatewayTarget:
    """Swaps the gateway app's runtime."""

    name = "gateway"

    def __init__(self, slot: RuntimeSlot) -> None:
        self.slot = slot

    async def prepare(self, old: RoutingConfig, new: RoutingConfig) -> _GatewaySwap:
        """Build the next runtime; declare queues of new services."""
        current = self.slot.current
        fresh = Runtime.build(
            new,
            current.broker,
            observers=rebind(current.observers, new),
            models=request_models(new),
        )
        for f in dataclasses.fields(Runtime):
            if f.name in _STATE or f.name == "observers":
                continue
            before, built = getattr(current, f.name), getattr(fresh, f.name)
            if built == _default(f) and before != built:
                setattr(fresh, f.name, rebind(before, new))
        added = [spec for spec in queue_specs(new) if spec.service not in old.services]
        if added:
            await current.broker.declare(added)
        return _GatewaySwap(self.slot, fresh)


@dataclasses.dataclass
class _GatewaySwap:
    slot: RuntimeSlot
    fresh: Runtime

    def commit(self) -> None:
        self.slot.current = self.fresh

    async def settle(self, closing: asyncio.Event) -> None:
        """Nothing to release: the old runtime drains by itself."""

    async def abort(self) -> None:
        """Nothing was opened."""


def _route(config: RoutingConfig, service: str) -> tuple[Any, Any]:
    """What an adapter is built from: the service's settings and its upstream's."""
    svc = config.services[service]
    return svc, config.upstreams[svc.upstream]


def _breaker_plan(config: RoutingConfig, services: list[str]) -> list[tuple[str, str, Any]]:
    plan = []
    for name in sorted(services):
        upstream = config.services[name].upstream
        plan.append((name, upstream, getattr(config.upstreams[upstream], "breaker", None)))
    return plan


def _longest_deadline(config: RoutingConfig, service: str) -> float:
    svc = config.services.get(service)
    if svc is None:
        return config.gateway.max_deadline_s + REPLY_MARGIN_S
    return max(op.timeout_s for op in svc.operations.values()) + REPLY_MARGIN_S


class WorkerTarget:
    """Keeps a running worker's services, adapters and queues in line with the config."""

    name = "worker"

    def __init__(self, worker: Worker, services: list[str] | None = None) -> None:
        self.worker = worker
        self.selected = set(services) if services is not None else None
        """``--service`` names (serve only these, if configured); ``None``: every service."""

    async def prepare(self, old: RoutingConfig, new: RoutingConfig) -> _WorkerSwap:
        """Open adapters for new and changed services; declare new queues."""
        w = self.worker
        wanted = [s for s in new.services if self.selected is None or s in self.selected]
        # A removed service still answering its last queued messages is not "running".
        running = [s for s in w.adapters if s in old.services]
        added = [s for s in wanted if s not in running]
        removed = [s for s in running if s not in wanted]
        changed = [s for s in wanted if s in running and _route(old, s) != _route(new, s)]
        opened = await open_adapters(new, added + changed)
        swap = _WorkerSwap(self, old, new, opened)
        swap.added, swap.removed, swap.changed = added, removed, changed
        try:
            specs = [spec for spec in queue_specs(new) if spec.service in added]
            if specs:
                await w.broker.declare(specs)
            breakers = getattr(w, "breakers", None)
            if breakers is not None and _breaker_plan(old, running) != _breaker_plan(new, wanted):
                # A changed route or breaker policy: new breakers (their counts start over).
                swap.breakers = type(breakers)(new, wanted, recorder=getattr(w, "metrics", None))
        except BaseException:
            await swap.abort()
            raise
        return swap


@dataclasses.dataclass
class _WorkerSwap:
    target: WorkerTarget
    old: RoutingConfig
    new: RoutingConfig
    opened: dict[str, Adapter]
    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    breakers: Any = None
    retired: dict[str, Adapter] = dataclasses.field(default_factory=dict)
    leaving: dict[str, Adapter] = dataclasses.field(default_factory=dict)

    def commit(self) -> None:
        w = self.target.worker
        w.config = self.new
        if self.breakers is not None:
            w.breakers = self.breakers
        for name in self.opened:
            if name in w.adapters:  # changed, or re-added while its removal lingers
                self.retired[name] = w.adapters[name]
        self.leaving = {name: w.adapters[name] for name in self.removed}
        w.adapters.update(self.opened)
        for name in self.added:
            try:
                w.consume(name)
            except RuntimeError:  # not consuming yet: run() starts every adapter's queue
                log.info("worker.reload_before_start", service=name)
        log.info(
            "worker.reconfigured", added=self.added, removed=self.removed, changed=self.changed
        )

    async def settle(self, closing: asyncio.Event) -> None:
        """Close replaced adapters when idle; stop removed services after one deadline."""
        waits = [self._retire(name, adapter, closing) for name, adapter in self.retired.items()]
        waits += [self._remove(name, adapter, closing) for name, adapter in self.leaving.items()]
        if waits:
            await asyncio.gather(*waits)

    async def _retire(self, name: str, adapter: Adapter, closing: asyncio.Event) -> None:
        # Deadlines come from the gateways' configs, all capped by max_deadline_s.
        await _until(closing, self.old.gateway.max_deadline_s + REPLY_MARGIN_S)
        await adapter.aclose()
        log.info("worker.adapter_replaced", service=name)

    async def _remove(self, name: str, adapter: Adapter, closing: asyncio.Event) -> None:
        w = self.target.worker
        # Messages published under the old config may still be queued: answer them first.
        await _until(closing, _longest_deadline(self.old, name))
        if w.adapters.get(name) is not adapter:
            return  # added back meanwhile: that reload retires this adapter
        await w.stop_consuming(name)
        w.adapters.pop(name, None)
        await adapter.aclose()
        log.info("worker.service_removed", service=name)

    async def abort(self) -> None:
        for adapter in self.opened.values():
            await adapter.aclose()


async def _until(closing: asyncio.Event, bound_s: float) -> None:
    """Wait ``bound_s`` seconds, or less if ``closing`` is set (the process is stopping)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), bound_s)


# -- wiring for bus/runner.py ------------------------------------------------------------


def follow_gateway(reloader: ConfigReloader, app: web.Application, auditor: Any = None) -> None:
    """Let a gateway app (not started yet) follow reloads: runtime swap, ``/readyz`` detail,
    ``/admin/*`` on its port unless ``admin.port`` moves it, audit of each reload."""
    from bus.admin.api import mount_admin

    reloader.attach(GatewayTarget(app[RUNTIME_SLOT]))
    app[RUNTIME_SLOT].current.readiness.append(reloader.readiness)
    if reloader.config.admin.port is None:
        mount_admin(app, reloader)
    if auditor is not None:
        reloader.auditor = auditor


def follow_worker(
    reloader: ConfigReloader,
    worker: Worker,
    services: list[str] | None = None,
    *,
    app: web.Application | None = None,
    status: Any = None,
) -> None:
    """Let a worker follow reloads; with its HTTP ``app`` (not started yet) and ``status``
    (:class:`bus.health.WorkerStatus`), ``/admin/*`` there and the reload in ``/readyz``."""
    from bus.admin.api import mount_admin

    reloader.attach(WorkerTarget(worker, services))
    if status is not None:
        status.readiness.append(reloader.readiness)

        def follow(config: RoutingConfig) -> None:
            status.config = config
            status.services = list(worker.adapters)

        reloader.on_applied(follow)
    if app is not None:
        mount_admin(app, reloader)


# -- wiring for bus/cli.py -------------------------------------------------------------


@asynccontextmanager
async def hot_reload(
    path: str | Path,
    config: RoutingConfig,
    *,
    recorder: ReloadRecorder | None = None,
    watch: bool = True,
    admin_listen: tuple[str, int] | None = None,
) -> AsyncIterator[ConfigReloader]:
    """A serving reloader for a process role: SIGHUP, file watch and (``admin_listen``)
    ``/admin/*`` on its own address; stopped when the block ends."""
    async with ConfigReloader(path, config, recorder=recorder) as reloader:
        stop = asyncio.Event()
        serving = asyncio.create_task(reloader.serve(stop, watch=watch))
        try:
            async with contextlib.AsyncExitStack() as stack:
                if admin_listen is not None:
                    from bus.admin.api import serve_admin

                    await stack.enter_async_context(serve_admin(reloader, *admin_listen))
                yield reloader
        finally:
            stop.set()
            await serving


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The reload options of a role's command line (run, gateway, worker)."""
    parser.add_argument(
        "--no-watch",
        action="store_true",
        help="reload routing.yaml only on SIGHUP or POST /admin/reload, not when it changes",
    )


def reloading(
    args: argparse.Namespace, config: RoutingConfig, recorder: ReloadRecorder | None = None
) -> contextlib.AbstractAsyncContextManager[ConfigReloader]:
    """:func:`hot_reload` for a role started by the CLI (its file, watch and admin address)."""
    from bus.cli.main import default_config_path

    path = Path(args.config) if args.config else default_config_path()
    admin = config.admin
    listen = None
    if args.command in ("run", "gateway") and admin.port is not None:
        listen = (admin.host or "127.0.0.1", admin.port)
    watch = not getattr(args, "no_watch", False)
    return hot_reload(path, config, recorder=recorder, watch=watch, admin_listen=listen)
