"""``/admin/api/…``: the JSON management API behind every console page.

Authentication: ``Authorization: Bearer <admin key>``, or the console's session cookie
plus ``X-CSRF-Token`` on POSTs. Errors are the bus's one JSON shape; ``403
FORBIDDEN_ROLE`` when the key's role does not allow the action (:mod:`bus.admin.console.roles`).
Personal data never goes in a URL: searches, reveals and exports are POSTs with a JSON
body. The paths are documented in ``/openapi.json`` (:func:`bus.openapi.admin_paths`).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from bus.errors import BusError, InvalidRequest
from bus.gateway.openapi import admin_paths
from bus.gateway.reply import error_body

from . import letters, proposal, trail, views
from .guard import CONSOLE, Caller, api_caller, read_body, secure
from .roles import ACTIONS, may, require

__all__ = ["add_api_routes", "ids_of", "text_field"]


def _json(data: Any, status: int = 200) -> web.StreamResponse:
    body = orjson.dumps(data, default=str)
    return secure(web.Response(body=body, status=status, content_type="application/json"))


def text_field(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    """A string field of a body; ``400 INVALID_REQUEST`` if missing (when required) or not text."""
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidRequest(f"{name} is required (a string)")
    return value


def ids_of(body: dict[str, Any]) -> list[str]:
    """The ``ids`` field: 1 to 1000 letter ids."""
    ids = body.get("ids")
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids or len(ids) > 1000:
        raise InvalidRequest("ids: give 1 to 1000 dead-letter ids")
    if not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids):
        raise InvalidRequest("ids: each is a string of 1-128 characters")
    return ids


def _guarded(handler: Any, *, post: bool) -> Any:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request) if post else None
            caller = await api_caller(request, body)
            return _json(await handler(request, caller, body or {}))
        except BusError as exc:
            return _json(error_body(exc, None), exc.status)

    return run


async def _whoami(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    p = caller.principal
    allowed = sorted(a for a in ACTIONS if may(p, a))
    return {"name": p.name, "role": p.role, "may": allowed}


async def _overview(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    console = request.app[CONSOLE]
    assert console.traffic is not None
    data = await views.overview(caller.admin.reloader, console.traffic)
    for row in data["services"]:
        row.pop("chart")
    return data


async def _services(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    return {"services": views.services(caller.admin.reloader.config)}


async def _access(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    reloader = caller.admin.reloader
    return views.access(reloader.config, reloader.handles.metrics)


async def _letters(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    service = request.query.get("service") or None
    return {"letters": await letters.letters(caller.admin.reloader, service)}


async def _show(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    reveal = body.get("reveal") in (True, "1", "true")
    return await letters.inspect(
        caller.admin.reloader,
        caller.principal,
        text_field(body, "service"),
        text_field(body, "id"),
        reveal=reveal,
    )


async def _replay(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    reloader, who = caller.admin.reloader, caller.principal
    results = await letters.replay_letters(reloader, who, text_field(body, "service"), ids_of(body))
    return {"replayed": results}


async def _purge(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    reloader, who = caller.admin.reloader, caller.principal
    return {
        "purged": await letters.purge_letters(
            reloader, who, text_field(body, "service"), ids_of(body)
        )
    }


async def _search(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    require(caller.principal, "audit.search")
    query = trail.AuditQuery.parse(body)
    return await trail.search(caller.admin.reloader, caller.principal, query)


async def _verify(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    result = await trail.verify(caller.admin.reloader, caller.principal)
    request.app[CONSOLE].verification = result
    return result


async def _evidence(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    return await trail.evidence(
        caller.admin.reloader, caller.principal, text_field(body, "request_id")
    )


async def _config(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    reloader = caller.admin.reloader
    source = reloader.source.decode("utf-8", "replace") if reloader.source is not None else None
    return {**reloader.readiness()["config"], "text": source}


async def _check(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    require(caller.principal, "config.check")
    return proposal.check(caller.admin.reloader, text_field(body, "text"))


async def _apply(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
    return await proposal.apply(
        caller.admin.reloader,
        caller.principal,
        text_field(body, "text"),
        text_field(body, "base_version"),
    )


async def _document(request: web.Request) -> web.StreamResponse:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "lgsp-bus management API", "version": "1"},
        "paths": admin_paths(),
        "components": {"securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer"}}},
    }
    return _json(doc)


def add_api_routes(app: web.Application) -> None:
    """Add ``/admin/api/*`` to ``app``."""
    gets = {
        "whoami": _whoami,
        "overview": _overview,
        "services": _services,
        "access": _access,
        "deadletters": _letters,
        "config": _config,
    }
    posts = {
        "deadletters/show": _show,
        "deadletters/replay": _replay,
        "deadletters/purge": _purge,
        "audit/search": _search,
        "audit/verify": _verify,
        "audit/evidence": _evidence,
        "config/check": _check,
        "config/apply": _apply,
    }
    for name, handler in gets.items():
        app.router.add_get(f"/admin/api/{name}", _guarded(handler, post=False))
    for name, handler in posts.items():
        app.router.add_post(f"/admin/api/{name}", _guarded(handler, post=True))
    app.router.add_get("/admin/api/openapi.json", _document)
