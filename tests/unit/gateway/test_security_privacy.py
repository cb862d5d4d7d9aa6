"""Personal-data rules against a running gateway, on both brokers: purpose and officer,
data minimisation, the sensitive-field grant, and the X-Road/NDXP identity bridge."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from bus.exchange import Exchange
from tests.support.security import (
    CITIZEN,
    OFFICER,
    UPSTREAM_XROAD_SERVICE,
    XROAD_CLIENT,
    XROAD_PROVIDER,
    SecureBus,
    caller,
    civil_body,
    population_body,
    purpose,
    secure_bus,
)

CIVIL = "/v1/civil-status/lookup"
LOOKUP = "/v1/population/lookup"


class Recorder:
    """An exchange observer that keeps what the gateway told it."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    async def exchange_finished(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


@pytest.fixture
async def bus(broker_url: str | None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SecureBus]:
    async with secure_bus(broker_url, monkeypatch) as running:
        yield running


@pytest.fixture
def recorder(bus: SecureBus) -> Recorder:
    rec = Recorder()
    bus.stack.gateway.add_observer(rec)
    return rec


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize("path", [CIVIL, LOOKUP])
@pytest.mark.parametrize(
    ("change", "code", "where"),
    [
        ({"purpose": {}}, "PURPOSE_REQUIRED", "purpose.procedure_code"),
        ({"purpose": _without(purpose(), "dossier_id")}, "PURPOSE_REQUIRED", "purpose.dossier_id"),
        (
            {"purpose": _without(purpose(), "legal_basis")},
            "PURPOSE_REQUIRED",
            "purpose.legal_basis",
        ),
        ({"purpose": purpose(legal_basis="CONSENT")}, "CONSENT_REF_REQUIRED", "purpose"),
        ({"caller": _without(caller(), "officer_id")}, "OFFICER_REQUIRED", None),
        ({"caller": caller(officer_id="12345")}, "INVALID_OFFICER_ID", "caller.officer_id"),
        ({"caller": caller(unit_code="H 01")}, "INVALID_CODE", "caller.unit_code"),
        ({"caller": caller(system_id="<motcua>")}, "INVALID_CODE", "caller.system_id"),
        ({"caller": _without(caller(), "unit_code")}, "CALLER_REQUIRED", "caller.unit_code"),
        ({"caller": _without(caller(), "system_id")}, "CALLER_REQUIRED", "caller.system_id"),
    ],
)
async def test_personal_data_needs_purpose_and_officer(
    bus: SecureBus, path: str, change: dict[str, Any], code: str, where: str | None
) -> None:
    body = (civil_body if path == CIVIL else population_body)(**change)
    before = bus.upstream_calls()
    reply = await bus.call(path, body)
    assert (reply.status, reply.code) == (400, code), reply.body
    paths = [e["path"] for e in reply.body["error"].get("detail", {}).get("errors", [])]
    # The population model checks purpose itself (at its root); the gateway names the path.
    if where is not None and (path == CIVIL or not code.endswith("_REQUIRED")):
        assert where in paths
    assert bus.upstream_calls() == before


@pytest.mark.parametrize("path", [CIVIL, LOOKUP])
async def test_a_body_naming_a_key_twice_is_refused(bus: SecureBus, path: str) -> None:
    body = civil_body() if path == CIVIL else population_body()
    raw = orjson.dumps(body)
    before = bus.upstream_calls()
    # The last wins for orjson, the first for some proxies: another citizen, or another
    # purpose, depending on who reads it. Nested objects and spaced colons alike.
    for twice in (
        raw[:-1] + b',"request_id":"req-other-0001"}',
        raw.replace(b'"caller":{', b'"caller":{"officer_id" : "001085000999",', 1),
        raw[:-1] + b',"note":"a:b\\u003a","request_id":"x-1"}',
    ):
        reply = await bus.call(path, twice)
        assert (reply.status, reply.code) == (400, "DUPLICATE_KEY"), reply.body
    assert bus.upstream_calls() == before
    # Colons inside strings (times, escapes) are no duplicates.
    spaced = orjson.dumps({**body, "request_id": "req:colon:0001"}).replace(b'":', b'" :')
    assert (await bus.call(path, spaced)).status == 200


