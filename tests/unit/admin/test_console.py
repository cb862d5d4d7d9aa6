"""The console's rules without a browser: the catalogue is complete in both languages,
sessions end when they should, the traffic ring counts what happened, and the management
API on a running bus (embedded broker) — roles, precise errors that change nothing, a
config apply that puts the file back when the reload rejects it, CSRF on sessions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bus.admin.access import Principal
from bus.admin.console.i18n import CATALOGUE, LANGUAGES
from bus.admin.console.sessions import Sessions
from bus.admin.console.traffic import TrafficHistory, chart
from bus.observe.metrics import Metrics
from tests.support.reloadstack import (
    ReloadingBus,
    Sims,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)
from tests.support.stack import new_secret

ROLES = ("viewer", "operator", "auditor")
DYNAMIC = {
    "page.": [
        "overview",
        "services",
        "deadletters",
        "letter",
        "act",
        "audit",
        "search",
        "verify",
        "config",
        "check",
        "login",
        "error",
    ],
    "role.": list(ROLES),
    "breaker.": ["closed", "open", "half_open", "unknown"],
    "key.": ["valid", "expiring", "expired"],
    "dl.confirm_": ["replay", "purge"],
    "dl.yes_": ["replay", "purge"],
}


def test_every_message_the_templates_use_exists_in_both_languages() -> None:
    used: set[str] = set()
    folder = resources.files("bus.admin.console") / "templates"
    for template in folder.iterdir():
        used |= set(re.findall(r"_\('([a-z_.]+)'", template.read_text(encoding="utf-8")))
    keys = {k for k in used if k not in DYNAMIC}
    keys |= {prefix + name for prefix in used & DYNAMIC.keys() for name in DYNAMIC[prefix]}
    assert len(keys) > 100
    for lang in LANGUAGES:
        missing = sorted(k for k in keys if not CATALOGUE[lang].get(k))
        assert not missing, (lang, missing)
    assert CATALOGUE["vi"]["page.overview"] != CATALOGUE["en"]["page.overview"]


def test_sessions_end_after_their_lifetime_when_idle_and_on_logout() -> None:
    sessions = Sessions()
    who = Principal("ops", "operator")
    sid, session = sessions.open(who, "the-key", now=1000.0)
    assert sessions.get(sid, max_s=3600, idle_s=600, now=1500.0) is session
    assert sessions.get(sid, max_s=3600, idle_s=600, now=2050.0) is session  # touched at 1500
    assert sessions.get(sid, max_s=3600, idle_s=600, now=4700.0) is None  # past its lifetime
    sid, _ = sessions.open(who, "the-key", now=1000.0)
    assert sessions.get(sid, max_s=3600, idle_s=600, now=1601.0) is None  # idle too long
    sid, session = sessions.open(who, "the-key", now=1000.0)
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok("forged")
    sessions.close(sid)
    assert sessions.get(sid, max_s=3600, idle_s=600, now=1001.0) is None
    assert sessions.get("x" * 200, max_s=3600, idle_s=600) is None


def test_the_traffic_ring_counts_requests_and_server_errors_per_interval() -> None:
    metrics = Metrics()
    history = TrafficHistory(lambda: metrics, slots=3)

    def answer(status: int, n: int = 1) -> None:
        for _ in range(n):
            metrics.request_finished(
                service="civil-status",
                operation="lookup",
                consumer="portal",
                code="OK" if status == 200 else "UPSTREAM_ERROR",
                status=status,
                seconds=0.01,
            )

    answer(200, 2)
    history.sample(now=60.0)  # the first sample counts from the process's zero
    answer(200, 3)
    answer(502)
    history.sample(now=120.0)
    answer(200)
    requests, errors = history.series("civil-status")
    assert requests == [2, 4, 1]  # the last interval is the one under way
    assert errors == [0, 1, 0]
    drawn = chart(requests, errors, width=100, height=20)
    assert (drawn.total, drawn.failed, drawn.peak) == (7, 1, 4)
    last = drawn.bars[-1]
    assert abs(last.x + 100 / 60 - 100) < 0.1  # right-aligned: the newest at the right edge
    heights = [b.height for b in drawn.bars]
    assert heights.index(max(heights)) == 1
    assert max(heights) == 18
    assert [b.error_height > 0 for b in drawn.bars] == [False, True, False]
    assert history.series("population") == ([0.0], [0.0])  # no traffic: one empty interval


# -- the API on a running bus -----------------------------------------------------------------


@pytest.fixture
async def console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Any]:
    keys = consumer_keys(monkeypatch)
    for role in ("VIEWER", "OPERATOR", "AUDITOR"):
        keys[role.lower()] = new_secret()
        monkeypatch.setenv(f"T_CONSOLE_{role}", keys[role.lower()])
    admin = {
        "api_keys": [
            {"name": f"{role}-1", "key": f"env:T_CONSOLE_{role.upper()}", "role": role}
            for role in ROLES
        ]
        + [{"name": "old", "key": "env:T_RELOAD_KEY_ADMIN"}]
    }
    async with simulators(monkeypatch) as sims:
        data = civil_config(sims, admin=admin)
        path = tmp_path / "routing.yaml"
        write_config(path, data)
        async with reloading_bus(path, None, keys, watch=False) as bus:
            # What the process roles hand the console (bus/cli/roles.py).
            bus.reloader.handles.broker = bus.gateway.broker
            bus.reloader.handles.metrics = bus.metrics
            bus.reloader.handles.readiness = bus.gateway.readiness  # as bus/cli/roles.py
            yield _Console(bus, sims, data, path)


class _Console:
    def __init__(self, bus: ReloadingBus, sims: Sims, data: dict[str, Any], path: Path) -> None:
        self.bus, self.sims, self.data, self.path = bus, sims, data, path

    async def api(
        self, role: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.bus.keys[role]}", **kw.pop("headers", {})}
        method = "GET" if body is None and "data" not in kw else "POST"
        url = self.bus.url + "admin/api/" + path
        if body is not None:
            kw["json"] = body
        async with self.bus.session.request(method, url, headers=headers, **kw) as r:
            return r.status, await r.json()


def _code(reply: tuple[int, dict[str, Any]]) -> tuple[int, str]:
    return reply[0], reply[1]["error"]["code"]


async def test_each_role_may_do_its_part_only(console: _Console) -> None:
    for role, key in (("viewer", "viewer"), ("operator", "operator"), ("auditor", "auditor")):
        status, me = await console.api(key, "whoami")
        assert (status, me["role"]) == (200, role)
    status, me = await console.api("admin", "whoami")
    assert (me["name"], me["role"]) == ("old", "operator")  # a key without a role
    assert "config.apply" in me["may"]
    assert "dlq.reveal" not in me["may"]

    search = {"subject_id": "001193083060"}
    assert _code(await console.api("operator", "audit/search", search)) == (403, "FORBIDDEN_ROLE")
    apply = {"text": "version: 1\n", "base_version": "x"}
    assert _code(await console.api("auditor", "config/apply", apply)) == (403, "FORBIDDEN_ROLE")
    async with console.bus.session.post(
        console.bus.url + "admin/reload",
        headers={"Authorization": f"Bearer {console.bus.keys['viewer']}"},
    ) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (403, "FORBIDDEN_ROLE")
    assert console.bus.reloader.counts["applied"] == 0
    # Actions that must be audited are refused where no audit trail is open.
    assert _code(await console.api("auditor", "audit/search", search)) == (
        503,
        "AUDIT_UNAVAILABLE",
    )
    replay = {"service": "civil-status", "ids": ["a"]}
    assert _code(await console.api("operator", "deadletters/replay", replay)) == (
        503,
        "AUDIT_UNAVAILABLE",
    )
    for status, data in [
        await console.api("viewer", "overview"),
        await console.api("viewer", "services"),
        await console.api("viewer", "access"),
        await console.api("viewer", "deadletters"),
    ]:
        assert status == 200, data
    for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript")):
        async with console.bus.session.get(console.bus.url + f"admin/console/static/{name}") as r:
            assert (r.status, r.content_type) == (200, kind), await r.text()
    status, overview = await console.api("viewer", "overview")
    assert overview["rate_limit"] == {"backend": "process", "shared": False}  # which decides
    status, access = await console.api("viewer", "access")
    portal = next(c for c in access["consumers"] if c["consumer"] == "portal")
    assert portal["grants"] == [True]
    assert portal["credentials"][0]["label"] == "key-0"
    assert console.bus.keys["portal"] not in str(access)


async def test_bad_input_gets_a_precise_code_and_changes_nothing(console: _Console) -> None:
    before = console.path.read_bytes()
    cases: list[tuple[str, str, Any, int, str]] = [
        (
            "operator",
            "deadletters/replay",
            {"service": "civil-status", "ids": []},
            400,
            "INVALID_REQUEST",
        ),
        (
            "operator",
            "deadletters/purge",
            {"service": "nope", "ids": ["a"]},
            404,
            "UNKNOWN_SERVICE",
        ),
        ("auditor", "audit/search", {}, 400, "INVALID_REQUEST"),
        ("auditor", "audit/search", {"subject_id": "12ab"}, 400, "INVALID_REQUEST"),
        ("auditor", "audit/search", {"nonsense": "1"}, 400, "INVALID_REQUEST"),
        ("viewer", "config/check", {"text": ""}, 400, "INVALID_REQUEST"),
        (
            "operator",
            "config/apply",
            {"text": "version: [\n", "base_version": "x"},
            422,
            "CONFIG_REJECTED",
        ),
    ]
    for role, path, body, status, code in cases:
        assert _code(await console.api(role, path, body)) == (status, code), (path, body)
    raw = await console.api(
        "operator", "config/check", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert _code(raw) == (400, "MALFORMED_JSON")
    assert console.path.read_bytes() == before
    assert console.bus.reloader.counts == {"applied": 0, "unchanged": 0, "rejected": 0}


async def test_config_check_locates_errors_and_apply_is_guarded(console: _Console) -> None:
    reloader = console.bus.reloader
    text = console.path.read_text(encoding="utf-8")
    lines = text.splitlines()
    where = next(i for i, line in enumerate(lines) if "timeout_s" in line)
    lines[where] = lines[where].split(":")[0] + ": -1"
    status, report = await console.api("viewer", "config/check", {"text": "\n".join(lines)})
    assert status == 200
    assert not report["ok"]
    assert report["errors"][0]["line"] == where + 1
    assert "timeout_s" in report["errors"][0]["path"]

    revoked = {**console.data, "consumers": {**console.data["consumers"]}}
    revoked["consumers"]["portal"] = {**revoked["consumers"]["portal"], "allow": {}}
    new_text = yaml.safe_dump(revoked, sort_keys=False)
    status, report = await console.api("viewer", "config/check", {"text": new_text})
    assert report["ok"]
    assert report["changes"][0]["kind"] == "revoked"
    assert report["base_version"] == reloader.version

    stale = {"text": new_text, "base_version": "0" * 12}
    assert _code(await console.api("operator", "config/apply", stale)) == (409, "CONFIG_CHANGED")
    # Valid text whose secret reference does not resolve here: the reload rejects it and
    # the previous file is put back.
    before = console.path.read_bytes()
    broken = {**revoked, "consumers": {**revoked["consumers"]}}
    broken["consumers"]["clerk"] = {"api_keys": [{"key": "env:T_CONSOLE_UNSET"}], "allow": {}}
    body = {"text": yaml.safe_dump(broken, sort_keys=False), "base_version": reloader.version}
    status, reply = await console.api("operator", "config/apply", body)
    assert (status, reply["error"]["code"]) == (422, "CONFIG_REJECTED"), reply
    assert console.path.read_bytes() == before
    version = reloader.version

    body = {"text": new_text, "base_version": version}
    status, reply = await console.api("operator", "config/apply", body)
    assert (status, reply["outcome"]) == (200, "applied"), reply
    assert reply["actor"] == "operator-1"
    assert console.path.read_text(encoding="utf-8") == new_text
    assert reloader.version != version
    status, shown = await console.api("viewer", "config")
    assert shown["text"] == new_text
    assert shown["version"] == reloader.version


async def test_a_session_needs_its_csrf_token_and_ends_with_its_key(console: _Console) -> None:
    bus = console.bus
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(bus.url + "admin/console/login") as r:
            token = re.search(r'name="token" value="([^"]+)"', await r.text())
        assert token is not None
        form = {"token": token.group(1), "key": bus.keys["operator"]}
        async with browser.post(bus.url + "admin/console/login", data=form) as r:
            page = await r.text()
            assert r.status == 200
            assert "operator-1" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        check = {"text": console.path.read_text(encoding="utf-8")}
        url = bus.url + "admin/api/config/check"
        async with browser.post(url, json=check) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (403, "CSRF_FAILED")
        async with browser.post(url, json=check, headers={"X-CSRF-Token": csrf.group(1)}) as r:
            assert r.status == 200, await r.text()
        # A reload that gives the key another role ends the session.
        data = {**console.data, "admin": {**console.data["admin"]}}
        data["admin"]["api_keys"] = [
            {**k, "role": "viewer"} if k["name"] == "operator-1" else k
            for k in data["admin"]["api_keys"]
        ]
        write_config(console.path, data)
        assert (await bus.reloader.reload("api")).outcome == "applied"
        async with browser.get(bus.url + "admin/api/whoami") as r:
            assert r.status == 401
        async with browser.get(bus.url + "admin/console/", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/admin/console/login")
        wrong = {"token": token.group(1), "key": "not-a-key"}
        async with browser.post(bus.url + "admin/console/login", data=wrong) as r:
            assert r.status in (401, 403)  # the login token was used up, or the key is wrong
