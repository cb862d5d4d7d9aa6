"""Pure tests of the civil-status kind: dates, canonical models, MOJ mapping, config checks."""

from __future__ import annotations

import calendar
import unicodedata
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import adapters.civil_status as civil_status
from adapters.base import AdapterKind
from adapters.civil_status import KIND, CivilStatusLookup, RecordType
from adapters.civil_status.adapter import CivilStatusOptions, scrub_reason
from adapters.civil_status.data import sample_record
from adapters.civil_status.mapping import (
    MojFormatError,
    admin_scheme_for,
    lookup_result,
    query_from_params,
    query_params,
    record_from_moj,
    record_to_moj,
)
from adapters.civil_status.models import AdminScheme, LookupStatus, Role, Sex
from adapters.common.dates import (
    MojDateError,
    MojDateStyle,
    PartialDate,
    from_moj,
    to_moj,
    today_vn,
)
from bus.config import ServiceConfig
from bus.errors import InvalidRequest

BASE: dict[str, Any] = {"request_id": "01HZX3K9V6Q7T8R2M4N5P6Q7R8"}


def lookup(**fields: Any) -> CivilStatusLookup:
    return CivilStatusLookup.model_validate(BASE | fields)


def error_codes(fields: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        CivilStatusLookup.model_validate(BASE | fields)
    return {str(err["type"]) for err in info.value.errors()}


@st.composite
def partial_dates(
    draw: st.DrawFn, low: date = date(1900, 1, 1), high: date = date(2100, 12, 31)
) -> str:
    day = draw(st.dates(min_value=low, max_value=high))
    precision = draw(st.sampled_from((1, 2, 3)))
    return day.isoformat()[: {1: 4, 2: 7, 3: 10}[precision]]


# --- dates -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1990", "1990-05", "1990-05-31", "2000-02-29"])
def test_partial_iso_dates_parse_and_print_back(text: str) -> None:
    assert PartialDate.parse_iso(text).iso() == text


@pytest.mark.parametrize(
    "text", ["90", "1990-5", "1990-05-1", "1990-13", "2021-02-29", "1990-04-31", "１９９０", ""]
)
def test_malformed_or_impossible_iso_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"date|range|month|day"):
        PartialDate.parse_iso(text)


@pytest.mark.parametrize(
    ("iso", "style", "moj"),
    [
        ("1990-05-07", MojDateStyle.SLASH, "07/05/1990"),
        ("1990-05-07", MojDateStyle.COMPACT, "19900507"),
        ("1990-05-07", MojDateStyle.DOTTED, "07.05.1990"),
        ("1990-05", MojDateStyle.SLASH, "05/1990"),
        ("1990-05", MojDateStyle.COMPACT, "199005"),
        ("1990", MojDateStyle.DOTTED, "1990"),
    ],
)
def test_to_moj_spells_each_style(iso: str, style: MojDateStyle, moj: str) -> None:
    assert to_moj(iso, style) == moj
    assert from_moj(moj) == iso


@pytest.mark.parametrize(
    ("moj", "iso"),
    [
        ("00/00/1950", "1950"),
        ("00/05/1950", "1950-05"),
        ("7/5/1990", "1990-05-07"),
        (" 07/05/1990 ", "1990-05-07"),
        ("07/05/1990 08:30:00", "1990-05-07"),
        ("19900000", "1990"),
        ("", None),
        (None, None),
    ],
)
def test_from_moj_reads_what_old_registers_hold(moj: str | None, iso: str | None) -> None:
    assert from_moj(moj) == iso


@pytest.mark.parametrize("moj", ["31/02/1990", "07/13/1990", "07-05-1990", "May 1990", "07/05/90"])
def test_from_moj_refuses_garbage_without_quoting_it(moj: str) -> None:
    with pytest.raises(MojDateError) as info:
        from_moj(moj, "nksNgaySinh")
    assert "nksNgaySinh" in str(info.value)
    assert moj not in str(info.value)


@given(partial_dates(), st.sampled_from(list(MojDateStyle)))
def test_dates_round_trip_through_every_moj_style(iso: str, style: MojDateStyle) -> None:
    assert from_moj(to_moj(iso, style)) == iso


