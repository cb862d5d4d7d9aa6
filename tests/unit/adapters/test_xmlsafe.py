"""Hostile XML is refused before anything is resolved, read or expanded."""

from __future__ import annotations

import pytest

from adapters.common.xmlsafe import (
    MalformedXml,
    UnsafeXml,
    parse_upstream,
    parse_xml,
    zeep_settings,
)
from bus.errors import UpstreamBadResponse

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<r>&x;</r>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol4;</lolz>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">
<r/>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x"> %p;]><r/>"""

LOWERCASE_DOCTYPE = b"<?xml version='1.0'?><!doctype r><r/>"
SPACED = b"<?xml version='1.0'?><! DOCTYPE r><r/>"


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (XXE_FILE, "DOCTYPE"),
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_DTD, "DOCTYPE"),
        (PARAMETER_ENTITY, "DOCTYPE"),
        (LOWERCASE_DOCTYPE, "DOCTYPE"),
        (SPACED, "DOCTYPE"),
        (b"<r><!ENTITY x 'y'></r>", "ENTITY"),
    ],
)
def test_declarations_are_refused_before_parsing(payload: bytes, what: str) -> None:
    with pytest.raises(UnsafeXml, match=what):
        parse_xml(payload)


def test_utf16_cannot_hide_a_doctype() -> None:
    payload = XXE_FILE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    with pytest.raises(UnsafeXml, match="not UTF-8"):
        parse_xml(payload.encode("utf-16"))


def test_size_limit() -> None:
    with pytest.raises(UnsafeXml, match="over 100 bytes"):
        parse_xml(b"<r>" + b"x" * 200 + b"</r>", max_bytes=100)


def test_deep_nesting_is_refused_without_huge_tree() -> None:
    deep = b"<a>" * 300 + b"</a>" * 300  # libxml2's limit without XML_PARSE_HUGE is 256
    with pytest.raises(MalformedXml):
        parse_xml(deep)


def test_malformed() -> None:
    with pytest.raises(MalformedXml, match="malformed XML"):
        parse_xml(b"<soap:Envelope><unclosed>")


def test_plain_documents_parse_without_comments_or_pis() -> None:
    root = parse_xml(
        "<?xml version='1.0' encoding='UTF-8'?><r><!-- c --><?pi x?><n>Nguyễn</n></r>".encode()
    )
    assert [child.tag for child in root] == ["n"]
    assert root[0].text == "Nguyễn"


@pytest.mark.parametrize("payload", [XXE_FILE, BILLION_LAUGHS, EXTERNAL_DTD, b"<a><b></a>"])
def test_upstream_replies_map_to_bad_response(payload: bytes) -> None:
    with pytest.raises(UpstreamBadResponse) as info:
        parse_upstream(payload)
    assert info.value.code == "UPSTREAM_BAD_RESPONSE"
    assert "unacceptable XML" in info.value.message
    assert "passwd" not in info.value.message


def test_zeep_settings_forbid_everything_risky() -> None:
    settings = zeep_settings()
    assert settings.strict is True
    assert settings.xml_huge_tree is False
    assert settings.forbid_dtd is True
    assert settings.forbid_entities is True
    assert settings.forbid_external is True
