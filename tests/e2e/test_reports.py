"""The data-protection reports over an audit trail a running bus wrote (gateway → broker →
worker → MOJ simulator), on each store: every figure equals a count computed here from
the records; covert consumers stay hidden; no raw ID or name in any rendering."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import parse_routing
from bus.audit.chain import record_subject_keys, subject_key
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
from tests.support.reporttrail import (
    DAY_US,
    DUTY,
    KEY,
    OFFICER_A,
    PEOPLE,
    SCENARIO,
    Trail,
    raw_values,
    recorded_trail,
    routing,
)


@pytest.fixture
async def trail(
    store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Trail]:
    async with recorded_trail(store_url, store, monkeypatch, tmp_path) as recorded:
        yield recorded


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


async def test_access_breach_subject_and_stats_count_what_the_trail_holds(trail: Trail) -> None:
    records = await trail.records()
    assert len(records) == len(SCENARIO), "one record per call"
    key = KEY.encode()

    access = await access_report(
        trail.store, trail.config, since_us=trail.since_us, until_us=trail.until_us
    )
    assert access.verification.certified
    # Every stored record verified (an exchange's STARTED and final records both).
    assert access.verification.records_checked == len(await trail.stored())
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
    # the citizens asked about and every citizen the answers returned (parents too: 21.9)
    asked = {subject_key(key, p["id_number"]) for p in (PEOPLE[0], PEOPLE[4])}
    returned = {k for r in q2 for k in r.detail.get("subject_keys", [])}
    assert returned - asked, "the registrations' other persons are affected too"
    assert breach.subject_keys == sorted(asked | returned)
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
    asked = {r.subject_key for r in answered_a if r.subject_key}
    affected = {k for r in answered_a for k in record_subject_keys(r)}
    assert len(asked) == 4
    assert asked < affected  # + everyone the answers returned (21.9)
    assert by_officer.subject_keys == sorted(affected)
    assert "ethnicity" in by_officer.sensitive, "the police got ethnicity"
    notification = {f.en: f for f in by_officer.notification()}
    assert notification["approximate number of subjects"].value == len(affected)
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
    assert cells[("civil-status", "portal")].organisation == "Cổng dịch vụ công tỉnh"
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
