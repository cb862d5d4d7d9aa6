"""X-Road message protocol 4.0 over SOAP 1.1: read a request, write an answer or a fault.

Reading goes through :func:`bus.xmlsafe.parse_xml` (no DTD, no entities, size-bounded),
then checks the envelope is SOAP 1.1 (a SOAP 1.2 envelope is ``INVALID_SOAP``), reads the
X-Road headers (``client``, ``service``, ``id``, ``userId``, ``protocolVersion`` 4.0,
``issue``) and takes the body's one element. Every refusal is a :class:`~bus.errors.BusError`
with a bus code; :func:`fault` turns it into a SOAP Fault whose ``faultcode`` is the
X-Road-style one of :data:`FAULT_CODES` (``detail/faultDetail`` names the bus code), never
a stack trace.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from bus.errors import BusError, InvalidRequest
from bus.xmlsafe import UnsafeXml, XmlRejected, parse_xml

__all__ = [
    "FAULT_CODES",
    "ID_NS",
    "SOAP11_NS",
    "SOAP12_NS",
    "XROAD_NS",
    "XRoadMessage",
    "answer",
    "element",
    "fault",
    "parse_message",
    "read_element",
]

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
ID_NS = "http://x-road.eu/xsd/identifiers"
PROTOCOL_VERSION = "4.0"

FAULT_CODES: Mapping[str, str] = {
    "INVALID_SOAP": "Client.InvalidSoap",
    "UNSAFE_XML": "Client.InvalidSoap",
    "PAYLOAD_TOO_LARGE": "Client.InvalidSoap",
    "UNSUPPORTED_MEDIA_TYPE": "Client.InvalidContentType",
    "MISSING_XROAD_HEADER": "Client.MissingHeaderField",
    "INVALID_XROAD_HEADER": "Client.InvalidHeaderField",
    "XROAD_IDENTITY_MISMATCH": "Client.InvalidHeaderField",
    "INVALID_PROTOCOL_VERSION": "Client.InvalidProtocolVersion",
    "UNKNOWN_SERVICE": "Server.ServerProxy.UnknownService",
    "UNKNOWN_OPERATION": "Server.ServerProxy.UnknownService",
    "XROAD_UNTRUSTED_PEER": "Server.ServerProxy.AccessDenied",
    "XROAD_CLIENT_UNKNOWN": "Server.ServerProxy.AccessDenied",
    "FORBIDDEN_OPERATION": "Server.ServerProxy.AccessDenied",
}
"""Bus code → X-Road-style faultcode; other request errors (4xx) are
``Client.InvalidRequest``, everything else ``Server.ServerProxy.ServiceFailed``."""

_CLIENT_PARTS = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode")


def _invalid(message: str, code: str = "INVALID_SOAP") -> InvalidRequest:
    return InvalidRequest(message, code=code)


@dataclass(frozen=True, slots=True)
class XRoadMessage:
    """One X-Road SOAP request, checked for form."""

    client: str
    """``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``."""
    provider: str
    """The service header's ``INSTANCE/CLASS/MEMBER/SUBSYSTEM``."""
    service_code: str
    service_version: str | None
    message_id: str
    user_id: str | None
    body: etree._Element
    headers: tuple[etree._Element, ...]
    """The X-Road header elements as received (echoed on the answer)."""


def _text(parent: etree._Element, ns: str, name: str) -> str | None:
    found = parent.find(f"{{{ns}}}{name}")
    if found is None:
        return None
    return (found.text or "").strip()


def _identifier(header: etree._Element, what: str, parts: Sequence[str]) -> list[str]:
    values = []
    for name in parts:
        value = _text(header, ID_NS, name)
        if value is None:
            if name == "subsystemCode" and what == "client":
                continue
            raise _invalid(f"the {what} header has no id:{name}", "MISSING_XROAD_HEADER")
        if not value or len(value) > 64 or any(c in value for c in "/ \t"):
            raise _invalid(f"id:{name} of the {what} header is malformed", "INVALID_XROAD_HEADER")
        values.append(value)
    return values


