"""The console's web plumbing: security headers, request bodies, who is calling, CSRF.

Every console and ``/admin/api`` response carries a strict Content-Security-Policy (scripts
and styles only from the console's own static files, no inline script or style, no
framing, forms post only to the console), ``X-Frame-Options: DENY``,
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` (so a browser sends
``Origin`` on our own forms, and nothing to other sites) and ``Cache-Control: no-store``.
Callers are found either by a bearer admin key (the API, for scripts) or by the session
cookie (the browser). Every state change made with a session needs its CSRF token (the
form field ``csrf`` or the header ``X-CSRF-Token``) and, when the browser sends one, an
``Origin`` of this very host; a bearer key needs neither (a browser never adds it by
itself). Bodies are read here, bounded by :data:`MAX_BODY` (the gateway's own
``max_body_bytes`` does not apply to the console's forms).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import web

from bus.admin.access import AdminState, Principal, admin_state, authorised
from bus.errors import (
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)

from .sessions import COOKIE, Session, Sessions
from .traffic import TrafficHistory

__all__ = [
    "CONSOLE",
    "MAX_BODY",
    "SECURITY_HEADERS",
    "Caller",
    "Console",
    "api_caller",
    "check_csrf",
    "read_body",
    "secure",
    "session_of",
]

MAX_BODY = 2 * 1024 * 1024
"""Bytes of one console request body (a pasted routing.yaml, url-encoded, fits well)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class CsrfFailed(Forbidden):
    """A state change with a session but without its CSRF token (or from another origin)."""

    default_code = "CSRF_FAILED"


@dataclass
class Console:
    """The console's state in one app."""

    sessions: Sessions = field(default_factory=Sessions)
    traffic: TrafficHistory | None = None
    verification: dict[str, Any] | None = None
    """The last chain verification (who, when, result) for the audit page."""


CONSOLE = web.AppKey("console", Console)


@dataclass(frozen=True)
class Caller:
    """Who is calling and how: ``session`` is ``None`` for a bearer key."""

    admin: AdminState
    principal: Principal
    session: Session | None


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """Add the security headers."""
    response.headers.update(SECURITY_HEADERS)
    return response


def session_of(request: web.Request) -> tuple[AdminState, Session | None]:
    """The admin state and the live session of the request's cookie, if any."""
    admin = admin_state(request)
    console = request.app[CONSOLE]
    settings = admin.reloader.config.admin
    session = console.sessions.get(
        request.cookies.get(COOKIE), max_s=settings.session_s, idle_s=settings.session_idle_s
    )
    # The key may have been removed, expired or given another role by a reload.
    if session is not None and admin.target.keys.current(session.key_digest) != session.principal:
        console.sessions.close(request.cookies.get(COOKIE))
        return admin, None
    return admin, session


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


def check_csrf(request: web.Request, session: Session, token: str | None) -> None:
    """``403 CSRF_FAILED`` unless the token is the session's and the origin is ours."""
    if not _same_origin(request) or not session.csrf_ok(token):
        raise CsrfFailed("the form is stale or came from another site: reload the page")


async def read_body(request: web.Request) -> dict[str, Any]:
    """A JSON object or a url-encoded form (last value of each field), at most MAX_BODY."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
    kind = request.content_type
    if not raw:
        return {}
    if kind == "application/json":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise InvalidRequest("the body is not a JSON object", code="MALFORMED_JSON")
        return data
    if kind == "application/x-www-form-urlencoded":
        text = raw.decode("utf-8", "replace")
        out: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True, max_num_fields=2000):
            if key == "ids":
                out.setdefault("ids", []).append(value)
            else:
                out[key] = value
        return out
    raise UnsupportedMediaType("send application/json or a url-encoded form")


async def api_caller(request: web.Request, body: dict[str, Any] | None) -> Caller:
    """The caller of an ``/admin/api`` request: a bearer key, else a session (then a
    state change — ``body`` given — must carry the CSRF token in ``X-CSRF-Token``)."""
    if request.headers.get("Authorization"):
        admin, principal = authorised(request)
        return Caller(admin, principal, None)
    admin, session = session_of(request)
    if session is None:
        raise Unauthenticated("an admin key is required: Authorization: Bearer <key>")
    if body is not None:
        check_csrf(request, session, request.headers.get("X-CSRF-Token"))
    return Caller(admin, session.principal, session)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
