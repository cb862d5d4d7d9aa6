"""An audit trail written by a running bus for the report tests: a routing file with four
consumers (the portal with two keys, the police excluded from transparency and granted
ethnicity, the tax office delayed and minimised, an outsider allowed nothing), and a
scenario of calls covering answers, refusals, failures and both legal bases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.base import parse_routing
from adapters.civil_status.data import sample_person, sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import build_app
from bus.audit.accesses import accesses
from bus.audit.observer import Auditor
from bus.config import AuditSettings, RoutingConfig
from bus.store import Store
from bus.store.base import AuditRecord
from tests.support.stack import BusStack, new_secret, running_bus, serve_app

__all__ = [
    "CONSENT",
    "DAY_US",
    "DUTY",
    "KEY",
    "OFFICER_A",
    "OFFICER_B",
    "PEOPLE",
    "SCENARIO",
    "Trail",
    "raw_values",
    "recorded_trail",
    "routing",
]

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
CREDENTIALS = ("portal-q1", "portal-q2", "police", "tax", "outsider", "admin", "operator")


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
        "admin": {
            "api_keys": [
                {"name": "ops", "key": "env:T_ADMIN", "role": "auditor"},
                {"name": "hanh", "key": "env:T_OPERATOR", "role": "operator"},
            ]
        },
        "audit": {"subject_key": "env:T_AUDIT_KEY"},
        "reports": {"k_anonymity": 3},
    }


def body(purpose: dict[str, str], officer: str, **query: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{time.time_ns()}",
        "record_type": "BIRTH",
        "caller": {"system_id": "MOTCUA", "unit_code": "H01", "officer_id": officer},
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

    async def stored(self) -> list[AuditRecord]:
        """Every exchange record, read straight from the store."""
        out: list[AuditRecord] = []
        for head in await self.store.audit_chains():
            out += [
                r
                for r in await self.store.audit_records(head.chain, 0, 100_000)
                if r.kind == "exchange"
            ]
        return out

    async def records(self) -> list[AuditRecord]:
        """Every exchange once, as readers count them (its STARTED and final records folded
        into one: :func:`bus.audit.accesses.accesses`)."""
        return accesses(await self.stored())


async def play(bus: BusStack, keys: dict[str, str]) -> None:
    for credential, purpose, officer, query, status in SCENARIO:
        key = keys.get(credential, "not-a-key")
        got, reply = await bus.post(
            "/v1/civil-status/lookup", body(purpose, officer, **query), key=key
        )
        assert got == status, (credential, reply)


@asynccontextmanager
async def recorded_trail(
    store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Trail]:
    """Run a bus on ``store``, play :data:`SCENARIO` through it; the trail it wrote (the
    audit writer still running, for admin actions)."""
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


def raw_values() -> list[str]:
    """What must never appear in a report: ID numbers, names, birth dates, officers."""
    out = [OFFICER_A, OFFICER_B]
    for p in PEOPLE:
        out += [p["id_number"], p["full_name"], p["full_name"].upper()]
    return out
