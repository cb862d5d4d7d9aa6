"""Deterministic synthetic citizens for the C06 simulator (no real person's data).

Citizen *i* of seed *s* is a pure function of ``(s, i)``: :func:`sample_citizen` gives
tests and the README a citizen the simulator will find. IDs are structurally valid CCCDs
(historical province prefix, century/sex digit and year matching the birth date) and
unique per seed; names are NFC Vietnamese; addresses use the two-level 2025 scheme with a
few real province and ward codes (GSO, from 1 Jul 2025).

Indexes at or beyond the simulator's population size are never served, so
``sample_citizen(seed, population)`` is a valid citizen that is *not found*.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "FAULT_IDS",
    "PROVINCES_2025",
    "WARDS_2025",
    "population",
    "sample_citizen",
]

FAULT_IDS: dict[str, str] = {
    "001099999901": "transient",  # soap:Server fault, MaLoi TamThoiKhongKhaDung → retryable
    "001099999902": "client",  # soap:Client fault, MaLoi DuLieuKhongHopLe → rejected
    "001099999903": "server",  # soap:Server fault, MaLoi LoiHeThong → upstream error
    "001099999904": "slow",  # answers after 30 s → the caller's deadline passes
    "001099999905": "malformed",  # a reply that is not XML
    "001099999906": "hostile",  # a reply with a DOCTYPE/XXE payload
    "001099999907": "http503",  # HTTP 503 with an HTML body (an overloaded front proxy)
}
"""IDs (born 1999, male: e.g. birth_date "1999-01-01") on which the simulator misbehaves."""

PROVINCES_2025 = {
    "01": "Thành phố Hà Nội",
    "04": "Cao Bằng",
    "08": "Tuyên Quang",
    "11": "Điện Biên",
    "12": "Lai Châu",
    "14": "Sơn La",
}
"""A few of the 34 provinces of the 2025 scheme (code → name)."""

WARDS_2025 = {
    "01": {
        "00070": "Phường Hoàn Kiếm",
        "00004": "Phường Ba Đình",
        "00256": "Phường Hai Bà Trưng",
        "00167": "Phường Cầu Giấy",
        "09556": "Phường Hà Đông",
        "00454": "Xã Đông Anh",
    },
    "04": {"01273": "Phường Thục Phán", "01279": "Phường Nùng Trí Cao", "01290": "Xã Bảo Lâm"},
    "08": {"02269": "Xã Thượng Lâm", "02509": "Phường Mỹ Lâm", "00694": "Phường Hà Giang 1"},
    "11": {"03127": "Phường Điện Biên Phủ", "03334": "Phường Mường Thanh"},
    "12": {"03408": "Phường Tân Phong", "03388": "Phường Đoàn Kết"},
    "14": {"03646": "Phường Tô Hiệu", "03980": "Phường Mộc Châu"},
}
"""Real ward/commune codes of those provinces in the 2025 scheme (code → name)."""

# Birth-registration prefixes (historical 63-province codes) the generator draws from.
_BIRTH_PREFIXES = ("001", "004", "008", "011", "012", "014", "022", "031", "038", "079")
_FAMILY = (
    "Nguyễn", "Nguyễn", "Nguyễn", "Trần", "Trần", "Lê", "Lê", "Phạm", "Hoàng", "Huỳnh",
    "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý",
)  # fmt: skip
_MIDDLE = {
    "M": ("Văn", "Đức", "Minh", "Quang", "Hữu", "Công", "Thành", "Xuân"),
    "F": ("Thị", "Thị", "Ngọc", "Thu", "Thanh", "Mai", "Kim", "Thuỳ"),
}
_GIVEN = {
    "M": ("An", "Bình", "Cường", "Dũng", "Hùng", "Khoa", "Long", "Nam", "Phúc", "Quân",
          "Sơn", "Tuấn", "Việt", "Đạt", "Hiếu", "Thắng"),
    "F": ("Anh", "Châu", "Giang", "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai",
          "Ngân", "Thảo", "Trang", "Yến", "Nhung", "Phượng"),
}  # fmt: skip
_STREETS = ("Hàng Bạc", "Lý Thường Kiệt", "Trần Hưng Đạo", "Lê Lợi", "Quang Trung", "Hai Bà Trưng")
_ETHNICITY = ("01", "01", "01", "01", "01", "01", "02", "03", "06", "07")  # mostly Kinh (01)


def _personal_id(rng: random.Random, prefix: str, year: int, sex: str, serial: int) -> str:
    century_digit = 2 * ((year - 1900) // 100) + (1 if sex == "F" else 0)
    return f"{prefix}{century_digit}{year % 100:02d}{serial % 1_000_000:06d}"


def _name(rng: random.Random, sex: str, family: str | None = None) -> dict[str, str]:
    family = family or rng.choice(_FAMILY)
    middle = rng.choice(_MIDDLE[sex])
    given = rng.choice(_GIVEN[sex])
    return {"family": family, "middle": middle, "given": given}


def _address(rng: random.Random) -> dict[str, str]:
    province = rng.choice(sorted(WARDS_2025))
    ward = rng.choice(sorted(WARDS_2025[province]))
    detail = (
        f"Số {rng.randint(1, 199)} {rng.choice(_STREETS)}, "
        f"{WARDS_2025[province][ward]}, {PROVINCES_2025[province]}"
    )
    return {"province_code": province, "ward_code": ward, "detail": detail}


def _birth_date(rng: random.Random, year: int) -> str:
    if year < 1950 and rng.random() < 0.3:
        return f"{year:04d}"  # old records often hold only the year
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    return f"{year:04d}-{month:02d}-{day:02d}"


def _parent(rng: random.Random, sex: str, child_year: int, family: str | None) -> dict[str, Any]:
    year = child_year - rng.randint(20, 38)
    serial = rng.randrange(1_000_000)
    return {
        "personal_id": _personal_id(rng, rng.choice(_BIRTH_PREFIXES), year, sex, serial),
        "name": _name(rng, sex, family),
        "nationality": "VN",
    }


def sample_citizen(seed: int, index: int) -> dict[str, Any]:
    """Citizen ``index`` of ``seed``: ``personal_id``, ``full_name``, ``birth_date``, ``sex`` …"""
    rng = random.Random(f"c06-sim:{seed}:{index}")
    sex = "M" if rng.random() < 0.5 else "F"
    year = rng.randint(1935, 2007)
    # 7919 is coprime with 10**6, so serials are distinct for every index below a million.
    serial = (index * 7919 + seed * 104_729) % 1_000_000
    personal_id = _personal_id(rng, rng.choice(_BIRTH_PREFIXES), year, sex, serial)
    if personal_id in FAULT_IDS:
        personal_id = personal_id[:6] + f"{(serial + 1) % 1_000_000:06d}"
    name = _name(rng, sex)
    citizen: dict[str, Any] = {
        "personal_id": personal_id,
        # CMND (9 digits) only for people old enough to have held one before CCCD.
        "old_id": f"{(index * 7919 + seed) % 900_000_000 + 100_000_000:09d}"
        if year < 2000
        else None,
        "name": name,
        "full_name": " ".join((name["family"], name["middle"], name["given"])),
        "birth_date": _birth_date(rng, year),
        "sex": sex,
        "ethnicity_code": rng.choice(_ETHNICITY),
        "father": _parent(rng, "M", year, name["family"]),
        "mother": _parent(rng, "F", year, None),
        "permanent_address": _address(rng),
        "hometown": _address(rng),
    }
    citizen["current_address"] = (
        citizen["permanent_address"] if rng.random() < 0.7 else _address(rng)
    )
    return citizen


def population(seed: int, size: int) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``(by personal_id, personal_id by old_id)`` for citizens ``0 … size-1``."""
    by_id: dict[str, dict[str, Any]] = {}
    by_old: dict[str, str] = {}
    for index in range(size):
        citizen = sample_citizen(seed, index)
        by_id[citizen["personal_id"]] = citizen
        if citizen["old_id"]:
            by_old[citizen["old_id"]] = citizen["personal_id"]
    return by_id, by_old
