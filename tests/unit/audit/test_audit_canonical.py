"""The canonical form rendered with orjson is byte for byte the stdlib form it replaced."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import unicodedata
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.audit.chain import AuditEntry, canonical_bytes, canonical_record, record_hash, seal
from bus.store.base import GENESIS_HASH


def stdlib(obj: Any) -> bytes:
    """The canonical form as the module docstring defines it (format v1)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


# Every code point but lone surrogates (not encodable as UTF-8 by either), NFC as stored.
texts = st.text(st.characters(codec="utf-8")).map(lambda t: unicodedata.normalize("NFC", t))
ints = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1]
)
scalars = st.none() | st.booleans() | ints | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
optional_text = st.none() | texts


@st.composite
def entries(draw: st.DrawFn) -> AuditEntry:
    # Typed str → str, but a purpose is whatever the request model let through: nest it.
    purpose: Any = draw(st.dictionaries(texts, values, max_size=5))
    return AuditEntry(
        time_us=draw(ints),
        kind=draw(st.sampled_from(["exchange", "admin"])),
        request_id=draw(optional_text),
        correlation_id=draw(optional_text),
        consumer=draw(optional_text),
        officer=draw(optional_text),
        unit=draw(optional_text),
        service=draw(optional_text),
        operation=draw(optional_text),
        purpose=purpose,
        subject_key=draw(optional_text),
        key_id=draw(optional_text),
        fields=tuple(draw(st.lists(texts, max_size=6))),
        outcome=draw(texts),
        status=draw(ints),
        latency_us=draw(ints),
        action=draw(optional_text),
        actor=draw(optional_text),
        detail=draw(st.dictionaries(texts, values, max_size=5)),
    )


@settings(max_examples=400, deadline=None)
@given(entries(), ints, texts)
def test_records_hash_exactly_as_the_stdlib_form(entry: AuditEntry, seq: int, chain: str) -> None:
    rec = seal(entry, chain=chain, node="lgsp-1", seq=seq, prev_hash=GENESIS_HASH)
    fields = {k: v for k, v in dataclasses.asdict(rec).items() if k != "hash"}
    expected = stdlib({**fields, "v": 1, "fields": list(rec.fields)})
    assert canonical_record(rec) == expected
    assert rec.hash == hashlib.sha256(expected).hexdigest() == record_hash(rec)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(texts, values, max_size=6))
def test_canonical_bytes_match_the_stdlib_form(obj: dict[str, Any]) -> None:
    assert canonical_bytes(obj) == stdlib(obj)


def test_edge_cases_render_as_the_stdlib_does() -> None:
    every_control = "".join(chr(i) for i in range(0x20)) + '"\\/\x7f\u2028\u2029\x85'
    cases: list[dict[str, Any]] = [
        {},
        {"purpose": {}, "fields": [], "detail": {"nested": {"purpose": {"a": [[], {}]}}}},
        {"text": every_control, "vi": "Nguyễn Văn Ân — Đắk Lắk", "emoji": "\U0001f600"},
        {"big": 2**64 - 1, "bigger": 2**64, "huge": 10**40, "neg": -(2**63) - 1},
        {"Z": 1, "a": 2, "é": 3, "\U0001f600": 4, "\uffff": 5, "": 6},  # code point order
        {"deep": json.loads("[" * 300 + "]" * 300)},  # beyond orjson's depth limit
        {"tuple": ("a", 1, None)},
    ]
    for obj in cases:
        assert canonical_bytes(obj) == stdlib(obj), obj


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    ONE = 1


class Tag(str):
    pass


@pytest.mark.parametrize(
    "odd",
    [
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        uuid.UUID(int=1),
        Colour.RED,
        object(),
    ],
)
def test_what_the_stdlib_refuses_is_still_refused(odd: object) -> None:
    """orjson would render these; the canonical form never did, so neither does it now."""
    with pytest.raises(TypeError):
        canonical_bytes({"x": odd})
    with pytest.raises(TypeError):
        canonical_bytes({"x": [odd]})


def test_subclasses_take_the_stdlib_path_and_render_as_before() -> None:
    obj = {"level": Level.ONE, "tag": Tag("t"), "keys": {Tag("k"): 1}}
    assert canonical_bytes(obj) == stdlib(obj)


def test_refusals_are_unchanged() -> None:
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: orjson refuses, so does UTF-8
        canonical_bytes({"x": "\ud800"})
    with pytest.raises(TypeError):
        canonical_bytes({"x": {1: "non-str key"}})
    with pytest.raises(TypeError):
        canonical_bytes({"x": 1.5})