def parse_message(raw: bytes, *, max_bytes: int) -> XRoadMessage:
    """Parse and check an X-Road SOAP 1.1 request (``INVALID_SOAP`` & co. if it is not one)."""
    try:
        root = parse_xml(raw, max_bytes=max_bytes)
    except XmlRejected as exc:
        code = "UNSAFE_XML" if isinstance(exc, UnsafeXml) else "INVALID_SOAP"
        raise _invalid(str(exc), code) from None
    if root.tag == f"{{{SOAP12_NS}}}Envelope":
        raise _invalid("SOAP 1.2 envelopes are not accepted: X-Road 4.0 is SOAP 1.1")
    if root.tag != f"{{{SOAP11_NS}}}Envelope":
        raise _invalid("not a SOAP 1.1 Envelope (wrong element or namespace)")
    header = root.find(f"{{{SOAP11_NS}}}Header")
    body = root.find(f"{{{SOAP11_NS}}}Body")
    if header is None:
        raise _invalid("the envelope has no X-Road headers", "MISSING_XROAD_HEADER")
    if body is None or len(body) != 1:
        raise _invalid("the SOAP Body must hold exactly one element")
    version = _text(header, XROAD_NS, "protocolVersion")
    if version is None:
        raise _invalid("xroad:protocolVersion is missing", "MISSING_XROAD_HEADER")
    if version != PROTOCOL_VERSION:
        raise _invalid("xroad:protocolVersion must be 4.0", "INVALID_PROTOCOL_VERSION")
    client_el = header.find(f"{{{XROAD_NS}}}client")
    service_el = header.find(f"{{{XROAD_NS}}}service")
    message_id = _text(header, XROAD_NS, "id")
    if client_el is None or service_el is None or not message_id:
        raise _invalid(
            "xroad:client, xroad:service and xroad:id are required", "MISSING_XROAD_HEADER"
        )
    client = _identifier(client_el, "client", _CLIENT_PARTS)
    service = _identifier(service_el, "service", (*_CLIENT_PARTS, "serviceCode"))
    user = _text(header, XROAD_NS, "userId")
    kept = tuple(
        el for el in header if isinstance(el.tag, str) and el.tag.startswith(f"{{{XROAD_NS}}}")
    )
    return XRoadMessage(
        client="/".join(client),
        provider="/".join(service[:4]),
        service_code=service[4],
        service_version=_text(service_el, ID_NS, "serviceVersion") or None,
        message_id=message_id,
        user_id=user or None,
        body=body[0],
        headers=tuple(el for el in kept if etree.QName(el).localname != "requestHash"),
    )


def read_element(el: etree._Element, ns: str) -> dict[str, Any]:
    """A body element's children as a JSON-like mapping (repeated names → lists; leaves →
    text); every element must be in ``ns`` (``INVALID_SOAP`` otherwise)."""
    out: dict[str, Any] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace != ns:
            raise _invalid(f"element {qname.localname} is not in the service's namespace")
        value: Any = read_element(child, ns) if len(child) else (child.text or "")
        name = qname.localname
        if name in out:
            previous = out[name]
            out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[name] = value
    return out


def element(tag: str, value: Any) -> etree._Element:
    """``value`` (a JSON-like answer) as an element; lists become repeated siblings."""
    el = etree.Element(tag)
    _fill(el, tag.partition("}")[0] + "}" if tag.startswith("{") else "", value)
    return el


def _fill(el: etree._Element, prefix: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            for one in item if isinstance(item, list) else [item]:
                if one is None:
                    continue
                child = etree.SubElement(el, f"{prefix}{key}")
                _fill(child, prefix, one)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = str(value)


def _envelope(headers: Sequence[etree._Element], request_hash: str | None) -> etree._Element:
    nsmap = {"SOAP-ENV": SOAP11_NS, "xroad": XROAD_NS, "id": ID_NS}
    env = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap=nsmap)
    header = etree.SubElement(env, f"{{{SOAP11_NS}}}Header")
    for el in headers:
        header.append(copy.deepcopy(el))
    if request_hash is not None:
        hashed = etree.SubElement(header, f"{{{XROAD_NS}}}requestHash")
        hashed.set("algorithmId", "http://www.w3.org/2001/04/xmlenc#sha512")
        hashed.text = request_hash
    etree.SubElement(env, f"{{{SOAP11_NS}}}Body")
    return env


def answer(
    headers: Sequence[etree._Element], request_hash: str | None, payload: etree._Element
) -> bytes:
    """The answer envelope: the request's X-Road headers echoed, ``requestHash``, ``payload``."""
    env = _envelope(headers, request_hash)
    env[1].append(payload)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def fault_code(exc: BusError) -> str:
    """The X-Road-style faultcode of a bus error."""
    if exc.code in FAULT_CODES:
        return FAULT_CODES[exc.code]
    return "Client.InvalidRequest" if exc.status < 500 else "Server.ServerProxy.ServiceFailed"


def fault(
    exc: BusError, headers: Sequence[etree._Element] = (), request_hash: str | None = None
) -> bytes:
    """A SOAP 1.1 Fault for ``exc`` (its message, never internals), headers echoed."""
    env = _envelope(headers, request_hash)
    el = etree.SubElement(env[1], f"{{{SOAP11_NS}}}Fault")
    etree.SubElement(el, "faultcode").text = fault_code(exc)
    etree.SubElement(el, "faultstring").text = exc.message
    detail = etree.SubElement(el, "detail")
    etree.SubElement(detail, "faultDetail").text = exc.code
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))
