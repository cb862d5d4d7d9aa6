"""``/admin/*``: operators' endpoints, behind admin keys that are never consumers' keys.

``routing.yaml``::

    admin:
      api_keys:
        - {name: ops-hanh, key: env:LGSP_ADMIN_KEY, role: operator}   # or sha256: <hex>
        - {name: tra-mai, key: env:LGSP_AUDITOR_KEY, role: auditor}
      host: 127.0.0.1      # optional: serve /admin/* here instead of on the gateway's port
      port: 9090

Without ``api_keys`` every ``/admin/*`` path answers ``404 ADMIN_DISABLED``. A key is
presented as ``Authorization: Bearer <key>``; a wrong, expired or consumer's key gets
``401 UNAUTHENTICATED``. The key's ``name`` is the actor recorded in the audit trail; its
``role`` (``viewer``, ``operator``, ``auditor``; default ``operator``, which can do all
that a key could before roles existed) says what it may do (:mod:`bus.admin.console.roles`): a
call beyond it gets ``403 FORBIDDEN_ROLE``. The operators' web console and its JSON API
(``/admin/console/``, ``/admin/api/…``) are :mod:`bus.admin.console`.

Endpoints (all need an admin key):

* ``POST /admin/reload`` (operator) — reload routing.yaml now: ``200`` with the result, or
  ``422 CONFIG_REJECTED`` with every error (the running config stays);
* ``GET /admin/config`` — the version in force and the last reload's result;
* ``GET /admin/explain?consumer=&service=&operation=`` — ``config explain`` on the config
  in force.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web

from bus.config import AdminRole, AdminSettings, RoutingConfig, resolve_secret
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
    "AdminState",
    "AdminTarget",
    "ConfigRejected",
    "Principal",
    "admin_state",
    "authorised",
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
class Principal:
    """Who an admin key (or a console session) is: the key's name and role."""

    name: str
    role: AdminRole


@dataclass(frozen=True, slots=True)
class _AdminKey:
    digest: bytes
    principal: Principal
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
            self._keys[digest] = _AdminKey(digest, Principal(entry.name, entry.role), expires)

    @property
    def enabled(self) -> bool:
        """At least one admin key is configured."""
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str:
        """The admin's name for an ``Authorization`` value; raises ``Unauthenticated``."""
        return self.identify(authorization).name

    def current(self, digest: bytes) -> Principal | None:
        """Who the key with this SHA-256 digest is now (``None``: gone or expired)."""
        found = self._keys.get(digest)
        if found is None or (found.expires is not None and found.expires <= datetime.now(UTC)):
            return None
        return found.principal

    def identify(self, authorization: str | None) -> Principal:
        """The admin (name, role) for an ``Authorization`` value; raises ``Unauthenticated``."""
        required = "an admin key is required: Authorization: Bearer <key>"
        return bearer_key(authorization or "", self._keys, malformed=required).principal


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
class AdminState:
    """What /admin/* works with: the reloader (config, handles, auditor) and the keys."""

    reloader: ConfigReloader
    target: AdminTarget


ADMIN = web.AppKey("admin", AdminState)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def admin_state(request: web.Request) -> AdminState:
    """The app's admin state; ``AdminDisabled`` without admin keys."""
    admin = request.app[ADMIN]
    if not admin.target.keys.enabled:
        raise AdminDisabled("/admin/* is off: no admin.api_keys in routing.yaml")
    return admin


def authorised(request: web.Request) -> tuple[AdminState, Principal]:
    """The admin state and the caller of ``request`` by its bearer key."""
    admin = admin_state(request)
    try:
        principal = admin.target.keys.identify(request.headers.get("Authorization"))
    except Unauthenticated:
        log.warning("admin.auth_failed", path=request.path, peer=request.remote)
        raise
    return admin, principal


def _authorised(request: web.Request) -> tuple[AdminState, str]:
    admin, principal = authorised(request)
    return admin, principal.name


async def reload_config(request: web.Request) -> web.Response:
    """``POST /admin/reload``."""
    from bus.admin.console.roles import require

    admin, principal = authorised(request)
    require(principal, "config.apply")
    result = await admin.reloader.reload("admin", actor=principal.name)
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
    app[ADMIN] = AdminState(reloader, target)
    app.router.add_post("/admin/reload", reload_config)
    app.router.add_get("/admin/config", config_status)
    app.router.add_get("/admin/explain", explain_call)
    from bus.admin.console import mount_console

    mount_console(app)


def build_admin_app(reloader: ConfigReloader) -> web.Application:
    """``/admin/*`` as an app of its own (for a separate admin address)."""
    app = web.Application(middlewares=[error_middleware])
    mount_admin(app, reloader)
    return app


@asynccontextmanager
async def serve_admin(reloader: ConfigReloader, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``/admin/*`` on host:port until the block ends; yields its URL."""
    async with http_site(build_admin_app(reloader), host, port, shutdown_timeout=5) as site:
        url = f"http://{host}:{bound_port(site)}/"
        log.info("admin.listening", url=url)
        reloader.admin_urls.append(url)
        try:
            yield url
        finally:
            reloader.admin_urls.remove(url)
