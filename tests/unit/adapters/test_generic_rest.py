"""The generic ``rest`` kind: config checks, and calls to a real REST server on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from adapters.base import Adapter, CallContext, parse_routing, registry
from adapters.rest.kind import KIND
from bus.config import ServiceConfig
from bus.errors import BusError
from tests.fixtures.generic_config import social_insurance_service
from tests.fixtures.generic_upstreams import SEEN, VSS_PASSWORD, VSS_USER, social_insurance_app
from tests.support.stack import serve_app

ACCOUNTABLE = {
    "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
    "purpose": {"procedure_code": "1.001234", "dossier_id": "HS-2026-0001"},
}


def problems_of(svc: dict[str, Any]) -> list[str]:
    return KIND.check("social-insurance", ServiceConfig.model_validate(svc))


def options(svc: dict[str, Any], op: str) -> dict[str, Any]:
    opts: dict[str, Any] = svc["operations"][op]["options"]
    return opts


# --- config checks ---------------------------------------------------------------------------


def test_the_fixture_service_is_valid() -> None:
    assert problems_of(social_insurance_service("vss")) == []
    assert registry.get("rest") is KIND


@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example/x",
        "api//x",
        "api/../admin",
        "api/x?debug=1",
        "api/x#frag",
        "api/%2e%2e/x",
        "mailto:x/y",
        "{value}:x/y",
    ],
)
def test_path_templates_stay_relative(path: str) -> None:
    """Only config can name the upstream; a template cannot leave it."""
    svc = social_insurance_service("vss")
    options(svc, "echo")["path"] = path
    assert problems_of(svc) == [
        "operations.echo.options.path: a relative path template (letters, digits, "
        "- . _ ~ / and {name}; no scheme, host, query, '//' or '..')"
    ]


def test_mapping_problems() -> None:
    svc = social_insurance_service("vss")
    lookup = options(svc, "lookup")
    lookup["path"] = "api/v2/participants/{subject.id}/{as_of}/{code}"
    lookup["path_params"] = {"code": {"from": "subject.code"}}
    lookup["query"]["x"] = "caller.unit"
    lookup["headers"]["Authorization"] = "request_id"
    lookup["response"]["source"] = "data[0].nguon"
    lookup["not_found"]["faults"] = ["NOT_FOUND"]
    verify = options(svc, "verify")
    verify["body"]["a"] = "x"
    verify["body"]["a.b"] = "y"
    assert sorted(problems_of(svc)) == sorted(
        [
            "operations.lookup.options.path_params.code: 'subject.code' is not a request field "
            "(declare it under fields, or use request_id, caller.*, purpose.*)",
            "operations.lookup.options.query.x: 'caller.unit' is not a request field "
            "(declare it under fields, or use request_id, caller.*, purpose.*)",
            "operations.lookup.options.headers.Authorization: set by the bus (credentials come "
            "from the upstream's auth)",
            "operations.lookup.options.response.source: the bus sets 'source' itself",
            "operations.lookup.options.path: {subject.id} is neither a request field nor in "
            "path_params",
            "operations.lookup.options.path: {as_of} names an optional field: make it required",
            "operations.lookup.options.path: {code} is neither a request field nor in path_params",
            "operations.lookup.options.not_found.faults: SOAP fault codes are for soap; use status",
            "operations.verify.options.body.a: 'x' is not a request field (declare it under "
            "fields, or use request_id, caller.*, purpose.*)",
            "operations.verify.options.body.a.b: 'y' is not a request field (declare it under "
            "fields, or use request_id, caller.*, purpose.*)",
            "operations.verify.options.body.a: both a value and the parent of other targets",
        ]
    )


def test_a_get_has_no_body_and_headers_carry_no_secrets() -> None:
    svc = social_insurance_service("vss")
    options(svc, "lookup")["body"] = {"x": "request_id"}
    svc["options"]["headers"]["Cookie"] = "session=1"
    problems = problems_of(svc)
    assert "operations.lookup.options: a GET request has no body: remove body" in problems
    assert any(p.startswith("options.headers: ") and "Cookie" in p for p in problems), problems


# --- calls against the real REST server -------------------------------------------------------


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[web.Application, str]]:
    app = social_insurance_app()
    monkeypatch.setenv("T_VSS_PASSWORD", VSS_PASSWORD)
    monkeypatch.setenv("T_VSS_WRONG", "guess")
    async with serve_app(app) as url:
        yield app, url


async def adapter_for(url: str, env: str = "T_VSS_PASSWORD") -> Adapter:
    config = parse_routing(
        {
            "upstreams": {
                "vss": {
                    "url": url,
                    "allow_plain_http": True,
                    "auth": {
                        "kind": "basic",
                        "username": VSS_USER,
                        "password": f"env:{env}",
                    },
                }
            },
            "services": {"social-insurance": social_insurance_service("vss")},
        }
    )
    svc = config.services["social-insurance"]
    return await KIND.create("social-insurance", svc, config.upstreams["vss"])


def ctx(operation: str) -> CallContext:
    return CallContext(
        "req-12345678", "c-1", "portal", "social-insurance", operation, time.time() + 5
    )


def lookup(pid: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": "req-12345678", **ACCOUNTABLE, "subject": {"id_number": pid}, **extra}


async def call(
    url: str, operation: str, body: dict[str, Any], env: str = "T_VSS_PASSWORD"
) -> dict[str, Any]:
    adapter = await adapter_for(url, env)
    try:
        return await adapter.call(operation, body, ctx(operation))
    finally:
        await adapter.aclose()


async def test_lookup_request_and_answer(upstream: tuple[web.Application, str]) -> None:
    app, url = upstream
    out = await call(url, "lookup", lookup("001090012345", as_of="2026-01-02"))
    assert out == {
        "status": "FOUND",
        "source": "VSS",
        "participant": {
            "insurance_number": "0123456789",
            "full_name": "Nguyễn Văn An",  # NFD upstream → NFC answer
            "birth_date": "1990-03-15",
            "status": "ACTIVE",
            "employer": "Công ty TNHH Đồng Xuân",
        },
        "data_as_of": "2026-01-05T08:30:00+07:00",
    }
    seen = app[SEEN].last
    assert seen["path"] == "/api/v2/participants/001090012345"
    assert seen["query"] == {"ngayHieuLuc": "02/01/2026"}
    assert seen["headers"]["X-Request-ID"] == "req-12345678"
    assert seen["headers"]["X-Client-System"] == "lgsp-test"
    assert seen["headers"]["Accept"] == "application/json"


async def test_partial_dates_and_defaults(upstream: tuple[web.Application, str]) -> None:
    _, url = upstream
    out = await call(url, "lookup", lookup("079195000123"))
    assert out["participant"]["birth_date"] == "1995"  # 00/00/1995: year known only
    assert out["participant"]["status"] == "UNKNOWN"  # the map's default
    assert "employer" not in out["participant"]


async def test_verify_posts_the_mapped_body(upstream: tuple[web.Application, str]) -> None:
    app, url = upstream
    subject = {
        "id_number": "001090012345",
        "full_name": "Nguyễn Văn An",
        "birth_date": "1990-03-15",
    }
    body = {"request_id": "req-12345678", **ACCOUNTABLE, "subject": subject}
    assert (await call(url, "verify", body))["verified"] is True
    assert app[SEEN].last["json"] == {
        "soDinhDanh": "001090012345",
        "hoTen": "NGUYỄN VĂN AN",
        "ngaySinh": "15/03/1990",
        "kenh": "LGSP",
    }
    subject["birth_date"] = "1990-03-16"
    assert (await call(url, "verify", body))["verified"] is False


@pytest.mark.parametrize(
    ("pid", "outcome"),
    [
        ("001090000001", "NOT_FOUND"),  # data: []
        ("001090000097", "NOT_FOUND"),  # HTTP 404, listed in not_found.status
        ("001090000099", "UPSTREAM_UNAVAILABLE"),  # app_status transient code
        ("001090000098", "UPSTREAM_REJECTED"),  # any other code
        ("001090000096", "UPSTREAM_UNAVAILABLE"),  # HTTP 503
        ("001090000095", "UPSTREAM_BAD_RESPONSE"),  # malformed JSON
    ],
)
async def test_outcomes(upstream: tuple[web.Application, str], pid: str, outcome: str) -> None:
    _, url = upstream
    got, error = await outcome_of(call(url, "lookup", lookup(pid)))
    assert got == outcome
    if error is not None:  # the upstream's texts repeat the ID; errors do not
        assert pid not in error.message


async def outcome_of(answer: Any) -> tuple[str, BusError | None]:
    """The answer's status, or the error's code (and the error)."""
    try:
        return str((await answer)["status"]), None
    except BusError as exc:
        return exc.code, exc


async def test_wrong_password_is_upstream_auth_failed(
    upstream: tuple[web.Application, str],
) -> None:
    _, url = upstream
    with pytest.raises(BusError) as exc:
        await call(url, "lookup", lookup("001090012345"), "T_VSS_WRONG")
    assert exc.value.code == "UPSTREAM_AUTH_FAILED"


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        ("a/b c?d#e%f", "/api/v2/echo/a%2Fb%20c%3Fd%23e%25f"),
        ("x/../../admin", "/api/v2/echo/x%2F..%2F..%2Fadmin"),
        ("Đồng", "/api/v2/echo/%C4%90%E1%BB%93ng"),
    ],
)
async def test_placeholders_are_one_escaped_segment(
    upstream: tuple[web.Application, str], value: str, raw: str
) -> None:
    app, url = upstream
    out = await call(url, "echo", {"request_id": "req-12345678", "value": value})
    assert out["segment"] == value
    assert app[SEEN].last["raw_path"] == raw


@pytest.mark.parametrize("value", ["..", "."])
async def test_dot_segments_never_reach_the_upstream(
    upstream: tuple[web.Application, str], value: str
) -> None:
    app, url = upstream
    with pytest.raises(BusError) as exc:
        await call(url, "echo", {"request_id": "req-12345678", "value": value})
    assert exc.value.code == "INVALID_FIELD"
    assert not app[SEEN].requests
