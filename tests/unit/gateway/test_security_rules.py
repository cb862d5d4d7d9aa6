"""The pure rules of a call: purpose and officer, sensitive fields, the field filter,
``requested_at``, and the X-Road headers (parsing, agreement, hash, forwarding)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from adapters.base import parse_routing
from bus.canonical import CanonicalRequest
from bus.config import RoutingConfig
from bus.errors import Forbidden, InvalidRequest
from bus.gateway.privacy import (
    FieldFilter,
    check_purpose,
    check_requested_at,
    check_requested_fields,
)
from bus.xroad import XRoadIdentity, outbound_headers, request_hash

_SERVICE = {
    "adapter": "civil_status",
    "upstream": "moj",
    "operations": {"lookup": {"timeout_s": 5}},
}


def _config(**top: Any) -> RoutingConfig:
    data: dict[str, Any] = {
        "upstreams": {"moj": {"url": "https://moj.example.gov.vn/"}},
        "services": {"civil-status": _SERVICE},
        "consumers": {},
    }
    data.update(top)
    return parse_routing(data)


# --- purpose, officer, fields ----------------------------------------------------------


class _Request(CanonicalRequest):
    fields: list[str] | None = None


def _req(**body: Any) -> BaseModel:
    return _Request.model_validate({"request_id": "req-00000001", **body})


def _code(
    exc: pytest.ExceptionInfo[InvalidRequest] | pytest.ExceptionInfo[Forbidden],
) -> tuple[int, str]:
    return exc.value.status, exc.value.code


FULL = {"procedure_code": "1.001", "dossier_id": "HS-1", "legal_basis": "LEGAL_DUTY"}


@pytest.mark.parametrize(
    ("purpose", "officer", "code"),
    [
        ({}, "001085000123", "PURPOSE_REQUIRED"),
        ({**FULL, "procedure_code": None}, "001085000123", "PURPOSE_REQUIRED"),
        ({**FULL, "dossier_id": None}, "001085000123", "PURPOSE_REQUIRED"),
        ({**FULL, "legal_basis": None}, "001085000123", "PURPOSE_REQUIRED"),
        (FULL, None, "OFFICER_REQUIRED"),
        (FULL, "001085000123", None),
        ({**FULL, "legal_basis": "CONSENT", "consent_ref": "CONSENT-1"}, "001085000123", None),
        ({**FULL, "caller": {"unit_code": "H01"}}, "001085000123", "CALLER_REQUIRED"),
        ({**FULL, "caller": {"system_id": "motcua"}}, "001085000123", "CALLER_REQUIRED"),
    ],
)
def test_purpose_rules(purpose: dict[str, Any], officer: str | None, code: str | None) -> None:
    config = _config()
    svc = config.services["civil-status"]
    caller = purpose.pop("caller", {"system_id": "motcua", "unit_code": "H01"})
    request = _req(purpose={k: v for k, v in purpose.items() if v is not None}, caller=caller)
    if code is None:
        check_purpose(svc, request, officer)
        return
    with pytest.raises(InvalidRequest) as info:
        check_purpose(svc, request, officer)
    assert _code(info) == (400, code)
    # A service without personal data asks for none of it.
    check_purpose(svc.model_copy(update={"personal_data": False}), request, officer)


def test_sensitive_fields_asked_for_need_the_grant() -> None:
    config = _config(
        consumers={"a": {}, "b": {"sensitive": {"civil-status": ["ethnicity"]}}},
    )
    asking = _req(fields=["name", "ethnicity"])
    with pytest.raises(Forbidden) as info:
        check_requested_fields(config, "a", "civil-status", asking)
    assert _code(info) == (403, "FORBIDDEN_FIELD")
    assert info.value.detail == {"fields": ["ethnicity"]}
    check_requested_fields(config, "b", "civil-status", asking)
    check_requested_fields(config, "a", "civil-status", _req(fields=["name"]))


REPLY = {
    "status": "FOUND",
    "record_type": "BIRTH",
    "registration": {"number": "12", "date": "2020-01-02", "signer_name": "Trần Văn Ký"},
    "persons": [
        {"role": "SUBJECT", "full_name": "Lê Văn An", "ethnicity": "01", "personal_id": "1"},
        {"role": "MOTHER", "full_name": "Lê Thị Bình", "ethnicity_code": "02"},
    ],
    "death": None,
}


def test_field_filter_without_grants_withholds_only_sensitive_fields() -> None:
    config = _config(consumers={"a": {}})
    out = FieldFilter.of(config, "a", "civil-status").apply(REPLY)
    assert out.withheld == ["persons.ethnicity", "persons.ethnicity_code"]
    assert "ethnicity" not in out.body["persons"][0]
    assert "ethnicity_code" not in out.body["persons"][1]
    assert out.body["registration"] == REPLY["registration"]
    assert "registration.signer_name" in out.returned
    assert "death" in out.returned


def test_field_filter_keeps_granted_paths_through_lists() -> None:
    config = _config(
        consumers={
            "a": {"fields": {"civil-status": ["registration.number", "persons.role", "death"]}},
            "b": {
                "fields": {"civil-status": ["persons"]},
                "sensitive": {"civil-status": ["ethnicity"]},
            },
        }
    )
    out = FieldFilter.of(config, "a", "civil-status").apply(REPLY)
    assert out.body == {
        "status": "FOUND",
        "record_type": "BIRTH",
        "registration": {"number": "12"},
        "persons": [{"role": "SUBJECT"}, {"role": "MOTHER"}],
        "death": None,
    }
    assert out.returned == [
        "death",
        "persons.role",
        "record_type",
        "registration.number",
        "status",
    ]
    assert "persons.full_name" in out.withheld
    assert "registration.signer_name" in out.withheld
    granted = FieldFilter.of(config, "b", "civil-status").apply(REPLY)
    assert granted.body["persons"] == REPLY["persons"]  # the sensitive grant lets them through
    assert "registration" not in granted.body


def test_requested_at_needs_an_offset_and_a_close_clock() -> None:
    now = datetime(2026, 5, 1, 2, 30, tzinfo=UTC)
    check_requested_at(_req(requested_at="2026-05-01T09:31:00+07:00"), now, 300)
    check_requested_at(_req(), now, 300)
    for value, code in (
        ("2026-05-01T09:31:00", "INVALID_TIMESTAMP"),
        ("2026-05-01", "INVALID_TIMESTAMP"),
        ("01/05/2026 09:31", "INVALID_TIMESTAMP"),
        ("2026-05-01T09:40:00+07:00", "CLOCK_SKEW"),
        ("2026-05-01T02:20:00Z", "CLOCK_SKEW"),
    ):
        with pytest.raises(InvalidRequest) as info:
            check_requested_at(_req(requested_at=value), now, 300)
        assert info.value.code == code, value


# --- X-Road ----------------------------------------------------------------------------

CLIENT = "VN/GOV/000.00.00.H31/MOTCUA"


def _xroad_config() -> RoutingConfig:
    return _config(
        gateway={"xroad_provider": "VN/GOV/000.00.00.H99/LGSP"},
        consumers={"a": {"xroad_client": CLIENT}, "b": {}},
    )


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"X-Road-Client": "VN/GOV"}, "INVALID_XROAD_HEADER"),
        ({"X-Road-Client": "VN/GOV/x/y/z/w"}, "INVALID_XROAD_HEADER"),
        ({"X-Road-Service": "VN/GOV/000/LGSP"}, "INVALID_XROAD_HEADER"),
        ({"X-Road-Id": "short"}, "INVALID_XROAD_HEADER"),
        ({"X-Road-UserId": "EE37702211234"}, "INVALID_XROAD_HEADER"),
        ({"X-Road-UserId": "００１０８５０００１２３"}, "INVALID_XROAD_HEADER"),
    ],
)
def test_malformed_xroad_headers(headers: dict[str, str], code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        XRoadIdentity.from_headers(headers)
    assert info.value.code == code


def test_xroad_headers_must_agree_with_the_call() -> None:
    config = _xroad_config()
    good = XRoadIdentity.from_headers(
        {
            "X-Road-Client": CLIENT,
            "X-Road-Service": "VN/GOV/000.00.00.H99/LGSP/civil-status/v1",
            "X-Road-Id": "req-00000001",
            "X-Road-UserId": "VN001085000123",
        }
    )
    good.check_caller(config, "a", "civil-status")
    assert good.check_request("req-00000001", None) == "001085000123"
    assert good.check_request("req-00000001", "001085000123") == "001085000123"
    mismatches: list[Callable[[], object]] = [
        lambda: good.check_caller(config, "b", "civil-status"),  # b has no X-Road identity
        lambda: good.check_caller(config, "a", "population"),  # another service
        lambda: XRoadIdentity(service="VN/GOV/000.00.00.H98/OTHER/civil-status").check_caller(
            config, "a", "civil-status"
        ),  # another provider
        lambda: good.check_request("req-00000002", None),
        lambda: good.check_request("req-00000001", "001085000999"),
    ]
    for check in mismatches:
        with pytest.raises(Forbidden) as info:
            check()
        assert info.value.code == "XROAD_IDENTITY_MISMATCH"


def test_request_hash_is_base64_sha512_of_the_body() -> None:
    body = b'{"request_id": "req-00000001"}'
    assert base64.b64decode(request_hash(body)) == hashlib.sha512(body).digest()


def test_outbound_headers_only_for_xroad_upstreams() -> None:
    config = _config(
        upstreams={
            "moj": {
                "url": "https://moj.example.gov.vn/",
                "xroad": True,
                "xroad_service": "VN/GOV/000.00.00.G13/HOTICH/lookup",
            }
        },
        consumers={"a": {"xroad_client": CLIENT}, "b": {}},
    )
    assert outbound_headers(config, "civil-status", "a", "req-1", "001085000123") == {
        "X-Road-Client": CLIENT,
        "X-Road-Service": "VN/GOV/000.00.00.G13/HOTICH/lookup",
        "X-Road-Id": "req-1",
        "X-Road-UserId": "001085000123",
    }
    assert outbound_headers(config, "civil-status", "b", "req-1", None) == {
        "X-Road-Service": "VN/GOV/000.00.00.G13/HOTICH/lookup",
        "X-Road-Id": "req-1",
    }
    plain = _config(consumers={"a": {"xroad_client": CLIENT}})
    assert outbound_headers(plain, "civil-status", "a", "req-1", "001085000123") == {}
