"""A whole bus for the access-control tests: both simulators, consumers for every rule.

Consumers (keys in environment variables, as routing.yaml wants them):

==========  =================================================================
portal      two keys (``old`` expires in 30 days, ``new``): rotation; civil-status
            lookup and every population operation
expired     a key that expired in 2020
hashed      its key stored as a SHA-256 digest
outsider    may call nothing
verifier    population ``verify`` only
limited     rate limit: burst 2, then one token per 1000 s
minimal     field grants: civil-status registration.number/date, persons.role;
            population citizen.name
sensitive   population lookup with the ethnicity grant
xroad       X-Road client ``VN/GOV/000.00.00.H31/MOTCUA``; civil-status and population
==========  =================================================================

The civil-status upstream is marked ``xroad: true``; a middleware on its simulator
records the X-Road headers each request carried (no personal data is kept).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.base import parse_routing
from adapters.civil_status import simulator as civil_sim
from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from adapters.population_db.data import sample_citizen
from adapters.population_db.simulator import STATE
from bus.config import RoutingConfig
from bus.gateway.server import server_ssl_context
from bus.store import Store
from tests.support.population import SEED, SIM_SECRET, SIM_USER, sim_app, subject_of
from tests.support.stack import BusStack, new_secret, running_bus, serve_app

T = TypeVar("T")
XROAD_CLIENT = "VN/GOV/000.00.00.H31/MOTCUA"
XROAD_PROVIDER = "VN/GOV/000.00.00.H99/LGSP"
UPSTREAM_XROAD_SERVICE = "VN/GOV/000.00.00.G13/HOTICH/civil-status-lookup"
OFFICER = "001085000123"
CITIZEN = sample_citizen(SEED, 3)
CONSUMERS = (
    "portal-old",
    "portal-new",
    "expired",
    "hashed",
    "outsider",
    "verifier",
    "limited",
    "minimal",
    "sensitive",
    "xroad",
)
"""Credential names: one key each (``portal`` has two)."""


def env_name(credential: str) -> str:
    """The environment variable a credential's key is read from."""
    return "T5_KEY_" + credential.upper().replace("-", "_")


def caller(**changes: Any) -> dict[str, Any]:
    """A caller with its officer."""
    return {"system_id": "motcua", "unit_code": "H01", "officer_id": OFFICER, **changes}


def purpose(**changes: Any) -> dict[str, Any]:
    """A complete purpose (legal duty)."""
    return {
        "procedure_code": "1.001234",
        "dossier_id": "HS-2026-0001",
        "legal_basis": "LEGAL_DUTY",
        **changes,
    }


def new_request_id() -> str:
    """A fresh request id."""
    return f"req-{uuid.uuid4().hex[:16]}"


def civil_body(**changes: Any) -> dict[str, Any]:
    """A civil-status lookup of a registration that exists."""
    body: dict[str, Any] = {
        "request_id": new_request_id(),
        "record_type": "BIRTH",
        "caller": caller(),
        "purpose": purpose(),
        "by_registration": sample_registration(0, RecordType.BIRTH, 3),
    }
    body.update(changes)
    return body


