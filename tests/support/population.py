"""Loopback servers for the population tests: the C06 simulator and tiny ad-hoc apps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from adapters.base import Adapter, CallContext
from adapters.population_db import KIND
from adapters.population_db.simulator import build_app
from bus.config import ServiceConfig, UpstreamConfig

SIM_USER = "lgsp-test"
SIM_SECRET = "s3cret-for-tests"
SEED = 7
POPULATION = 50


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral loopback port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        server = site._server  # aiohttp has no public accessor for the bound port
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def sim_app(**knobs: Any) -> web.Application:
    """The C06 simulator with the test credentials and a small population."""
    knobs.setdefault("seed", SEED)
    knobs.setdefault("population_size", POPULATION)
    knobs.setdefault("slow_s", 2.0)
    return build_app(username=SIM_USER, secret=SIM_SECRET, **knobs)


def service_config(**options: Any) -> ServiceConfig:
    """A population service with both operations."""
    return ServiceConfig.model_validate(
        {
            "adapter": "population_db",
            "upstream": "c06",
            "options": {"ma_dvc": "LGSP-TEST", **options},
            "operations": {"lookup": {"timeout_s": 5}, "verify": {"timeout_s": 5}},
        }
    )


def upstream_config(url: str, *, env_var: str = "C06_TEST_SECRET", **extra: Any) -> UpstreamConfig:
    """The simulator as an upstream, C06 auth with the secret taken from the environment."""
    return UpstreamConfig.model_validate(
        {
            "url": url,
            "allow_plain_http": True,
            "auth": {"kind": "c06", "username": SIM_USER, "secret": f"env:{env_var}"},
            **extra,
        }
    )


@asynccontextmanager
async def population_adapter(url: str, **options: Any) -> AsyncIterator[Adapter]:
    """An adapter built the way a worker builds it (``KIND.create``)."""
    adapter = await KIND.create("population", service_config(**options), upstream_config(url))
    try:
        yield adapter
    finally:
        await adapter.aclose()


def ctx(operation: str = "lookup", *, timeout: float = 5.0) -> CallContext:
    """A call context with ``timeout`` seconds left."""
    import time

    return CallContext(
        request_id="req-00000001",
        correlation_id="corr-1",
        consumer="test",
        service="population",
        operation=operation,
        deadline=time.time() + timeout,
    )


def request(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A canonical population request for ``subject``."""
    return {
        "request_id": "req-00000001",
        "caller": {
            "system_id": "motcua",
            "unit_code": "000.00.01.H01",
            "officer_id": "001085000123",
        },
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-2025-0001",
            "legal_basis": "LEGAL_DUTY",
        },
        "subject": subject,
        **extra,
    }


def subject_of(citizen: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The lookup subject that matches a generated citizen (optionally altered)."""
    subject = {
        "id_type": "CCCD12",
        "id_number": citizen["personal_id"],
        "full_name": citizen["full_name"],
        "birth_date": citizen["birth_date"],
        "sex": citizen["sex"],
    }
    subject.update(changes)
    return subject
