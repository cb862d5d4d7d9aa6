"""End to end over SOAP: HTTP → gateway → broker → worker → C06 adapter → SOAP simulator.

Runs once on the in-memory broker and once on the real RabbitMQ.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.population_db.data import sample_citizen
from adapters.population_db.simulator import STATE, SimState
from tests.support.population import POPULATION, SEED, SIM_SECRET, SIM_USER, sim_app, subject_of
from tests.support.stack import BusStack, new_secret, running_bus, serve_app, stack_config


@dataclass
class PopulationBus(BusStack):
    """The bus plus the C06 simulator's state (call counters)."""

    sim: SimState | None = None

    def calls(self) -> int:
        assert self.sim is not None
        return self.sim.stats.get("calls", 0)


def population_service(upstream: str) -> dict[str, Any]:
    return {
        "adapter": "population_db",
        "upstream": upstream,
        "options": {"ma_dvc": "LGSP-TEST"},
        "operations": {"lookup": {"timeout_s": 3}, "verify": {"timeout_s": 3}},
    }


@pytest.fixture
async def bus(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[PopulationBus]:
    key = new_secret()
    monkeypatch.setenv("T_C06_SECRET", SIM_SECRET)
    monkeypatch.setenv("T_C06_WRONG", "not-the-secret")
    monkeypatch.setenv("T_MOJ_TOKEN", new_secret())
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    sim = sim_app()
    async with serve_app(sim) as sim_url:

        def c06(secret_env: str) -> dict[str, Any]:
            return {
                "url": sim_url,
                "allow_plain_http": True,
                "auth": {"kind": "c06", "username": SIM_USER, "secret": f"env:{secret_env}"},
            }

        config = stack_config(
            civil_url="http://127.0.0.1:9/",
            token_env="T_MOJ_TOKEN",
            key_env="T_PORTAL_KEY",
            extra_upstreams={"c06": c06("T_C06_SECRET"), "c06-wrong": c06("T_C06_WRONG")},
            extra_services={
                "population": population_service("c06"),
                "population-badauth": population_service("c06-wrong"),
                "population-guarded": {
                    **population_service("c06"),
                    "match": {"mismatches": 2, "window_s": 3600},
                },
                "population-partial": {
                    **population_service("c06"),
                    "match": {"birth_date": "partial"},
                },
            },
            allow={
                "population": ["*"],
                "population-badauth": ["lookup"],
                "population-guarded": ["*"],
                "population-partial": ["*"],
            },
        )
        async with running_bus(config, broker_url, key) as stack:
            yield PopulationBus(**vars(stack), sim=sim[STATE])


def body(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{uuid.uuid4().hex[:16]}",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {
            "procedure_code": "1.001234",
            "dossier_id": "HS-2026-0001",
            "legal_basis": "LEGAL_DUTY",
        },
        "subject": subject,
        **extra,
    }


CITIZEN = sample_citizen(SEED, 3)


async def test_lookup_found(bus: PopulationBus) -> None:
    status, reply = await bus.post(
        "/v1/population/lookup", body(subject_of(CITIZEN), fields=["personal_id", "name"])
    )
    assert status == 200, reply
    assert reply["status"] == "FOUND"
    assert reply["citizen"]["personal_id"] == CITIZEN["personal_id"]
    assert reply["citizen"]["name"]["full"] == CITIZEN["full_name"]
    assert reply["data_as_of"]


async def test_lookup_not_found_is_a_normal_answer(bus: PopulationBus) -> None:
    stranger = sample_citizen(SEED, POPULATION + 5)
    status, reply = await bus.post("/v1/population/lookup", body(subject_of(stranger)))
    assert status == 200, reply
    assert reply["status"] == "NOT_FOUND"


async def test_lookup_mismatch_reveals_no_record(bus: PopulationBus) -> None:
    subject = subject_of(CITIZEN, full_name="Nguyễn Văn Khác")
    status, reply = await bus.post("/v1/population/lookup", body(subject))
    assert status == 200, reply
    assert reply["status"] == "MISMATCH"
    assert "mismatch" not in reply  # which field differed is not said (options.reveal_mismatch)
    assert not reply.get("citizen")


