"""``/admin/*``: its own credentials and optionally its own port; and the runner's wiring of
hot reload (SIGHUP, admin endpoint, audit record per reload) in the all-in-one role."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import load_routing
from bus.cli import roles as runner
from bus.cli.reloading import hot_reload
from bus.store import open_store
from bus.store.base import AuditRecord
from tests.support.reloadstack import (
    Sims,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)
from tests.unit.reload.test_reload import EFFECT_BOUND_S, lookup, within

ADMIN = {"api_keys": [{"name": "ops", "key": "env:T_RELOAD_KEY_ADMIN"}]}


@pytest.fixture
async def sims(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sims]:
    async with simulators(monkeypatch) as running:
        yield running


async def request(
    session: aiohttp.ClientSession, method: str, url: str, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.request(method, url, headers=headers) as r:
        return r.status, await r.json()


async def test_admin_is_off_without_admin_keys(
    sims: Sims, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = consumer_keys(monkeypatch)
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims))
    async with reloading_bus(path, None, keys, watch=False) as bus:
        for method, where in (("POST", "admin/reload"), ("GET", "admin/config")):
            status, body = await request(bus.session, method, bus.url + where, keys["portal"])
            assert (status, body["error"]["code"]) == (404, "ADMIN_DISABLED")
        assert bus.reloader.counts == {"applied": 0, "unchanged": 0, "rejected": 0}


async def test_admin_credentials_are_separate_from_consumers(
    sims: Sims, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = consumer_keys(monkeypatch)
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims, admin=ADMIN))
    async with reloading_bus(path, None, keys, watch=False) as bus:
        reload_url = bus.url + "admin/reload"
        for key in (None, "not-a-key", keys["portal"]):
            status, body = await request(bus.session, "POST", reload_url, key)
            assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
        # …and the admin key is no consumer's: it cannot call a service.
        bus.keys["admin"] = keys["admin"]
        status, body = await bus.call("admin", lookup())
        assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
        status, body = await request(bus.session, "GET", reload_url, keys["admin"])
        assert (status, body["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")

        write_config(path, civil_config(sims, upstream="sim-b", admin=ADMIN))
        status, body = await request(bus.session, "POST", reload_url, keys["admin"])
        assert status == 200, body
        assert (body["outcome"], body["trigger"], body["actor"]) == ("applied", "admin", "ops")
        assert "services changed: civil-status" in body["changes"]
        version = body["version"]

        broken = civil_config(sims, admin=ADMIN)
        broken["services"]["civil-status"]["operations"]["lookup"]["timeout_s"] = 30
        write_config(path, broken)
        status, body = await request(bus.session, "POST", reload_url, keys["admin"])
        assert (status, body["error"]["code"]) == (422, "CONFIG_REJECTED")
        [error] = body["error"]["detail"]["errors"]
        assert error.startswith("services.civil-status.operations.lookup.timeout_s (line ")
        assert "deadline cap (gateway.max_deadline_s = 10 s)" in error
        assert body["error"]["detail"]["version"] == version

        # 21.13: deeply nested YAML is a located 422, not a 500; nothing changes.
        path.write_text("version: " + "[" * 3000 + "]" * 3000 + "\n", encoding="utf-8")
        status, body = await request(bus.session, "POST", reload_url, keys["admin"])
        assert (status, body["error"]["code"]) == (422, "CONFIG_REJECTED")
        assert "YAML nests deeper than 64 levels" in body["error"]["detail"]["errors"][0]
        assert body["error"]["detail"]["version"] == version

        status, body = await request(bus.session, "GET", bus.url + "admin/config", keys["admin"])
        assert status == 200
        assert body["version"] == version
        assert body["reloads"] == {"applied": 1, "unchanged": 0, "rejected": 2}
        assert body["follows"] == ["worker", "gateway", "admin"]
        assert body["last_reload"]["outcome"] == "rejected"

        query = "admin/explain?consumer=clerk&service=civil-status&operation=lookup"
        status, body = await request(bus.session, "GET", bus.url + query, keys["admin"])
        assert (status, body["allowed"], body["code"]) == (200, False, "FORBIDDEN_OPERATION")
        assert body["upstream"]["name"] == "sim-b"  # the config in force, not the file

        # A rotated admin key: the old one stops working once the file is applied.
        rotated = hashlib.sha256(b"new-admin-key").hexdigest()
        new_admin = {"api_keys": [{"name": "ops2", "sha256": rotated}]}
        write_config(path, civil_config(sims, upstream="sim-b", admin=new_admin))
        status, body = await request(bus.session, "POST", reload_url, keys["admin"])
        assert status == 200, body
        status, _ = await request(bus.session, "POST", reload_url, keys["admin"])
        assert status == 401
        status, body = await request(bus.session, "POST", reload_url, "new-admin-key")
        assert (status, body["actor"]) == (200, "ops2")


async def test_all_in_one_role_reloads_on_sighup_and_admin_port_and_audits(
    sims: Sims, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = consumer_keys(monkeypatch)
    store_file = tmp_path / "audit.sqlite3"
    monkeypatch.setenv("LGSP_STORE_URL", str(store_file))
    admin = {**ADMIN, "port": 0}
    path = tmp_path / "routing.yaml"
    write_config(path, civil_config(sims, admin=admin))
    config = load_routing(path)
    stop = asyncio.Event()
    async with (
        hot_reload(path, config, watch=False, admin_listen=("127.0.0.1", 0)) as reloader,
        aiohttp.ClientSession() as session,
    ):
        role = asyncio.create_task(
            runner.run_all(
                config,
                amqp_url=None,
                host="127.0.0.1",
                port=0,
                stop=stop,
                with_sims=False,
                announce=lambda line: None,
                reloader=reloader,
            )
        )
        try:
            await within(10, lambda: {"gateway", "worker", "admin"} <= set(reloader.parts))
            [admin_url] = reloader.admin_urls
            write_config(path, civil_config(sims, upstream="sim-b", admin=admin))
            os.kill(os.getpid(), signal.SIGHUP)
            await within(EFFECT_BOUND_S, lambda: reloader.counts["applied"] == 1)
            status, body = await request(session, "POST", admin_url + "admin/reload", keys["admin"])
            assert (status, body["outcome"]) == (200, "applied")
            write_config(path, "services: [")
            status, body = await request(session, "POST", admin_url + "admin/reload", keys["admin"])
            assert (status, body["error"]["code"]) == (422, "CONFIG_REJECTED")
        finally:
            stop.set()
            await asyncio.wait_for(role, 30)
    records = await admin_records(str(store_file))
    assert [(r.action, r.actor, r.outcome, r.detail["trigger"]) for r in records] == [
        ("config.reload", "operator", "OK", "sighup"),
        ("config.reload", "ops", "OK", "admin"),
        ("config.reload", "ops", "CONFIG_REJECTED", "admin"),
    ]
    assert records[0].detail["changes"] == ["services changed: civil-status"]


async def admin_records(url: str) -> list[AuditRecord]:
    store = open_store(url)
    await store.connect()
    try:
        found = []
        for head in await store.audit_chains():
            found += await store.audit_records(head.chain, 0, 1000)
        return sorted((r for r in found if r.kind == "admin"), key=lambda r: r.time_us)
    finally:
        await store.aclose()
