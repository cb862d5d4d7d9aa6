"""Reports over a tampered audit trail are never certified — by the library, by
``lgsp-bus report`` (exit 1) or by ``/admin/reports/*`` — and the CLI and admin endpoints
work end to end on a trail a running bus wrote (each store)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bus.admin.api import build_admin_app
from bus.audit.chain import subject_key
from bus.reload.reloader import ConfigReloader
from bus.report import access_report, stats_report
from bus.report.trail import VN
from bus.store import Store
from tests.support.reporttrail import KEY, PEOPLE, Trail, recorded_trail
from tests.support.stack import serve_app
from tests.support.storetools import allow_updates, raw_execute


@pytest.fixture
async def trail(
    store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Trail]:
    async with recorded_trail(store_url, store, monkeypatch, tmp_path) as recorded:
        yield recorded


async def admin_get(
    session: aiohttp.ClientSession, url: str, key: str, **params: str
) -> tuple[int, str, Any]:
    async with session.get(url, params=params, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.text(), r.headers


async def test_tampered_chain_is_not_certified_by_cli_admin_or_library(trail: Trail) -> None:
    env = {**os.environ, "LGSP_STORE_URL": trail.url}
    day = datetime.now(VN).date().isoformat()

    async def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bus.cli.main",
            "--log-format",
            "json",
            "report",
            *args,
            "--config",
            str(trail.config_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    records = await trail.records()
    code, out, err = await cli("access", "--from", day, "--to", day, "--actor", "dpo")
    assert code == 0, err
    report = json.loads(out)
    assert report["verification"]["certified"] is True
    assert report["totals"]["calls"] == len(records)
    code, out, err = await cli(
        "subject", "--subject", "-", "--format", "html", stdin=PEOPLE[0]["id_number"] + "\n"
    )
    assert code == 0, err
    assert "Cổng dịch vụ công tỉnh" in out
    assert PEOPLE[0]["id_number"] not in out
    code, _, err = await cli("subject", "--subject", PEOPLE[0]["id_number"])
    assert code == 2
    assert "stdin" in err
    admin_records = [
        r
        for h in await trail.store.audit_chains()
        for r in await trail.store.audit_records(h.chain, 0, 1000)
        if r.kind == "admin"
    ]
    assert [r.action for r in admin_records] == ["report.access", "report.subject"]
    assert admin_records[0].actor == "dpo"
    assert admin_records[1].subject_key == subject_key(KEY.encode(), PEOPLE[0]["id_number"])

    reloader = ConfigReloader(trail.config_path, trail.config, auditor=trail.auditor)
    async with serve_app(build_admin_app(reloader)) as admin_url, aiohttp.ClientSession() as s:
        base = admin_url + "admin/reports/"
        status, text, headers = await admin_get(
            s, base + "access", trail.keys["admin"], **{"from": day, "to": day, "format": "csv"}
        )
        assert status == 200, text
        assert headers["X-Report-Certified"] == "true"
        assert "# table access" in text
        status, text, _ = await admin_get(s, base + "access", trail.keys["admin"], **{"from": "x"})
        assert status == 400
        assert json.loads(text)["error"]["code"] == "INVALID_REPORT_PARAMETER"
        status, _, _ = await admin_get(s, base + "dpia", trail.keys["portal-q1"])
        assert status == 401, "a consumer's key is not an admin key"
        status, text, _ = await admin_get(
            s, base + "access", trail.keys["operator"], **{"from": day, "to": day}
        )
        assert status == 403, "an operator never reads the audit trail"
        assert json.loads(text)["error"]["code"] == "FORBIDDEN_ROLE"
        status, _, _ = await admin_get(s, base + "dpia", trail.keys["operator"])
        assert status == 200, "the DPIA is the config's: any role"
        async with s.post(
            base + "subject",
            json={"id_numbers": [PEOPLE[0]["id_number"]]},
            headers={"Authorization": f"Bearer {trail.keys['admin']}"},
        ) as r:
            assert r.status == 200
            mine = await r.json()
        assert [a["organisation"] for a in mine["accesses"]] == ["Cổng dịch vụ công tỉnh"] * 2
    actions = [
        (r.action, r.actor)
        for h in await trail.store.audit_chains()
        for r in await trail.store.audit_records(h.chain, 0, 1000)
        if r.kind == "admin" and r.actor == "ops"
    ]
    assert actions == [("report.access", "ops"), ("report.subject", "ops")], "refusals unrecorded"

    # A process without an audit trail (a worker) has no reports to give.
    bare = ConfigReloader(trail.config_path, trail.config)
    async with serve_app(build_admin_app(bare)) as admin_url, aiohttp.ClientSession() as s:
        status, text, _ = await admin_get(
            s, admin_url + "admin/reports/access", trail.keys["admin"], **{"from": day, "to": day}
        )
        assert status == 404
        assert json.loads(text)["error"]["code"] == "REPORTS_UNAVAILABLE"
        status, text, _ = await admin_get(s, admin_url + "admin/reports/dpia", trail.keys["admin"])
        assert status == 200, "the DPIA needs only the config"
    async with serve_app(build_admin_app(reloader)) as admin_url, aiohttp.ClientSession() as s:
        base = admin_url + "admin/reports/"
        # Tamper: the police's first answer rewritten as a refusal.
        police = next(r for r in records if r.consumer == "police")
        await raw_execute(
            trail.url,
            *allow_updates(trail.url),
            # The test's own chain name and seq, no outside input.
            "UPDATE lgsp_audit_records SET outcome = 'FORBIDDEN_OPERATION' "  # noqa: S608
            f"WHERE chain = '{police.chain}' AND seq = {police.seq}",
        )
        status, text, headers = await admin_get(
            s, base + "breach", trail.keys["admin"], consumer="police", **{"from": day}
        )
        assert status == 200
        assert headers["X-Report-Certified"] == "false"
        assert json.loads(text)["verification"]["certified"] is False

    code, out, err = await cli("access", "--from", day, "--to", day, "--format", "html")
    assert code == 1
    assert "NOT CERTIFIED" in out
    assert "altered" in err
    access = await access_report(
        trail.store, trail.config, since_us=trail.since_us, until_us=trail.until_us
    )
    assert not access.verification.certified
    assert any(f"seq {police.seq}: altered" in p for p in access.verification.problems)
    stats = await stats_report(trail.store, trail.config, day[:7], delay_days=0, now_us=0)
    assert not stats.verification.certified
