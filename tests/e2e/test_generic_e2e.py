"""End to end through the whole bus for services defined in the routing config alone.

HTTP → gateway (the declared request model) → broker → worker → generic ``soap``/``rest``
adapter → a small real upstream on loopback. Runs on the in-memory broker and on the real
RabbitMQ. The services are tests/fixtures/generic_config.py: routing.yaml fragments only.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.fixtures.generic_config import business_registry_service, social_insurance_service
from tests.fixtures.generic_upstreams import (
    SEEN,
    SOAP_PASSWORD,
    SOAP_USER,
    VSS_PASSWORD,
    VSS_USER,
    business_registry_app,
    social_insurance_app,
)
from tests.support.stack import BusStack, new_secret, running_bus, serve_app, stack_config

PURPOSE = {
    "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
    "purpose": {
        "procedure_code": "1.001234",
        "dossier_id": "HS-2026-0001",
        "legal_basis": "LEGAL_DUTY",
    },
}


@dataclass
class GenericBus:
    """The bus and its two upstreams (to count and inspect what they received)."""

    bus: BusStack
    registry: web.Application
    insurance: web.Application

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST as the portal consumer."""
        return await self.bus.post(path, body)


@pytest.fixture
async def stack(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GenericBus]:
    key = new_secret()
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    monkeypatch.setenv("T_MOJ_TOKEN", new_secret())
    monkeypatch.setenv("T_BR_PASSWORD", SOAP_PASSWORD)
    monkeypatch.setenv("T_VSS_PASSWORD", VSS_PASSWORD)
    registry, insurance = business_registry_app(), social_insurance_app()
    async with serve_app(registry) as registry_url, serve_app(insurance) as insurance_url:
        upstreams = {
            "dkkd": {
                "url": registry_url + "dkkd/enterprise",
                "allow_plain_http": True,
                "auth": {"kind": "wsse", "username": SOAP_USER, "password": "env:T_BR_PASSWORD"},
            },
            "vss": {
                "url": insurance_url,
                "allow_plain_http": True,
                "auth": {"kind": "basic", "username": VSS_USER, "password": "env:T_VSS_PASSWORD"},
            },
        }
        config = stack_config(
            civil_url="http://127.0.0.1:9/",
            token_env="T_MOJ_TOKEN",
            key_env="T_PORTAL_KEY",
            extra_upstreams=upstreams,
            extra_services={
                "business-registry": business_registry_service("dkkd"),
                "social-insurance": social_insurance_service("vss"),
            },
            allow={"business-registry": ["*"], "social-insurance": ["lookup", "verify"]},
        )
        async with running_bus(config, broker_url, key) as bus:
            yield GenericBus(bus, registry, insurance)


def enterprise(code: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": "req-" + new_secret()[:12], "enterprise_code": code, **extra}


def participant(pid: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": "req-" + new_secret()[:12],
        **copy.deepcopy(PURPOSE),  # tests change it
        "subject": {"id_number": pid},
        **extra,
    }


async def test_soap_lookup_found(stack: GenericBus) -> None:
    status, reply = await stack.post("/v1/business-registry/lookup", enterprise("0101234567"))
    assert status == 200, reply
    assert (reply["status"], reply["source"]) == ("FOUND", "DKDN")
    assert reply["request_id"].startswith("req-")
    assert reply["enterprise"]["name"] == "Công ty TNHH Thương mại Đồng Xuân"
    assert reply["enterprise"]["status"] == "ACTIVE"
    assert reply["enterprise"]["founded_on"] == "2004-03-15"
    assert [o["share_percent"] for o in reply["enterprise"]["owners"]] == [60.5, 39.5]
    status, reply = await stack.post("/v1/business-registry/status", enterprise("0101234567"))
    assert (status, reply["active"]) == (200, True)


@pytest.mark.parametrize("code", ["0102222222", "0100000004"])
async def test_soap_not_found_is_a_normal_answer(stack: GenericBus, code: str) -> None:
    status, reply = await stack.post("/v1/business-registry/lookup", enterprise(code))
    assert status == 200, reply
    assert reply["status"] == "NOT_FOUND"
    assert "enterprise" not in reply


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("0100000001", 503, "UPSTREAM_UNAVAILABLE"),
        ("0100000002", 502, "UPSTREAM_REJECTED"),
        ("0100000005", 502, "UPSTREAM_BAD_RESPONSE"),  # XXE
        ("0100000006", 502, "UPSTREAM_BAD_RESPONSE"),  # billion laughs
    ],
)
async def test_soap_faults_and_hostile_xml(
    stack: GenericBus, code: str, status: int, error: str
) -> None:
    got, reply = await stack.post("/v1/business-registry/lookup", enterprise(code))
    assert (got, reply["error"]["code"]) == (status, error), reply
    assert code not in reply["error"]["message"]