@pytest.mark.parametrize(
    ("change", "expected"), [({}, True), ({"full_name": "Lê Thị Khác"}, False)]
)
async def test_verify(bus: PopulationBus, change: dict[str, str], expected: bool) -> None:
    status, reply = await bus.post("/v1/population/verify", body(subject_of(CITIZEN, **change)))
    assert status == 200, reply
    assert reply["verified"] is expected


@pytest.mark.parametrize(
    ("fault_id", "status", "code"),
    [
        ("001099999901", 503, "UPSTREAM_UNAVAILABLE"),
        ("001099999902", 502, "UPSTREAM_REJECTED"),
        ("001099999903", 502, "UPSTREAM_ERROR"),
        ("001099999905", 502, "UPSTREAM_BAD_RESPONSE"),
        ("001099999906", 502, "UPSTREAM_BAD_RESPONSE"),
    ],
)
async def test_soap_faults_and_hostile_replies_map_to_codes(
    bus: PopulationBus, fault_id: str, status: int, code: str
) -> None:
    subject = {
        "id_type": "CCCD12",
        "id_number": fault_id,
        "full_name": "Trần Văn An",
        "birth_date": "1999-01-01",
        "sex": "M",
    }
    got, reply = await bus.post("/v1/population/lookup", body(subject))
    assert (got, reply["error"]["code"]) == (status, code), reply


async def test_wrong_upstream_secret_is_upstream_auth_failed(bus: PopulationBus) -> None:
    status, reply = await bus.post("/v1/population-badauth/lookup", body(subject_of(CITIZEN)))
    assert (status, reply["error"]["code"]) == (502, "UPSTREAM_AUTH_FAILED")
    assert reply["error"]["retryable"] is False


async def test_invalid_id_is_rejected_before_the_upstream(bus: PopulationBus) -> None:
    before = bus.calls()
    subject = subject_of(CITIZEN, id_number="00119308306")  # 11 digits
    status, reply = await bus.post("/v1/population/lookup", body(subject))
    assert (status, reply["error"]["code"]) == (400, "INVALID_ID_NUMBER")
    assert reply["error"]["detail"]["errors"][0]["path"] == "subject.id_number"
    assert bus.calls() == before


async def test_year_only_birth_date_of_a_cccd_is_refused_before_the_upstream(
    bus: PopulationBus,
) -> None:
    # 21.12: the year is already in the CCCD, so ID + name + year would return the record.
    before = bus.calls()
    year_only = subject_of(CITIZEN, birth_date=CITIZEN["birth_date"][:4])
    for path in ("/v1/population/lookup", "/v1/population/verify"):
        status, reply = await bus.post(path, body(year_only))
        assert (status, reply["error"]["code"]) == (400, "BIRTH_DATE_INCOMPLETE"), reply
    assert bus.calls() == before
    # match.birth_date: partial keeps the old behaviour (compared at the precision given)
    status, reply = await bus.post("/v1/population-partial/lookup", body(year_only))
    assert (status, reply["status"]) == (200, "FOUND"), reply


async def test_mismatches_are_limited_per_consumer(bus: PopulationBus) -> None:
    wrong = subject_of(CITIZEN, full_name="Nguyễn Văn Khác")
    for _ in range(2):
        status, reply = await bus.post("/v1/population-guarded/lookup", body(wrong))
        assert (status, reply["status"]) == (200, "MISMATCH"), reply
    before = bus.calls()
    hdrs = {"Authorization": f"Bearer {bus.key}"}
    async with bus.session.post(
        bus.url + "v1/population-guarded/lookup", json=body(subject_of(CITIZEN)), headers=hdrs
    ) as r:
        reply = await r.json()
        assert (r.status, reply["error"]["code"]) == (429, "MISMATCH_LIMIT"), reply
        assert 3500 <= int(r.headers["Retry-After"]) <= 3600
    assert bus.calls() == before  # refused before anything is sent
    status, reply = await bus.post("/v1/population/lookup", body(subject_of(CITIZEN)))
    assert (status, reply["status"]) == (200, "FOUND"), reply  # per service: others unaffected