@given(partial_dates())
def test_partial_date_bounds_contain_each_other(iso: str) -> None:
    parsed = PartialDate.parse_iso(iso)
    assert parsed.earliest() <= parsed.latest()
    assert parsed.earliest().isoformat().startswith(iso)
    assert parsed.latest().isoformat().startswith(iso)


# --- canonical request ---------------------------------------------------------------


def test_lookup_by_registration_and_by_person_validate() -> None:
    reg = lookup(
        record_type="BIRTH",
        by_registration={"authority_code": "00001", "number": "12", "registration_date": "2020"},
    )
    assert reg.by_registration is not None
    assert reg.by_registration.book is None
    person = lookup(record_type="DEATH", by_person={"id_number": "001190000001"})
    assert person.record_type is RecordType.DEATH


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"record_type": "BIRTH"}, "INVALID_QUERY"),
        (
            {
                "record_type": "BIRTH",
                "by_registration": {"authority_code": "00001", "number": "1"},
                "by_person": {"id_number": "001190000001"},
            },
            "INVALID_QUERY",
        ),
        (
            {"record_type": "DIVORCE", "by_person": {"id_number": "001190000001"}},
            "INVALID_RECORD_TYPE",
        ),
        (
            {"record_type": "birth", "by_person": {"id_number": "001190000001"}},
            "INVALID_RECORD_TYPE",
        ),
        (
            {"record_type": ["BIRTH"], "by_person": {"id_number": "001190000001"}},
            "INVALID_RECORD_TYPE",
        ),
    ],
)
def test_query_shape_errors_have_codes(fields: dict[str, Any], code: str) -> None:
    assert code in error_codes(fields)


@pytest.mark.parametrize(
    "value", ["2021-02-31", "1899-12-31", "1990-1-5", "90", "07/05/1990", "2990-01-01"]
)
def test_bad_dates_are_invalid_date(value: str) -> None:
    person = {"id_number": "001190000001", "birth_date": value}
    assert error_codes({"record_type": "BIRTH", "by_person": person}) == {"INVALID_DATE"}


def test_tomorrow_is_in_the_future_but_this_month_is_not() -> None:
    tomorrow = (today_vn() + timedelta(days=1)).isoformat()
    person = {"id_number": "001190000001", "birth_date": tomorrow}
    assert error_codes({"record_type": "BIRTH", "by_person": person}) == {"INVALID_DATE"}
    this_month = today_vn().isoformat()[:7]
    born_now = f"0012{this_month[2:4]}000001"  # century digit 2 (2000s), the year's digits
    lookup(record_type="BIRTH", by_person={"id_number": born_now, "birth_date": this_month})


@pytest.mark.parametrize(
    "value",
    [
        "00119000000",
        "0011900000012",
        "００１１９００００００１",
        "001 190 000 001",
        "001-19000001",
        "",
    ],
)
def test_id_numbers_are_12_or_9_ascii_digits(value: str) -> None:
    fields = {"record_type": "BIRTH", "by_person": {"id_number": value}}
    assert error_codes(fields) == {"INVALID_ID_NUMBER"}


@pytest.mark.parametrize(
    "value",
    ["", "Nguyễn An2", "Nguyễn\u200bAn", "Nguyễn 😀", "A" * 101],
)
def test_bad_names_are_invalid_name(value: str) -> None:
    fields = {"record_type": "BIRTH", "by_person": {"id_number": "123456789", "full_name": value}}
    assert error_codes(fields) == {"INVALID_NAME"}


def test_names_are_normalised_to_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Ánh")
    req = lookup(record_type="BIRTH", by_person={"id_number": "123456789", "full_name": nfd})
    assert req.by_person is not None
    assert req.by_person.full_name == unicodedata.normalize("NFC", "Nguyễn Thị Ánh")


@pytest.mark.parametrize("number", ["", "12 3", "số1", "x" * 33])
def test_registration_codes_are_short_ascii(number: str) -> None:
    fields = {"record_type": "BIRTH", "by_registration": {"authority_code": "1", "number": number}}
    assert error_codes(fields) == {"INVALID_REGISTRATION"}


def test_unknown_fields_are_refused() -> None:
    fields = {"record_type": "BIRTH", "by_person": {"id_number": "123456789", "sex": "M"}}
    assert error_codes(fields) == {"extra_forbidden"}


# --- query mapping ---------------------------------------------------------------------


