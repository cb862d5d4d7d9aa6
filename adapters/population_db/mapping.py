"""Canonical ⇄ C06 mapping (DOMAIN.md §2.1, §5): pure functions over plain dicts.

The C06 side is the dict shape zeep reads and writes (``HoVaTen``, ``NgayThangNamSinh`` …).
Upstream values that cannot be understood raise :class:`~bus.errors.UpstreamBadResponse`
with a message that never repeats the value.

Privacy decision: a lookup whose record disagrees with what was asked (name, birth date,
sex or ID) answers ``MISMATCH`` — never the record — so guessing an ID does not disclose
whose it is. Which field disagreed is not said either (it would confirm a birth date in
≤ 366 guesses) unless the service sets ``options.reveal_mismatch: true``, when the
*names of the disagreeing fields* are listed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from adapters.population_db.models import (
    CitizenField,
    OperationOptions,
    PopulationLookup,
    PopulationVerify,
    ServiceOptions,
    Subject,
)
from bus.errors import UpstreamBadResponse
from bus.validation import IdType, normalise_name_for_compare, partial_date_parts

__all__ = [
    "ADMIN_SCHEME",
    "SOURCE",
    "birth_for_c06",
    "citizen_from_c06",
    "date_from_c06",
    "lookup_reply",
    "mismatches",
    "name_for_c06",
    "select_fields",
    "sex_from_c06",
    "to_c06",
    "verify_reply",
]

SOURCE = "C06"
ADMIN_SCHEME = "GSO_2025"
"""C06 returns two-level codes (province + ward) of the 2025 scheme."""
_VN_TZ = timezone(timedelta(hours=7))
_D_MAP = str.maketrans({"đ": "d", "Đ": "D"})

# Canonical field → key of the citizen dict.
_FIELD_KEYS = {
    CitizenField.PERSONAL_ID: "personal_id",
    CitizenField.OLD_ID: "old_id",
    CitizenField.NAME: "name",
    CitizenField.BIRTH_DATE: "birth_date",
    CitizenField.SEX: "sex",
    CitizenField.ETHNICITY: "ethnicity_code",
    CitizenField.FATHER: "father",
    CitizenField.MOTHER: "mother",
    CitizenField.PERMANENT_ADDRESS: "permanent_address",
    CitizenField.CURRENT_ADDRESS: "current_address",
    CitizenField.HOMETOWN: "hometown",
}


# --- canonical → C06 -----------------------------------------------------------------------


def name_for_c06(full_name: str, form: str = "upper") -> str:
    """``HoVaTen`` as C06 wants it: upper-case; ``upper_ascii`` also drops diacritics."""
    if form == "upper_ascii":
        decomposed = unicodedata.normalize("NFD", full_name.translate(_D_MAP))
        full_name = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", full_name.upper())


def birth_for_c06(birth_date: str) -> dict[str, str]:
    """``NgayThangNamSinh``: ``NgayThangNam`` (yyyyMMdd) for a full date, else ``Nam`` (yyyy).

    C06 has no year-month form, so ``YYYY-MM`` is sent as the year alone.
    """
    year, month, day = partial_date_parts(birth_date)
    if month is not None and day is not None:
        return {"NgayThangNam": f"{year:04d}{month:02d}{day:02d}"}
    return {"Nam": f"{year:04d}"}


def to_c06(
    request: PopulationLookup | PopulationVerify,
    options: ServiceOptions,
    op_options: OperationOptions,
) -> dict[str, Any]:
    """The C06 request body (zeep keyword arguments) for a canonical request."""
    subject = request.subject
    body: dict[str, Any] = {
        "MaYeuCau": request.request_id,
        "MaDVC": options.ma_dvc,
        "MaTichHop": op_options.ma_tich_hop or options.ma_tich_hop,
        "MaCanBo": request.caller.officer_id,
        "MaDonVi": request.caller.unit_code or options.ma_don_vi,
        "TaiKhoan": request.caller.officer_account,
    }
    id_key = "SoCMND" if subject.id_type == IdType.CMND9 else "SoDinhDanh"
    body[id_key] = subject.id_number
    body["HoVaTen"] = name_for_c06(subject.full_name, options.name_form)
    body["NgayThangNamSinh"] = birth_for_c06(subject.birth_date)
    return {k: v for k, v in body.items() if v is not None}


# --- C06 → canonical -----------------------------------------------------------------------

_C06_DATE = re.compile(r"([0-9]{4})([0-9]{2})?([0-9]{2})?")


def date_from_c06(node: Mapping[str, Any] | None) -> str | None:
    """``NgayThangNamSinh`` → partial ISO date; ``00`` month/day mean "unknown"."""
    if not node:
        return None
    raw = node.get("NgayThangNam") or node.get("Nam")
    if raw is None:
        return None
    m = _C06_DATE.fullmatch(str(raw).strip())
    if m is None:
        raise UpstreamBadResponse("upstream sent a birth date in an unknown format")
    year, month, day = m.groups()
    if month is None or month == "00":
        return year
    if day is None or day == "00":
        return f"{year}-{month}"
    return f"{year}-{month}-{day}"


def sex_from_c06(value: Any) -> str | None:
    """``GioiTinh`` (``1`` Nam / ``2`` Nữ, or the words) → ``M``/``F``; unknown → None."""
    if value is None:
        return None
    text = normalise_name_for_compare(str(value), accent_insensitive=True)
    if text in ("1", "nam", "m", "male"):
        return "M"
    if text in ("2", "nu", "f", "female"):
        return "F"
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    return text or None


def _name(node: Mapping[str, Any] | None) -> dict[str, str | None] | None:
    if not node:
        return None
    parts = {
        k: _text(node.get(src))
        for k, src in (("family", "Ho"), ("middle", "ChuDem"), ("given", "Ten"))
    }
    full = " ".join(p for p in parts.values() if p)
    if not full:
        return None
    return {**parts, "full": full}


def _relative(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not node:
        return None
    name = _name(node.get("HoVaTen"))
    out = {
        "personal_id": _text(node.get("SoDinhDanh")),
        "full_name": name["full"] if name else None,
        "nationality": _text(node.get("QuocTich")),
    }
    return out if any(out.values()) else None


def _address(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not node:
        return None
    out = {
        "province_code": _text(node.get("MaTinhThanh")),
        "ward_code": _text(node.get("MaPhuongXa")),
        "detail": _text(node.get("ChiTiet")),
    }
    if not any(out.values()):
        return None
    return {"admin_scheme": ADMIN_SCHEME, **out}


def citizen_from_c06(node: Mapping[str, Any]) -> dict[str, Any]:
    """One ``CongDan`` → the canonical citizen (every field; see :func:`select_fields`)."""
    return {
        "personal_id": _text(node.get("SoDinhDanh")),
        "old_id": _text(node.get("SoCMND")),
        "name": _name(node.get("HoVaTen")),
        "birth_date": date_from_c06(node.get("NgayThangNamSinh")),
        "sex": sex_from_c06(node.get("GioiTinh")),
        "ethnicity_code": _text(node.get("DanToc")),
        "father": _relative(node.get("Cha")),
        "mother": _relative(node.get("Me")),
        "permanent_address": _address(node.get("ThuongTru")),
        "current_address": _address(node.get("NoiOHienTai")),
        "hometown": _address(node.get("QueQuan")),
    }


def select_fields(citizen: Mapping[str, Any], fields: Sequence[CitizenField]) -> dict[str, Any]:
    """Only the asked-for parts of a citizen (data minimisation)."""
    return {_FIELD_KEYS[f]: citizen.get(_FIELD_KEYS[f]) for f in fields}


def _dates_agree(asked: str, record: str | None) -> bool:
    if record is None:
        return False
    a, r = partial_date_parts(asked), partial_date_parts(record)
    # Compare at the precision both sides have: "1990" agrees with "1990-05-01".
    return all(x == y for x, y in zip(a, r, strict=True) if x is not None and y is not None)


def mismatches(
    subject: Subject, citizen: Mapping[str, Any], *, accent_insensitive: bool = False
) -> list[str]:
    """Which of the subject's fields the record disagrees with (empty: it matches)."""
    out: list[str] = []
    id_key = "old_id" if subject.id_type == IdType.CMND9 else "personal_id"
    if citizen.get(id_key) != subject.id_number:
        out.append("id_number")
    name = citizen.get("name") or {}
    asked = normalise_name_for_compare(subject.full_name, accent_insensitive=accent_insensitive)
    found = normalise_name_for_compare(
        name.get("full") or "", accent_insensitive=accent_insensitive
    )
    if asked != found:
        out.append("full_name")
    if not _dates_agree(subject.birth_date, citizen.get("birth_date")):
        out.append("birth_date")
    if subject.sex is not None and citizen.get("sex") not in (None, subject.sex):
        out.append("sex")
    return out


