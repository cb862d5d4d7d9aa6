"""X-Road metaservices: what a caller may call, and the description of one service.

SOAP (``service`` header naming this bus's subsystem): ``listMethods``, ``allowedMethods``
(both list the provider services the calling client's consumer may call: the bus never
reveals the ones it may not), ``getWsdl`` (body ``serviceCode``/``serviceVersion``; the
WSDL text in ``<wsdl>``, not a MIME attachment). REST: ``GET …/listMethods``,
``…/allowedMethods`` (``{"service": [...]}``) and ``…/getOpenAPI?serviceCode=X``.
A service the caller may not call is ``UNKNOWN_SERVICE`` to it, as one that does not exist.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from bus.config.access import allowed_operations
from bus.config.provider import ProviderService
from bus.errors import NotFoundError
from bus.gateway.runtime import Runtime
from bus.gateway.xroad.soap import ID_NS, XROAD_NS
from bus.gateway.xroad.wsdl import wsdl_document

__all__ = [
    "REST_METASERVICES",
    "SOAP_METASERVICES",
    "allowed",
    "rest_metaservice",
    "soap_metaservice",
]

SOAP_METASERVICES = frozenset({"listMethods", "allowedMethods", "getWsdl"})
REST_METASERVICES = frozenset({"listMethods", "allowedMethods", "getOpenAPI"})
_PARTS = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode")


def allowed(rt: Runtime, consumer: str) -> dict[str, ProviderService]:
    """serviceCode → provider service, for those ``consumer`` may call."""
    provider = rt.config.provider
    if provider is None:
        return {}
    grants = allowed_operations(rt.config, consumer)
    return {
        code: spec
        for code, spec in provider.services.items()
        if spec.operation in grants.get(spec.service, ())
    }


def _one(rt: Runtime, consumer: str, code: str | None, version: str | None) -> ProviderService:
    spec = allowed(rt, consumer).get(code or "")
    if spec is None or (version and version != spec.version):
        raise NotFoundError("no such service is published to this client", code="UNKNOWN_SERVICE")
    return spec


def wsdl_of(rt: Runtime, code: str, spec: ProviderService, address: str) -> str:
    """The WSDL of one provider service."""
    assert rt.config.provider is not None
    svc = rt.config.services[spec.service]
    return wsdl_document(
        code=code,
        version=spec.version,
        namespace=rt.config.provider.namespace,
        description=spec.description or svc.operations[spec.operation].description,
        model=rt.models[(spec.service, spec.operation)],
        reply_fields=rt.answer_fields.get((spec.service, spec.operation), ()),
        address=address,
    )


def soap_metaservice(
    rt: Runtime, consumer: str, name: str, body: etree._Element, address: str
) -> etree._Element:
    """The body element answering SOAP metaservice ``name``."""
    assert rt.config.provider is not None
    out = etree.Element(f"{{{XROAD_NS}}}{name}Response", nsmap={"xroad": XROAD_NS, "id": ID_NS})
    if name == "getWsdl":
        code = body.findtext(f"{{{XROAD_NS}}}serviceCode")
        version = body.findtext(f"{{{XROAD_NS}}}serviceVersion")
        spec = _one(rt, consumer, code, version)
        assert code is not None
        etree.SubElement(out, f"{{{XROAD_NS}}}serviceCode").text = code
        etree.SubElement(out, f"{{{XROAD_NS}}}wsdl").text = wsdl_of(rt, code, spec, address)
        return out
    member = rt.config.provider.member.split("/")
    for code, spec in allowed(rt, consumer).items():
        el = etree.SubElement(out, f"{{{XROAD_NS}}}service")
        el.set(f"{{{ID_NS}}}objectType", "SERVICE")
        for part, value in zip(_PARTS, member, strict=True):
            etree.SubElement(el, f"{{{ID_NS}}}{part}").text = value
        etree.SubElement(el, f"{{{ID_NS}}}serviceCode").text = code
        etree.SubElement(el, f"{{{ID_NS}}}serviceVersion").text = spec.version
    return out


def rest_metaservice(
    rt: Runtime, consumer: str, name: str, code: str | None, origin: str
) -> dict[str, Any]:
    """The JSON answer of REST metaservice ``name``."""
    provider = rt.config.provider
    assert provider is not None
    if name not in REST_METASERVICES:
        raise NotFoundError("no such metaservice", code="UNKNOWN_SERVICE")
    if name == "getOpenAPI":
        spec = _one(rt, consumer, code, None)
        model = rt.models[(spec.service, spec.operation)]
        return {
            "openapi": "3.0.3",
            "info": {"title": code, "version": spec.version, "description": spec.description},
            "servers": [{"url": f"{origin}/r1/{provider.member}"}],
            "paths": {
                f"/{code}": {
                    "post": {
                        "operationId": code,
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}},
                        },
                        "responses": {"200": {"description": "the canonical answer"}},
                    }
                }
            },
        }
    instance, mclass, member, subsystem = provider.member.split("/")
    services = [
        {
            "object_type": "SERVICE",
            "xroad_instance": instance,
            "member_class": mclass,
            "member_code": member,
            "subsystem_code": subsystem,
            "service_code": c,
            "service_version": spec.version,
            "service_type": "REST",
        }
        for c, spec in allowed(rt, consumer).items()
    ]
    return {"service": services}
