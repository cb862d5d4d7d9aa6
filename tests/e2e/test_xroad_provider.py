"""X-Road provider services end to end: the procedure-system simulator served to X-Road
callers through SOAP (message protocol 4.0) and REST (r1), on both brokers.

A zeep client is built from the WSDL the bus serves through ``getWsdl`` and calls the
service with X-Road headers; refused calls (bad headers, unknown client, untrusted peer,
SOAP 1.2, DOCTYPE/XXE, billion laughs, huge bodies, wrong namespaces, unknown serviceCode)
get the right Fault, forward nothing (the simulator counts requests) and leave exactly one
audit record each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from lxml import etree

from adapters.base import parse_routing
from adapters.procedure.simulator import CALLS, build_app
from bus.audit.accesses import accesses
from bus.audit.observer import Auditor
from bus.config import AuditSettings
from bus.gateway.server import server_ssl_context
from bus.store import Store, open_store
from bus.store.base import AuditRecord
from bus.xroad import request_hash
from tests.support.stack import BusStack, new_secret, running_bus, serve_app
from tests.support.xroad import (
    ID,
    MEMBER,
    NS,
    OTHER,
    PORTAL,
    SOAP11,
    STRANGER,
    XR,
    config,
    envelope,
    headers,
    status_body,
)
from tests.unit.gateway.test_security_auth import (  # the test PKI and its TLS settings
    Pki,
    _client_ssl,
    _tls,
    pki,  # noqa: F401 (a fixture)
)

KEY = b"k" * 32


@dataclass
class Provider:
    bus: BusStack
    sim: web.Application
    auditor: Auditor
    store: Store

    @property
    def calls(self) -> int:
        return len(self.sim[CALLS])

    async def records(self) -> list[AuditRecord]:
        while self.auditor.backlog:  # noqa: ASYNC110 (the auditor has no drained event)
            await asyncio.sleep(0.02)
        out = []
        for head in await self.store.audit_chains():
            out += [
                r
                for r in await self.store.audit_records(head.chain, 0, 10_000)
                if r.kind == "exchange"
            ]
        return accesses(out)  # an exchange's STARTED and final records: one

    async def soap(self, body: bytes, ctype: str = "text/xml; charset=utf-8") -> tuple[int, Any]:
        async with self.bus.session.post(
            self.bus.url + "xroad", data=body, headers={"Content-Type": ctype}
        ) as r:
            return r.status, etree.fromstring(await r.read())


@pytest.fixture
async def provider(
    broker_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Provider]:
    token = new_secret()
    monkeypatch.setenv("T_PROC_TOKEN", token)
    sim = build_app(token=token)
    store = open_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    await store.connect()
    async with serve_app(sim) as sim_url:
        cfg = config(sim_url)
        auditor = Auditor(store, node="lgsp-1", key=KEY, settings=AuditSettings())
        async with auditor, running_bus(cfg, broker_url, "unused", auditor=auditor) as bus:
            yield Provider(bus, sim, auditor, store)
    await store.aclose()


def fault_of(doc: Any) -> tuple[str, str]:
    code = doc.findtext(f".//{{{SOAP11}}}Fault/faultcode")
    detail = doc.findtext(f".//{{{SOAP11}}}Fault/detail/faultDetail")
    return code, detail


async def get_wsdl(p: Provider, client: str = PORTAL, code: str = "getDossierStatus") -> Any:
    body = f"<xroad:getWsdl><xroad:serviceCode>{code}</xroad:serviceCode></xroad:getWsdl>"
    return await p.soap(envelope(headers(client, "getWsdl"), body))


async def test_zeep_client_from_get_wsdl_calls_the_service(
    provider: Provider, tmp_path: Path
) -> None:
    status, doc = await get_wsdl(provider)
    assert status == 200
    wsdl = doc.findtext(f".//{{{XR}}}wsdl")
    assert wsdl
    assert "getDossierStatusResponse" in wsdl
    path = tmp_path / "service.wsdl"
    path.write_text(wsdl)

    import zeep
    from zeep.transports import Transport

    def call() -> Any:
        transport = Transport(session=requests.Session())  # type: ignore[no-untyped-call]
        client = zeep.Client(str(path), transport=transport)  # type: ignore[no-untyped-call]
        head = etree.fromstring(
            f'<h xmlns:xroad="{XR}" xmlns:id="{ID}">{headers(msg_id="xr-msg-00000001")}</h>'
        )
        return client.service.getDossierStatus(
            dossier_id="000.00.00.H31-260115-0042", _soapheaders=list(head)
        )

    before = provider.calls
    answer = await asyncio.to_thread(call)
    assert answer.status == "FOUND"
    assert answer.dossier.id == "000.00.00.H31-260115-0042"
    assert answer.dossier.updated_on == "2026-01-15"
    assert answer.request_id == "xr-msg-00000001"
    assert provider.calls == before + 1
    records = [r for r in await provider.records() if r.service == "dossier-status"]
    assert len(records) == 1
    assert records[0].consumer == "portal"
    assert records[0].outcome == "OK"


async def test_answer_echoes_headers_and_request_hash(provider: Provider) -> None:
    raw = envelope(headers(msg_id="xr-msg-00000002"), status_body())
    status, doc = await provider.soap(raw)
    assert status == 200
    assert doc.findtext(f".//{{{XR}}}id") == "xr-msg-00000002"
    assert doc.findtext(f".//{{{XR}}}client/{{{ID}}}memberCode") == "000.00.00.G22"
    assert doc.findtext(f".//{{{XR}}}requestHash") == request_hash(raw)
    assert doc.findtext(f".//{{{NS}}}dossier/{{{NS}}}id") == "000.00.00.H31-260115-0042"


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
)
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'

REFUSED: dict[str, tuple[bytes, str, str, str]] = {
    "soap12": (
        envelope(headers(), status_body(), soap_ns="http://www.w3.org/2003/05/soap-envelope"),
        "text/xml",
        "Client.InvalidSoap",
        "INVALID_SOAP",
    ),
    "soap12-content-type": (
        envelope(headers(), status_body()),
        "application/soap+xml",
        "Client.InvalidSoap",
        "INVALID_SOAP",
    ),
    "xxe": (
        envelope(headers(), status_body(), prolog=XXE),
        "text/xml",
        "Client.InvalidSoap",
        "UNSAFE_XML",
    ),
    "billion-laughs": (
        envelope(headers(), status_body(), prolog=LAUGHS),
        "text/xml",
        "Client.InvalidSoap",
        "UNSAFE_XML",
    ),
    "huge": (
        envelope(headers(), status_body() + "<pad>" + "x" * 20000 + "</pad>"),
        "text/xml",
        "Client.InvalidSoap",
        "PAYLOAD_TOO_LARGE",
    ),
    "wrong-body-namespace": (
        envelope(headers(), status_body(ns="urn:other")),
        "text/xml",
        "Client.InvalidSoap",
        "INVALID_SOAP",
    ),
    "no-headers": (
        envelope("", status_body()),
        "text/xml",
        "Client.MissingHeaderField",
        "MISSING_XROAD_HEADER",
    ),
    "bad-protocol": (
        envelope(headers().replace(">4.0<", ">3.1<"), status_body()),
        "text/xml",
        "Client.InvalidProtocolVersion",
        "INVALID_PROTOCOL_VERSION",
    ),
    "bad-user": (
        envelope(headers().replace("VN001085000123", "nobody"), status_body()),
        "text/xml",
        "Client.InvalidHeaderField",
        "INVALID_XROAD_HEADER",
    ),
    "unknown-client": (
        envelope(headers(STRANGER), status_body()),
        "text/xml",
        "Server.ServerProxy.AccessDenied",
        "XROAD_CLIENT_UNKNOWN",
    ),
    "not-allowed": (
        envelope(headers(OTHER), status_body()),
        "text/xml",
        "Server.ServerProxy.AccessDenied",
        "FORBIDDEN_OPERATION",
    ),
    "unknown-service-code": (
        envelope(headers(code="getNothing"), status_body()),
        "text/xml",
        "Server.ServerProxy.UnknownService",
        "UNKNOWN_SERVICE",
    ),
    "invalid-field": (
        envelope(headers(), status_body(dossier="bad id")),
        "text/xml",
        "Client.InvalidRequest",
        "INVALID_FIELD",
    ),
}


async def test_refused_requests_get_faults_forward_nothing_one_record_each(
    provider: Provider,
) -> None:
    before = provider.calls
    for name, (raw, ctype, faultcode, detail) in REFUSED.items():
        status, doc = await provider.soap(raw, ctype)
        assert status == 500, name
        got = fault_of(doc)
        assert got[0] == faultcode, (name, got)
        assert got[1] == detail or (name == "invalid-field" and got[1].startswith("INVALID")), (
            name,
            got,
        )
        assert b"Traceback" not in etree.tostring(doc)
    assert provider.calls == before
    records = await provider.records()
    assert len(records) == len(REFUSED)
    assert all(r.outcome != "OK" for r in records)


async def test_untrusted_peer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = new_secret()
    monkeypatch.setenv("T_PROC_TOKEN", token)
    sim = build_app(token=token)
    async with serve_app(sim) as sim_url:
        cfg = config(sim_url, trusted="10.9.9.9")
        async with running_bus(cfg, None, "unused") as bus:
            async with bus.session.post(
                bus.url + "xroad",
                data=envelope(headers(), status_body()),
                headers={"Content-Type": "text/xml"},
            ) as r:
                doc = etree.fromstring(await r.read())
            assert fault_of(doc) == ("Server.ServerProxy.AccessDenied", "XROAD_UNTRUSTED_PEER")
            async with bus.session.post(
                bus.url + f"r1/{MEMBER}/getDossierStatus",
                json={"dossier_id": "000.00.00.H31-260115-0042"},
                headers={"X-Road-Client": PORTAL, "X-Road-Id": "xr-msg-00000009"},
            ) as r:
                assert r.status == 403
                assert (await r.json())["error"]["code"] == "XROAD_UNTRUSTED_PEER"
    assert sim[CALLS] == []


async def test_metaservices_list_exactly_the_allowed_services(provider: Provider) -> None:
    for name in ("listMethods", "allowedMethods"):
        for client, expected in ((PORTAL, ["getDossierStatus"]), (OTHER, [])):
            body = f"<xroad:{name}/>"
            status, doc = await provider.soap(envelope(headers(client, name), body))
            assert status == 200
            codes = [e.text for e in doc.iter(f"{{{ID}}}serviceCode")][1:]  # [0]: the header
            assert codes == expected, (name, client)
        async with provider.bus.session.get(
            provider.bus.url + f"r1/{MEMBER}/{name}", headers={"X-Road-Client": OTHER}
        ) as r:
            assert (await r.json()) == {"service": []}
        async with provider.bus.session.get(
            provider.bus.url + f"r1/{MEMBER}/{name}", headers={"X-Road-Client": PORTAL}
        ) as r:
            assert [s["service_code"] for s in (await r.json())["service"]] == ["getDossierStatus"]
    status, doc = await get_wsdl(provider, OTHER)
    assert fault_of(doc)[1] == "UNKNOWN_SERVICE"
    status, doc = await get_wsdl(provider, PORTAL, "getDossierOther")
    assert fault_of(doc)[1] == "UNKNOWN_SERVICE"
    async with provider.bus.session.get(
        provider.bus.url + f"r1/{MEMBER}/getOpenAPI?serviceCode=getDossierStatus",
        headers={"X-Road-Client": PORTAL},
    ) as r:
        doc = await r.json()
        assert "/getDossierStatus" in doc["paths"]


async def test_rest_r1_call_and_refusals(provider: Provider) -> None:
    url = provider.bus.url + f"r1/{MEMBER}/getDossierStatus"
    body = {"dossier_id": "000.00.00.H31-260115-0042"}
    raw = b'{"dossier_id": "000.00.00.H31-260115-0042"}'
    hdrs = {
        "X-Road-Client": PORTAL,
        "X-Road-Id": "xr-msg-00000003",
        "X-Road-UserId": "VN001085000123",
        "Content-Type": "application/json",
    }
    async with provider.bus.session.post(url, data=raw, headers=hdrs) as r:
        assert r.status == 200
        assert r.headers["X-Road-Request-Hash"] == request_hash(raw)
        got = await r.json()
    assert got["dossier"]["id"] == body["dossier_id"]
    assert got["request_id"] == "xr-msg-00000003"
    before = provider.calls
    cases = [
        ({**hdrs, "X-Road-Client": "not an id"}, url, 400, "INVALID_XROAD_HEADER"),
        ({k: v for k, v in hdrs.items() if k != "X-Road-Client"}, url, 400, "MISSING_XROAD_HEADER"),
        ({**hdrs, "X-Road-Client": OTHER}, url, 403, "FORBIDDEN_OPERATION"),
        ({**hdrs, "X-Road-Client": STRANGER}, url, 403, "XROAD_CLIENT_UNKNOWN"),
        (hdrs, url.replace("getDossierStatus", "getNothing"), 404, "UNKNOWN_SERVICE"),
    ]
    for h, u, code, err in cases:
        async with provider.bus.session.post(u, data=raw, headers=h) as r:
            assert r.status == code, err
            assert (await r.json())["error"]["code"] == err
    bodies = [  # as strict as the call pipeline: one object, each key once, bounded depth
        (b'{"dossier_id": "000.00.00.H31-260115-0042", "dossier_id": "x"}', "DUPLICATE_KEY"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "JSON_TOO_DEEP"),
        (b"[1]", "MALFORMED_JSON"),
    ]
    for bad, err in bodies:
        async with provider.bus.session.post(url, data=bad, headers=hdrs) as r:
            assert r.status == 400, err
            assert (await r.json())["error"]["code"] == err
    assert provider.calls == before
    records = await provider.records()
    assert len(records) == 1 + len(cases) + len(bodies)


async def test_a_security_server_is_trusted_by_its_mtls_certificate(
    pki: Pki,  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = new_secret()
    monkeypatch.setenv("T_PROC_TOKEN", token)
    sim = build_app(token=token)
    async with serve_app(sim) as sim_url:
        data = config(sim_url).model_dump(mode="json", exclude_none=True)
        data["gateway"]["tls"] = _tls(pki, "optional")
        data["provider"]["security_servers"] = [{"subject": "CN=motcua.tinh.gov.vn,O=So TTTT,C=VN"}]
        cfg = parse_routing(data)
        assert cfg.gateway.tls is not None
        server_ctx = server_ssl_context(cfg.gateway.tls)
        outcomes = {}
        for cert in ("motcua", "unmapped", None):
            client_ctx = _client_ssl(pki, cert)
            async with (
                running_bus(
                    cfg, None, "unused", ssl_context=server_ctx, client_ssl=client_ctx
                ) as bus,
                bus.session.post(
                    bus.url + "xroad",
                    data=envelope(headers(), status_body()),
                    headers={"Content-Type": "text/xml"},
                ) as r,
            ):
                doc = etree.fromstring(await r.read())
                outcomes[cert] = (r.status, fault_of(doc)[1])
    assert outcomes == {
        "motcua": (200, None),
        "unmapped": (500, "XROAD_UNTRUSTED_PEER"),
        None: (500, "XROAD_UNTRUSTED_PEER"),
    }
    assert len(sim[CALLS]) == 1
