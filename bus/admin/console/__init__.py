"""The operators' web console and its JSON management API, on the admin listener.

Served wherever ``/admin/*`` is (the gateway's port, or ``admin.host``/``admin.port``),
behind the same admin keys, each with a role (:mod:`bus.admin.console.roles`):

* ``/admin/console/`` — server-rendered pages in Vietnamese (English with ``?lang=en``):
  overview, services and access, dead letters, audit, config (:mod:`bus.admin.console.pages`);
* ``/admin/api/…`` — the JSON API behind every page (:mod:`bus.admin.console.api`), documented
  in ``/openapi.json`` and ``/admin/api/openapi.json``.

Modules: :mod:`~bus.admin.console.views` (read-only data), :mod:`~bus.admin.console.letters` (DLQ),
:mod:`~bus.admin.console.trail` (audit), :mod:`~bus.admin.console.proposal` (config check/apply),
:mod:`~bus.admin.console.traffic` (the hour of counters behind the charts),
:mod:`~bus.admin.console.sessions`, :mod:`~bus.admin.console.guard` (headers, CSRF, bodies),
:mod:`~bus.admin.console.render` and :mod:`~bus.admin.console.i18n` (templates, catalogue).
It sits in the admin layer: it may use everything below it, nothing imports it but
:mod:`bus.admin.api`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bus.admin.access import ADMIN

from .api import add_api_routes
from .guard import CONSOLE, Console, secure
from .pages import add_page_routes
from .render import STATIC, static_file
from .traffic import TrafficHistory

__all__ = ["mount_console"]


def mount_console(app: web.Application) -> None:
    """Add the console and ``/admin/api/*`` to an app that has ``/admin/*`` mounted."""
    reloader = app[ADMIN].reloader
    console = Console(traffic=TrafficHistory(lambda: reloader.handles.metrics))
    app[CONSOLE] = console
    add_api_routes(app)
    add_page_routes(app)
    files = {name: static_file(name) for name in STATIC}

    async def serve_static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return secure(web.Response(body=files[name], content_type=STATIC[name], charset="utf-8"))

    async def to_console(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/admin/console/")

    app.router.add_get("/admin/console/static/{name}", serve_static)
    app.router.add_get("/admin/console", to_console)

    async def sampling(app: web.Application) -> AsyncIterator[None]:
        assert console.traffic is not None
        async with console.traffic.running():
            yield

    app.cleanup_ctx.append(sampling)