def test_query_params_by_registration() -> None:
    req = lookup(
        record_type="MARRIAGE",
        by_registration={
            "authority_code": "00001",
            "number": "12",
            "book": "01/2020",
            "registration_date": "2020-03-04",
        },
    )
    assert query_params(req) == {
        "noiDangKy": "00001",
        "so": "12",
        "quyenSo": "01/2020",
        "ngayDangKy": "04/03/2020",
    }
    assert query_params(req, MojDateStyle.DOTTED)["ngayDangKy"] == "04.03.2020"


def test_query_params_by_person_leave_out_what_is_not_given() -> None:
    req = lookup(record_type="BIRTH", by_person={"id_number": "001190000001", "birth_date": "1990"})
    assert query_params(req) == {"soDinhDanh": "001190000001", "ngaySinh": "1990"}


@given(
    st.sampled_from(list(RecordType)),
    st.booleans(),
    partial_dates(high=date(2025, 12, 31)),
    st.sampled_from(list(MojDateStyle)),
)
def test_queries_round_trip(
    record_type: RecordType, by_person: bool, day: str, style: MojDateStyle
) -> None:
    query: dict[str, Any]
    if by_person:
        query = {
            "by_person": {"id_number": "079090000123", "full_name": "Lê Văn Tám", "birth_date": day}
        }
    else:
        query = {
            "by_registration": {
                "authority_code": "26734",
                "number": "15",
                "book": "02",
                "registration_date": day,
            }
        }
    req = lookup(record_type=record_type.value, **query)
    assert query_from_params(query_params(req, style)) == query


# --- record mapping --------------------------------------------------------------------

BIRTH_RECORD: dict[str, Any] = {
    "so": "125",
    "quyenSo": "01/2019",
    "trangSo": "25",
    "ngayDangKy": "15/03/2019",
    "loaiDangKy": 1,
    "noiDangKy": "00001",
    "nguoiKy": "Trần  Văn Bình",
    "chucVuNguoiKy": "Chủ tịch UBND",
    "nksHoTen": unicodedata.normalize("NFD", "Nguyễn Ngọc Ánh"),
    "nksGioiTinh": "2",
    "nksNgaySinh": "01/03/2019",
    "nksNgaySinhBangChu": "Ngày một tháng ba năm hai nghìn không trăm mười chín",
    "nksDanToc": "01",
    "nksQuocTich": "VN",
    "nksSoDinhDanh": "001319000123",
    "meHoTen": "Lê Thị Hoa",
    "meNgaySinh": "1990",
    "meSoGiayToTuyThan": "001190000456",
    "meNoiCuTru": "Số 5 Lê Lợi",
    "chaHoTen": "",
    "chaSoGiayToTuyThan": "",
    "nycHoTen": "Lê Thị Hoa",
    "nycSoGiayToTuyThan": "001190000456",
}


def test_birth_record_maps_to_canonical() -> None:
    result = record_from_moj(RecordType.BIRTH, BIRTH_RECORD)
    assert result.status is LookupStatus.FOUND
    reg = result.registration
    assert reg is not None
    assert (reg.number, reg.book, reg.page, reg.date) == ("125", "01/2019", "25", "2019-03-15")
    assert (reg.type_code, reg.authority_code, reg.admin_scheme) == (
        1,
        "00001",
        AdminScheme.GSO_PRE2025,
    )
    assert reg.signer_name == "Trần Văn Bình"
    roles = [p.role for p in result.persons]
    assert roles == [Role.SUBJECT, Role.MOTHER, Role.REQUESTER]  # the unknown father is left out
    child, mother = result.persons[0], result.persons[1]
    assert child.full_name == unicodedata.normalize("NFC", "Nguyễn Ngọc Ánh")
    assert (child.sex, child.birth_date, child.personal_id) == (Sex.F, "2019-03-01", "001319000123")
    assert (mother.sex, mother.birth_date, mother.residence) == (Sex.F, "1990", "Số 5 Lê Lợi")
    assert result.death is None
    assert result.marriage is None
    assert result.foreign_registration is None


