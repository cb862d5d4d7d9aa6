"""The data-protection reports over an audit trail a running bus wrote (gateway → broker →
worker → MOJ simulator), on each store: every figure equals a count computed here from
the records; covert consumers stay hidden; no raw ID or name in any rendering; a tampered
chain is never certified; the CLI and ``/admin/reports/*`` end to end."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapters.base import parse_routing
from adapters.civil_status.data import sample_person, sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import build_app
from bus.admin.api import build_admin_app
from bus.audit.chain import subject_key
from bus.audit.observer import Auditor
from bus.config import AuditSettings, RoutingConfig
from bus.reload.reloader import ConfigReloader
from bus.report import (
    FORMATS,
    BreachSelector,
    access_report,
    breach_report,
    dpia_report,
    render,
    stats_report,
    subject_report,
)
from bus.report.trail import VN
from bus.store import Store
from bus.store.base import AuditRecord
from tests.support.stack import BusStack, new_secret, running_bus, serve_app
from tests.support.storetools import allow_updates, raw_execute

KEY = "reports-audit-key-0123456789"
OFFICER_A, OFFICER_B = "001085000123", "079190000456"
DUTY = {"procedure_code": "1.001234", "dossier_id": "HS-2026-0001", "legal_basis": "LEGAL_DUTY"}
CONSENT = {
    "procedure_code": "2.000111",
    "dossier_id": "HS-2026-0002",
    "legal_basis": "CONSENT",
    "consent_ref": "VNEID-CONSENT-77",
}
DAY_US = 86_400 * 1_000_000
PEOPLE = [sample_person(0, RecordType.BIRTH, i) for i in range(20, 26)]
CREDENTIALS = ("portal-q1", "portal-q2", "police", "tax", "outsider", "admin")


def routing(civil_url: str) -> dict[str, Any]:
    """Four consumers: the portal (two keys), the police (excluded, granted ethnicity),
    the tax office (delayed, minimised fields), an outsider allowed nothing."""
    return {
        "version": 1,
        "gateway": {"shutdown_grace_s": 5},
        "consumers": {
            "portal": {
                "display_name": "Cổng dịch vụ công tỉnh",
                "api_keys": [
                    {"key": "env:T_PORTAL_Q1", "label": "2026-q1"},
                    {"key": "env:T_PORTAL_Q2", "label": "2026-q2"},
                ],
                "allow": {"civil-status": ["lookup"]},
            },
            "police": {
                "display_name": "Công an tỉnh",
                "api_keys": [{"key": "env:T_POLICE"}],
                "allow": {"civil-status": ["lookup"]},
                "sensitive": {"civil-status": ["ethnicity"]},
                "transparency": "excluded",
            },
            "tax": {
                "display_name": "Cục thuế tỉnh",
                "api_keys": [{"key": "env:T_TAX"}],
                "allow": {"civil-status": ["lookup"]},
                "fields": {"civil-status": ["persons.full_name", "persons.birth_date"]},
                "transparency": "delayed(30 days)",
            },
            "outsider": {"api_keys": [{"key": "env:T_OUTSIDER"}], "allow": {}},
        },
        "upstreams": {
            "moj": {
                "url": civil_url,
                "allow_plain_http": True,
                "auth": {"kind": "bearer", "token": "env:T_MOJ_TOKEN"},
            }
        },
        "services": {
            "civil-status": {
                "adapter": "civil_status",
                "upstream": "moj",
                "description": "Cơ sở dữ liệu hộ tịch điện tử",
                "operations": {
                    "lookup": {"timeout_s": 5, "retry": {"attempts": 1}},
                },
            }
        },
        "admin": {"api_keys": [{"name": "ops", "key": "env:T_ADMIN"}]},
        "audit": {"subject_key": "env:T_AUDIT_KEY"},
        "reports": {"k_anonymity": 3},
    }


def body(purpose: dict[str, str], officer: str, **query: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{time.time_ns()}",
        "record_type": "BIRTH",
        "caller": {"unit_code": "H01", "officer_id": officer},
        "purpose": purpose,
        **query,
    }


def by(person: dict[str, str]) -> dict[str, Any]:
    return {"by_person": {"id_number": person["id_number"]}}


REG = {"by_registration": sample_registration(0, RecordType.BIRTH, 3)}
DOWN = {"by_registration": {"authority_code": "00001", "number": "FAIL503"}}
# (credential, purpose, officer, query, expected status)
SCENARIO: list[tuple[str, dict[str, str], str, dict[str, Any], int]] = [
    *[("portal-q1", DUTY, OFFICER_A, by(p), 200) for p in PEOPLE[:4]],
    ("portal-q2", DUTY, OFFICER_B, by(PEOPLE[0]), 200),
    ("portal-q2", CONSENT, OFFICER_B, by(PEOPLE[4]), 200),
    ("portal-q2", DUTY, OFFICER_B, REG, 200),
    ("portal-q1", DUTY, OFFICER_A, {**REG, "colour": "red"}, 400),
    ("portal-q1", DUTY, OFFICER_A, DOWN, 503),
    ("police", DUTY, OFFICER_A, by(PEOPLE[0]), 200),
    ("police", DUTY, OFFICER_A, by(PEOPLE[1]), 200),
    ("tax", DUTY, OFFICER_B, by(PEOPLE[0]), 200),
    ("outsider", DUTY, OFFICER_A, by(PEOPLE[5]), 403),
    ("outsider", DUTY, OFFICER_A, by(PEOPLE[5]), 403),
    ("nobody", DUTY, OFFICER_A, REG, 401),
]


@dataclass
class Trail:
    store: Store
    url: str
    config: RoutingConfig
    config_path: Path
    auditor: Auditor
    keys: dict[str, str]
    since_us: int
    until_us: int

    async def records(self) -> list[AuditRecord]:
        """Every exchange record, read straight from the store."""
        out: list[AuditRecord] = []
        for head in await self.store.audit_chains():
            out += [
                r
                for r in await self.store.audit_records(head.chain, 0, 100_000)
                if r.kind == "exchange"
            ]
        return out


async def play(bus: BusStack, keys: dict[str, str]) -> None:
    for credential, purpose, officer, query, status in SCENARIO:
        key = keys.get(credential, "not-a-key")
        got, reply = await bus.post(
            "/v1/civil-status/lookup", body(purpose, officer, **query), key=key
        )
        assert got == status, (credential, reply)


@pytest.fixture
async def trail(
    store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Trail]:
    keys = {name: new_secret() for name in CREDENTIALS}
    for name, value in keys.items():
        monkeypatch.setenv("T_" + name.upper().replace("-", "_"), value)
    token = new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_AUDIT_KEY", KEY)
    async with serve_app(build_app(token=token)) as sim_url:
        data = routing(sim_url)
        config = parse_routing(data)
        path = tmp_path / "routing.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        settings = AuditSettings(commit_timeout_s=2.0)
        auditor = Auditor(store, node="lgsp-1", key=KEY.encode(), settings=settings)
        async with auditor:
            since = int(time.time() * 1_000_000) - 1
            async with running_bus(config, None, keys["portal-q1"], auditor=auditor) as bus:
                await play(bus, keys)
            deadline = time.monotonic() + 10
            while auditor.backlog:
                assert time.monotonic() < deadline, "the audit backlog was not written"
                await asyncio.sleep(0.02)
            until = int(time.time() * 1_000_000) + 1
            yield Trail(store, store_url, config, path, auditor, keys, since, until)


def expected_rows(records: list[AuditRecord]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The access report's figures, counted here from the records."""
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in records:
        key = (
            r.consumer or "-",
            r.service or "-",
            r.operation or "-",
            r.purpose.get("legal_basis", "-"),
        )
        row = rows.setdefault(
            key,
            {"calls": 0, "answered": 0, "subjects": set(), "denials": Counter(), "officers": set()},
        )
        row["calls"] += 1
        row["answered"] += r.outcome == "OK"
        if r.subject_key:
            row["subjects"].add(r.subject_key)
        if r.outcome != "OK":
            row["denials"][r.outcome] += 1
        if r.officer:
            row["officers"].add(r.officer)
    return rows