async def test_consent_with_its_reference_is_a_legal_basis(bus: SecureBus) -> None:
    body = civil_body(purpose=purpose(legal_basis="CONSENT", consent_ref="VNEID-CONSENT-1"))
    reply = await bus.call(CIVIL, body)
    assert reply.status == 200, reply.body


async def test_a_service_without_personal_data_asks_for_no_purpose(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_personal_data(data: dict[str, Any]) -> None:
        data["services"]["civil-status"]["personal_data"] = False

    async with secure_bus(broker_url, monkeypatch, edit=no_personal_data) as bus:
        body = civil_body(purpose={}, caller={})
        reply = await bus.call(CIVIL, body)
        assert reply.status == 200, reply.body


async def test_field_grants_minimise_the_reply(bus: SecureBus, recorder: Recorder) -> None:
    full = await bus.call(CIVIL, civil_body(), key="portal-new")
    assert full.status == 200
    # Without a grant, sensitive keys are never returned (null or not): the header says so.
    assert full.headers["X-Lgsp-Withheld-Fields"] == "persons.ethnicity"
    assert all("ethnicity" not in p for p in full.body["persons"])
    assert any(p.get("full_name") for p in full.body["persons"])
    reply = await bus.call(CIVIL, civil_body(), key="minimal")
    assert reply.status == 200, reply.body
    assert set(reply.body) == {
        "status",
        "record_type",
        "match_count",
        "data_source",
        "registration",
        "persons",
        "request_id",
        "correlation_id",
    }
    assert set(reply.body["registration"]) == {"number", "date"}
    assert all(set(p) == {"role"} for p in reply.body["persons"])
    withheld = reply.headers["X-Lgsp-Withheld-Fields"].split(",")
    assert "persons.full_name" in withheld
    assert "registration.authority_code" in withheld
    # The audit trail hears what was returned, after the filter.
    returned = recorder.exchanges[-1].fields_returned
    assert "registration.number" in returned
    assert "persons.role" in returned
    assert not any(f.startswith("persons.full_name") for f in returned)


async def test_field_grants_apply_to_population_replies(bus: SecureBus) -> None:
    body = population_body(fields=["personal_id", "name", "birth_date", "permanent_address"])
    reply = await bus.call(LOOKUP, body, key="minimal")
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "FOUND"
    assert set(reply.body["citizen"]) == {"name"}
    assert reply.body["citizen"]["name"]["full"] == CITIZEN["full_name"]


async def test_sensitive_fields_need_an_explicit_grant(bus: SecureBus) -> None:
    body = population_body(fields=["name", "ethnicity"])
    before = bus.upstream_calls()
    refused = await bus.call(LOOKUP, body, key="portal-new")
    assert (refused.status, refused.code) == (403, "FORBIDDEN_FIELD")
    assert refused.body["error"]["detail"] == {"fields": ["ethnicity"]}
    assert bus.upstream_calls() == before
    granted = await bus.call(LOOKUP, population_body(fields=["name", "ethnicity"]), key="sensitive")
    assert granted.status == 200, granted.body
    assert granted.body["citizen"]["ethnicity_code"] == CITIZEN["ethnicity_code"]


async def test_xroad_headers_are_checked_echoed_and_forwarded(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with secure_bus(broker_url, monkeypatch) as bus:
        body = civil_body(caller=_without(caller(), "officer_id"))
        raw = orjson.dumps(body)
        headers = {
            "X-Road-Client": XROAD_CLIENT,
            "X-Road-Service": f"{XROAD_PROVIDER}/civil-status/v1",
            "X-Road-Id": body["request_id"],
            "X-Road-UserId": f"VN{OFFICER}",
        }
        reply = await bus.call(CIVIL, raw, key="xroad", headers=headers)
        assert reply.status == 200, reply.body
        digest = base64.b64decode(reply.headers["X-Road-Request-Hash"])
        assert digest == hashlib.sha512(raw).digest()
        assert reply.headers["X-Road-Client"] == XROAD_CLIENT
        assert reply.headers["X-Road-Id"] == body["request_id"]
        # The upstream is an X-Road endpoint: it got the caller's identity and the officer
        # (taken from X-Road-UserId, since the body named none).
        assert bus.xroad_seen[-1] == {
            "X-Road-Client": XROAD_CLIENT,
            "X-Road-Service": UPSTREAM_XROAD_SERVICE,
            "X-Road-Id": body["request_id"],
            "X-Road-UserId": OFFICER,
        }
        # The population upstream is not marked xroad: nothing is forwarded there; the
        # reply hash is on every operation reply.
        reply = await bus.call(LOOKUP, population_body(), key="portal-new")
        assert reply.status == 200
        assert "X-Road-Request-Hash" in reply.headers


@pytest.mark.parametrize(
    ("credential", "headers", "status", "code"),
    [
        ("portal-new", {"X-Road-Client": XROAD_CLIENT}, 403, "XROAD_IDENTITY_MISMATCH"),
        ("xroad", {"X-Road-Client": "VN/GOV/000.00.00.H31/OTHER"}, 403, "XROAD_IDENTITY_MISMATCH"),
        (
            "xroad",
            {"X-Road-Service": f"{XROAD_PROVIDER}/population"},
            403,
            "XROAD_IDENTITY_MISMATCH",
        ),
        (
            "xroad",
            {"X-Road-Service": "VN/GOV/000.00.00.H01/OTHER/civil-status"},
            403,
            "XROAD_IDENTITY_MISMATCH",
        ),
        ("xroad", {"X-Road-Id": "another-request-id"}, 403, "XROAD_IDENTITY_MISMATCH"),
        ("xroad", {"X-Road-UserId": "001085000999"}, 403, "XROAD_IDENTITY_MISMATCH"),
        ("xroad", {"X-Road-UserId": "not-an-officer"}, 400, "INVALID_XROAD_HEADER"),
        ("xroad", {"X-Road-Client": "not/an-id"}, 400, "INVALID_XROAD_HEADER"),
    ],
)
async def test_disagreeing_xroad_headers_are_refused_and_forward_nothing(
    bus: SecureBus, credential: str, headers: dict[str, str], status: int, code: str
) -> None:
    before = bus.upstream_calls()
    reply = await bus.call(CIVIL, civil_body(), key=credential, headers=headers)
    assert (reply.status, reply.code) == (status, code), reply.body
    assert bus.upstream_calls() == before


async def test_requested_at_must_be_offset_and_fresh(bus: SecureBus) -> None:
    before = bus.upstream_calls()
    for value, code in (
        ("2026-05-01T09:30:00", "INVALID_TIMESTAMP"),
        ("2001-05-01T09:30:00+07:00", "CLOCK_SKEW"),
    ):
        reply = await bus.call(CIVIL, civil_body(requested_at=value))
        assert (reply.status, reply.code) == (400, code)
    assert bus.upstream_calls() == before


def _pad(value: Any, space: str, front: bool) -> Any:
    """``value`` with a space added to the front or end of every object key."""
    if isinstance(value, dict):
        return {
            (space + k if front else k + space): _pad(v, space, front) for k, v in value.items()
        }
    return value


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u200b", "\ufeff", " ", "\t"])
@pytest.mark.parametrize("key", ["id_number", "request_id", "officer_id", "fields"])
async def test_a_key_padded_with_a_unicode_space_is_refused(
    bus: SecureBus, space: str, key: str
) -> None:
    body = population_body(fields=["name"])
    before = bus.upstream_calls()
    for front in (True, False):
        padded = orjson.dumps(body).replace(
            f'"{key}"'.encode(), orjson.dumps(space + key if front else key + space)
        )
        reply = await bus.call(LOOKUP, padded)
        assert reply.status == 400, reply.body
        assert reply.code in ("UNKNOWN_FIELD", "MISSING_FIELD"), reply.body
    assert bus.upstream_calls() == before
