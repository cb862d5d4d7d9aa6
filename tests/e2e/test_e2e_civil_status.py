"""End to end: HTTP → gateway → broker → worker → REST adapter → MOJ simulator → reply.

Runs once on the in-memory broker and once on the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.civil_status.data import sample_person, sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import STATS, SimStats, build_app
from tests.support.stack import BusStack, new_secret, running_bus, serve_app, stack_config

TIMEOUT_S = 2.0


@dataclass
class CivilBus(BusStack):
    """The bus plus the simulator's request counters."""

    stats: SimStats = field(default_factory=SimStats)


@pytest.fixture
async def bus(broker_url: str | None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CivilBus]:
    token, key = new_secret(), new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    sim = build_app(token=token, hang_s=30)
    async with serve_app(sim) as sim_url:
        config = stack_config(
            civil_url=sim_url, token_env="T_MOJ_TOKEN", key_env="T_PORTAL_KEY", timeout_s=TIMEOUT_S
        )
        async with running_bus(config, broker_url, key) as stack:
            yield CivilBus(**vars(stack), stats=sim[STATS])


def lookup(record_type: str = "BIRTH", **query: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": f"req-{uuid.uuid4().hex[:16]}",
        "record_type": record_type,
        # Civil-status records are personal data: the purpose and the officer are required.
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-2026-0001",
            "legal_basis": "LEGAL_DUTY",
        },
    }
    body.update(query)
    return body


def upstream_calls(bus: CivilBus) -> int:
    return bus.stats.requests


@pytest.mark.parametrize("record_type", ["BIRTH", "MARRIAGE", "DEATH"])
async def test_found_by_registration(bus: CivilBus, record_type: str) -> None:
    reg = sample_registration(0, RecordType(record_type), 3)
    body = lookup(record_type, by_registration=reg)
    status, reply = await bus.post("/v1/civil-status/lookup", body)
    assert status == 200, reply
    assert reply["request_id"] == body["request_id"]
    assert reply["status"] == "FOUND"
    assert reply["record_type"] == record_type
    assert reply["registration"]["number"] == reg["number"]
    assert reply["registration"]["authority_code"] == reg["authority_code"]
    assert reply["registration"]["date"] == reg["registration_date"]
    assert reply["persons"], "a found record names its persons"


async def test_found_by_person(bus: CivilBus) -> None:
    person = sample_person(0, RecordType.BIRTH, 7)
    status, reply = await bus.post(
        "/v1/civil-status/lookup",
        lookup("BIRTH", by_person={"id_number": person["id_number"]}),
    )
    assert status == 200, reply
    assert reply["status"] == "FOUND"
    subject = next(p for p in reply["persons"] if p["role"] == "SUBJECT")
    assert subject["personal_id"] == person["id_number"]
    assert subject["full_name"] == person["full_name"]


async def test_not_found_is_a_normal_answer(bus: CivilBus) -> None:
    reg = {"authority_code": "00001", "number": "999"}
    status, reply = await bus.post("/v1/civil-status/lookup", lookup(by_registration=reg))
    assert status == 200, reply
    assert reply["status"] == "NOT_FOUND"


async def test_unknown_service_and_operation_are_404_with_codes(bus: CivilBus) -> None:
    status, reply = await bus.post("/v1/land-registry/lookup", lookup())
    assert (status, reply["error"]["code"]) == (404, "UNKNOWN_SERVICE")
    status, reply = await bus.post("/v1/civil-status/delete", lookup())
    assert (status, reply["error"]["code"]) == (404, "UNKNOWN_OPERATION")


async def test_malformed_json_is_400_and_reaches_nobody(bus: CivilBus) -> None:
    before = upstream_calls(bus)
    status, reply = await bus.post("/v1/civil-status/lookup", b'{"request_id": "abc",')
    assert status == 400
    assert reply["error"]["code"] == "MALFORMED_JSON"
    assert reply["error"]["retryable"] is False
    assert set(reply["error"]) >= {"code", "message", "request_id", "retryable"}
    assert upstream_calls(bus) == before


