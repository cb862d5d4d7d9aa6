"""Hardened XML parsing: no DTDs, no entities, no network, bounded size and depth (core).

Every side uses it: the SOAP adapters for upstream replies (through
:mod:`adapters.common.xmlsafe`, errors become :class:`~bus.errors.UpstreamBadResponse`),
the simulators and the gateway's X-Road SOAP ingress for incoming requests (errors become
SOAP faults). A document with a DOCTYPE or an ENTITY
declaration is refused *before* lxml sees it, so XXE file reads, external DTD fetches and
entity-expansion bombs ("billion laughs") never start; the lxml parser is configured so
that even a declaration slipping past the scan could not be acted upon.
"""

from __future__ import annotations

import re

from lxml import etree

__all__ = ["DEFAULT_MAX_BYTES", "MalformedXml", "UnsafeXml", "XmlRejected", "parse_xml"]

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
