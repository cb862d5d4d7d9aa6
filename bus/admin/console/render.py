"""Rendering the console's pages: one Jinja2 environment, autoescaped, strict, translated.

Templates and static files ship inside the package (``bus/console/templates``,
``bus/console/static``); nothing is fetched at run time. Every value reaches HTML through
Jinja2's autoescaping (names in dead letters come from citizens' records and may hold
markup); no template marks anything ``safe``. The language is Vietnamese unless the
browser chose English with ``?lang=en`` (kept in the ``lgsp_lang`` cookie, which holds
nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from bus.admin.access import Principal

from .guard import secure
from .i18n import LANGUAGES, translate
from .roles import may
from .sessions import Session

__all__ = ["LANG_COOKIE", "STATIC", "Page", "language", "render", "static_file"]

LANG_COOKIE = "lgsp_lang"
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
_HOME = {
    "letter": "deadletters",
    "act": "deadletters",
    "search": "audit",
    "verify": "audit",
    "check": "config",
}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("bus.admin.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Page:
    """Who looks at which page, in which language."""

    lang: str
    session: Session | None
    name: str

    @property
    def who(self) -> Principal:
        """The logged-in admin (pages behind the login only)."""
        assert self.session is not None
        return self.session.principal

    @property
    def home(self) -> str:
        """The page's own GET path (for the language switch and the menu)."""
        name = _HOME.get(self.name, self.name)
        return "/admin/console/" + ("" if name in ("overview", "error") else name)


def language(request: web.Request) -> str:
    """``vi`` or ``en``: the query's ``lang`` if valid, else the cookie's, else ``vi``."""
    for candidate in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGUAGES:
            return candidate
    return "vi"


def render(
    request: web.Request,
    template: str,
    page: Page,
    data: dict[str, Any],
    status: int = 200,
) -> web.Response:
    """The page as an HTML response with the security headers."""
    lang = page.lang

    def gettext(key: str, **values: Any) -> str:
        return translate(lang, key, **values)

    session = page.session
    context = {
        **data,
        "_": gettext,
        "lang": lang,
        "page": page.name,
        "home": page.home,
        "who": session.principal if session else None,
        "csrf": session.csrf if session else "",
        "can": (lambda action: session is not None and may(session.principal, action)),
        "static": "/admin/console/static",
    }
    html = _ENV.get_template(template).render(context)
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, samesite="Strict", path="/admin/", httponly=True)
    secure(response)
    return response


def static_file(name: str) -> bytes:
    """One of the console's static files, from the package."""
    return (resources.files("bus.admin.console") / "static" / name).read_bytes()