async def test_declared_fields_are_validated_at_the_gateway(stack: GenericBus) -> None:
    status, reply = await stack.post("/v1/business-registry/lookup", enterprise("0101-234567"))
    assert (status, reply["error"]["code"]) == (400, "INVALID_FIELD")
    assert reply["error"]["detail"]["errors"][0]["path"] == "enterprise_code"
    status, reply = await stack.post(
        "/v1/business-registry/lookup", enterprise("0101234567", branch=True)
    )
    assert (status, reply["error"]["code"]) == (400, "UNKNOWN_FIELD")
    assert not stack.registry[SEEN].requests  # nothing reached the upstream


async def test_rest_lookup_and_verify(stack: GenericBus) -> None:
    status, reply = await stack.post(
        "/v1/social-insurance/lookup", participant("001090012345", as_of="2026-01-02")
    )
    assert status == 200, reply
    assert reply["participant"]["full_name"] == "Nguyễn Văn An"
    assert reply["participant"]["birth_date"] == "1990-03-15"
    assert stack.insurance[SEEN].last["query"] == {"ngayHieuLuc": "02/01/2026"}
    subject = {"id_number": "001090012345", "full_name": "Nguyễn Văn An", "birth_date": "1990"}
    body = {"request_id": "req-" + new_secret()[:12], **PURPOSE, "subject": subject}
    status, reply = await stack.post("/v1/social-insurance/verify", body)
    # a year-only birth date of a CCCD adds nothing to the ID: refused (match.birth_date)
    assert (status, reply["error"]["code"]) == (400, "BIRTH_DATE_INCOMPLETE"), reply


@pytest.mark.parametrize("pid", ["001090000001", "001090000097"])
async def test_rest_not_found(stack: GenericBus, pid: str) -> None:
    status, reply = await stack.post("/v1/social-insurance/lookup", participant(pid))
    assert (status, reply["status"]) == (200, "NOT_FOUND"), reply


async def test_rest_personal_data_rules_apply_before_the_upstream(stack: GenericBus) -> None:
    status, reply = await stack.post("/v1/social-insurance/lookup", participant("00109001234"))
    assert (status, reply["error"]["code"]) == (400, "INVALID_ID_NUMBER")
    body = participant("001090012345")
    del body["caller"]["officer_id"]
    status, reply = await stack.post("/v1/social-insurance/lookup", body)
    assert (status, reply["error"]["code"]) == (400, "OFFICER_REQUIRED")
    assert not stack.insurance[SEEN].requests
    status, reply = await stack.post(
        "/v1/social-insurance/echo", {"request_id": "req-12345678", "value": "x"}
    )
    assert (status, reply["error"]["code"]) == (403, "FORBIDDEN_OPERATION")


async def test_openapi_documents_the_declared_fields(stack: GenericBus) -> None:
    async with stack.bus.session.get(stack.bus.url + "openapi.json") as resp:
        document = await resp.json()
    post = document["paths"]["/v1/business-registry/lookup"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["enterprise_code"]["pattern"] == r"^[0-9]{10}(-[0-9]{3})?$"
    assert "enterprise_code" in schema["required"]
    assert "/v1/social-insurance/verify" in document["paths"]
