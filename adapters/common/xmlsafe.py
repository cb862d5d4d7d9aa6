"""Hardened XML parsing for SOAP: no DTDs, no entities, no network, bounded size and depth.

Both sides use it: the C06 adapter for upstream replies (errors become
:class:`~bus.errors.UpstreamBadResponse` via :func:`parse_upstream`) and the simulator for
incoming requests (errors become SOAP faults). A document with a DOCTYPE or an ENTITY
declaration is refused *before* lxml sees it, so XXE file reads, external DTD fetches and
entity-expansion bombs ("billion laughs") never start; the lxml parser is configured so
that even a declaration slipping past the scan could not be acted upon.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from bus.errors import UpstreamBadResponse

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MalformedXml",
    "UnsafeXml",
    "XmlRejected",
    "parse_upstream",
    "parse_xml",
    "zeep_settings",
]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""Largest document parsed when the caller gives no limit."""

_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class XmlRejected(ValueError):
    """A document we will not parse; ``str(exc)`` is safe to log (no document content)."""


class UnsafeXml(XmlRejected):
    """DOCTYPE/ENTITY declarations, a non-UTF-8 encoding, or over the size limit."""


class MalformedXml(XmlRejected):
    """Not well-formed XML."""


def _parser() -> etree.XMLParser:
    # A fresh parser per document: lxml parsers must not be shared between threads, and
    # building one costs microseconds next to the parse itself.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,  # keeps libxml2's depth and text-size limits
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """Parse an untrusted document and return its root element ."""
    if len(data) > max_bytes:
        raise UnsafeXml(f"XML document is over {max_bytes} bytes")
    if b"\x00" in data:
        # UTF-16/32 would hide "<!DOCTYPE" from the byte scan below; SOAP here is UTF-8.
        raise UnsafeXml("XML document is not UTF-8 (NUL bytes)")
    match = _DECLARATION.search(data)
    if match is not None:
        kind = match.group(1).decode("ascii").upper()
        raise UnsafeXml(f"XML document carries a {kind} declaration (refused: XXE/entity risk)")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        # lxml's message names a line/column and the problem, never document text.
        raise MalformedXml(f"malformed XML: {exc.msg}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXml("XML document carries a DOCTYPE (refused)")
    return root


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
