"""Reports over hand-written records, on each store: records written before exchange
records named their credential still verify and are counted as unattributable; the
transparency setting is validated; field paths get their categories."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from pydantic import ValidationError

from bus.audit.chain import AuditEntry
from bus.audit.observer import Auditor
from bus.config import ConsumerConfig, RoutingConfig
from bus.report import BreachSelector, breach_report, dpia_report, month_bounds, render
from bus.report.categories import categories_of
from bus.store import Store

KEY = b"unit-report-key-0123456789"


async def seed(store: Store, credentials: list[str | None]) -> int:
    """One answered exchange record per entry; ``None``: an old record without one."""
    now = int(time.time() * 1_000_000)
    async with Auditor(store, node="lgsp-1", key=KEY) as auditor:
        for i, credential in enumerate(credentials):
            skey = auditor.subject_key(f"00108500{i:04d}")
            await auditor.record(
                AuditEntry(
                    time_us=now + i,
                    kind="exchange",
                    consumer="portal",
                    service="population",
                    operation="lookup",
                    purpose={"procedure_code": "1.001234", "legal_basis": "LEGAL_DUTY"},
                    subject_key=skey,
                    key_id=auditor.key_id,
                    fields=("citizen.name.full", "citizen.ethnicity_code"),
                    outcome="OK",
                    status=200,
                    detail={"credential": credential} if credential else {},
                ),
                durable=True,
            )
    return now


async def test_old_records_without_a_credential_verify_and_are_counted_unattributable(
    store: Store,
) -> None:
    now = await seed(store, [None, None, "2026-q1", "2026-q2", "2026-q1"])
    report = await breach_report(
        store,
        RoutingConfig(),
        BreachSelector(credential="2026-q1"),
        since_us=now,
        until_us=None,
        discovered_us=now,
    )
    assert report.verification.certified
    assert report.verification.records_checked == 5
    assert (report.calls, report.records_with_data, report.unattributable) == (2, 2, 2)
    assert len(report.subject_keys) == 2
    assert report.categories == ["ethnicity", "name"]
    assert report.sensitive == ["ethnicity"]


def test_transparency_is_full_delayed_or_excluded() -> None:
    assert ConsumerConfig().transparency_delay_days == 0
    assert ConsumerConfig(transparency="delayed(30 days)").transparency_delay_days == 30
    assert ConsumerConfig(transparency="delayed(1 day)").covert
    assert ConsumerConfig(transparency="excluded").transparency_delay_days is None
    for bad in ("delayed(0 days)", "delayed(30)", "hidden", "delayed(-1 days)"):
        with pytest.raises(ValidationError):
            ConsumerConfig(transparency=bad)
    with pytest.raises(ValidationError):
        RoutingConfig.model_validate({"reports": {"k_anonymity": 1}})


def test_field_paths_and_months() -> None:
    sensitive = ("ethnicity", "religion")
    assert categories_of("citizen.father.personal_id", sensitive) == {"id_number", "family"}
    assert categories_of("persons.ethnicity", sensitive) == {"ethnicity"}
    assert categories_of("citizen.permanent_address.ward_code", sensitive) == {"address"}
    assert categories_of("status", sensitive) == frozenset()
    assert categories_of("land_parcel.area", sensitive) == {"other"}
    start, end = month_bounds("2026-12")
    assert (end - start) // 86_400_000_000 == 31
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_bounds("2026-13")


def test_renderings_escape_config_text_and_mark_blanks() -> None:
    config = RoutingConfig.model_validate(
        {
            "consumers": {
                "portal": {
                    "display_name": "<script>alert(1)</script>",
                    "allow": {"land": ["lookup"]},
                }
            },
            "upstreams": {"registry": {"url": "https://land.example.gov.vn/"}},
            "services": {
                "land": {"adapter": "rest", "upstream": "registry", "operations": {"lookup": {}}}
            },
        }
    )
    report = dpia_report(config)
    html = render(report, "html")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert html.count('class="person"') == 6, "every field a person must write is marked"
    text = render(report, "csv")
    assert text.splitlines()[1] == "# certified=true"
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[
        rows.index(
            ["# table credentials: Thông tin xác thực của các hệ thống / consumers' credentials"]
        )
        + 1
    ]
    assert header[0] == "consumer"
    assert json.loads(render(report, "json"))["report"] == "dpia"