def population_body(subject: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A population lookup of a citizen who exists."""
    body: dict[str, Any] = {
        "request_id": new_request_id(),
        "caller": caller(),
        "purpose": purpose(),
        "subject": subject if subject is not None else subject_of(CITIZEN),
    }
    body.update(changes)
    return body


def secure_config(
    civil_url: str,
    population_url: str,
    *,
    tls: dict[str, Any] | None = None,
    hashed_digest: str = "0" * 64,
    edit: Callable[[dict[str, Any]], None] | None = None,
    **consumers: Any,
) -> RoutingConfig:
    """The test routing config (``consumers`` adds or replaces consumers)."""
    soon = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    both: dict[str, list[str]] = {"civil-status": ["lookup"], "population": ["*"]}
    data: dict[str, Any] = {
        "version": 1,
        "gateway": {"shutdown_grace_s": 5, "xroad_provider": XROAD_PROVIDER},
        "broker": {"prefetch": 16, "delivery_limit": 3},
        "consumers": {
            "portal": {
                "api_keys": [
                    {"key": f"env:{env_name('portal-old')}", "expires": soon, "label": "old"},
                    {"key": f"env:{env_name('portal-new')}", "label": "new"},
                ],
                "allow": both,
            },
            "expired": {
                "api_keys": [{"key": f"env:{env_name('expired')}", "expires": "2020-01-01"}],
                "allow": both,
            },
            "hashed": {"api_keys": [{"sha256": hashed_digest}], "allow": both},
            "outsider": {"api_keys": [{"key": f"env:{env_name('outsider')}"}]},
            "verifier": {
                "api_keys": [{"key": f"env:{env_name('verifier')}"}],
                "allow": {"population": ["verify"]},
            },
            "limited": {
                "api_keys": [{"key": f"env:{env_name('limited')}"}],
                "allow": both,
                "rate_limit": {"rate_per_s": 0.001, "burst": 2},
            },
            "minimal": {
                "api_keys": [{"key": f"env:{env_name('minimal')}"}],
                "allow": both,
                "fields": {
                    "civil-status": ["registration.number", "registration.date", "persons.role"],
                    "population": ["citizen.name"],
                },
            },
            "sensitive": {
                "api_keys": [{"key": f"env:{env_name('sensitive')}"}],
                "allow": {"population": ["lookup"]},
                "sensitive": {"population": ["ethnicity"]},
            },
            "xroad": {
                "api_keys": [{"key": f"env:{env_name('xroad')}"}],
                "allow": both,
                "xroad_client": XROAD_CLIENT,
            },
        },
        "upstreams": {
            "moj": {
                "url": civil_url,
                "allow_plain_http": True,
                "auth": {"kind": "bearer", "token": "env:T5_MOJ_TOKEN"},
                "xroad": True,
                "xroad_service": UPSTREAM_XROAD_SERVICE,
            },
            "c06": {
                "url": population_url,
                "allow_plain_http": True,
                "auth": {"kind": "c06", "username": SIM_USER, "secret": "env:T5_C06_SECRET"},
            },
        },
        "services": {
            "civil-status": {
                "adapter": "civil_status",
                "upstream": "moj",
                "operations": {"lookup": {"timeout_s": 5}},
            },
            "population": {
                "adapter": "population_db",
                "upstream": "c06",
                "options": {"ma_dvc": "LGSP-TEST"},
                "operations": {"lookup": {"timeout_s": 5}, "verify": {"timeout_s": 5}},
            },
        },
    }
    if tls is not None:
        data["gateway"]["tls"] = tls
    data["consumers"].update(consumers)
    if edit is not None:
        edit(data)
    return parse_routing(data)


@dataclass
class Reply:
    """One HTTP answer: status, headers, JSON body."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        """The error code, if the answer is an error."""
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


@dataclass
class SecureBus:
    """The running bus, its simulators' counters, and the consumers' keys."""

    stack: BusStack
    keys: dict[str, str]
    civil: civil_sim.SimStats
    population: dict[str, int]
    xroad_seen: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self.stack.url

    def upstream_calls(self) -> int:
        """Requests both simulators have received."""
        return self.civil.requests + self.population.get("calls", 0)

    async def call(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | None = "portal-new",
        raw_key: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        session: aiohttp.ClientSession | None = None,
    ) -> Reply:
        """Send a request as the consumer whose credential is ``key`` (None: no key)."""
        hdrs: dict[str, str] = {}
        token = raw_key if raw_key is not None else (self.keys[key] if key else None)
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data: bytes | None = None
        if isinstance(body, bytes):
            data = body
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            data = orjson.dumps(body)
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        http = session or self.stack.session
        async with http.request(method, self.url + path.lstrip("/"), data=data, headers=hdrs) as r:
            text = await r.read()
            parsed = orjson.loads(text) if text and r.content_type == "application/json" else {}
            return Reply(r.status, dict(r.headers), parsed)


def record_xroad_headers(app: web.Application) -> list[dict[str, str]]:
    """Make ``app`` note the X-Road headers of every request it gets (a list it appends to)."""
    seen: list[dict[str, str]] = []

    @web.middleware
    async def note(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append({k: v for k, v in request.headers.items() if k.lower().startswith("x-road")})
        return await handler(request)

    app.middlewares.append(note)
    return seen


def hashed_key() -> str:
    """The key whose SHA-256 the ``hashed`` consumer's config holds (set per run)."""
    return "hashed-consumer-key-for-tests"


@asynccontextmanager
async def secure_bus(
    broker_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
    *,
    tls: dict[str, Any] | None = None,
    client_ssl: ssl.SSLContext | None = None,
    gateway_metrics: Any = None,
    worker_metrics: Any = None,
    consumers: dict[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    store: Store | None = None,
) -> AsyncIterator[SecureBus]:
    """Both simulators and a bus on ``secure_config``; stops everything on exit.

    With ``tls`` (``gateway.tls`` of the config) the gateway serves HTTPS with the context
    production builds from it; ``client_ssl`` is the test session's side."""
    keys = {name: new_secret() for name in CONSUMERS}
    keys["hashed"] = hashed_key()
    for name, key in keys.items():
        monkeypatch.setenv(env_name(name), key)
    token = new_secret()
    monkeypatch.setenv("T5_MOJ_TOKEN", token)
    monkeypatch.setenv("T5_C06_SECRET", SIM_SECRET)
    civil = civil_sim.build_app(token=token, hang_s=30)
    seen = record_xroad_headers(civil)
    population = sim_app()
    async with serve_app(civil) as civil_url, serve_app(population) as population_url:
        config = secure_config(
            civil_url,
            population_url,
            tls=tls,
            hashed_digest=hashlib.sha256(keys["hashed"].encode()).hexdigest(),
            edit=edit,
            **(consumers or {}),
        )
        async with running_bus(
            config,
            broker_url,
            keys["portal-new"],
            ssl_context=server_ssl_context(config.gateway.tls) if config.gateway.tls else None,
            client_ssl=client_ssl,
            gateway_metrics=gateway_metrics,
            worker_metrics=worker_metrics,
            store=store,
        ) as stack:
            yield SecureBus(stack, keys, civil[civil_sim.STATS], population[STATE].stats, seen)
