"""The gateway's state, split by how long it lives.

* :class:`Runtime` — a frozen view of one routing config: the config, its resolved API
  keys, the request models, the observers bound to it. A reload builds a new one; a
  request keeps the one it started with.
* :class:`Gateway` — the process: broker, store, readiness providers, the in-flight count
  and its idle event, the rate limiter. It outlives every reload; on each one it takes the
  new :class:`Runtime` and rebuilds its limiter *from the old buckets* (a reload never
  refills a consumer's bucket, and the in-flight bound keeps counting what is in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bus.broker.base import Broker
from bus.config import RoutingConfig
from bus.config.atrest import request_digest_key
from bus.exchange import ExchangeGate, ExchangeHerald, ExchangeObserver
from bus.gateway.citizens import MismatchLimiter, citizen_paths
from bus.gateway.ratelimit import RateLimiter
from bus.gateway.security import Authenticator
from bus.store import Store

__all__ = ["GATEWAY", "Gateway", "Runtime"]


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything that follows one config, built once per config (not per request)."""

    config: RoutingConfig
    auth: Authenticator
    models: Mapping[tuple[str, str], type[BaseModel]]
    observers: tuple[ExchangeObserver, ...] = ()
    replies: Mapping[tuple[str, str], type[BaseModel]] = dataclasses.field(default_factory=dict)
    """The adapter kinds' answer models (the OpenAPI document's 200 schemas)."""
    answer_fields: Mapping[tuple[str, str], tuple[str, ...]] = dataclasses.field(
        default_factory=dict
    )
    """(service, operation) → the answer's dotted field paths (X-Road WSDLs describe them)."""
    citizens: Mapping[tuple[str, str], tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """(service, operation) → the answer paths holding ID numbers (:mod:`bus.gateway.citizens`):
    worked out from ``replies`` and the config when built."""
    gates: tuple[ExchangeGate, ...] = dataclasses.field(init=False, default=())
    """The observers that may refuse an exchange before it starts (worked out once)."""
    heralds: tuple[ExchangeHerald, ...] = dataclasses.field(init=False, default=())
    digest_key: bytes | None = dataclasses.field(init=False, default=None)
    """The HMAC key of stored request digests (:func:`bus.config.atrest.request_digest_key`)."""
    """The observers told before a request is published (the audit trail's started record)."""

    def __post_init__(self) -> None:
        gates = tuple(o for o in self.observers if isinstance(o, ExchangeGate))
        object.__setattr__(self, "gates", gates)
        heralds = tuple(o for o in self.observers if isinstance(o, ExchangeHerald))
        object.__setattr__(self, "heralds", heralds)
        object.__setattr__(self, "digest_key", request_digest_key(self.config))
        if not self.citizens:
            object.__setattr__(self, "citizens", citizen_paths(self.config, self.replies))

    @classmethod
    def build(
        cls,
        config: RoutingConfig,
        observers: Sequence[ExchangeObserver] = (),
        *,
        models: Mapping[tuple[str, str], type[BaseModel]],
        replies: Mapping[tuple[str, str], type[BaseModel]] | None = None,
        answer_fields: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
    ) -> Runtime:
        """Resolve keys once; ``models`` (``replies``) are the adapter kinds' request (answer)
        models, ``answer_fields`` their declared answer paths, built by the composition root
        (the gateway knows no adapter)."""
        return cls(
            config,
            Authenticator(config),
            dict(models),
            tuple(observers),
            dict(replies or {}),
            dict(answer_fields or {}),
        )

    def with_observer(self, observer: ExchangeObserver) -> Runtime:
        """This runtime with one more observer, told last."""
        return dataclasses.replace(self, observers=(*self.observers, observer))


@dataclass(eq=False)
class Gateway:
    """One gateway process's long-lived state; ``runtime`` is the config view in force."""

    broker: Broker
    runtime: Runtime
    store: Store | None = None
    readiness: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    """Extra ``/readyz`` detail providers (e.g. the in-process worker's breakers)."""
    limiter: RateLimiter = field(init=False)
    """Per-consumer token buckets (``consumers.<c>.rate_limit``)."""
    mismatches: MismatchLimiter = field(default_factory=MismatchLimiter, init=False)
    """MISMATCH answers per consumer and service (``match.mismatches``; kept across reloads)."""
    in_flight: int = field(default=0, init=False)
    idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    by_consumer: dict[str, int] = field(default_factory=dict, init=False)
    """Calls in flight per consumer (the share each may hold of ``max_in_flight``)."""
    stopping: bool = field(default=False, init=False)
    """Set at SIGTERM: ``/readyz`` is 503 and new calls are refused (``SHUTTING_DOWN``)
    while those in flight finish."""

    def __post_init__(self) -> None:
        self.limiter = RateLimiter.from_config(self.runtime.config)
        self.idle.set()
        # /readyz and the console: which rate-limit backend decides (the limiter in force).
        self.readiness.append(self.rate_limit_readiness)

    def rate_limit_readiness(self) -> dict[str, Any]:
        """``{"rate_limit": …}``: the backend in force and whether it decides now."""
        return {"rate_limit": self.limiter.describe()}

    @property
    def config(self) -> RoutingConfig:
        """The config in force now."""
        return self.runtime.config

    def swap(self, runtime: Runtime) -> None:
        """Take a reloaded config: new requests get ``runtime``; buckets keep their tokens."""
        self.limiter = self.limiter.reconfigured(runtime.config)
        self.runtime = runtime

    def add_observer(self, observer: ExchangeObserver) -> None:
        """Tell ``observer`` of every exchange from now on (kept across reloads that rebind)."""
        self.runtime = self.runtime.with_observer(observer)

    def enter(self) -> bool:
        """Count a request in flight; ``False`` if the bound was already reached."""
        admitted = self.in_flight < self.runtime.config.gateway.max_in_flight
        self.in_flight += 1
        self.idle.clear()
        return admitted

    def leave(self, consumer: str | None = None) -> None:
        """A request counted by :meth:`enter` is done (and ``consumer``'s share freed)."""
        if consumer is not None:
            self.consumer_leave(consumer)
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    def consumer_share(self) -> int:
        """How many calls one consumer may have in flight."""
        gw = self.runtime.config.gateway
        if gw.max_in_flight_per_consumer is not None:
            return gw.max_in_flight_per_consumer
        return max(1, gw.max_in_flight - gw.max_in_flight // 4)

    def consumer_enter(self, consumer: str) -> bool:
        """Count a call of ``consumer``; ``False`` (nothing counted) if its share is full."""
        held = self.by_consumer.get(consumer, 0)
        if held >= self.consumer_share():
            return False
        self.by_consumer[consumer] = held + 1
        return True

    def consumer_leave(self, consumer: str) -> None:
        """A call counted by :meth:`consumer_enter` is done."""
        held = self.by_consumer.get(consumer, 0) - 1
        if held > 0:
            self.by_consumer[consumer] = held
        else:
            self.by_consumer.pop(consumer, None)

    def hold(self, consumer: str | None = None) -> Callable[[], None]:
        """Count a background (async-mode) request in flight (and in ``consumer``'s share);
        returns its release."""
        self.in_flight += 1
        self.idle.clear()
        if consumer is None:
            return self.leave
        self.by_consumer[consumer] = self.by_consumer.get(consumer, 0) + 1

        def release() -> None:
            self.consumer_leave(consumer)
            self.leave()

        return release

    async def wait_idle(self, bound_s: float) -> None:
        """Wait until no request is in flight, at most ``bound_s`` seconds."""
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), bound_s)


GATEWAY = web.AppKey("gateway", Gateway)
"""The gateway an app serves (its ``runtime`` changes on reload; the object does not)."""