def test_marriage_and_death_records_map_their_own_parts() -> None:
    marriage = record_from_moj(
        RecordType.MARRIAGE,
        {
            "so": "3",
            "ngayDangKy": "20200101",
            "chongHoTen": "Phạm Văn Nam",
            "chongSoGiayToTuyThan": "123456789",
            "voHoTen": "Đỗ Thị Lan",
            "ngayXacLapQuanHeHonNhan": "01.01.2020",
            "tinhTrangKetHon": 1,
            "huyKetHon": "1",
            "soDangKyNuocNgoai": "A-77",
            "qgNuocNgoaiDaDangKy": "JP",
        },
    )
    assert [p.role for p in marriage.persons] == [Role.HUSBAND, Role.WIFE]
    assert marriage.marriage is not None
    assert (marriage.marriage.established_on, marriage.marriage.status) == ("2020-01-01", "1")
    assert marriage.marriage.annulled
    assert marriage.foreign_registration is not None
    assert marriage.foreign_registration.country == "JP"
    death = record_from_moj(
        RecordType.DEATH,
        {
            "so": "9",
            "nktHoTen": "Hồ Văn Út",
            "nktGioiTinh": 1,
            "nktNgayChet": "02/01/2021",
            "nktGioPhutChet": "7 giờ 5 phút",
            "nktNoiChet": "Tại nhà",
            "nktNguyenNhanChet": "Bệnh già",
            "gbtLoai": "1",
            "gbtSo": "12/GBT",
            "gbtNgay": "03/01/2021",
        },
    )
    assert death.death is not None
    assert death.death.notice is not None
    assert (death.death.date, death.death.time) == ("2021-01-02", "07:05")
    assert (death.death.notice.type, death.death.notice.date) == (1, "2021-01-03")
    assert death.persons[0].role is Role.DECEASED
    assert death.persons[0].sex is Sex.M


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ngayDangKy", "31/02/2019"),
        ("nksNgaySinh", "yesterday"),
        ("loaiDangKy", "một"),
        ("so", ["1"]),
        ("nksHoTen", True),
        ("nktGioPhutChet", "25:00"),
    ],
)
def test_unreadable_fields_name_the_field_not_the_value(field: str, value: Any) -> None:
    # A person is mapped only when named, so every record here names its subject.
    record_type = RecordType.DEATH if field.startswith("nkt") else RecordType.BIRTH
    rec = {"nksHoTen": "Lê An", "nktHoTen": "Lê Bình", field: value}
    with pytest.raises(MojFormatError) as info:
        record_from_moj(record_type, rec)
    assert field in str(info.value)
    assert str(value) not in str(info.value)


@pytest.mark.parametrize("record_type", list(RecordType))
@pytest.mark.parametrize("style", list(MojDateStyle))
def test_canonical_records_round_trip_through_moj(
    record_type: RecordType, style: MojDateStyle
) -> None:
    for index in range(0, 400, 7):
        canonical = record_from_moj(record_type, sample_record(3, record_type, index))
        again = record_from_moj(record_type, record_to_moj(canonical, style))
        assert again == canonical


@given(partial_dates(), partial_dates(), st.sampled_from(list(MojDateStyle)))
def test_record_dates_round_trip(registered: str, died: str, style: MojDateStyle) -> None:
    base = record_from_moj(RecordType.DEATH, sample_record(0, RecordType.DEATH, 1))
    assert base.registration is not None
    assert base.death is not None
    canonical = base.model_copy(
        update={
            "registration": base.registration.model_copy(update={"date": registered}),
            "death": base.death.model_copy(update={"date": died}),
        }
    )
    # admin_scheme is derived from the date, so compare the date-driven fields only.
    again = record_from_moj(RecordType.DEATH, record_to_moj(canonical, style))
    assert again.registration is not None
    assert again.death is not None
    assert (again.registration.date, again.death.date) == (registered, died)


def test_lookup_result_not_found_and_latest_of_several() -> None:
    empty = lookup_result(RecordType.BIRTH, [], "MOJ_TEST")
    assert (empty.status, empty.match_count, empty.persons, empty.data_source) == (
        LookupStatus.NOT_FOUND,
        0,
        [],
        "MOJ_TEST",
    )
    older = BIRTH_RECORD | {"so": "1", "ngayDangKy": "2019"}
    newer = BIRTH_RECORD | {"so": "2", "ngayDangKy": "02/01/2019", "loaiDangKy": 3}
    found = lookup_result(RecordType.BIRTH, [newer, older], "MOJ_TEST")
    assert found.registration is not None
    assert (found.registration.number, found.match_count) == ("2", 2)