async def test_invalid_field_names_its_path_and_code(bus: CivilBus) -> None:
    body = lookup(by_registration={"authority_code": "00001", "number": "1", "colour": "red"})
    status, reply = await bus.post("/v1/civil-status/lookup", body)
    assert status == 400
    assert reply["error"]["code"] == "UNKNOWN_FIELD"
    assert reply["error"]["detail"]["errors"][0]["path"] == "by_registration.colour"
    assert reply["error"]["request_id"] == body["request_id"]


async def test_upstream_error_maps_to_a_coded_reply(bus: CivilBus) -> None:
    reg = {"authority_code": "00001", "number": "FAIL503"}
    status, reply = await bus.post("/v1/civil-status/lookup", lookup(by_registration=reg))
    assert status == 503
    assert reply["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert reply["error"]["retryable"] is True


async def test_upstream_timeout_is_reported_within_the_deadline(bus: CivilBus) -> None:
    reg = {"authority_code": "00001", "number": "HANG"}
    started = time.monotonic()
    status, reply = await bus.post("/v1/civil-status/lookup", lookup(by_registration=reg))
    elapsed = time.monotonic() - started
    assert status == 504
    assert reply["error"]["code"] == "UPSTREAM_TIMEOUT"
    assert elapsed < TIMEOUT_S + 0.5


async def test_caller_deadline_header_shortens_the_wait(bus: CivilBus) -> None:
    reg = {"authority_code": "00001", "number": "HANG"}
    started = time.monotonic()
    status, reply = await bus.post(
        "/v1/civil-status/lookup",
        lookup(by_registration=reg),
        headers={"X-Lgsp-Timeout-Ms": "800"},
    )
    assert status == 504
    assert reply["error"]["code"] in {"UPSTREAM_TIMEOUT", "DEADLINE_EXCEEDED"}
    assert time.monotonic() - started < 1.3


async def test_authentication_and_acl(bus: CivilBus) -> None:
    reg = sample_registration(0, RecordType.BIRTH, 0)
    status, reply = await bus.post("/v1/civil-status/lookup", lookup(by_registration=reg), key="x")
    assert (status, reply["error"]["code"]) == (401, "UNAUTHENTICATED")
    outsider = os.environ["T_PORTAL_KEY_OUTSIDER"]
    status, reply = await bus.post(
        "/v1/civil-status/lookup", lookup(by_registration=reg), key=outsider
    )
    assert (status, reply["error"]["code"]) == (403, "FORBIDDEN_OPERATION")


async def test_concurrent_requests_each_get_their_own_answer(bus: CivilBus) -> None:
    regs = [sample_registration(0, RecordType.BIRTH, i) for i in range(30)]
    bodies = [lookup(by_registration=r) for r in regs]
    results = await asyncio.gather(*(bus.post("/v1/civil-status/lookup", b) for b in bodies))
    for body, reg, (status, reply) in zip(bodies, regs, results, strict=True):
        assert status == 200
        assert reply["request_id"] == body["request_id"]
        assert reply["registration"]["number"] == reg["number"]
        assert reply["registration"]["authority_code"] == reg["authority_code"]


async def test_service_list_health_and_openapi(bus: CivilBus) -> None:
    async with bus.session.get(
        bus.url + "v1/services", headers={"Authorization": f"Bearer {bus.key}"}
    ) as r:
        listing = await r.json()
    assert listing["services"][0]["service"] == "civil-status"
    assert [o["operation"] for o in listing["services"][0]["operations"]] == ["lookup"]
    async with bus.session.get(bus.url + "healthz") as r:
        assert r.status == 200
    async with bus.session.get(bus.url + "readyz") as r:
        ready = await r.json()
        assert r.status == 200
        assert ready["checks"] == {"broker": True, "config": True, "accepting": True}
    async with bus.session.get(bus.url + "openapi.json") as r:
        doc = await r.json()
    assert "/v1/civil-status/lookup" in doc["paths"]
    assert "CivilStatusLookup" in doc["components"]["schemas"]
