"""``/admin/console/…``: the server-rendered pages (Jinja2, autoescaped everywhere).

Each page calls the same functions as the JSON API (:mod:`bus.admin.console.api`). A GET shows;
a POST acts, after the session's CSRF check. Replay and purge take two POSTs: the first
shows what would be done, the second (``confirm=1``) does it. Searches, reveals and
evidence downloads are POSTs, so no ID number ever appears in a URL, a server log or the
browser's history. Without a session every page redirects to the login form.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import structlog
from aiohttp import web

from bus.admin.access import admin_state
from bus.errors import BusError, InvalidRequest, Unauthenticated

from . import letters, proposal, trail, views
from .api import ids_of, text_field
from .guard import CONSOLE, check_csrf, read_body, secure, session_of
from .render import Page, language, render
from .roles import require
from .sessions import COOKIE

__all__ = ["add_page_routes"]

log = structlog.get_logger("bus.admin.console")

BASE = "/admin/console"
LOGIN_COOKIE = "lgsp_console_login"


def _page(handler: Any, *, post: bool = False) -> Any:
    async def run(request: web.Request) -> web.StreamResponse:
        lang = language(request)
        try:
            _admin, session = session_of(request)
        except BusError as exc:
            return render(
                request, "error.html", Page(lang, None, "error"), {"error": exc}, exc.status
            )
        if session is None:
            raise web.HTTPSeeOther(f"{BASE}/login")
        page = Page(lang, session, handler.__name__.strip("_"))
        try:
            body: dict[str, Any] = {}
            if post:
                body = await read_body(request)
                check_csrf(request, session, body.get("csrf"))
            response: web.StreamResponse = await handler(request, page, body)
            return response
        except BusError as exc:
            return render(request, "error.html", page, {"error": exc}, exc.status)

    return run


async def _overview(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    console = request.app[CONSOLE]
    assert console.traffic is not None
    data = await views.overview(admin_state(request).reloader, console.traffic)
    return render(request, "overview.html", page, data)


async def _services(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    reloader = admin_state(request).reloader
    data = {
        "services": views.services(reloader.config),
        "access": views.access(reloader.config, reloader.handles.metrics),
    }
    return render(request, "services.html", page, data)


async def _letters_page(page: Page, request: web.Request, **extra: Any) -> web.StreamResponse:
    reloader = admin_state(request).reloader
    found = await letters.letters(reloader)
    depths = await views.queue_depths(reloader.handles.broker, sorted(reloader.config.services))
    return render(request, "deadletters.html", page, {"letters": found, "depths": depths, **extra})


async def _deadletters(
    request: web.Request, page: Page, body: dict[str, Any]
) -> web.StreamResponse:
    return await _letters_page(page, request)


async def _letter(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    reveal = body.get("reveal") == "1"
    letter = await letters.inspect(
        admin_state(request).reloader,
        page.who,
        text_field(body, "service"),
        text_field(body, "id"),
        reveal=reveal,
    )
    shown = {
        "letter": letter,
        "headers": orjson.dumps(letter["headers"], option=orjson.OPT_INDENT_2).decode(),
        "body": orjson.dumps(letter["body"], option=orjson.OPT_INDENT_2).decode(),
        "revealed": reveal,
    }
    return render(request, "letter.html", page, shown)


async def _act(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    action = text_field(body, "action")
    if action not in ("replay", "purge"):
        raise InvalidRequest("action: replay or purge")
    service, ids = text_field(body, "service"), ids_of(body)
    reloader = admin_state(request).reloader
    if body.get("confirm") != "1":
        require(page.who, f"dlq.{action}")
        chosen = [row for row in await letters.letters(reloader, service) if row["id"] in ids]
        data = {"action": action, "service": service, "chosen": chosen}
        return render(request, "confirm.html", page, data)
    if action == "replay":
        done = await letters.replay_letters(reloader, page.who, service, ids)
        return await _letters_page(page, request, replayed=done)
    purged = await letters.purge_letters(reloader, page.who, service, ids)
    return await _letters_page(page, request, purged=purged)


async def _audit(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    require(page.who, "audit.search")
    data: dict[str, Any] = {"verification": request.app[CONSOLE].verification, "form": {}}
    return render(request, "audit.html", page, data)


async def _search(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    form = {k: v for k, v in body.items() if k not in ("csrf", "subject_id")}
    query = trail.AuditQuery.parse({k: v for k, v in body.items() if k != "csrf"})
    found = await trail.search(admin_state(request).reloader, page.who, query)
    data = {"verification": request.app[CONSOLE].verification, "form": form, "found": found}
    return render(request, "audit.html", page, data)


async def _verify(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    result = await trail.verify(admin_state(request).reloader, page.who)
    request.app[CONSOLE].verification = result
    return render(request, "audit.html", page, {"verification": result, "form": {}})


async def _evidence(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    request_id = text_field(body, "request_id")
    bundle = await trail.evidence(admin_state(request).reloader, page.who, request_id)
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
    response = web.Response(body=data, content_type="application/json")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in request_id)
    response.headers["Content-Disposition"] = f'attachment; filename="evidence-{safe}.json"'
    return secure(response)


async def _config(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    reloader = admin_state(request).reloader
    text = reloader.source.decode("utf-8", "replace") if reloader.source is not None else ""
    data = {"status": reloader.readiness()["config"], "running": text.splitlines(), "text": ""}
    return render(request, "config.html", page, data)


async def _check(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    reloader = admin_state(request).reloader
    text = text_field(body, "text")
    report: dict[str, Any] | None = proposal.check(reloader, text)
    applied = None
    if body.get("apply") == "1":
        applied = await proposal.apply(reloader, page.who, text, text_field(body, "base_version"))
        report = None
    bad = {e["line"] for e in report["errors"]} if report else set()
    lines = [(n, line, n in bad) for n, line in enumerate(text.splitlines(), start=1)]
    current = reloader.source.decode("utf-8", "replace") if reloader.source is not None else ""
    data = {
        "status": reloader.readiness()["config"],
        "running": current.splitlines(),
        "text": text,
        "report": report,
        "lines": lines,
        "applied": applied,
    }
    return render(request, "config.html", page, data)


async def _login_form(request: web.Request) -> web.StreamResponse:
    lang = language(request)
    admin_state(request)  # 404 ADMIN_DISABLED without admin keys
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", Page(lang, None, "login"), {"token": token})
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path=BASE
    )
    return response


async def _login(request: web.Request) -> web.StreamResponse:
    lang = language(request)
    admin = admin_state(request)
    page = Page(lang, None, "login")
    body = await read_body(request)
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or body.get("token") != token:
        error = Unauthenticated("the login form is stale: load it again", code="CSRF_FAILED")
        return render(request, "login.html", page, {"token": token or "", "error": error}, 403)
    key = str(body.get("key", ""))
    try:
        principal = admin.target.keys.identify(f"Bearer {key}")
    except Unauthenticated as exc:
        log.warning("console.login_failed", peer=request.remote)
        return render(request, "login.html", page, {"token": token, "error": exc}, 401)
    auditor = admin.reloader.auditor
    try:
        if auditor is not None:  # recorded before the session exists, or no session
            await auditor.admin_action(
                "console.login", principal.name, {"role": principal.role}, outcome="OK"
            )
    except BusError as exc:
        return render(request, "login.html", page, {"token": token, "error": exc}, exc.status)
    session_id, _ = request.app[CONSOLE].sessions.open(principal, key)
    log.info("console.login", admin=principal.name, role=principal.role)
    response = web.Response(status=303, headers={"Location": f"{BASE}/"})
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/admin/",
        max_age=int(admin.reloader.config.admin.session_s),
    )
    response.del_cookie(LOGIN_COOKIE, path=BASE)
    return secure(response)


async def _logout(request: web.Request, page: Page, body: dict[str, Any]) -> web.StreamResponse:
    request.app[CONSOLE].sessions.close(request.cookies.get(COOKIE))
    auditor = admin_state(request).reloader.auditor
    if auditor is not None:
        await auditor.admin_action("console.logout", page.who.name, {}, outcome="OK")
    response = web.Response(status=303, headers={"Location": f"{BASE}/login"})
    response.del_cookie(COOKIE, path="/admin/")
    return secure(response)


def add_page_routes(app: web.Application) -> None:
    """Add ``/admin/console/*`` to ``app``."""
    r = app.router
    r.add_get(f"{BASE}/login", _login_form)
    r.add_post(f"{BASE}/login", _login)
    r.add_post(f"{BASE}/logout", _page(_logout, post=True))
    r.add_get(f"{BASE}/", _page(_overview))
    r.add_get(f"{BASE}/services", _page(_services))
    r.add_get(f"{BASE}/deadletters", _page(_deadletters))
    r.add_post(f"{BASE}/deadletters/show", _page(_letter, post=True))
    r.add_post(f"{BASE}/deadletters/act", _page(_act, post=True))
    r.add_get(f"{BASE}/audit", _page(_audit))
    r.add_post(f"{BASE}/audit/search", _page(_search, post=True))
    r.add_post(f"{BASE}/audit/verify", _page(_verify, post=True))
    r.add_post(f"{BASE}/audit/evidence", _page(_evidence, post=True))
    r.add_get(f"{BASE}/config", _page(_config))
    r.add_post(f"{BASE}/config/check", _page(_check, post=True))
