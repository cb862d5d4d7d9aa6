"""The parts a config reload swaps: the gateway's runtime and the worker's services (wired
into the process roles by :mod:`bus.cli.reloading`).

:class:`GatewayTarget` builds the next :class:`~bus.gateway.runtime.Runtime` (API keys
resolved, request models built, observers rebound) and hands it to the long-lived
:class:`~bus.gateway.runtime.Gateway`, which keeps what lives as long as the process (store,
readiness, in-flight count, rate-limit buckets — rebuilt from the old ones); a request keeps
the runtime it started with. Once swapped, the stored answers of every consumer that lost a
grant are purged from the store (all of that consumer's: a row does not name its operation
in clear; answers are served under the grants in force anyway). An observer with a
``with_config(config)`` method (or a ``from_config`` class method) is rebuilt for the new
config, so per-route policies (audit) follow the file.

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

import asyncio
import contextlib
import dataclasses
from typing import Any

import structlog

from adapters.base import Adapter, answer_fields, reply_models, request_models
from bus.broker.base import queue_specs
from bus.config import RoutingConfig
from bus.config.diff import grants
from bus.gateway.runtime import Gateway, Runtime
from bus.worker.worker import REPLY_MARGIN_S, Worker, open_adapters

__all__ = [
    "GatewayTarget",
    "WorkerTarget",
    "rebind",
]

log = structlog.get_logger("bus.reload.reloader")


def rebind(value: Any, config: RoutingConfig) -> Any:
    """``value`` for ``config``: rebuilt if it knows how, else the same object."""
    if isinstance(value, list | tuple):
        items = [rebind(item, config) for item in value]
        same = all(a is b for a, b in zip(items, value, strict=True))
        return value if same else type(value)(items)
    with_config = getattr(value, "with_config", None)
    if callable(with_config):
        return with_config(config)
    from_config = getattr(type(value), "from_config", None)
    if callable(from_config):
        return from_config(config)
    return value


class GatewayTarget:
    """Gives the long-lived gateway the runtime of each new config."""

    name = "gateway"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def prepare(self, old: RoutingConfig, new: RoutingConfig) -> _GatewaySwap:
        """Build the next runtime (keys, request models, observers bound to the new config);
        declare queues of new services."""
        current = self.gateway.runtime
        fresh = Runtime.build(
            new,
            rebind(current.observers, new),
            models=request_models(new),
            replies=reply_models(new),
            answer_fields=answer_fields(new),
        )
        added = [spec for spec in queue_specs(new) if spec.service not in old.services]
        if added:
            await self.gateway.broker.declare(added)
        revoked = sorted({consumer for consumer, _, _ in grants(old) - grants(new)})
        return _GatewaySwap(self.gateway, fresh, revoked)


@dataclasses.dataclass
class _GatewaySwap:
    gateway: Gateway
    fresh: Runtime
    revoked: list[str]
    """Consumers that lost a grant: their stored answers are purged."""

    def commit(self) -> None:
        self.gateway.swap(self.fresh)

    async def settle(self, closing: asyncio.Event) -> None:
        """Purge the stored answers of consumers that lost a grant (requests under the old
        runtime finish with it)."""
        store = self.gateway.store
        if not self.revoked or store is None:
            return
        try:
            purged = await store.messages_purge(self.revoked)
        except Exception as exc:  # the reload stands; the answers expire by their TTL
            log.warning("gateway.revoked_answers_not_purged", error=type(exc).__name__)
            return
        log.info("gateway.revoked_answers_purged", consumers=self.revoked, records=purged)

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
            w.use_breakers(self.breakers)
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
