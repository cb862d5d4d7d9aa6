"""``/admin/reports/*``: the data-protection reports of :mod:`bus.report` over HTTP.

Behind the admin keys like every ``/admin/*`` endpoint; the audit trail is the one of the
process serving them (a gateway, or ``lgsp-bus run``): a process without one (a worker)
answers ``404 REPORTS_UNAVAILABLE``. ``format=json|csv|html`` (default json) picks the
rendering; a report over a broken chain is still returned, with ``verification.certified``
false and the header ``X-Report-Certified: false``. Each report is recorded as an admin
action ``report.<kind>`` (actor: the admin key's name).

* ``GET /admin/reports/access?from=&to=[&consumer=][&service=]``
* ``GET /admin/reports/breach?from=[&to=][&consumer=][&api_key_id=][&officer=][&discovered_at=]``
* ``GET /admin/reports/dpia``
* ``GET /admin/reports/stats?month=YYYY-MM[&delay_days=10]``
* ``POST /admin/reports/subject`` with ``{"id_numbers": ["…"], "from": …, "to": …}``: the
  ID travels in the body, never in a URL (URLs reach access logs).

Bad parameters are ``400 INVALID_REPORT_PARAMETER`` naming the parameter.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import orjson
from aiohttp import web

from bus.audit.observer import load_subject_key
from bus.config import RoutingConfig
from bus.errors import InvalidRequest, NotFoundError
from bus.report import (
    CONTENT_TYPES,
    FORMATS,
    BreachSelector,
    Format,
    Report,
    access_report,
    breach_report,
    dpia_report,
    render,
    stats_report,
    subject_report,
)
from bus.report.trail import parse_time
from bus.store.base import Store

__all__ = ["ReportsUnavailable", "mount_reports"]

Authorise = Callable[[web.Request], tuple[RoutingConfig, Any, str]]
"""The admin layer's check: (config in force, audit writer or None, admin name)."""


AUTHORISE: web.AppKey[Authorise] = web.AppKey("reports_authorise")


class ReportsUnavailable(NotFoundError):
    """This process keeps no audit trail to report on."""

    default_code = "REPORTS_UNAVAILABLE"


def _bad(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{name}: {why}", code="INVALID_REPORT_PARAMETER")


def _needed(query: Mapping[str, str], name: str, *, end: bool = False) -> int:
    found = _time(query, name, end=end)
    if found is None:
        raise _bad(name, "required")
    return found


def _time(query: Mapping[str, str], name: str, *, end: bool = False) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw, end_of_day=end)
    except ValueError as exc:
        raise _bad(name, str(exc)) from None


def _format(query: Mapping[str, str]) -> Format:
    fmt = query.get("format", "json")
    if fmt not in FORMATS:
        raise _bad("format", f"one of {', '.join(FORMATS)}")
    return fmt


def _store(auditor: Any) -> Store:
    store = getattr(auditor, "store", None)
    if store is None:
        raise ReportsUnavailable("this process keeps no audit trail: ask the gateway's /admin")
    return cast(Store, store)


async def _answer(
    auditor: Any,
    name: str,
    report: Report,
    fmt: Format,
    detail: dict[str, Any],
    subject_id: str | None = None,
) -> web.Response:
    if auditor is not None:
        extra = {"subject_id": subject_id} if subject_id is not None else {}
        await auditor.admin_action(
            f"report.{report.kind}",
            name,
            {**detail, "certified": report.verification.certified},
            outcome="OK",
            **extra,
        )
    return web.Response(
        text=render(report, fmt),
        content_type=CONTENT_TYPES[fmt],
        charset="utf-8",
        headers={"X-Report-Certified": str(report.verification.certified).lower()},
    )


def _now_us() -> int:
    return int(time.time() * 1_000_000)


async def access_report_page(request: web.Request) -> web.Response:
    """``/admin/reports/access``."""
    config, auditor, name = request.app[AUTHORISE](request)
    q = request.query
    since, until = _needed(q, "from"), _needed(q, "to", end=True)
    fmt = _format(q)
    report = await access_report(
        _store(auditor),
        config,
        since_us=since,
        until_us=until,
        consumer=q.get("consumer"),
        service=q.get("service"),
    )
    return await _answer(auditor, name, report, fmt, {"from": since, "to": until})


async def breach_report_page(request: web.Request) -> web.Response:
    """``/admin/reports/breach``."""
    config, auditor, name = request.app[AUTHORISE](request)
    q = request.query
    try:
        selector = BreachSelector(q.get("consumer"), q.get("api_key_id"), q.get("officer"))
    except ValueError as exc:
        raise _bad("consumer|api_key_id|officer", str(exc)) from None
    since = _needed(q, "from")
    until = _time(q, "to", end=True)
    found = _time(q, "discovered_at")
    fmt = _format(q)
    report = await breach_report(
        _store(auditor),
        config,
        selector,
        since_us=since,
        until_us=until,
        discovered_us=found if found is not None else _now_us(),
    )
    detail = {"from": since, "consumer": selector.consumer, "api_key_id": selector.credential}
    return await _answer(auditor, name, report, fmt, detail)


async def dpia_report_page(request: web.Request) -> web.Response:
    """``/admin/reports/dpia``."""
    config, auditor, name = request.app[AUTHORISE](request)
    return await _answer(auditor, name, dpia_report(config), _format(request.query), {})


async def stats_report_page(request: web.Request) -> web.Response:
    """``/admin/reports/stats``."""
    config, auditor, name = request.app[AUTHORISE](request)
    q = request.query
    month = q.get("month") or ""
    raw_delay = q.get("delay_days", "10")
    if not raw_delay.isdigit() or int(raw_delay) > 366:
        raise _bad("delay_days", "whole days, 0..366")
    fmt = _format(q)
    try:
        report = await stats_report(
            _store(auditor), config, month, delay_days=int(raw_delay), now_us=_now_us()
        )
    except ValueError as exc:
        raise _bad("month", str(exc)) from None
    return await _answer(auditor, name, report, fmt, {"month": month})


async def subject_report_page(request: web.Request) -> web.Response:
    """``/admin/reports/subject``."""
    config, auditor, name = request.app[AUTHORISE](request)
    fmt = _format(request.query)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise _bad("body", "not JSON") from None
    ids = body.get("id_numbers") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise _bad("id_numbers", "a non-empty list of ID numbers")
    key = load_subject_key(config)
    if key is None:
        raise ReportsUnavailable("the routing config has no audit.subject_key")
    window = {k: v for k, v in body.items() if k in ("from", "to") and isinstance(v, str)}
    report = await subject_report(
        _store(auditor),
        config,
        key,
        ids,
        now_us=_now_us(),
        since_us=_time(window, "from"),
        until_us=_time(window, "to", end=True),
    )
    one = ids[0] if len(ids) == 1 else None
    return await _answer(auditor, name, report, fmt, {"subjects": len(ids)}, one)


def mount_reports(app: web.Application, authorise: Authorise) -> None:
    """Add ``/admin/reports/*`` to ``app``; ``authorise`` checks the admin key."""
    app[AUTHORISE] = authorise
    routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        "access": access_report_page,
        "breach": breach_report_page,
        "dpia": dpia_report_page,
        "stats": stats_report_page,
    }
    for path, handler in routes.items():
        app.router.add_get(f"/admin/reports/{path}", handler)
    app.router.add_post("/admin/reports/subject", subject_report_page)
