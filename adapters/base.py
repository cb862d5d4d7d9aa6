"""The Adapter seam: one upstream call per operation, plus a registry of adapter kinds.

An *adapter kind* (``civil_status``, ``population_db``, ``rest``, ``soap`` …) knows how to
check a service's config, which request model validates each operation at the gateway (pure,
no I/O), and how to build the :class:`Adapter` a worker calls. Built-in kinds register
explicitly below; third-party packages add kinds through the ``lgsp_bus.adapters``
entry-point group (each entry point names an :class:`AdapterKind` object).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from bus.config import RoutingConfig, ServiceConfig, UpstreamConfig, load_config, parse_config
from bus.config.source import YamlDocument

__all__ = [
    "Adapter",
    "AdapterKind",
    "CallContext",
    "Registry",
    "answer_fields",
    "config_issues",
    "load_routing",
    "parse_routing",
    "registry",
    "reply_models",
    "request_models",
]


def config_issues(prefix: str, exc: ValidationError) -> list[str]:
    """Option errors as ``path: message`` lines for ``lgsp-bus config validate``."""
    return [
        f"{prefix}{'.'.join(str(p) for p in err['loc'])}".rstrip(".")
        + ": "
        + str(err["msg"]).removeprefix("Value error, ")
        for err in exc.errors(include_url=False, include_input=False)
    ]


@dataclass(frozen=True, slots=True)
class CallContext:
    """What an adapter knows about the call it serves (no personal data but the officer)."""

    request_id: str
    correlation_id: str
    consumer: str
    service: str
    operation: str
    deadline: float
    """Wall-clock epoch seconds after which nobody waits for the answer."""
    attempt: int = 1
    officer: str | None = None
    """The officer on whose behalf the call is made (for upstreams that need MaCanBo)."""
    xroad_headers: Mapping[str, str] = field(default_factory=dict)
    """X-Road-Client/-Service/-Id/-UserId for an X-Road/NDXP upstream (``xroad: true``);
    :class:`adapters.http.UpstreamHttp` sends them itself, within :func:`forwarding`."""

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative)."""
        return self.deadline - time.time()


@runtime_checkable
class Adapter(Protocol):
    """Calls one upstream; returns the canonical reply body or raises a :mod:`bus.errors` error."""

    async def call(
        self, operation: str, request: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """Perform ``operation`` for the validated canonical ``request``."""
        ...

    async def aclose(self) -> None:
        """Release connections and sessions."""
        ...


class AdapterKind(Protocol):
    """A family of adapters, configured per service in ``routing.yaml``."""

    name: str

    def check(self, service_name: str, service: ServiceConfig) -> list[str]:
        """Problems with this service's config, in words for an operator (empty if fine)."""
        ...

    def request_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """The pydantic model the gateway validates ``operation``'s request body with."""
        ...

    def reply_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """The model of ``operation``'s answer (its OpenAPI 200 schema)."""
        ...

    async def create(
        self, service_name: str, service: ServiceConfig, upstream: UpstreamConfig
    ) -> Adapter:
        """Build a started adapter (sessions open, WSDL parsed off the loop)."""
        ...


class Registry:
    """Adapter kinds by name."""

    _BUILTIN: ClassVar[dict[str, str]] = {
        "civil_status": "adapters.civil_status:KIND",
        "population_db": "adapters.population_db:KIND",
        "rest": "adapters.rest.kind:KIND",
        "soap": "adapters.soap.kind:KIND",
    }

    def __init__(self) -> None:
        self._kinds: dict[str, AdapterKind] = {}
        self._loaded = False

    def register(self, kind: AdapterKind) -> None:
        """Add (or replace) a kind."""
        self._kinds[kind.name] = kind

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name, target in self._BUILTIN.items():
            module_name, _, attr = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    continue  # a built-in kind not written yet
                raise
            kind = getattr(module, attr, None)
            if kind is not None:
                self._kinds.setdefault(name, kind)
        for ep in entry_points(group="lgsp_bus.adapters"):
            self._kinds.setdefault(ep.name, ep.load())

    def get(self, name: str) -> AdapterKind | None:
        """The kind called ``name``, if any."""
        self._load()
        return self._kinds.get(name)

    def kinds(self) -> list[str]:
        """Names of every known kind."""
        self._load()
        return sorted(self._kinds)


registry = Registry()


def load_routing(path: str | os.PathLike[str]) -> RoutingConfig:
    """Read and validate a ``routing.yaml`` file, its adapter kinds checked by :data:`registry`."""
    return load_config(path, kinds=registry)


def parse_routing(data: Mapping[str, Any], doc: YamlDocument | None = None) -> RoutingConfig:
    """Validate a routing mapping (see :func:`load_routing`); :class:`ConfigError` if invalid."""
    return parse_config(data, doc, kinds=registry)


def answer_fields(config: RoutingConfig) -> dict[tuple[str, str], tuple[str, ...]]:
    """The answer fields each (service, operation) declares: the targets of a generic
    kind's ``response`` mapping (what an X-Road provider service's WSDL describes)."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for name, svc in config.services.items():
        for op, spec in svc.operations.items():
            response = spec.options.get("response")
            if isinstance(response, Mapping):
                out[(name, op)] = tuple(str(k) for k in response)
    return out


def reply_models(config: RoutingConfig) -> dict[tuple[str, str], type[BaseModel]]:
    """The model of each (service, operation)'s answer, for the gateway's OpenAPI document."""
    models: dict[tuple[str, str], type[BaseModel]] = {}
    for name, svc in config.services.items():
        kind = registry.get(svc.adapter)
        if kind is None:
            raise ValueError(f"unknown adapter kind {svc.adapter!r}")
        for op in svc.operations:
            models[(name, op)] = kind.reply_model(svc, op)
    return models


def request_models(config: RoutingConfig) -> dict[tuple[str, str], type[BaseModel]]:
    """The model the gateway validates each (service, operation)'s request body with."""
    models: dict[tuple[str, str], type[BaseModel]] = {}
    for name, svc in config.services.items():
        kind = registry.get(svc.adapter)
        if kind is None:
            raise ValueError(f"unknown adapter kind {svc.adapter!r}")
        for op in svc.operations:
            models[(name, op)] = kind.request_model(svc, op)
    return models