def _data_as_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        # C06 times are Vietnam time; a naive value is read as UTC+7 and so labelled.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_VN_TZ)
        return aware.isoformat()
    return _text(value)


def _records(reply: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # "Not found" is an empty <CongDan/> (zeep gives None) or no CongDan at all.
    found = reply.get("CongDan") or []
    if isinstance(found, Mapping):
        found = [found]
    return [r for r in found if r and any(v is not None for v in r.values())]


def lookup_reply(
    request: PopulationLookup,
    reply: Mapping[str, Any],
    *,
    accent_insensitive: bool = False,
    reveal_mismatch: bool = False,
) -> dict[str, Any]:
    """The canonical lookup response for a ``CongdanCollection``; a ``MISMATCH`` names the
    disagreeing fields only with ``reveal_mismatch`` (``options.reveal_mismatch``)."""
    out: dict[str, Any] = {
        "request_id": request.request_id,
        "status": "NOT_FOUND",
        "source": SOURCE,
        "data_as_of": _data_as_of(reply.get("ThoiDiemDuLieu")),
    }
    records = [citizen_from_c06(r) for r in _records(reply)]
    if not records:
        return out
    id_key = "old_id" if request.subject.id_type == IdType.CMND9 else "personal_id"
    citizen = next((c for c in records if c[id_key] == request.subject.id_number), records[0])
    wrong = mismatches(request.subject, citizen, accent_insensitive=accent_insensitive)
    if wrong:
        out["status"] = "MISMATCH"
        if reveal_mismatch:
            out["mismatch"] = wrong
        return out
    out.update(status="FOUND", citizen=select_fields(citizen, request.fields))
    return out


def verify_reply(request: PopulationVerify, reply: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical verify response for a ``KetQuaXacThucResponse``."""
    exists = reply.get("TonTai")
    if not isinstance(exists, bool):
        raise UpstreamBadResponse("upstream verify reply has no TonTai boolean")
    return {
        "request_id": request.request_id,
        "status": "FOUND" if exists else "NOT_FOUND",
        "verified": exists,
        "source": SOURCE,
    }
