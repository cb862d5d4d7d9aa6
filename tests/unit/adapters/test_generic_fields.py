"""Declared request fields of generic operations: the strict models the gateway validates with."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from adapters.generic.mapping import FieldSpec, request_model

FIELDS: TypeAdapter[dict[str, FieldSpec]] = TypeAdapter(dict[str, FieldSpec])


DECLARED = {
    "enterprise_code": {"required": True, "pattern": r"^[0-9]{10}$"},
    "as_of": {"type": "date"},
    "count": {"type": "integer", "minimum": 1, "maximum": 5},
    "kind": {"enum": ["A", "B"]},
    "flag": {"type": "boolean"},
    "subject": {
        "type": "object",
        "fields": {
            "id_number": {"type": "personal_id", "required": True},
            "full_name": {"type": "full_name"},
            "birth_date": {"type": "partial_date"},
            "sex": {"type": "sex"},
        },
    },
    "tags": {"type": "list", "items": {"max_length": 5}, "max_items": 2},
    "note": {},
}


def model(accountable: bool = False) -> Any:
    return request_model("dkkd-lookup", FIELDS.validate_python(DECLARED), accountable=accountable)


BASE = {"request_id": "req-12345678", "enterprise_code": "0101234567"}


def test_request_model_accepts_and_normalises() -> None:
    got = model().model_validate(
        {
            **BASE,
            "subject": {"id_number": "001090012345", "full_name": "Nguye\u0302\u0303n Văn An"},
            "note": "Ghi chu\u0301",
            "tags": ["x"],
        }
    )
    dumped = got.model_dump(mode="json", exclude_none=True)
    assert dumped["subject"]["full_name"] == "Nguyễn Văn An"
    assert dumped["note"] == "Ghi chú"
    assert model().__name__.startswith("DkkdLookupRequest")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"enterprise_code": 101234567}, "string_type"),
        ({"enterprise_code": "010123456"}, "string_pattern_mismatch"),
        ({"unknown": 1}, "extra_forbidden"),
        ({"as_of": "2024-02-30"}, "INVALID_DATE"),
        ({"as_of": "05/03/2024"}, "INVALID_DATE"),
        ({"count": "3"}, "int_type"),
        ({"count": 9}, "less_than_equal"),
        ({"kind": "C"}, "literal_error"),
        ({"flag": "true"}, "bool_type"),
        ({"subject": {"id_number": "00109001234"}}, "INVALID_ID_NUMBER"),
        ({"subject": {"id_number": "999090012345"}}, "INVALID_ID_PREFIX"),
        ({"subject": {"id_number": "001090012345", "full_name": "Nguyá»…n"}}, "NAME_ENCODING"),
        ({"subject": {"id_number": "001090012345", "birth_date": "1890"}}, "DATE_TOO_OLD"),
        ({"subject": {"id_number": "001090012345", "extra": 1}}, "extra_forbidden"),
        ({"tags": ["a", "b", "c"]}, "too_long"),
        ({"note": "a\u200bb"}, "INVALID_FIELD"),
        ({"note": "x" * 257}, "string_too_long"),
    ],
)
def test_request_model_rejections_carry_their_codes(change: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as exc:
        model().model_validate({**BASE, **change})
    assert exc.value.errors()[0]["type"] == code


def test_accountable_requests_need_officer_and_purpose() -> None:
    with pytest.raises(ValidationError, match="officer_id"):
        model(accountable=True).model_validate(BASE)
    ok = {
        **BASE,
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {"procedure_code": "1.001", "dossier_id": "HS-1"},
    }
    model(accountable=True).model_validate(ok)


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"x": {"type": "integer", "pattern": "a"}}, "only apply to type string"),
        ({"x": {"type": "string", "minimum": 1}}, "only apply to integer and number"),
        ({"x": {"type": "object"}}, "type object needs fields"),
        ({"x": {"type": "list"}}, "type list needs items"),
        ({"x": {"type": "uuid"}}, "Input should be"),
        ({"x": {"type": "object", "fields": {"json": {}}}}, "field name 'json'"),
    ],
)
def test_bad_field_declarations(declared: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FIELDS.validate_python(declared)


@pytest.mark.parametrize("name", ["request_id", "caller", "Model_x", "model_config", "copy"])
def test_reserved_field_names(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        request_model("x", {name: FieldSpec()}, accountable=False)


def test_model_names_differ_when_fields_differ() -> None:
    one = request_model("vss-lookup", {"a": FieldSpec()}, accountable=False)
    two = request_model("vss-lookup", {"b": FieldSpec()}, accountable=False)
    assert one.__name__ != two.__name__


def test_text_is_normalised_before_its_pattern_is_checked() -> None:
    spec = FIELDS.validate_python({"ward": {"pattern": "^Phường [A-ZĐ]", "required": True}})
    checked = request_model("x", spec, accountable=False)
    decomposed = "Phu\u031bo\u031b\u0300ng Đông"  # NFD, as some keyboards send it
    got = checked.model_validate({"request_id": "req-12345678", "ward": decomposed})
    assert got.model_dump()["ward"] == "Phường Đông"
