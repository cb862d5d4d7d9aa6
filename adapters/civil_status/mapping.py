"""Canonical ⇄ MOJ civil-status mapping: pure functions, no I/O.

Query: :func:`query_params` turns a :class:`CivilStatusLookup` into the MOJ query string
(``noiDangKy``/``so``/``quyenSo``/``ngayDangKy`` or ``soDinhDanh``/``hoTen``/``ngaySinh``);
:func:`query_from_params` reads it back.

Record: :func:`record_from_moj` turns one MOJ record (``so``, ``quyenSo``, ``nks*``, ``me*``,
``cha*``, ``chong*``, ``vo*``, ``nkt*``, ``gbt*``, ``nyc*`` …) into canonical parts;
:func:`record_to_moj` is its inverse for canonical values; :func:`lookup_result` builds the
answer from the MOJ ``data`` list. Unreadable upstream values raise :class:`MojFormatError`
naming the field, never the value.

MOJ codes taken as given (not in public sources, kept in one place here): ``GioiTinh`` 1 =
male, 2 = female; ``huyKetHon`` 1 = annulled. Persons with neither a name nor an ID (an
unknown father) are left out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from adapters.civil_status.models import (
    AdminScheme,
    CivilStatusLookup,
    CivilStatusLookupResult,
    Death,
    DeathNotice,
    ForeignRegistration,
    LookupStatus,
    Marriage,
    Person,
    RecordType,
    Registration,
    Role,
    Sex,
)
from adapters.common.dates import MojDateError, MojDateStyle, PartialDate, from_moj, to_moj

__all__ = [
    "ADMIN_CUTOVER",
    "DEFAULT_PATHS",
    "PERSON_PREFIXES",
    "MojFormatError",
    "admin_scheme_for",
    "lookup_result",
    "query_from_params",
    "query_params",
    "record_from_moj",
    "record_to_moj",
]

DEFAULT_PATHS: Mapping[RecordType, str] = {
    RecordType.BIRTH: "api/hotich/khaisinh",
    RecordType.MARRIAGE: "api/hotich/kethon",
    RecordType.DEATH: "api/hotich/khaitu",
}
"""MOJ endpoint per record type, relative to the upstream's base URL."""

PERSON_PREFIXES: Mapping[RecordType, tuple[tuple[str, Role], ...]] = {
    RecordType.BIRTH: (
        ("nks", Role.SUBJECT),
        ("me", Role.MOTHER),
        ("cha", Role.FATHER),
        ("nyc", Role.REQUESTER),
    ),
    RecordType.MARRIAGE: (("chong", Role.HUSBAND), ("vo", Role.WIFE)),
    RecordType.DEATH: (("nkt", Role.DECEASED), ("nyc", Role.REQUESTER)),
}
"""MOJ field prefix of each person a record type names, in answer order."""

ADMIN_CUTOVER = date(2025, 7, 1)
"""First day of the two-level administrative codes."""

_SEX_FROM_MOJ = {"1": Sex.M, "2": Sex.F}
_SEX_TO_MOJ = {Sex.M: 1, Sex.F: 2}
# Mothers and fathers are female and male by definition; MOJ records rarely say so.
_SEX_BY_ROLE = {Role.MOTHER: Sex.F, Role.FATHER: Sex.M}
_TIME_RE = re.compile(r"^([0-9]{1,2})\s*(?::|h|g|giờ)\s*([0-9]{1,2})?\s*(?:p|phút)?\Z")


class MojFormatError(ValueError):
    """An upstream record this mapping cannot read (names the field, never the value)."""


def query_params(
    lookup: CivilStatusLookup, style: MojDateStyle = MojDateStyle.SLASH
) -> dict[str, str]:
    """The MOJ query string for ``lookup`` (absent optional parts are left out)."""
    params: dict[str, str] = {}
    if lookup.by_registration is not None:
        reg = lookup.by_registration
        params["noiDangKy"] = reg.authority_code
        params["so"] = reg.number
        if reg.book is not None:
            params["quyenSo"] = reg.book
        if reg.registration_date is not None:
            params["ngayDangKy"] = to_moj(reg.registration_date, style)
    elif lookup.by_person is not None:
        person = lookup.by_person
        params["soDinhDanh"] = person.id_number
        if person.full_name is not None:
            params["hoTen"] = person.full_name
        if person.birth_date is not None:
            params["ngaySinh"] = to_moj(person.birth_date, style)
    return params


