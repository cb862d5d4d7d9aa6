"""The generic ``soap`` kind: config checks against the WSDL, and calls to a real SOAP server.

The business registry (tests/fixtures/business_registry/) is a WSDL written for these tests,
unlike C06's; its server runs on loopback. The whole-bus round trip is in
test_generic_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from adapters.base import Adapter, CallContext, parse_routing, registry
from adapters.common.soap import FaultPolicy, SoapCodec, WsdlError
from adapters.soap.kind import KIND
from bus.config import ConfigError, ServiceConfig
from bus.config.source import YamlDocument
from bus.errors import BusError
from tests.fixtures.generic_config import business_registry_service
from tests.fixtures.generic_upstreams import (
    BR_NS,
    BR_WSDL,
    SEEN,
    SOAP_PASSWORD,
    SOAP_USER,
    business_registry_app,
)
from tests.support.stack import serve_app

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


def service(**changes: Any) -> dict[str, Any]:
    return business_registry_service("dkkd", **changes)


def problems_of(svc: dict[str, Any]) -> list[str]:
    return KIND.check("business-registry", ServiceConfig.model_validate(svc))


def lookup_options(svc: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = svc["operations"]["lookup"]["options"]
    return options


# --- config checks ---------------------------------------------------------------------------


def test_the_fixture_service_is_valid() -> None:
    assert problems_of(service()) == []
    assert registry.get("soap") is KIND


@pytest.mark.parametrize(
    ("wsdl", "message"),
    [
        ("/nonexistent/dkkd.wsdl", "options.wsdl: WSDL file /nonexistent/dkkd.wsdl does not exist"),
        ("wsdl/dkkd.wsdl", "options.wsdl: give an absolute path"),
        ("https://dkkd.example/ws?wsdl", "options.wsdl: the WSDL is a local file, never fetched"),
    ],
)
def test_wsdl_location_problems(wsdl: str, message: str) -> None:
    problems = problems_of(service(wsdl=wsdl))
    assert any(p.startswith(message) for p in problems), problems


def test_unknown_wsdl_operation_is_named_with_the_known_ones() -> None:
    svc = service()
    lookup_options(svc)["operation"] = "GetEnterprise"
    assert problems_of(svc) == [
        "operations.lookup.options.operation: the WSDL has no operation 'GetEnterprise' on "
        "port EnterpriseSoap11Port (it has: CheckEnterpriseStatus, GetEnterpriseInfo)"
    ]


def test_service_and_port_choice() -> None:
    svc = service()
    del svc["options"]["service"], svc["options"]["port"]
    assert problems_of(svc) == []  # one service, one SOAP 1.1 port: chosen
    svc["options"]["port"] = "EnterpriseSoap12Port"
    assert problems_of(svc) == [
        "options.wsdl: port 'EnterpriseSoap12Port' is not a SOAP 1.1 port "
        "(only SOAP 1.1 is supported)"
    ]
    svc["options"].update(service="Registry", port=None)
    assert problems_of(svc) == [
        "options.wsdl: the WSDL has no service 'Registry' (it has: BusinessRegistryService)"
    ]


def test_mapping_problems_name_the_yaml_path_and_the_schema() -> None:
    svc = service()
    opts = lookup_options(svc)
    del opts["request"]["Caller.Channel"]
    opts["request"]["EnterpriseCod"] = "enterprise_code"
    opts["request"]["Caller.UnitCode"] = "caller.unit_code"  # optional in both: fine
    opts["request"]["AsOfDate"] = "as_off"
    opts["response"]["enterprise.owner"] = "Enterprise.Owners.Owner.Name"
    opts["response"]["enterprise.x"] = "Enterprise.HeadOffice.Street"
    opts["response"]["status"] = "Enterprise.Status"
    opts["not_found"]["path"] = "Enterprises"
    assert sorted(problems_of(svc)) == sorted(
        [
            "operations.lookup.options.request.AsOfDate: 'as_off' is not a request field "
            "(declare it under fields, or use request_id, caller.*, purpose.*)",
            "operations.lookup.options.response.status: the bus sets 'status' itself",
            "operations.lookup.options.request.EnterpriseCod: no element 'EnterpriseCod' "
            "here (it has: AsOfDate, Caller, EnterpriseCode)",
            "operations.lookup.options.request: the WSDL requires Caller.Channel, "
            "which nothing maps",
            "operations.lookup.options.response.enterprise.owner: "
            "'Enterprise.Owners.Owner.Name': Enterprise.Owners.Owner repeats: write "
            "Enterprise.Owners.Owner[0], or map the list with each",
            "operations.lookup.options.response.enterprise.x: 'Enterprise.HeadOffice.Street': "
            "no element 'Street' here (Enterprise.HeadOffice has: Detail, ProvinceCode, "
            "WardCode)",
            "operations.lookup.options.not_found.path: 'Enterprises': no element "
            "'Enterprises' here (it has: DataAsOf, Enterprise)",
        ]
    )


def test_a_required_element_fed_by_an_optional_field_is_flagged() -> None:
    svc = service()
    lookup_options(svc)["fields"]["enterprise_code"]["required"] = False
    assert problems_of(svc) == [
        "operations.lookup.options.request.EnterpriseCode: the WSDL requires it but "
        "'enterprise_code' is optional in the request: make that field required, or give a "
        "default"
    ]


def test_option_errors_are_reported_per_path() -> None:
    svc = service()
    svc["options"]["wsdl_path"] = "x"
    svc["options"]["faults"]["transient"] = "SYSTEM_BUSY"
    lookup_options(svc)["fields"]["as_of"]["type"] = "timestamp"
    del svc["operations"]["status"]["options"]["operation"]
    problems = problems_of(svc)
    assert "options.wsdl_path: Extra inputs are not permitted" in problems
    assert "options.faults.transient: Input should be a valid list" in problems
    assert any(
        p.startswith("operations.lookup.options.fields.as_of.type: Input should be")
        for p in problems
    )
    assert "operations.status.options.operation: Field required" in problems


def write_wsdl(tmp_path: Path, schema_location: str, extra: str = "") -> Path:
    original = BR_WSDL.read_text(encoding="utf-8")
    text = original.replace(
        'schemaLocation="schemas/enterprise.xsd"', f'schemaLocation="{schema_location}"'
    )
    target = tmp_path / "wsdl" / "BusinessRegistry.wsdl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(extra + text.split("?>", 1)[1] if extra else text, encoding="utf-8")
    xsd = (BR_WSDL.parent / "schemas" / "enterprise.xsd").read_bytes()
    (tmp_path / "enterprise.xsd").write_bytes(xsd)  # outside the WSDL's directory
    (target.parent / "enterprise.xsd").write_bytes(xsd)
    return target


@pytest.mark.parametrize(
    ("location", "extra", "message"),
    [
        ("http://127.0.0.1:9/enterprise.xsd", "", "refers to a remote document"),
        ("../enterprise.xsd", "", "refers to a file outside the WSDL's directory"),
        ("missing.xsd", "", "cannot read missing.xsd"),
        (
            "schemas/enterprise.xsd",
            '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
            "cannot read the WSDL: DTDForbidden",
        ),
    ],
)
def test_wsdl_files_are_read_locally_and_safely(
    tmp_path: Path, location: str, extra: str, message: str
) -> None:
    wsdl = write_wsdl(tmp_path, location, extra)
    problems = problems_of(service(wsdl=str(wsdl)))
    assert len(problems) == 1, problems
    assert problems[0].startswith("options.wsdl: ")
    assert message in problems[0]


def test_config_validate_reports_the_yaml_path_and_line(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service()
    lookup_options(svc)["operation"] = "GetEnterprise"
    data = {
        "version": 1,
        "upstreams": {"dkkd": {"url": "https://dkkd.example/ws"}},
        "services": {"business-registry": svc},
    }
    doc = YamlDocument.from_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    with pytest.raises(ConfigError) as exc:
        parse_routing(doc.data, doc)
    [issue] = exc.value.issues
    assert str(issue).startswith("services.business-registry (line ")
    assert str(issue).endswith(
        "operations.lookup.options.operation: the WSDL has no operation 'GetEnterprise' on "
        "port EnterpriseSoap11Port (it has: CheckEnterpriseStatus, GetEnterpriseInfo)"
    )


def test_codec_keeps_single_child_replies_wrapped() -> None:
    codec = SoapCodec.from_wsdl(BR_WSDL, FaultPolicy("DKDN"))
    reply = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<e:CheckEnterpriseStatusResponse xmlns:e="' + BR_NS.encode() + b'">'
        b"<e:Active>true</e:Active></e:CheckEnterpriseStatusResponse></s:Body></s:Envelope>"
    )
    # zeep's own process_reply would hand back a bare True here.
    assert codec.parse("CheckEnterpriseStatus", 200, reply) == {"Active": True}
    assert set(codec.output_schema("CheckEnterpriseStatus")) == {"Active"}
    with pytest.raises(WsdlError, match="does not exist"):
        SoapCodec.from_wsdl(BR_WSDL.with_name("nope.wsdl"), FaultPolicy("DKDN"))


# --- calls against the real SOAP server -------------------------------------------------------


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, str]]:
    app = business_registry_app()
    monkeypatch.setenv("T_BR_PASSWORD", SOAP_PASSWORD)
    monkeypatch.setenv("T_BR_WRONG", "guess")
    async with serve_app(app) as url:
        yield app, url


async def adapter_for(url: str, env: str = "T_BR_PASSWORD") -> Adapter:
    config = parse_routing(
        {
            "upstreams": {
                "dkkd": {
                    "url": url + "dkkd/enterprise",
                    "allow_plain_http": True,
                    "auth": {
                        "kind": "wsse",
                        "username": SOAP_USER,
                        "password": f"env:{env}",
                    },
                }
            },
            "services": {"business-registry": service()},
        }
    )
    built = config.services["business-registry"]
    return await KIND.create("business-registry", built, config.upstreams["dkkd"])


def ctx(operation: str = "lookup") -> CallContext:
    return CallContext(
        "req-12345678", "corr-1", "portal", "business-registry", operation, time.time() + 5
    )


def lookup(code: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": "req-12345678", "enterprise_code": code, **extra}


async def test_lookup_sends_a_schema_valid_secured_envelope(upstream: tuple[Any, str]) -> None:
    app, url = upstream
    adapter = await adapter_for(url)
    try:
        out = await adapter.call("lookup", lookup("0101234567", as_of="2026-01-02"), ctx())
    finally:
        await adapter.aclose()
    assert (out["status"], out["source"]) == ("FOUND", "DKDN")
    assert out["enterprise"]["name"] == "Công ty TNHH Thương mại Đồng Xuân"  # NFC again
    assert out["enterprise"]["owners"][0] == {"name": "Nguyễn Văn An", "share_percent": 60.5}
    assert out["enterprise"]["charter_capital_vnd"] == "5000000000.00"
    seen = app[SEEN].last
    assert seen["path"] == "/dkkd/enterprise"
    assert seen["headers"]["SOAPAction"] == '"urn:dkkd:GetEnterpriseInfo"'
    assert seen["headers"]["Content-Type"] == "text/xml; charset=utf-8"
    assert seen["headers"]["X-Client-System"] == "lgsp-test"
    envelope = etree.fromstring(seen["body"])
    assert envelope.find(f".//{{{WSSE}}}UsernameToken") is not None
    e = f"{{{BR_NS}}}"
    call = envelope.find(f".//{e}GetEnterpriseInfoRequest")
    assert call is not None
    assert call.findtext(f"{e}Caller/{e}RequestId") == "req-12345678"
    assert call.findtext(f"{e}Caller/{e}UnitCode") == "LGSP-TEST"  # the rule's default
    assert call.findtext(f"{e}Caller/{e}Channel") == "LGSP"
    assert call.findtext(f"{e}AsOfDate") == "2026-01-02"


async def test_soap_action_override_is_quoted(upstream: tuple[Any, str]) -> None:
    app, url = upstream
    svc = service()
    lookup_options(svc)["soap_action"] = "urn:dkkd:Lookup2"
    config = parse_routing(
        {
            "upstreams": {"dkkd": {"url": url, "allow_plain_http": True}},
            "services": {"business-registry": svc},
        }
    )
    built = config.services["business-registry"]
    adapter = await KIND.create("business-registry", built, config.upstreams["dkkd"])
    try:
        with pytest.raises(BusError):  # no credentials: the registry refuses
            await adapter.call("lookup", lookup("0101234567"), ctx())
    finally:
        await adapter.aclose()
    assert app[SEEN].last["headers"]["SOAPAction"] == '"urn:dkkd:Lookup2"'


async def test_minimal_record_and_single_child_reply(upstream: tuple[Any, str]) -> None:
    _, url = upstream
    adapter = await adapter_for(url)
    try:
        branch = await adapter.call("lookup", lookup("0109999999-001"), ctx())
        status = await adapter.call("status", lookup("0101234567"), ctx("status"))
    finally:
        await adapter.aclose()
    assert branch["enterprise"] == {
        "code": "0109999999-001",
        "name": "Chi nhánh Công ty Cổ phần Sông Hồng",
        "status": "DISSOLVED",
        "founded_on": "1999-12-01",
        "head_office": {"province_code": "01"},
        "owners": [],
    }
    assert status == {"status": "FOUND", "source": "DKDN", "active": True}


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("0102222222", "NOT_FOUND"),  # no <Enterprise>: the not_found rule's shape
        ("0100000004", "NOT_FOUND"),  # fault NOT_REGISTERED: listed in not_found.faults
        ("0100000001", "UPSTREAM_UNAVAILABLE"),  # faults.transient
        ("0100000002", "UPSTREAM_REJECTED"),  # soap:Client
        ("0100000003", "UPSTREAM_ERROR"),  # soap:Server without a known code
        ("0100000005", "UPSTREAM_BAD_RESPONSE"),  # XXE
        ("0100000006", "UPSTREAM_BAD_RESPONSE"),  # billion laughs
        ("0100000007", "UPSTREAM_BAD_RESPONSE"),  # not what the WSDL says
        ("0100000008", "UPSTREAM_UNAVAILABLE"),  # HTML 503 from a proxy
    ],
)
async def test_outcomes(upstream: tuple[Any, str], code: str, outcome: str) -> None:
    _, url = upstream
    adapter = await adapter_for(url)
    try:
        got, error = await outcome_of(adapter.call("lookup", lookup(code), ctx()))
    finally:
        await adapter.aclose()
    assert got == outcome
    if error is not None:
        # Fault texts repeat the code and a name; errors keep neither.
        assert code not in error.message
        assert "Nguyễn" not in error.message
        assert error.retryable is (outcome == "UPSTREAM_UNAVAILABLE")


async def outcome_of(answer: Any) -> tuple[str, BusError | None]:
    """The answer's status, or the error's code (and the error)."""
    try:
        return str((await answer)["status"]), None
    except BusError as exc:
        return exc.code, exc


async def test_wrong_password_is_upstream_auth_failed(upstream: tuple[Any, str]) -> None:
    _, url = upstream
    adapter = await adapter_for(url, "T_BR_WRONG")
    try:
        with pytest.raises(BusError) as exc:
            await adapter.call("lookup", lookup("0101234567"), ctx())
    finally:
        await adapter.aclose()
    assert exc.value.code == "UPSTREAM_AUTH_FAILED"
    assert exc.value.detail == {"fault_code": "Client", "upstream_code": "AUTH_DENIED"}


def test_the_wsdl_is_parsed_once_per_file_version(tmp_path: Path) -> None:
    wsdl = write_wsdl(tmp_path, "enterprise.xsd")
    svc = ServiceConfig.model_validate(service(wsdl=str(wsdl)))
    assert KIND.check("business-registry", svc) == []
    cached = dict(KIND._codecs)
    assert KIND.check("business-registry", svc) == []
    assert KIND._codecs == cached  # same file: no second parse
    text = wsdl.read_text(encoding="utf-8")
    wsdl.write_text(text.replace('name="GetEnterpriseInfo"', 'name="GetEnterpriseInfo2"'))
    assert KIND.check("business-registry", svc)[0].startswith(
        "operations.lookup.options.operation: the WSDL has no operation 'GetEnterpriseInfo'"
    )