def raw_values() -> list[str]:
    """What must never appear in a report: ID numbers, names, birth dates, officers."""
    out = [OFFICER_A, OFFICER_B]
    for p in PEOPLE:
        out += [p["id_number"], p["full_name"], p["full_name"].upper()]
    return out


async def test_access_breach_subject_and_stats_count_what_the_trail_holds(trail: Trail) -> None:
    records = await trail.records()
    assert len(records) == len(SCENARIO), "one record per call"
    key = KEY.encode()

    access = await access_report(
        trail.store, trail.config, since_us=trail.since_us, until_us=trail.until_us
    )
    assert access.verification.certified
    assert access.verification.records_checked == len(records)
    expected = expected_rows(records)
    got = {(r.consumer, r.service, r.operation, r.legal_basis): r for r in access.rows}
    assert set(got) == set(expected)
    for k, want in expected.items():
        row = got[k]
        assert (row.calls, row.answered, row.subjects, row.officers) == (
            want["calls"],
            want["answered"],
            len(want["subjects"]),
            len(want["officers"]),
        ), k
        assert row.denials == dict(want["denials"]), k
    # Against the scenario itself, not only the records.
    duty = got[("portal", "civil-status", "lookup", "LEGAL_DUTY")]
    portal_duty = [s for s in SCENARIO if s[0].startswith("portal") and s[1] is DUTY]
    assert duty.calls == len(portal_duty) - 1 == 7, "the invalid body's purpose is unread"
    assert duty.subjects == 4  # PEOPLE[0..3]; PEOPLE[0] twice, registrations have none
    assert duty.denials == {"UPSTREAM_UNAVAILABLE": 1}
    assert got[("portal", "civil-status", "lookup", "-")].denials == {"UNKNOWN_FIELD": 1}
    assert duty.officers == 2
    assert {"name", "birth_date"} <= set(duty.categories)
    assert duty.sensitive == [], "ethnicity is not granted to the portal"
    assert got[("police", "civil-status", "lookup", "LEGAL_DUTY")].sensitive == ["ethnicity"]
    assert set(got[("tax", "civil-status", "lookup", "LEGAL_DUTY")].categories) == {
        "name",
        "birth_date",
    }, "the tax office's field grant: names and birth dates only"
    assert got[("outsider", "civil-status", "lookup", "-")].denials == {"FORBIDDEN_OPERATION": 2}
    assert got[("-", "-", "-", "-")].denials == {"UNAUTHENTICATED": 1}
    only = await access_report(
        trail.store, trail.config, since_us=trail.since_us, until_us=trail.until_us, consumer="tax"
    )
    assert [r.consumer for r in only.rows] == ["tax"]

    # Breach by credential: the subjects of the calls made with the portal's second key.
    q2 = [r for r in records if r.detail.get("credential") == "2026-q2"]
    assert len(q2) == 3
    breach = await breach_report(
        trail.store,
        trail.config,
        BreachSelector(consumer="portal", credential="2026-q2"),
        since_us=trail.since_us,
        until_us=None,
        discovered_us=trail.until_us,
    )
    assert breach.verification.certified
    assert breach.calls == 3
    assert breach.records_with_data == 3
    assert breach.subject_keys == sorted(
        subject_key(key, p["id_number"]) for p in (PEOPLE[0], PEOPLE[4])
    )
    assert breach.unattributable == 0
    assert {(p["procedure_code"], p["legal_basis"], p["calls"]) for p in breach.purposes} == {
        ("1.001234", "LEGAL_DUTY", 2),
        ("2.000111", "CONSENT", 1),
    }
    assert breach.dossiers == 2
    assert breach.deadline_us - breach.discovered_us == 72 * 3600 * 1_000_000
    by_officer = await breach_report(
        trail.store,
        trail.config,
        BreachSelector(officer=OFFICER_A),
        since_us=trail.since_us,
        until_us=trail.until_us,
        discovered_us=trail.until_us,
    )
    answered_a = [r for r in records if r.officer == OFFICER_A and r.outcome == "OK" and r.fields]
    assert by_officer.records_with_data == len(answered_a) == 6
    assert len(by_officer.subject_keys) == len({r.subject_key for r in answered_a}) == 4
    assert "ethnicity" in by_officer.sensitive, "the police got ethnicity"
    notification = {f.en: f for f in by_officer.notification()}
    assert notification["approximate number of subjects"].value == 4
    assert notification["likely consequences"].needs_person
    assert notification["likely consequences"].value is None

    # A citizen's report: the police (excluded) never; the tax office (delayed) after 30 days.
    now = int(time.time() * 1_000_000)
    mine = await subject_report(
        trail.store, trail.config, key, [PEOPLE[0]["id_number"]], now_us=now
    )
    assert [a.organisation for a in mine.accesses] == ["Cổng dịch vụ công tỉnh"] * 2
    assert [a.dossier_id for a in mine.accesses] == ["HS-2026-0001"] * 2
    later = await subject_report(
        trail.store, trail.config, key, [PEOPLE[0]["id_number"]], now_us=now + 31 * DAY_US
    )
    assert Counter(a.organisation for a in later.accesses) == {
        "Cổng dịch vụ công tỉnh": 2,
        "Cục thuế tỉnh": 1,
    }
    for fmt in FORMATS:
        assert "Công an" not in render(later, fmt)
        assert "police" not in render(later, fmt)
    police_only = await subject_report(
        trail.store, trail.config, key, [PEOPLE[1]["id_number"]], now_us=now + 999 * DAY_US
    )
    assert [a.organisation for a in police_only.accesses] == ["Cổng dịch vụ công tỉnh"]

    # Monthly statistics: covert consumers out, cells under k=3 suppressed.
    month = datetime.fromtimestamp(records[0].time_us / 1e6, VN).strftime("%Y-%m")
    stats = await stats_report(trail.store, trail.config, month, delay_days=10, now_us=now)
    assert not stats.publishable, "the month has not ended ten days ago"
    stats = await stats_report(
        trail.store, trail.config, month, delay_days=10, now_us=now + 45 * DAY_US
    )
    assert stats.publishable
    cells = {(c.service, c.consumer): c for c in stats.cells}
    assert set(cells) == {("civil-status", "portal"), ("civil-status", "outsider")}
    portal = [r for r in records if r.consumer == "portal"]
    assert cells[("civil-status", "portal")].calls == len(portal) == 9
    assert cells[("civil-status", "portal")].subjects == len(
        {r.subject_key for r in portal if r.subject_key}
    )
    assert cells[("civil-status", "outsider")].suppressed, "2 calls < k = 3"
    assert cells[("civil-status", "outsider")].calls is None
    assert stats.totals()["civil-status"] == {
        "calls": 9,
        "answered": sum(r.outcome == "OK" for r in portal),
        "cells": 1,
        "suppressed_cells": 1,
    }

    # No raw ID, name or officer in any rendering (the breach report names the officer the
    # caller supplied, and only that one).
    dpia = dpia_report(trail.config)
    for report in (access, breach, mine, later, stats, dpia):
        for fmt in FORMATS:
            text = render(report, fmt)
            for raw in raw_values():
                assert raw not in text, (report.kind, fmt)
    for fmt in FORMATS:
        text = render(by_officer, fmt)
        assert OFFICER_A in text
        assert all(raw not in text for raw in raw_values() if raw != OFFICER_A)


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
        async with s.post(
            base + "subject",
            json={"id_numbers": [PEOPLE[0]["id_number"]]},
            headers={"Authorization": f"Bearer {trail.keys['admin']}"},
        ) as r:
            assert r.status == 200
            mine = await r.json()
        assert [a["organisation"] for a in mine["accesses"]] == ["Cổng dịch vụ công tỉnh"] * 2

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