def query_from_params(params: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The canonical query part (``by_registration`` or ``by_person``) a MOJ query asks."""
    if "soDinhDanh" in params:
        person = {"id_number": params["soDinhDanh"]}
        _put(person, "full_name", params.get("hoTen"))
        _put(person, "birth_date", from_moj(params.get("ngaySinh"), "ngaySinh"))
        return {"by_person": person}
    reg = {"authority_code": params["noiDangKy"], "number": params["so"]}
    _put(reg, "book", params.get("quyenSo"))
    _put(reg, "registration_date", from_moj(params.get("ngayDangKy"), "ngayDangKy"))
    return {"by_registration": reg}


def _put(target: dict[str, str], key: str, value: str | None) -> None:
    if value is not None:
        target[key] = value


def admin_scheme_for(authority_code: str | None, registered_on: str | None) -> AdminScheme | None:
    """Which code generation an authority code belongs to, if it can be told."""
    if not authority_code:
        return None
    # Districts were abolished on 1 Jul 2025: a 3-digit (district) code is always pre-2025.
    if len(authority_code) == 3 and authority_code.isdigit():
        return AdminScheme.GSO_PRE2025
    if registered_on is None:
        return None
    when = PartialDate.parse_iso(registered_on)
    if when.earliest() >= ADMIN_CUTOVER:
        return AdminScheme.GSO_2025
    if when.latest() < ADMIN_CUTOVER:
        return AdminScheme.GSO_PRE2025
    return None  # a year-only "2025" falls on both sides of the cutover


def lookup_result(
    record_type: RecordType, records: Sequence[Mapping[str, Any]], data_source: str
) -> CivilStatusLookupResult:
    """The canonical answer for the MOJ ``data`` list: the latest registration, or NOT_FOUND."""
    if not records:
        return CivilStatusLookupResult(
            record_type=record_type, status=LookupStatus.NOT_FOUND, data_source=data_source
        )
    mapped = [record_from_moj(record_type, rec, data_source) for rec in records]
    # Re-registrations and remarriages give several rows; the latest one is in force.
    # ISO partial dates sort correctly as strings; unknown dates sort first.
    latest = max(mapped, key=_registration_date)
    return latest.model_copy(update={"match_count": len(mapped)})


def _registration_date(result: CivilStatusLookupResult) -> str:
    return (result.registration.date if result.registration else None) or ""


def record_from_moj(
    record_type: RecordType, rec: Mapping[str, Any], data_source: str = "MOJ_CIVIL_STATUS"
) -> CivilStatusLookupResult:
    """One MOJ record as a FOUND answer."""
    reg_date = _date(rec, "ngayDangKy")
    authority = _text(rec, "noiDangKy")
    registration = Registration(
        number=_text(rec, "so"),
        book=_text(rec, "quyenSo"),
        page=_text(rec, "trangSo"),
        date=reg_date,
        type_code=_int(rec, "loaiDangKy"),
        authority_code=authority,
        admin_scheme=admin_scheme_for(authority, reg_date),
        signer_name=_name(rec, "nguoiKy"),
        signer_title=_text(rec, "chucVuNguoiKy"),
    )
    persons = [
        p
        for prefix, role in PERSON_PREFIXES[record_type]
        if (p := _person(rec, prefix, role)) is not None
    ]
    death = _death(rec) if record_type is RecordType.DEATH else None
    marriage = _marriage(rec) if record_type is RecordType.MARRIAGE else None
    return CivilStatusLookupResult(
        record_type=record_type,
        status=LookupStatus.FOUND,
        registration=registration,
        persons=persons,
        death=death,
        marriage=marriage,
        foreign_registration=_foreign(rec),
        match_count=1,
        data_source=data_source,
    )


def _person(rec: Mapping[str, Any], prefix: str, role: Role) -> Person | None:
    name = _name(rec, prefix + "HoTen")
    pid = _text(rec, prefix + "SoDinhDanh") or _text(rec, prefix + "SoGiayToTuyThan")
    if name is None and pid is None:
        return None
    sex_code = _text(rec, prefix + "GioiTinh")
    sex = _SEX_FROM_MOJ.get(sex_code) if sex_code else _SEX_BY_ROLE.get(role)
    return Person(
        role=role,
        full_name=name,
        birth_date=_date(rec, prefix + "NgaySinh"),
        sex=sex,
        personal_id=pid,
        nationality=_text(rec, prefix + "QuocTich"),
        ethnicity=_text(rec, prefix + "DanToc"),
        residence=_text(rec, prefix + "NoiCuTru"),
    )


def _death(rec: Mapping[str, Any]) -> Death:
    notice: DeathNotice | None = None
    if any(_text(rec, k) for k in ("gbtLoai", "gbtSo", "gbtNgay", "gbtCoQuanCap")):
        notice = DeathNotice(
            type=_int(rec, "gbtLoai"),
            number=_text(rec, "gbtSo"),
            date=_date(rec, "gbtNgay"),
            issuer=_text(rec, "gbtCoQuanCap"),
        )
    return Death(
        date=_date(rec, "nktNgayChet"),
        time=_time(rec, "nktGioPhutChet"),
        place=_text(rec, "nktNoiChet"),
        cause=_text(rec, "nktNguyenNhanChet"),
        notice=notice,
    )


def _marriage(rec: Mapping[str, Any]) -> Marriage:
    return Marriage(
        established_on=_date(rec, "ngayXacLapQuanHeHonNhan"),
        status=_text(rec, "tinhTrangKetHon"),
        annulled=_text(rec, "huyKetHon") == "1",
    )


def _foreign(rec: Mapping[str, Any]) -> ForeignRegistration | None:
    keys = ("soDangKyNuocNgoai", "ngayDangKyNuocNgoai", "cqNuocNgoaiDaDangKy")
    if not any(_text(rec, k) for k in (*keys, "qgNuocNgoaiDaDangKy")):
        return None
    return ForeignRegistration(
        number=_text(rec, keys[0]),
        date=_date(rec, keys[1]),
        authority=_text(rec, keys[2]),
        country=_text(rec, "qgNuocNgoaiDaDangKy"),
    )


def _text(rec: Mapping[str, Any], key: str) -> str | None:
    value = rec.get(key)
    if value is None:
        return None
    # Codes arrive as JSON numbers or strings; a boolean is neither (bool is an int subclass).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise MojFormatError(f"{key}: expected text")
    value = unicodedata.normalize("NFC", value).strip()
    return value or None


def _name(rec: Mapping[str, Any], key: str) -> str | None:
    value = _text(rec, key)
    return None if value is None else " ".join(value.split())


def _int(rec: Mapping[str, Any], key: str) -> int | None:
    value = _text(rec, key)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise MojFormatError(f"{key}: expected a whole number")
    return int(value)


def _date(rec: Mapping[str, Any], key: str) -> str | None:
    try:
        return from_moj(_text(rec, key), key)
    except MojDateError as exc:
        raise MojFormatError(str(exc)) from exc


def _time(rec: Mapping[str, Any], key: str) -> str | None:
    value = _text(rec, key)
    if value is None:
        return None
    match = _TIME_RE.match(value)
    if match is None:
        raise MojFormatError(f"{key}: unrecognised time")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if hour > 23 or minute > 59:
        raise MojFormatError(f"{key}: not a valid time")
    return f"{hour:02d}:{minute:02d}"


def record_to_moj(
    result: CivilStatusLookupResult, style: MojDateStyle = MojDateStyle.SLASH
) -> dict[str, Any]:
    """The MOJ record for a FOUND answer (inverse of :func:`record_from_moj`)."""
    rec: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if value is not None:
            rec[key] = value

    def put_date(key: str, iso: str | None) -> None:
        put(key, None if iso is None else to_moj(iso, style))

    reg = result.registration or Registration()
    put("so", reg.number)
    put("quyenSo", reg.book)
    put("trangSo", reg.page)
    put_date("ngayDangKy", reg.date)
    put("loaiDangKy", reg.type_code)
    put("noiDangKy", reg.authority_code)
    put("nguoiKy", reg.signer_name)
    put("chucVuNguoiKy", reg.signer_title)
    prefixes = {role: prefix for prefix, role in PERSON_PREFIXES[result.record_type]}
    for person in result.persons:
        prefix = prefixes[person.role]
        put(prefix + "HoTen", person.full_name)
        put_date(prefix + "NgaySinh", person.birth_date)
        if person.sex is not None and _SEX_BY_ROLE.get(person.role) is not person.sex:
            put(prefix + "GioiTinh", _SEX_TO_MOJ[person.sex])
        put(prefix + "SoGiayToTuyThan", person.personal_id)
        put(prefix + "QuocTich", person.nationality)
        put(prefix + "DanToc", person.ethnicity)
        put(prefix + "NoiCuTru", person.residence)
    if result.death is not None:
        death = result.death
        put_date("nktNgayChet", death.date)
        put("nktGioPhutChet", death.time)
        put("nktNoiChet", death.place)
        put("nktNguyenNhanChet", death.cause)
        if death.notice is not None:
            put("gbtLoai", death.notice.type)
            put("gbtSo", death.notice.number)
            put_date("gbtNgay", death.notice.date)
            put("gbtCoQuanCap", death.notice.issuer)
    if result.marriage is not None:
        put_date("ngayXacLapQuanHeHonNhan", result.marriage.established_on)
        put("tinhTrangKetHon", result.marriage.status)
        put("huyKetHon", 1 if result.marriage.annulled else 0)
    if result.foreign_registration is not None:
        foreign = result.foreign_registration
        put("soDangKyNuocNgoai", foreign.number)
        put_date("ngayDangKyNuocNgoai", foreign.date)
        put("cqNuocNgoaiDaDangKy", foreign.authority)
        put("qgNuocNgoaiDaDangKy", foreign.country)
    return rec
