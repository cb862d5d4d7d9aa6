"""The field filter's shortcuts for consumers without field grants give exactly what the
general walk gives: the same body, the same returned and withheld paths."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.config import ConsumerConfig, OperationConfig, ServiceConfig
from bus.config.access import sensitive_name
from bus.gateway.privacy import FieldFilter

KEYS = st.sampled_from(
    [
        "status",
        "persons",
        "full_name",
        "ethnicity",
        "ethnicity_code",
        "religion",
        "religions",
        "religion_",
        "ethnic",
        "x",
        "address",
        "verified",
    ]
)
replies = st.dictionaries(
    KEYS,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=3),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=25,
    ),
    max_size=6,
)
SENSITIVE = st.lists(st.sampled_from(["ethnicity", "religion", "x", "a.b", "full"]), max_size=3)


def service_with(sensitive: list[str]) -> ServiceConfig:
    ops = {"lookup": OperationConfig()}
    return ServiceConfig(adapter="rest", upstream="u", operations=ops, sensitive_fields=sensitive)


def general(ff: FieldFilter, body: dict[str, Any]) -> tuple[Any, list[str], list[str]]:
    """The walk every consumer took before the shortcuts."""
    returned: set[str] = set()
    withheld: set[str] = set()
    out = ff._object(body, "", returned, withheld)
    return out, sorted(returned), sorted(withheld)


@settings(max_examples=300, deadline=None)
@given(replies, SENSITIVE, SENSITIVE)
def test_shortcuts_match_the_general_walk(
    body: dict[str, Any], sensitive: list[str], granted: list[str]
) -> None:
    service = service_with(sensitive)
    consumer = ConsumerConfig(sensitive={"svc": granted})
    for who in (consumer, None):
        ff = FieldFilter(who, "svc", service)
        got = ff.apply(body)
        assert (got.body, got.returned, got.withheld) == general(ff, body)


@given(st.text(max_size=12), st.lists(st.text(max_size=6), min_size=1, max_size=3))
def test_the_blocked_match_is_sensitive_name(key: str, names: list[str]) -> None:
    service = service_with(names)
    ff = FieldFilter(None, "svc", service)
    assert (ff._is_blocked(key) is not None) == (sensitive_name(key, names) is not None)