def test_dpia_lists_recipients_grants_and_the_changes_since_the_previous_file() -> None:
    old_data = routing("http://127.0.0.1:1/")
    new_data = json.loads(json.dumps(old_data))
    del new_data["consumers"]["outsider"]
    new_data["consumers"]["portal"]["sensitive"] = {"civil-status": ["religion"]}
    new_data["audit"]["retention_days"] = 730
    old, new = parse_routing(old_data), parse_routing(new_data)
    report = dpia_report(new, old)
    svc = report.data["services"]["civil-status"]
    assert sorted(svc["recipients"]) == ["police", "portal", "tax"]
    assert svc["recipients"]["tax"]["categories"] == ["birth_date", "name"]
    assert svc["recipients"]["portal"]["categories"] == ["all non-sensitive fields"]
    assert svc["sensitive_holders"] == {"ethnicity": ["police"], "religion": ["portal"]}
    assert svc["legal_bases"] == ["LEGAL_DUTY", "CONSENT"]
    assert svc["audit_policy"] == "fail_closed"
    assert report.data["retention"]["audit_retention_days"] == 730
    assert report.data["security"]["credentials"]["portal"]["api_keys"] == 2
    changes = {(d["change"], d["path"]) for d in report.diff or []}
    assert ("changed", "retention.audit_retention_days") in changes
    assert ("changed", "services.civil-status.sensitive_holders.religion") in changes
    assert ("removed", "security.credentials.outsider.api_keys") in changes
    html = render(report, "html")
    assert "TO BE WRITTEN BY A PERSON" in html
    assert "Cục thuế tỉnh" in html
