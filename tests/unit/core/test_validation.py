"""Shared validators (bus.validation): every DOMAIN.md §6 case 1–6 has its error code."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from adapters.population_db.models import PopulationLookup
from bus import validation as v
from bus.canonical import Purpose
from bus.validation import (
    FullName,
    OldId,
    PartialDate,
    PersonalId,
    check_full_name,
    check_id_against_birth,
    check_partial_date,
    mask_id,
    normalise_name_for_compare,
)


def code_of(fn: Any, *args: Any, **kwargs: Any) -> str | None:
    """The error code ``fn`` raises, or None if it accepts."""
    try:
        fn(*args, **kwargs)
    except PydanticCustomError as exc:
        return exc.type
    return None


class Person(BaseModel):
    personal_id: PersonalId | None = None
    old_id: OldId | None = None
    name: FullName | None = None
    born: PartialDate | None = None


# --- §6.1 ID shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "00109001234",  # 11 digits
        "0010900123456",  # 13 digits
        "００１０９００１２３４５",  # full-width digits: rejected, not converted
        "001 090012345",  # space
        "001-090-012345",  # dashes
        " 001090012345",  # leading space: not stripped
        "00109001234a",
        "٠٠١٠٩٠٠١٢٣٤٥",  # Arabic-Indic digits (\\d would accept them)
        "",
    ],
)
def test_cccd_must_be_12_ascii_digits(value: str) -> None:
    assert code_of(v.check_personal_id, value) == "INVALID_ID_NUMBER"


@pytest.mark.parametrize("value", ["12345678", "1234567890", "１２３４５６７８９", "123 45678"])
def test_cmnd_must_be_9_ascii_digits(value: str) -> None:
    assert code_of(v.check_old_id, value) == "INVALID_ID_NUMBER"
    assert code_of(v.check_old_id, "123456789") is None


def test_annotated_types_report_the_code_through_pydantic() -> None:
    with pytest.raises(ValidationError) as info:
        Person(personal_id="001 090012345")
    assert info.value.errors()[0]["type"] == "INVALID_ID_NUMBER"
    assert "001 090012345" not in str(info.value.errors(include_input=False))


# --- §6.3 prefix -------------------------------------------------------------------------


def test_historical_province_list_has_63_codes() -> None:
    assert len(v.PROVINCE_CODES_HISTORICAL) == 63
    assert {"001", "079", "096"} <= v.PROVINCE_CODES_HISTORICAL
    assert len(v.PROVINCE_CODES_2025) == 34


@pytest.mark.parametrize("prefix", ["000", "003", "005", "097", "099", "100", "296", "999"])
def test_unknown_prefix_is_rejected(prefix: str) -> None:
    assert code_of(v.check_personal_id, prefix + "090012345") == "INVALID_ID_PREFIX"


@pytest.mark.parametrize("prefix", ["001", "079", "096", "101", "175", "295"])
def test_province_and_abroad_prefixes_are_accepted(prefix: str) -> None:
    # 101–295 are the country codes for births registered abroad.
    assert code_of(v.check_personal_id, prefix + "090012345") is None


# --- §6.2 cross-checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_number", "birth", "sex"),
    [
        ("001090012345", "1990-03-04", "M"),  # 0: 1900s male
        ("001190012345", "1990", "F"),  # 1: 1900s female
        ("001205012345", "2005-01", "M"),  # 2: 2000s male
        ("001305012345", "2005-12-31", "F"),  # 3: 2000s female
        ("001090012345", "1990", None),  # sex not supplied: not checked
    ],
)
def test_id_consistent_with_birth_and_sex(id_number: str, birth: str, sex: str | None) -> None:
    assert code_of(check_id_against_birth, id_number, birth, sex) is None


@pytest.mark.parametrize(
    ("id_number", "birth"),
    [
        ("001090012345", "1991-03-04"),  # year digits differ
        ("001290012345", "1990-03-04"),  # century digit says 2090
        ("001005012345", "2005"),  # century digit says 1905
        ("001490012345", "1990"),  # 2190
    ],
)
def test_id_birth_mismatch(id_number: str, birth: str) -> None:
    assert code_of(check_id_against_birth, id_number, birth) == "ID_BIRTH_MISMATCH"


def test_id_sex_mismatch() -> None:
    assert code_of(check_id_against_birth, "001090012345", "1990", "F") == "ID_SEX_MISMATCH"
    assert code_of(check_id_against_birth, "001305012345", "2005", "M") == "ID_SEX_MISMATCH"


def _lookup(**subject: Any) -> dict[str, Any]:
    base = {"id_type": "CCCD12", "id_number": "001090012345", "full_name": "Nguyễn Văn An"}
    return {
        "request_id": "req-00000001",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {"procedure_code": "1.0001", "dossier_id": "HS-1"},
        "subject": {**base, "birth_date": "1990-03-04", **subject},
    }


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ({"birth_date": "1991"}, "ID_BIRTH_MISMATCH"),
        ({"sex": "F"}, "ID_SEX_MISMATCH"),
        ({"id_number": "003090012345"}, "INVALID_ID_PREFIX"),
        ({"id_type": "CMND9", "id_number": "001090012345"}, "INVALID_ID_NUMBER"),
        ({"birth_date": "04/03/1990"}, "INVALID_DATE"),
        ({"full_name": "Nguyá»…n Văn An"}, "NAME_ENCODING"),
    ],
)
def test_subject_model_reports_each_code(subject: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as info:
        PopulationLookup.model_validate(_lookup(**subject))
    assert [e["type"] for e in info.value.errors()] == [code]


def test_cmnd_subject_skips_cccd_cross_checks() -> None:
    model = PopulationLookup.model_validate(
        _lookup(id_type="CMND9", id_number="123456789", birth_date="1970")
    )
    assert model.subject.id_number == "123456789"


# --- §6.4 dates --------------------------------------------------------------------------

TODAY = date(2025, 7, 15)


@pytest.mark.parametrize(
    "value", ["1990", "1990-02", "2024-02-29", "1900", "2025-07-15", "2025-07"]
)
def test_partial_dates_accepted(value: str) -> None:
    assert check_partial_date(value, today=TODAY) == value


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("1990-02-31", "INVALID_DATE"),  # 31/02
        ("2023-02-29", "INVALID_DATE"),  # not a leap year
        ("1990-13", "INVALID_DATE"),
        ("1990-00-10", "INVALID_DATE"),
        ("90", "INVALID_DATE"),  # 2-digit year
        ("90-03-04", "INVALID_DATE"),
        ("04/03/1990", "INVALID_DATE"),  # dd/MM/yyyy
        ("03/04", "INVALID_DATE"),  # MM/dd
        ("19900304", "INVALID_DATE"),  # compact: adapters convert, callers don't send it
        ("1990-3-4", "INVALID_DATE"),
        ("１９９０", "INVALID_DATE"),
        ("2025-07-16", "DATE_IN_FUTURE"),
        ("2025-08", "DATE_IN_FUTURE"),
        ("2026", "DATE_IN_FUTURE"),
        ("1899-12-31", "DATE_TOO_OLD"),
        ("1899", "DATE_TOO_OLD"),
    ],
)
def test_bad_dates(value: str, code: str) -> None:
    assert code_of(check_partial_date, value, today=TODAY) == code


def test_today_is_vietnam_time() -> None:
    # At 23:30 UTC it is already tomorrow in Hà Nội; a birth "today" there is valid.
    assert v.today_vn() == datetime.now(timezone(timedelta(hours=7))).date()


# --- §6.5 names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Nguyễn Văn An", "Nguyễn Văn An"),
        ("Nguye\u0302\u0303n Thi\u0323 Ha\u0300", "Nguyễn Thị Hà"),  # NFD in → NFC out
        ("  Trần   Thị  Bích ", "Trần Thị Bích"),
        ("H'Hen Niê", "H'Hen Niê"),  # Ê Đê name with an apostrophe
        ("Y Moan Ênuôl", "Y Moan Ênuôl"),
        ("Đỗ Đức Hoà", "Đỗ Đức Hoà"),
        ("Lê-Nguyễn Minh Thư", "Lê-Nguyễn Minh Thư"),
        ("A" * 100, "A" * 100),
    ],
)
def test_names_accepted_and_normalised(value: str, expected: str) -> None:
    assert check_full_name(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "A" * 101,
        "Nguyễn Văn 2",
        "Nguyễn Văn ２",
        "Nguyễn\u200bVăn",  # zero-width space
        "Nguyễn\u200dVăn",  # zero-width joiner
        "Nguyễn\tVăn",
        "Nguyễn\nVăn",
        "Nguyễn\u00a0Văn",  # no-break space
        "Nguyễn Văn 😀",
        "Nguyễn ♥ Văn",
        "<b>Nguyễn</b>",
        "Nguyễn &amp; Văn",
        "Nguyễn Văn An; DROP",
        "Nguyễn Vаn",  # Cyrillic а: mixed scripts
        "Иван Петров",  # Cyrillic only
        "阮文安",  # Han only
        "Ştefan",  # Latin, but not a Vietnamese letter
        "'Nguyễn",
        "Nguyễn-",
        "Nguyễn V.",
        "Nguye\u0301\u0301n",  # stray combining mark left after NFC
    ],
)
def test_invalid_names(value: str) -> None:
    assert code_of(check_full_name, value) == "INVALID_NAME"


@pytest.mark.parametrize(
    "value",
    [
        "Nguyá»…n Văn An",  # UTF-8 read as cp1252
        "Nguyá»…n",
        "Tráº§n Thá»‹ HÃ ",
        "Äá»— Äá»©c",  # Đỗ Đức mojibake
        "NguyÔn V¨n An",  # TCVN3 (ABC)
        "TrÇn ThÞ Hµ",  # TCVN3
        "Lª Thu",  # TCVN3 ê
        "§ç §øc",  # TCVN3 Đỗ Đức
        "Nguyeãn Vaên An",  # VNI
        "Hoaøng Thò",  # VNI
        "Nguyễn Müller",  # foreign Latin-1 letters are VNI artefacts far more often
    ],
)
def test_mojibake_and_legacy_encodings(value: str) -> None:
    assert code_of(check_full_name, value) == "NAME_ENCODING"


def test_name_model_field_reports_code() -> None:
    with pytest.raises(ValidationError) as info:
        Person(name="Nguyá»…n")
    assert info.value.errors()[0]["type"] == "NAME_ENCODING"
    assert Person(name="Nguye\u0302\u0303n").name == "Nguyễn"


def test_compare_form() -> None:
    assert normalise_name_for_compare("  NGUYỄN  văn   An ") == "nguyễn văn an"
    assert normalise_name_for_compare("Nguye\u0302\u0303n") == normalise_name_for_compare("NGUYỄN")
    assert normalise_name_for_compare("H’Hen") == normalise_name_for_compare("H'HEN")
    assert normalise_name_for_compare("Đỗ Đức") != "do duc"
    assert normalise_name_for_compare("Đỗ Đức", accent_insensitive=True) == "do duc"
    assert normalise_name_for_compare("ĐẶNG THỊ ẤN", accent_insensitive=True) == "dang thi an"


# --- masking and canonical ---------------------------------------------------------------


def test_mask_id() -> None:
    assert mask_id("001234567845") == "001*******45"
    assert mask_id("123456789") == "123****89"
    assert mask_id("1234") == "****"


def test_consent_needs_a_reference() -> None:
    with pytest.raises(ValidationError) as info:
        Purpose(legal_basis="CONSENT")
    assert info.value.errors()[0]["type"] == "CONSENT_REF_REQUIRED"
    assert Purpose(legal_basis="CONSENT", consent_ref="VNeID-123").consent_ref


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"caller": {}}, "OFFICER_REQUIRED"),
        ({"purpose": {"procedure_code": "1.0001"}}, "PURPOSE_REQUIRED"),
    ],
)
def test_population_requests_are_accountable(change: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as info:
        PopulationLookup.model_validate({**_lookup(), **change})
    assert info.value.errors()[0]["type"] == code
