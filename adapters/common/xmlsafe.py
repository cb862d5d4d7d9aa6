"""Hardened XML for the SOAP adapters: :mod:`bus.xmlsafe`'s parser, plus what only upstream
calls need (rejections as :class:`~bus.errors.UpstreamBadResponse`, zeep's settings)."""

from __future__ import annotations

from typing import Any

from lxml import etree

from bus.errors import UpstreamBadResponse
from bus.xmlsafe import DEFAULT_MAX_BYTES, MalformedXml, UnsafeXml, XmlRejected, parse_xml

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MalformedXml",
    "UnsafeXml",
    "XmlRejected",
    "parse_upstream",
    "parse_xml",
    "zeep_settings",
]


def parse_upstream(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """:func:`parse_xml` for an upstream's reply: rejections become ``UpstreamBadResponse``."""
    try:
        return parse_xml(data, max_bytes=max_bytes)
    except XmlRejected as exc:
        raise UpstreamBadResponse(f"upstream sent unacceptable XML: {exc}") from exc


def zeep_settings() -> Any:
    """zeep ``Settings`` for the bus: strict schema, no DTDs/entities/external fetches."""
    from zeep import Settings  # imported lazily: only SOAP adapters need zeep

    return Settings(
        strict=True,
        raw_response=False,
        force_https=False,  # the address comes from routing.yaml, never from the WSDL
        xml_huge_tree=False,
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
