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
  in force;
* ``GET /admin/reports/access|breach|dpia|stats``, ``POST /admin/reports/subject`` — the
  data-protection reports (:mod:`bus.admin.reports`; the DPIA for any role, the reports
  over the audit trail for the auditor role only: `audit.search`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import structlog
from aiohttp import web

from bus.admin.access import (
    ADMIN,
    AdminDisabled,
    AdminKeys,
    AdminState,
    AdminTarget,
    ConfigRejected,
    Principal,
    admin_state,
    authorised,
)
from bus.admin.console import mount_console
from bus.admin.console.roles import require
from bus.admin.reports import mount_reports
from bus.config import RoutingConfig
from bus.config.explain import explain
from bus.config.listeners import admin_tls
from bus.errors import InvalidRequest
from bus.gateway.app import error_middleware
from bus.gateway.server import bound_port, http_site, server_ssl_context
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


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _authorised(request: web.Request) -> tuple[AdminState, str]:
    admin, principal = authorised(request)
    return admin, principal.name


async def reload_config(request: web.Request) -> web.Response:
    """``POST /admin/reload``."""
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
    return _json({**admin.reloader.readiness()["config"], "file": str(admin.reloader.path)})


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
    mount_console(app)

    def authorise(request: web.Request) -> tuple[RoutingConfig, object, str]:
        # The DPIA reads only the config (any role); the others read the audit trail.
        admin, principal = authorised(request)
        require(principal, "view" if request.path.endswith("/dpia") else "audit.search")
        return admin.reloader.config, admin.reloader.auditor, principal.name

    mount_reports(app, authorise)


def build_admin_app(reloader: ConfigReloader) -> web.Application:
    """``/admin/*`` as an app of its own (for a separate admin address)."""
    app = web.Application(middlewares=[error_middleware])
    mount_admin(app, reloader)
    return app


@asynccontextmanager
async def serve_admin(reloader: ConfigReloader, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``/admin/*`` on host:port until the block ends (HTTPS with ``admin.tls``, else
    ``gateway.tls``, when set); yields its URL."""
    settings, tls = reloader.config.gateway, admin_tls(reloader.config)
    async with http_site(
        build_admin_app(reloader),
        host,
        port,
        shutdown_timeout=5,
        ssl_context=server_ssl_context(tls) if tls is not None else None,
        setting="admin.host/admin.port",
        keepalive_s=settings.keepalive_timeout_s,
        read_timeout_s=settings.request_read_timeout_s,
    ) as site:
        scheme = "https" if tls is not None else "http"
        url = f"{scheme}://{host}:{bound_port(site)}/"
        log.info("admin.listening", url=url)
        reloader.admin_urls.append(url)
        try:
            yield url
        finally:
            reloader.admin_urls.remove(url)
