"""``/admin/*``: operators' endpoints, behind admin keys that are never consumers' keys.

``routing.yaml``::

    admin:
      api_keys:
        - {name: ops-hanh, key: env:LGSP_ADMIN_KEY}     # or sha256: <hex digest>
      host: 127.0.0.1      # optional: serve /admin/* here instead of on the gateway's port
      port: 9090

Without ``api_keys`` every ``/admin/*`` path answers ``404 ADMIN_DISABLED``. A key is
presented as ``Authorization: Bearer <key>``; a wrong, expired or consumer's key gets
``401 UNAUTHENTICATED``. The key's ``name`` is the actor recorded in the audit trail.

Endpoints (all need an admin key):

* ``POST /admin/reload`` — reload routing.yaml now: ``200`` with the result, or ``422
  CONFIG_REJECTED`` with every error (the running config stays);
* ``GET /admin/config`` — the version in force and the last reload's result;
* ``GET /admin/explain?consumer=&service=&operation=`` — ``config explain`` on the config
  in force.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import orjson
import structlog
from aiohttp import web

from bus.config import AdminSettings, RoutingConfig, resolve_secret
from bus.config.access import parse_expiry
from bus.config.explain import explain
from bus.errors import InvalidRequest, NotFoundError, RequestError, Unauthenticated
from bus.gateway.app import error_middleware
from bus.gateway.security import bearer_key
from bus.gateway.server import bound_port, http_site
from bus.reload.reloader import ConfigReloader

__all__ = [
    "ADMIN",
    "AdminDisabled",
    "AdminKeys",
    "AdminTarget",
    "ConfigRejected",
    "build_admin_app",
    "mount_admin",
    "serve_admin",
]

log = structlog.get_logger("bus.admin.api")


class AdminDisabled(NotFoundError):
    """No admin keys are configured, so ``/admin/*`` is off."""

    default_code = "ADMIN_DISABLED"


class ConfigRejected(RequestError):
    """The routing file failed validation; the running config stays."""

    status = 422
    default_code = "CONFIG_REJECTED"


@dataclass(frozen=True, slots=True)
class _AdminKey:
    digest: bytes
    name: str
    expires: datetime | None


class AdminKeys:
    """The admin credentials of one config (references resolved once)."""

    def __init__(self, settings: AdminSettings) -> None:
        self._keys: dict[bytes, _AdminKey] = {}
        for index, entry in enumerate(settings.api_keys):
            if entry.key is not None:
                try:
                    secret = resolve_secret(entry.key)
                except (KeyError, OSError) as exc:
                    reason = exc.args[0] if isinstance(exc, KeyError) else exc.strerror
                    raise ValueError(f"admin.api_keys[{index}]: {reason}") from None
                hexdigest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
            else:
                hexdigest = str(entry.sha256)
            digest = bytes.fromhex(hexdigest)
            expires = parse_expiry(entry.expires) if entry.expires else None
            self._keys[digest] = _AdminKey(digest, entry.name, expires)

    @property
    def enabled(self) -> bool:
        """At least one admin key is configured."""
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str:
        """The admin's name for an ``Authorization`` value; raises ``Unauthenticated``."""
        required = "an admin key is required: Authorization: Bearer <key>"
        return bearer_key(authorization or "", self._keys, malformed=required).name


class AdminTarget:
    """Follows the admin keys through reloads (a missing key reference rejects the file)."""

    name = "admin"

    def __init__(self, config: RoutingConfig) -> None:
        self.keys = AdminKeys(config.admin)

    async def prepare(self, old: RoutingConfig, new: RoutingConfig) -> _KeysSwap:
        """Resolve the new admin keys."""
        return _KeysSwap(self, AdminKeys(new.admin))


@dataclass
class _KeysSwap:
    target: AdminTarget
    keys: AdminKeys

    def commit(self) -> None:
        self.target.keys = self.keys

    async def settle(self, closing: object) -> None:
        """Nothing to release."""

    async def abort(self) -> None:
        """Nothing was opened."""


@dataclass
class _Admin:
    reloader: ConfigReloader
    target: AdminTarget


ADMIN = web.AppKey("admin", _Admin)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _authorised(request: web.Request) -> tuple[_Admin, str]:
    admin = request.app[ADMIN]
    if not admin.target.keys.enabled:
        raise AdminDisabled("/admin/* is off: no admin.api_keys in routing.yaml")
    try:
        name = admin.target.keys.authenticate(request.headers.get("Authorization"))
    except Unauthenticated:
        log.warning("admin.auth_failed", path=request.path, peer=request.remote)
        raise
    return admin, name


async def reload_config(request: web.Request) -> web.Response:
    """``POST /admin/reload``."""
    admin, name = _authorised(request)
    result = await admin.reloader.reload("admin", actor=name)
    if result.outcome == "rejected":
        raise ConfigRejected(
            f"{len(result.errors)} error(s) in the routing file; the running config stays",
            detail=result.to_dict(),
        )
    return _json(result.to_dict())


async def config_status(request: web.Request) -> web.Response:
    """``GET /admin/config``."""
    admin, _ = _authorised(request)
    return _json(admin.reloader.readiness()["config"])


async def explain_call(request: web.Request) -> web.Response:
    """``GET /admin/explain?consumer=&service=&operation=``."""
    admin, _ = _authorised(request)
    try:
        args = [request.query[k] for k in ("consumer", "service", "operation")]
    except KeyError as exc:
        raise InvalidRequest(f"query parameter {exc.args[0]} is required") from None
    return _json(explain(admin.reloader.config, *args).to_dict())


def mount_admin(app: web.Application, reloader: ConfigReloader) -> None:
    """Add ``/admin/*`` to ``app`` (before it starts); its keys follow reloads."""
    target = AdminTarget(reloader.config)
    reloader.attach(target)
    app[ADMIN] = _Admin(reloader, target)
    app.router.add_post("/admin/reload", reload_config)
    app.router.add_get("/admin/config", config_status)
    app.router.add_get("/admin/explain", explain_call)


def build_admin_app(reloader: ConfigReloader) -> web.Application:
    """``/admin/*`` as an app of its own (for a separate admin address)."""
    app = web.Application(middlewares=[error_middleware])
    mount_admin(app, reloader)
    return app


@asynccontextmanager
async def serve_admin(reloader: ConfigReloader, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``/admin/*`` on host:port until the block ends; yields its URL."""
    async with http_site(
        build_admin_app(reloader), host, port, shutdown_timeout=5, setting="admin.host/admin.port"
    ) as site:
        url = f"http://{host}:{bound_port(site)}/"
        log.info("admin.listening", url=url)
        reloader.admin_urls.append(url)
        try:
            yield url
        finally:
            reloader.admin_urls.remove(url)
