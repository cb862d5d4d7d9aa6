"""The WSDL of a provider service, generated from its request model; typed body reading.

The input element ``<serviceCode>`` follows the operation's request model (the declared
``fields`` plus ``request_id``, ``caller``, ``purpose``): objects become nested sequences,
arrays repeated elements, strings/integers/numbers/booleans their XSD types; required
fields ``minOccurs="1"`` (not ``request_id``: the ``xroad:id`` header
is it). The output ``<serviceCodeResponse>`` holds ``status``,
``source``, ``request_id``, ``correlation_id`` and the answer fields the composition root
declares (the ``response`` mapping's targets), all optional (field grants may withhold
them) and typed ``xsd:string``. The X-Road headers are not declared in the binding: callers
send them as SOAP headers of their own (zeep: ``_soapheaders``). :func:`coerce` turns the
XML text of a request into the JSON types the model expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

from pydantic import BaseModel

__all__ = ["ENVELOPE_FIELDS", "coerce", "wsdl_document"]

ENVELOPE_FIELDS = ("status", "source", "request_id", "correlation_id")
_XSD = {
    "string": "xsd:string",
    "integer": "xsd:long",
    "number": "xsd:double",
    "boolean": "xsd:boolean",
}


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow ``$ref`` and take the non-null branch of an optional's ``anyOf``."""
    while True:
        if "$ref" in schema:
            schema = defs[str(schema["$ref"]).rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            schema = options[0] if options else {"type": "string"}
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def _elements(schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int = 0) -> str:
    required = set(schema.get("required", ()))
    if depth == 0:
        required.discard("request_id")  # the xroad:id header fills it in
    out = []
    for name, prop in schema.get("properties", {}).items():
        out.append(_element(name, prop, defs, name in required, depth))
    return "".join(out)


def _element(
    name: str, prop: Mapping[str, Any], defs: Mapping[str, Any], required: bool, depth: int
) -> str:
    prop = _resolve(prop, defs)
    occurs = f' minOccurs="{1 if required else 0}"'
    if prop.get("type") == "array":
        occurs = ' minOccurs="0" maxOccurs="unbounded"'
        prop = _resolve(prop.get("items", {}), defs)
    if prop.get("type") == "object" and depth < 8:
        inner = _elements(prop, defs, depth + 1)
        return (
            f'<xsd:element name="{name}"{occurs}><xsd:complexType><xsd:sequence>'
            f"{inner}</xsd:sequence></xsd:complexType></xsd:element>"
        )
    xsd = _XSD.get(str(prop.get("type")), "xsd:string")
    return f'<xsd:element name="{name}" type="{xsd}"{occurs}/>'


def _tree(paths: Iterable[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
    return tree


def _reply_elements(tree: Mapping[str, Any]) -> str:
    out = []
    for name, sub in tree.items():
        if sub:
            out.append(
                f'<xsd:element name="{name}" minOccurs="0"><xsd:complexType><xsd:sequence>'
                f"{_reply_elements(sub)}</xsd:sequence></xsd:complexType></xsd:element>"
            )
        else:
            out.append(f'<xsd:element name="{name}" type="xsd:string" minOccurs="0"/>')
    return "".join(out)


def wsdl_document(
    *,
    code: str,
    version: str,
    namespace: str,
    description: str,
    model: type[BaseModel],
    reply_fields: Iterable[str],
    address: str,
) -> str:
    """A WSDL 1.1 document (document/literal, SOAP 1.1) of one provider service."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    request = _elements(schema, defs)
    reply = _reply_elements(_tree([*ENVELOPE_FIELDS, *reply_fields]))
    ns = quoteattr(namespace)
    doc = _escape(description)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
  xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns={ns} targetNamespace={ns}
  name="{code}">
 <wsdl:types>
  <xsd:schema targetNamespace={ns} elementFormDefault="qualified">
   <xsd:element name="{code}"><xsd:complexType><xsd:sequence>{request}</xsd:sequence>
   </xsd:complexType></xsd:element>
   <xsd:element name="{code}Response"><xsd:complexType><xsd:sequence>{reply}</xsd:sequence>
   </xsd:complexType></xsd:element>
  </xsd:schema>
 </wsdl:types>
 <wsdl:message name="{code}"><wsdl:part name="body" element="tns:{code}"/></wsdl:message>
 <wsdl:message name="{code}Response">
  <wsdl:part name="body" element="tns:{code}Response"/></wsdl:message>
 <wsdl:portType name="{code}PortType">
  <wsdl:operation name="{code}"><wsdl:documentation>{doc}</wsdl:documentation>
   <wsdl:input message="tns:{code}"/><wsdl:output message="tns:{code}Response"/>
  </wsdl:operation>
 </wsdl:portType>
 <wsdl:binding name="{code}Binding" type="tns:{code}PortType">
  <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
  <wsdl:operation name="{code}"><soap:operation soapAction=""/>
   <wsdl:input><soap:body use="literal"/></wsdl:input>
   <wsdl:output><soap:body use="literal"/></wsdl:output>
  </wsdl:operation>
 </wsdl:binding>
 <wsdl:service name="{code}Service">
  <wsdl:documentation>version {_escape(version)}</wsdl:documentation>
  <wsdl:port name="{code}Port" binding="tns:{code}Binding">
   <soap:address location={quoteattr(address)}/></wsdl:port>
 </wsdl:service>
</wsdl:definitions>
"""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def coerce(value: Any, schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    """XML text (and nested mappings/lists of it) as the JSON types ``schema`` asks for; a
    value that does not convert is left as text, for the model to refuse with its code."""
    schema = _resolve(schema, defs)
    kind = schema.get("type")
    if kind == "array":
        items = value if isinstance(value, list) else [value]
        return [coerce(v, schema.get("items", {}), defs) for v in items]
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: coerce(v, props[k], defs) if k in props else v for k, v in value.items()}
    if not isinstance(value, str):
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value in ("true", "false", "1", "0"):
        return value in ("true", "1")
    return value
