"""X-Road provider test helpers: a config serving the procedure simulator to X-Road
callers, and SOAP requests of message protocol 4.0 (used by tests/e2e and bench/)."""

from __future__ import annotations

import uuid
from typing import Any

from adapters.base import parse_routing

__all__ = [
    "ID",
    "MEMBER",
    "NS",
    "OTHER",
    "PORTAL",
    "SOAP11",
    "STRANGER",
    "XR",
    "config",
    "envelope",
    "headers",
    "status_body",
]

MEMBER = "VN/GOV/000.00.00.H31/LGSP"
PORTAL = "VN/GOV/000.00.00.G22/DVCQG"
OTHER = "VN/GOV/000.00.00.H29/MOTCUA"  # known, allowed nothing
STRANGER = "VN/GOV/000.00.00.H01/X"  # no consumer
NS = "urn:lgsp-bus:provider"
XR = "http://x-road.eu/xsd/xroad.xsd"
ID = "http://x-road.eu/xsd/identifiers"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"


def config(sim_url: str, trusted: str = "127.0.0.1") -> Any:
    return parse_routing(
        {
            "version": 1,
            "gateway": {"max_body_bytes": 16384},
            "provider": {
                "member": MEMBER,
                "security_servers": [{"address": trusted}],
                "services": {
                    "getDossierStatus": {"service": "dossier-status", "operation": "status"},
                    "getDossierOther": {"service": "dossier-status", "operation": "other"},
                },
            },
            "consumers": {
                "portal": {"xroad_client": PORTAL, "allow": {"dossier-status": ["status"]}},
                "other-province": {"xroad_client": OTHER, "allow": {}},
            },
            "upstreams": {
                "procedure": {
                    "url": sim_url + "procedure-sim/",
                    "allow_plain_http": True,
                    "auth": {"kind": "bearer", "token": "env:T_PROC_TOKEN"},
                }
            },
            "services": {
                "dossier-status": {
                    "adapter": "rest",
                    "upstream": "procedure",
                    "personal_data": False,
                    "operations": {
                        op: {
                            "timeout_s": 5,
                            "options": {
                                "method": "GET",
                                "path": "dossiers/{dossier_id}",
                                "fields": {
                                    "dossier_id": {
                                        "required": True,
                                        "pattern": "^[A-Za-z0-9.]{1,30}-[0-9]{6}-[0-9]{4}$",
                                    }
                                },
                                "response": {
                                    "dossier.id": "maHoSo",
                                    "dossier.status": "trangThai",
                                    "dossier.updated_on": "ngayCapNhat",
                                },
                                "not_found": {"status": [404]},
                            },
                        }
                        for op in ("status", "other")
                    },
                }
            },
        }
    )


def headers(client: str = PORTAL, code: str = "getDossierStatus", msg_id: str = "") -> str:
    inst, cls, member, *sub = client.split("/")
    sub_xml = f"<id:subsystemCode>{sub[0]}</id:subsystemCode>" if sub else ""
    p = MEMBER.split("/")
    return (
        f'<xroad:client id:objectType="SUBSYSTEM"><id:xRoadInstance>{inst}</id:xRoadInstance>'
        f"<id:memberClass>{cls}</id:memberClass><id:memberCode>{member}</id:memberCode>{sub_xml}"
        f'</xroad:client><xroad:service id:objectType="SERVICE">'
        f"<id:xRoadInstance>{p[0]}</id:xRoadInstance><id:memberClass>{p[1]}</id:memberClass>"
        f"<id:memberCode>{p[2]}</id:memberCode><id:subsystemCode>{p[3]}</id:subsystemCode>"
        f"<id:serviceCode>{code}</id:serviceCode><id:serviceVersion>v1</id:serviceVersion>"
        f"</xroad:service><xroad:id>{msg_id or uuid.uuid4().hex}</xroad:id>"
        f"<xroad:userId>VN001085000123</xroad:userId><xroad:protocolVersion>4.0</xroad:protocolVersion>"
    )


def envelope(head: str, body: str, *, prolog: str = "", soap_ns: str = SOAP11) -> bytes:
    return (
        f'{prolog}<s:Envelope xmlns:s="{soap_ns}" xmlns:xroad="{XR}" xmlns:id="{ID}">'
        f"<s:Header>{head}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def status_body(dossier: str = "000.00.00.H31-260115-0042", ns: str = NS) -> str:
    inner = f"<p:dossier_id>{dossier}</p:dossier_id>"
    return f'<p:getDossierStatus xmlns:p="{ns}">{inner}</p:getDossierStatus>'
