"""Deterministic sandbox registrations for the civil-status simulator, as MOJ-shaped records.

How records are derived (the same seed gives the same data on every machine):

* There are ten registration authorities, :data:`AUTHORITIES` (GSO-shaped commune codes
  ``00001`` …, and two district codes ``001``/``760``), each in a province whose code is
  the CCCD prefix of births registered there.
* For every record type (BIRTH, MARRIAGE, DEATH), every authority and every number
  ``n`` in ``1..per_authority`` (default 200) one registration exists: ``so = str(n)``,
  ``quyenSo = "01"`` for numbers 1-50, ``"02"`` for 51-100 …, ``trangSo`` the place in
  the book. So ``noiDangKy=00001&so=1`` exists for every type.
* A record's contents come from its own ``random.Random("civil-status:<seed>:<type>:
  <authority>:<n>")``: changing ``per_authority`` never changes an existing record.
* Sample *index* ``i`` means authority ``AUTHORITIES[i % 10]``, number ``i // 10 + 1``;
  :func:`sample_registration` and :func:`sample_person` give the canonical query parts that
  find it (the person is the newborn, the husband or the deceased).
* Personal IDs are valid by structure (DOMAIN.md §3): historical province prefix, century/
  sex digit and year digits matching the birth date; the last six digits are a bijection
  of the person's serial (type, authority, number, role), so IDs never collide. Some
  parents, spouses and deceased born before 1980 carry a 9-digit CMND instead.
* All dates are on or before :data:`HORIZON` so the data never depends on today's date.

Code values the simulator uses: ``GioiTinh`` 1 = male, 2 = female; ``loaiDangKy`` 1 = on
time, 2 = late; ``*LoaiGiayToTuyThan`` 1 = CMND, 4 = CCCD; ``gbtLoai`` 1 = death notice;
``tinhTrangKetHon`` 1 = in force; ``DanToc`` GSO ethnic codes (01 = Kinh).
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from adapters.civil_status.models import RecordType

__all__ = [
    "AUTHORITIES",
    "DEFAULT_PER_AUTHORITY",
    "HORIZON",
    "MAX_PER_AUTHORITY",
    "PROVINCE_CODES",
    "Dataset",
    "build_dataset",
    "generate_record",
    "sample_person",
    "sample_record",
    "sample_registration",
]

HORIZON = date(2025, 6, 30)
DEFAULT_PER_AUTHORITY = 200
MAX_PER_AUTHORITY = 999

PROVINCE_CODES: tuple[str, ...] = (
    "001", "002", "004", "006", "008", "010", "011", "012", "014", "015", "017", "019",
    "020", "022", "024", "025", "026", "027", "030", "031", "033", "034", "035", "036",
    "037", "038", "040", "042", "044", "045", "046", "048", "049", "051", "052", "054",
    "056", "058", "060", "062", "064", "066", "067", "068", "070", "072", "074", "075",
    "077", "079", "080", "082", "083", "084", "086", "087", "089", "091", "092", "093",
    "094", "095", "096",
)  # fmt: skip
"""The 63 historical province codes that prefix a CCCD (unchanged by the 2025 mergers)."""

AUTHORITIES: tuple[tuple[str, str], ...] = (
    ("00001", "001"),
    ("00004", "001"),
    ("00006", "001"),
    ("001", "001"),
    ("26734", "079"),
    ("26737", "079"),
    ("760", "079"),
    ("20194", "048"),
    ("31117", "092"),
    ("32152", "096"),
)
"""(authority code, province code of births registered there)."""


def _nfc(*words: str) -> tuple[str, ...]:
    return tuple(unicodedata.normalize("NFC", w) for w in words)


_FAMILY = _nfc("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng")
_FAMILY += _nfc("Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý")
# Roughly the published shares: Nguyễn alone is about 38 %.
_FAMILY_WEIGHTS = (38, 11, 9.5, 7, 5, 2, 4.5, 3.9, 3.9, 2.1, 2, 1.4, 1.3, 1.3, 1, 0.5)
_MIDDLE = {
    1: _nfc("Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Xuân", "Gia", "Công", "Đình"),
    2: _nfc("Thị", "Ngọc", "Thu", "Thanh", "Minh", "Bảo", "Khánh", "Hồng", "Phương", "Thùy"),
}
_GIVEN = {
    1: _nfc("An", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng", "Huy")
    + _nfc("Khang", "Khoa", "Long", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quân", "Sơn")
    + _nfc("Thắng", "Trung", "Tuấn", "Việt", "Vinh"),
    2: _nfc("Anh", "Châu", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hoa", "Hương")
    + _nfc("Lan", "Linh", "Loan", "Mai", "My", "Ngân", "Nhung", "Oanh", "Quỳnh", "Thảo")
    + _nfc("Trang", "Tuyết", "Vân", "Yến", "Phương"),
}
_ETHNIC = (("01", 85), ("02", 2), ("03", 2), ("04", 1), ("05", 2), ("06", 2), ("07", 2))
_STREETS = _nfc("Lê Lợi", "Trần Hưng Đạo", "Nguyễn Trãi", "Hai Bà Trưng", "Lý Thường Kiệt")
_STREETS += _nfc("Quang Trung", "Phan Chu Trinh", "Điện Biên Phủ")
_BIRTH_PLACES = _nfc("Bệnh viện Phụ sản", "Bệnh viện đa khoa tỉnh", "Trạm y tế xã", "Tại nhà")
_DEATH_PLACES = _nfc("Tại nhà", "Bệnh viện đa khoa tỉnh", "Trung tâm y tế huyện")
_CAUSES = _nfc("Bệnh già", "Bệnh tim mạch", "Ung thư", "Tai nạn giao thông", "Đột quỵ")
_ISSUERS = _nfc("Bệnh viện đa khoa tỉnh", "Trung tâm y tế huyện", "Công an xã")
_SIGNER_TITLES = _nfc("Chủ tịch UBND", "Phó Chủ tịch UBND")
_TYPES = (RecordType.BIRTH, RecordType.MARRIAGE, RecordType.DEATH)


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    born: date
    year_only: bool
    sex: int
    id_number: str
    ethnicity: str
    residence: str

    def fields(self, prefix: str, *, with_sex: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            prefix + "HoTen": self.name,
            prefix + "NgaySinh": str(self.born.year) if self.year_only else _dmy(self.born),
            prefix + "DanToc": self.ethnicity,
            prefix + "QuocTich": "VN",
            prefix + "NoiCuTru": self.residence,
            prefix + "LoaiGiayToTuyThan": 4 if len(self.id_number) == 12 else 1,
            prefix + "SoGiayToTuyThan": self.id_number,
        }
        if with_sex:
            out[prefix + "GioiTinh"] = self.sex
        return out


class _Maker:
    """Draws one record's people from that record's own random stream."""

    def __init__(self, seed: int, type_idx: int, auth_idx: int, number: int) -> None:
        authority, province = AUTHORITIES[auth_idx]
        self.rng = random.Random(f"civil-status:{seed}:{_TYPES[type_idx]}:{authority}:{number}")
        self.province = province
        self.mix = (seed * 2_654_435_761) % 10**6
        self.serial_base = ((type_idx * 32 + auth_idx) * 1000 + number) * 4

    def date_between(self, start: date, end: date) -> date:
        return start + timedelta(days=self.rng.randint(0, max(0, (end - start).days)))

    def some_day(self, year: int) -> date:
        return self.date_between(date(year, 1, 1), date(year, 12, 31))

    def person(
        self, role_idx: int, sex: int, born: date, *, family: str | None = None, cmnd_ok: bool
    ) -> _Person:
        rng = self.rng
        family = family or rng.choices(_FAMILY, _FAMILY_WEIGHTS)[0]
        name = f"{family} {rng.choice(_MIDDLE[sex])} {rng.choice(_GIVEN[sex])}"
        serial = self.serial_base + role_idx
        if cmnd_ok and born.year < 1980 and rng.random() < 0.3:
            # Old 9-digit CMND: issuing place, one free digit, six unique ones from the serial.
            place, free = rng.randint(1, 38), rng.randint(0, 9)
            id_number = f"{place:02d}{free}{_scramble(serial + self.mix):06d}"
        else:
            province = self.province if role_idx == 0 else rng.choice(PROVINCE_CODES)
            century = (born.year // 100 - 19) * 2 + (sex - 1)
            tail = _scramble(serial + self.mix)
            id_number = f"{province}{century}{born.year % 100:02d}{tail:06d}"
        street = rng.choice(_STREETS)
        return _Person(
            name=name,
            born=born,
            year_only=born.year < 1960 and rng.random() < 0.3,
            sex=sex,
            id_number=id_number,
            ethnicity=rng.choices([e for e, _ in _ETHNIC], [w for _, w in _ETHNIC])[0],
            residence=f"Số {rng.randint(1, 300)} {street}, tổ {rng.randint(1, 30)}",
        )

    def registration(self, authority: str, number: int, registered: date) -> dict[str, Any]:
        rng = self.rng
        signer = f"{rng.choices(_FAMILY, _FAMILY_WEIGHTS)[0]} {rng.choice(_MIDDLE[1])}"
        return {
            "so": str(number),
            "quyenSo": f"{(number - 1) // 50 + 1:02d}",
            "trangSo": str((number - 1) % 50 + 1),
            "ngayDangKy": _dmy(registered),
            "noiDangKy": authority,
            "nguoiKy": f"{signer} {rng.choice(_GIVEN[1])}",
            "chucVuNguoiKy": rng.choice(_SIGNER_TITLES),
            "nguoiThucHien": "",
            "ghiChu": "",
        }


def _scramble(x: int) -> int:
    """A bijection of 0..999 999 that spreads neighbouring serials over the whole range."""
    for _ in range(3):
        # Multipliers are odd and not multiples of 5 (units mod 10**6); the half swap is a
        # permutation too, so the composition is one.
        x = (x * 738_913 + 271_829) % 10**6
        x = (x % 1000) * 1000 + x // 1000
    return x


def _dmy(d: date) -> str:
    return d.strftime("%d/%m/%Y")


def _shift_years(d: date, years: int) -> date:
    return date(d.year + years, d.month, 28 if (d.month, d.day) == (2, 29) else d.day)


def generate_record(
    seed: int, record_type: RecordType, authority_code: str, number: int
) -> dict[str, Any]:
    """The MOJ record registered under ``number`` at ``authority_code`` (a fresh dict)."""
    record_type = RecordType(record_type)  # a plain "BIRTH" works too
    auth_idx = [code for code, _ in AUTHORITIES].index(authority_code)
    if not 1 <= number <= MAX_PER_AUTHORITY:
        raise ValueError(f"registration numbers run from 1 to {MAX_PER_AUTHORITY}")
    mk = _Maker(seed, _TYPES.index(record_type), auth_idx, number)
    if record_type is RecordType.BIRTH:
        return _birth(mk, authority_code, number)
    if record_type is RecordType.MARRIAGE:
        return _marriage(mk, authority_code, number)
    return _death(mk, authority_code, number)


def _birth(mk: _Maker, authority: str, number: int) -> dict[str, Any]:
    rng = mk.rng
    # Born at least half a year before the horizon so a late registration still fits.
    born = mk.date_between(date(1955, 1, 1), HORIZON - timedelta(days=180))
    late = rng.random() < 0.1
    if late:
        latest = min(HORIZON, born + timedelta(days=3650))
        registered = mk.date_between(born + timedelta(days=61), latest)
    else:
        registered = born + timedelta(days=rng.randint(1, 60))
    mother = mk.person(1, 2, mk.some_day(born.year - rng.randint(18, 40)), cmnd_ok=True)
    father = None
    if rng.random() < 0.9:
        father = mk.person(2, 1, mk.some_day(born.year - rng.randint(20, 45)), cmnd_ok=True)
    family = (father or mother).name.split(" ")[0]
    child = mk.person(0, rng.choice((1, 2)), born, family=family, cmnd_ok=False)
    rec = mk.registration(authority, number, registered)
    rec["loaiDangKy"] = 2 if late else 1
    rec |= {
        "nksHoTen": child.name,
        "nksGioiTinh": child.sex,
        "nksNgaySinh": _dmy(born),
        "nksNoiSinh": rng.choice(_BIRTH_PLACES),
        "nksDanToc": mother.ethnicity,
        "nksQuocTich": "VN",
        "nksSoDinhDanh": child.id_number,
    }
    rec |= mother.fields("me")
    # An unknown father leaves his fields empty, as the registers do.
    rec |= father.fields("cha") if father else {"chaHoTen": "", "chaSoGiayToTuyThan": ""}
    requester = father if father and rng.random() < 0.5 else mother
    rec |= {
        "nycHoTen": requester.name,
        "nycSoGiayToTuyThan": requester.id_number,
        "nycQuanHe": "Cha" if requester is father else "Mẹ",
    }
    return rec


def _marriage(mk: _Maker, authority: str, number: int) -> dict[str, Any]:
    husband_born = mk.date_between(date(1950, 1, 1), date(2005, 6, 30))
    wife_born = mk.date_between(
        _shift_years(husband_born, -8),
        min(_shift_years(husband_born, 3), date(2007, 6, 30)),
    )
    of_age = max(_shift_years(husband_born, 20), _shift_years(wife_born, 18))
    married = mk.date_between(of_age, min(HORIZON, _shift_years(of_age, 25)))
    husband = mk.person(0, 1, husband_born, cmnd_ok=True)
    wife = mk.person(1, 2, wife_born, cmnd_ok=True)
    rec = mk.registration(authority, number, married)
    rec["loaiDangKy"] = 1
    rec |= husband.fields("chong") | wife.fields("vo")
    rec |= {"ngayXacLapQuanHeHonNhan": _dmy(married), "tinhTrangKetHon": 1, "huyKetHon": 0}
    return rec


def _death(mk: _Maker, authority: str, number: int) -> dict[str, Any]:
    rng = mk.rng
    died = mk.date_between(date(1995, 1, 1), HORIZON - timedelta(days=20))
    born = mk.date_between(date(1920, 1, 1), died - timedelta(days=365))
    deceased = mk.person(0, rng.choice((1, 2)), born, cmnd_ok=True)
    requester_born = mk.some_day(died.year - rng.randint(20, 60))
    requester = mk.person(1, rng.choice((1, 2)), requester_born, cmnd_ok=False)
    notice_day = died + timedelta(days=rng.randint(0, 2))
    rec = mk.registration(authority, number, notice_day + timedelta(days=rng.randint(1, 15)))
    rec["loaiDangKy"] = 1
    rec |= deceased.fields("nkt", with_sex=True)
    rec |= {
        "nktNgayChet": _dmy(died),
        "nktGioPhutChet": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        "nktNoiChet": rng.choice(_DEATH_PLACES),
        "nktNguyenNhanChet": rng.choice(_CAUSES),
        "gbtLoai": 1,
        "gbtSo": f"{rng.randint(1, 9999)}/GBT",
        "gbtNgay": _dmy(notice_day),
        "gbtCoQuanCap": rng.choice(_ISSUERS),
        "nycHoTen": requester.name,
        "nycSoGiayToTuyThan": requester.id_number,
        "nycQuanHe": "Con",
    }
    return rec


_ID_FIELDS: Mapping[RecordType, tuple[str, ...]] = {
    RecordType.BIRTH: ("nksSoDinhDanh",),
    RecordType.MARRIAGE: ("chongSoGiayToTuyThan", "voSoGiayToTuyThan"),
    RecordType.DEATH: ("nktSoGiayToTuyThan",),
}
"""Where the ID a by-person lookup matches sits in each record type."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """Every sandbox record of one seed, indexed the ways the simulator searches."""

    seed: int
    per_authority: int
    by_registration: Mapping[tuple[RecordType, str, str], Mapping[str, Any]]
    by_id: Mapping[tuple[RecordType, str], tuple[Mapping[str, Any], ...]]

    def find_registration(
        self, record_type: RecordType, authority_code: str, number: str
    ) -> Mapping[str, Any] | None:
        """The record under ``number`` at ``authority_code``, if any."""
        return self.by_registration.get((record_type, authority_code, number))

    def find_person(self, record_type: RecordType, id_number: str) -> tuple[Mapping[str, Any], ...]:
        """Records whose subject (newborn, spouse, deceased) has ``id_number``."""
        return self.by_id.get((record_type, id_number), ())


@lru_cache(maxsize=4)
def build_dataset(seed: int = 0, per_authority: int = DEFAULT_PER_AUTHORITY) -> Dataset:
    """Generate and index every record (≈ 6 000 at the default size; cached per seed)."""
    if not 1 <= per_authority <= MAX_PER_AUTHORITY:
        raise ValueError(f"per_authority must be 1..{MAX_PER_AUTHORITY}")
    by_reg: dict[tuple[RecordType, str, str], Mapping[str, Any]] = {}
    by_id: dict[tuple[RecordType, str], tuple[Mapping[str, Any], ...]] = {}
    for record_type in _TYPES:
        for authority, _ in AUTHORITIES:
            for n in range(1, per_authority + 1):
                rec = generate_record(seed, record_type, authority, n)
                by_reg[(record_type, authority, str(n))] = rec
                for field in _ID_FIELDS[record_type]:
                    key = (record_type, rec[field])
                    by_id[key] = (*by_id.get(key, ()), rec)
    return Dataset(seed, per_authority, by_reg, by_id)


def _locate(index: int) -> tuple[str, int]:
    if index < 0:
        raise ValueError("sample indices start at 0")
    authority, _ = AUTHORITIES[index % len(AUTHORITIES)]
    return authority, index // len(AUTHORITIES) + 1


def sample_record(seed: int, record_type: RecordType, index: int) -> dict[str, Any]:
    """The raw MOJ record of sample ``index`` (exists while index < 10 × per_authority)."""
    authority, number = _locate(index)
    return generate_record(seed, record_type, authority, number)


def sample_registration(seed: int, record_type: RecordType, index: int) -> dict[str, str]:
    """Canonical ``by_registration`` that finds sample ``index`` (ISO registration date)."""
    rec = sample_record(seed, record_type, index)
    day, month, year = rec["ngayDangKy"].split("/")
    return {
        "authority_code": rec["noiDangKy"],
        "number": rec["so"],
        "book": rec["quyenSo"],
        "registration_date": f"{year}-{month}-{day}",
    }


def sample_person(seed: int, record_type: RecordType, index: int) -> dict[str, str]:
    """Canonical ``by_person`` (ID, name, birth date) of sample ``index``'s subject."""
    record_type = RecordType(record_type)
    rec = sample_record(seed, record_type, index)
    prefix = {RecordType.BIRTH: "nks", RecordType.MARRIAGE: "chong", RecordType.DEATH: "nkt"}
    p = prefix[record_type]
    born = rec[p + "NgaySinh"]
    if "/" in born:
        day, month, year = born.split("/")
        born = f"{year}-{month}-{day}"
    return {
        "id_number": rec[_ID_FIELDS[record_type][0]],
        "full_name": rec[p + "HoTen"],
        "birth_date": born,
    }