@pytest.mark.parametrize(
    ("code", "day", "scheme"),
    [
        ("001", "2026-01-01", AdminScheme.GSO_PRE2025),
        ("00001", "2025-06-30", AdminScheme.GSO_PRE2025),
        ("02269", "2025-07-01", AdminScheme.GSO_2025),
        ("02269", "2025-07", AdminScheme.GSO_2025),
        ("02269", "2025", None),
        ("02269", None, None),
        (None, "2020-01-01", None),
    ],
)
def test_admin_scheme_follows_code_shape_and_cutover(
    code: str | None, day: str | None, scheme: AdminScheme | None
) -> None:
    assert admin_scheme_for(code, day) is scheme


# --- adapter helpers and kind ------------------------------------------------------------


def test_scrub_reason_masks_ids_dates_and_the_queried_name() -> None:
    req = lookup(
        record_type="BIRTH",
        by_person={"id_number": "001190000001", "full_name": "Nguyễn Văn An"},
    )
    reason = "Công dân NGUYỄN VĂN AN (001190000001, sinh 01/02/1990) không khớp\x00"
    scrubbed = scrub_reason(reason, req)
    assert "001190000001" not in scrubbed
    assert "1990" not in scrubbed
    assert "NGUYỄN" not in scrubbed
    assert "AN" not in scrubbed.split()
    assert "\x00" not in scrubbed
    assert scrub_reason(None, req) == "no reason given"
    assert len(scrub_reason("x" * 1000, req)) == 200


def service(**overrides: Any) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {"adapter": "civil_status", "upstream": "moj", "operations": {"lookup": {}}} | overrides
    )


def test_kind_accepts_the_default_service() -> None:
    kind: AdapterKind = KIND
    assert kind.name == "civil_status"
    assert kind.check("civil-status", service()) == []
    assert kind.request_model(service(), "lookup") is CivilStatusLookup
    opts = {"paths": {"BIRTH": "/moj/v2/khaisinh"}, "date_style": "dd.MM.yyyy"}
    assert kind.check("civil-status", service(options=opts)) == []
    parsed = CivilStatusOptions.model_validate(opts)
    assert parsed.path_for(RecordType.BIRTH) == "/moj/v2/khaisinh"
    assert parsed.path_for(RecordType.DEATH) == "api/hotich/khaitu"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"operations": {"lookup": {}, "push": {}}}, "operations.push"),
        ({"operations": {"lookup": {"options": {"x": 1}}}}, "operations.lookup.options"),
        ({"operations": {"lookup": {"timeout_s": 0.1}}}, "timeout_s"),
        ({"options": {"paths": {"BIRTH": "https://evil.example/x"}}}, "options.paths"),
        ({"options": {"paths": {"BIRTH": "api/../admin"}}}, "options.paths"),
        ({"options": {"paths": {"DIVORCE": "api/x"}}}, "options.paths"),
        ({"options": {"date_style": "MM/dd/yyyy"}}, "options.date_style"),
        ({"options": {"retries": 3}}, "options.retries"),
    ],
)
def test_kind_reports_config_problems(overrides: dict[str, Any], fragment: str) -> None:
    problems = KIND.check("civil-status", service(**overrides))
    assert any(fragment in p for p in problems), problems


def test_request_model_refuses_unknown_operations() -> None:
    with pytest.raises(InvalidRequest) as info:
        KIND.request_model(service(), "push")
    assert info.value.code == "UNKNOWN_OPERATION"


def test_public_api() -> None:
    assert set(civil_status.__all__) == {
        "KIND",
        "CivilStatusAdapter",
        "CivilStatusKind",
        "CivilStatusLookup",
        "CivilStatusLookupResult",
        "CivilStatusOptions",
        "RecordType",
    }
    assert all(hasattr(civil_status, name) for name in civil_status.__all__)


def test_leap_days_are_dates() -> None:
    assert calendar.isleap(2000)
    lookup(record_type="BIRTH", by_person={"id_number": "001100000001", "birth_date": "2000-02-29"})


@pytest.mark.parametrize("value", [" Nguyễn An", "Nguyễn  An", "Nguyễn An "])
def test_names_are_space_normalised_like_every_service(value: str) -> None:
    person = {"id_number": "001190000001", "full_name": value}
    parsed = lookup(record_type="BIRTH", by_person=person)
    assert parsed.by_person is not None
    assert parsed.by_person.full_name == "Nguyễn An"
