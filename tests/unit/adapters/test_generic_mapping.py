"""The declarative mapping of the generic kinds: paths, rules, transforms, request models (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from adapters.generic.mapping import (
    MISSING,
    FieldSpec,
    Rules,
    apply_rules,
    canonical_paths,
    get_path,
    parse_path,
    source_problems,
    target_problems,
)
from adapters.generic.shared import (
    AppStatusRule,
    NotFoundRule,
    ServiceMapping,
    answer,
    app_status_error,
    context_values,
    is_not_found,
)
from adapters.generic.transforms import MappingError, jsonable, run_transform
from bus.errors import UpstreamRejected, UpstreamUnavailable

RULES: TypeAdapter[Any] = TypeAdapter(Rules)
FIELDS: TypeAdapter[dict[str, FieldSpec]] = TypeAdapter(dict[str, FieldSpec])


def rules(raw: dict[str, Any]) -> Any:
    return RULES.validate_python(raw)


# --- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("a", ("a",)),
        ("a.b_c.d-e", ("a", "b_c", "d-e")),
        ("data[0].hoTen", ("data", 0, "hoTen")),
        ("m[1][2]", ("m", 1, 2)),
        ("/data/0/ho~1ten/x~0y", ("data", 0, "ho/ten", "x~y")),
    ],
)
def test_paths_parse(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize("text", ["", "a..b", "a b", "a[x]", "1a", "a.[0]", "a;b"])
def test_bad_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a path"):
        parse_path(text)


def test_get_path_treats_absent_none_and_type_clashes_as_missing() -> None:
    data = {"a": {"b": None, "l": [{"x": 1}], "s": "text"}}
    assert get_path(data, ("a", "l", 0, "x")) == 1
    for steps in [("a", "b"), ("a", "z"), ("a", "l", 5), ("a", "l", "x"), ("a", "s", "x")]:
        assert get_path(data, steps) is MISSING


# --- rules ---------------------------------------------------------------------------------


def test_request_rules_build_nested_targets_with_defaults_and_constants() -> None:
    r = rules(
        {
            "Caller.RequestId": "request_id",
            "Caller.UnitCode": {"from": "caller.unit_code", "default": "LGSP"},
            "Caller.Channel": {"const": "LGSP"},
            "Code": "enterprise_code",
            "AsOf": {"from": "as_of", "transform": "format_date:dd/MM/yyyy"},
            "Optional": "not_given",
            "At": "$today",
        }
    )
    canonical = {"request_id": "r-1", "enterprise_code": "0101234567", "as_of": "2024-03-05"}
    context = context_values("c-1", datetime(2026, 1, 4, 20, 0, tzinfo=UTC))
    assert apply_rules(r, canonical, context) == {
        "Caller": {"RequestId": "r-1", "UnitCode": "LGSP", "Channel": "LGSP"},
        "Code": "0101234567",
        "AsOf": "05/03/2024",
        "At": "2026-01-05",  # 20:00 UTC is already the 5th in Vietnam
    }


def test_response_rules_map_values_lists_and_pointers() -> None:
    r = rules(
        {
            "e.status": {"from": "E.Status", "map": {"DANG_HOAT_DONG": "ACTIVE"}},
            "e.founded_on": {"from": "E.FoundedOn", "transform": "parse_date"},
            "e.owners": {
                "from": "E.Owners.Owner",
                "each": {"name": "Name", "share": {"from": "Share", "transform": "number"}},
            },
            "e.single": {"from": "E.One", "each": {"name": "Name"}},
            "e.none": {"from": "E.Nothing", "each": {"name": "Name"}},
            "first_owner": "/E/Owners/Owner/0/Name",
        }
    )
    reply = {
        "E": {
            "Status": "DANG_HOAT_DONG",
            "FoundedOn": date(2001, 2, 3),
            "Owners": {"Owner": [{"Name": "A", "Share": Decimal("60.5")}, {"Name": "B"}]},
            "One": {"Name": "only"},
        }
    }
    assert apply_rules(r, reply, {}) == {
        "e": {
            "status": "ACTIVE",
            "founded_on": "2001-02-03",
            "owners": [{"name": "A", "share": 60.5}, {"name": "B"}],
            "single": [{"name": "only"}],
            "none": [],
        },
        "first_owner": "A",
    }


def test_unlisted_values_and_required_sources_fail_without_echoing_the_value() -> None:
    r = rules({"status": {"from": "S", "map": {"1": "ACTIVE"}}})
    with pytest.raises(MappingError, match="status: a value the mapping does not list") as exc:
        apply_rules(r, {"S": "001090012345"}, {})
    assert "001090012345" not in str(exc.value)
    with_default = rules({"status": {"from": "S", "map": {"1": "A"}, "default": "UNKNOWN"}})
    assert apply_rules(with_default, {"S": "9"}, {}) == {"status": "UNKNOWN"}
    required = rules({"name": {"from": "N", "required": True}})
    with pytest.raises(MappingError, match="name: no value"):
        apply_rules(required, {}, {})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"from": "a", "const": 1}, "exactly one of 'from'"),
        ({}, "exactly one of 'from'"),
        ({"from": "a b"}, "not a path"),
        ({"from": "a", "transform": "eval"}, "unknown transform 'eval'"),
        ({"from": "a", "transform": "format_date:yy-MM"}, "takes one of yyyy-MM-dd"),
        ({"from": "a", "transform": "upper:x"}, "takes no argument"),
        ({"from": "$env"}, "unknown context value"),
        ({"from": "a", "each": {"x": "y"}, "map": {}}, "takes no const, transform or map"),
        ({"from": "a", "lambda": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rules({"x": raw})


def test_rule_checks_name_unknown_sources_and_clashing_targets() -> None:
    fields = FIELDS.validate_python(
        {"code": {}, "owners": {"type": "list", "items": {"type": "object", "fields": {"n": {}}}}}
    )
    known = canonical_paths(fields)
    r = rules(
        {
            "A": "code",
            "B": "caller.unit_code",
            "C": "cod",
            "D": {"from": "owners", "each": {"N": "n", "M": "m"}},
            "E": "$now",
        }
    )
    problems = source_problems(r, known, "request")
    assert problems == [
        "request.C: 'cod' is not a request field (declare it under fields, or use "
        "request_id, caller.*, purpose.*)",
        "request.D.M: 'm' is not a request field (declare it under fields, or use "
        "request_id, caller.*, purpose.*)",
    ]
    clashing = rules({"a": "x", "a.b": "y", "status": "z", "bad-[0]": "w"})
    assert target_problems(clashing, "response", reserved=True) == [
        "response.a: both a value and the parent of other targets",
        "response.status: the bus sets 'status' itself",
        "response.bad-[0]: a target is a dotted name (a.b.c)",
    ]


# --- transforms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ("upper", "Nguyễn văn đức", "NGUYỄN VĂN ĐỨC"),
        ("nfc", "Nguye\u0302\u0303n", "Nguyễn"),
        ("ascii", "Đặng Thị Ánh", "Dang Thi Anh"),
        ("strip", "  a   b ", "a b"),
        ("integer", "0042", 42),
        ("integer", Decimal("12.0"), 12),
        ("number", Decimal("39.50"), 39.5),
        ("number", "1000", 1000),
        ("boolean", "1", True),
        ("boolean", "false", False),
        ("string", True, "true"),
        ("parse_date", "15/03/1990", "1990-03-15"),
        ("parse_date", "00/05/1950", "1950-05"),
        ("parse_date", "19900315", "1990-03-15"),
        ("parse_date", "2001-02-03T10:00:00+07:00", "2001-02-03"),
        ("parse_date", date(2001, 2, 3), "2001-02-03"),
        ("format_date:yyyyMMdd", "1990-03-15", "19900315"),
        ("format_date:dd.MM.yyyy", "1990-03", "03.1990"),
        ("format_date:dd/MM/yyyy", "1990", "1990"),
        ("format_date:yyyy-MM-dd", "1990-03-15", "1990-03-15"),
        ("datetime", "2026-01-05T08:30:00", "2026-01-05T08:30:00+07:00"),
        ("datetime", "2026-01-05T01:30:00+00:00", "2026-01-05T01:30:00+00:00"),
        ("upper", ["a", "b"], ["A", "B"]),
    ],
)
def test_transforms(spec: str, value: Any, expected: Any) -> None:
    assert run_transform(spec, value) == expected


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ("integer", "12a"),
        ("integer", True),
        ("number", "NaN"),
        ("boolean", "maybe"),
        ("parse_date", "31/02/1990"),
        ("parse_date", "03-15-1990"),
        ("format_date:yyyyMMdd", "15/03/1990"),
        ("datetime", "yesterday"),
        ("upper", {"a": 1}),
    ],
)
def test_transform_failures_name_the_target_only(spec: str, value: Any) -> None:
    with pytest.raises(MappingError) as exc:
        run_transform(spec, value, where="subject.birth_date")
    assert str(exc.value).startswith("subject.birth_date: ")
    assert str(value) not in str(exc.value)


def test_jsonable_gives_canonical_json() -> None:
    value = {
        "name": "Nguye\u0302\u0303n",
        "capital": Decimal("5000000000.00"),
        "at": datetime(2026, 1, 5, 8, 30, tzinfo=UTC),
        "day": date(2026, 1, 5),
        "raw": b"\x00\x01",
        "list": (1, None, True),
    }
    assert jsonable(value) == {
        "name": "Nguyễn",
        "capital": "5000000000.00",
        "at": "2026-01-05T08:30:00+00:00",
        "day": "2026-01-05",
        "raw": "AAE=",
        "list": [1, None, True],
    }
    with pytest.raises(MappingError, match="cannot pass on"):
        jsonable({"x": object()})


# --- not found, result codes, answers ----------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "reply", "expected"),
    [
        ({"path": "E", "when": "missing"}, {"DataAsOf": "x"}, True),
        ({"path": "E", "when": "missing"}, {"E": {"A": None}}, False),
        ({"path": "E", "when": "empty"}, {"E": {"A": None, "B": [], "C": ""}}, True),
        ({"path": "data", "when": "empty"}, {"data": []}, True),
        ({"path": "data", "when": "empty"}, {"data": [{"x": 1}]}, False),
        ({"when": "empty"}, None, True),
        ({"path": "found", "when": "equals", "value": False}, {"found": False}, True),
        ({"path": "n", "when": "equals", "value": "0"}, {"n": 0}, True),
        ({"status": [404]}, {}, False),
    ],
)
def test_not_found_rules(rule: dict[str, Any], reply: Any, expected: bool) -> None:
    assert is_not_found(NotFoundRule.model_validate(rule), reply) is expected


def test_not_found_equals_needs_a_value() -> None:
    with pytest.raises(ValidationError, match="'value' goes with when: equals"):
        NotFoundRule.model_validate({"path": "x", "when": "equals"})


def test_app_status_codes() -> None:
    rule = AppStatusRule.model_validate(
        {"path": "code", "ok": ["00"], "not_found": ["01"], "transient": ["99"]}
    )
    assert app_status_error(rule, {"code": "00"}, "VSS") == "ok"
    assert app_status_error(rule, {"code": "01"}, "VSS") == "not_found"
    busy = app_status_error(rule, {"code": 99}, "VSS")
    assert isinstance(busy, UpstreamUnavailable)
    assert busy.detail == {"upstream_code": "99"}
    odd = app_status_error(rule, {"code": "sai mã 001090012345 của Nguyễn An"}, "VSS")
    assert isinstance(odd, UpstreamRejected)
    assert "001090012345" not in odd.message
    assert not odd.detail
    assert isinstance(app_status_error(rule, {}, "VSS"), UpstreamRejected)


def test_answers_carry_status_and_source_and_only_found_data() -> None:
    assert answer(False, "DKDN", {"x": 1}) == {"status": "NOT_FOUND", "source": "DKDN"}
    assert answer(True, "DKDN", {"x": Decimal("1.5")}) == {
        "status": "FOUND",
        "source": "DKDN",
        "x": "1.5",
    }


@pytest.mark.parametrize("name", ["Authorization", "cookie", "Content-Type", "bad header"])
def test_static_headers_never_carry_credentials(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        ServiceMapping.model_validate({"headers": {name: "x"}})
