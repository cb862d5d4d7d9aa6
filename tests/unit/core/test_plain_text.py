"""Free-text fields refuse control, invisible and line-separator characters — the fast path
(``str.isprintable``) decides exactly as the per-character category check."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from bus.canonical import _INVISIBLE, _plain_text


def refused_by_category(value: str) -> bool:
    return any(unicodedata.category(ch) in _INVISIBLE for ch in value)


def refused(value: str) -> bool:
    try:
        _plain_text(value)
    except PydanticCustomError as exc:
        return exc.type == "INVALID_TEXT"
    return False


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=24))
def test_refuses_exactly_what_the_categories_refuse(value: str) -> None:
    assert refused(value) == refused_by_category(value)


@pytest.mark.parametrize(
    ("value", "is_refused"),
    [
        ("Nguyễn Thị Minh Khai", False),
        ("Lê\u00a0Văn Tám", False),  # a no-break space (Zs) is not printable but allowed
        ("Trần\u200bHưng", True),  # zero-width space (Cf)
        ("line\u2028break", True),  # line separator (Zl)
        ("tab\there", True),  # control (Cc)
        ("\ue000private", True),  # private use (Co)
    ],
)
def test_known_characters(value: str, is_refused: bool) -> None:
    assert refused(value) is is_refused
