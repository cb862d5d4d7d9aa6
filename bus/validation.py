"""Validators shared by every personal-data service (DOMAIN.md §3 and §6): pure functions.

Each rejection raises ``PydanticCustomError`` whose *type* is the stable error code the
gateway returns; messages never echo the rejected value (it may be personal data).

Error codes:

=====================  ====================================================================
``INVALID_ID_NUMBER``  not exactly 12 (CCCD12) or 9 (CMND9) ASCII digits; full-width digits,
                       spaces and dashes are rejected, never stripped
``INVALID_ID_PREFIX``  CCCD prefix neither a historical (63-province) code nor a country code
``ID_BIRTH_MISMATCH``  CCCD century digit / year digits disagree with ``birth_date``
``ID_SEX_MISMATCH``    supplied ``sex`` contradicts the CCCD's century/sex digit
``INVALID_DATE``       not ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (2-digit years, ``dd/MM``…),
                       or no such day (31/02)
``DATE_IN_FUTURE``     later than today (Vietnam time, UTC+7)
``DATE_TOO_OLD``       before :data:`MIN_YEAR`
``INVALID_NAME``       empty, over 100 characters, digits, control/zero-width characters,
                       emoji/symbols, markup, other scripts or mixed scripts
``NAME_ENCODING``      mojibake (UTF-8 read as cp1252, ``Nguyá»…n``) or legacy TCVN3/VNI text
=====================  ====================================================================

Request models add their own: ``CONSENT_REF_REQUIRED`` (:mod:`bus.canonical`),
``OFFICER_REQUIRED``, ``PURPOSE_REQUIRED`` and ``INVALID_FIELDS`` (population requests).

Decision on CCCD prefixes: a prefix ``0xx`` must be one of the 63 historical province codes
(they do not change with the 2025 mergers); a non-zero prefix is accepted only in
``101``–``295``, the country codes Circular 07/2016/TT-BCA assigns to births abroad
(range as transcribed by public ID tools; the annex itself is unverified). Anything else is
``INVALID_ID_PREFIX``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = [
    "ABROAD_PREFIXES",
    "MIN_YEAR",
    "NAME_MAX",
    "PROVINCE_CODES_2025",
    "PROVINCE_CODES_HISTORICAL",
    "FullName",
    "IdType",
    "OldId",
    "PartialDate",
    "PersonalId",
    "Sex",
    "check_full_name",
    "check_id_against_birth",
    "check_old_id",
    "check_partial_date",
    "check_personal_id",
    "mask_id",
    "normalise_name_for_compare",
    "partial_date_parts",
    "today_vn",
]

VN_TZ = timezone(timedelta(hours=7))
MIN_YEAR = 1900
"""Earliest birth year accepted (DOMAIN §6.4 default)."""
NAME_MAX = 100
"""MOJ columns are nvarchar(100)."""

PROVINCE_CODES_HISTORICAL = frozenset(
    f"{n:03d}"
    for n in (
        1, 2, 4, 6, 8, 10, 11, 12, 14, 15, 17, 19, 20, 22, 24, 25, 26, 27, 30, 31, 33,
        34, 35, 36, 37, 38, 40, 42, 44, 45, 46, 48, 49, 51, 52, 54, 56, 58, 60, 62, 64,
        66, 67, 68, 70, 72, 74, 75, 77, 79, 80, 82, 83, 84, 86, 87, 89, 91, 92, 93, 94,
        95, 96,
    )
)  # fmt: skip
"""The 63 pre-2025 province codes, as 3-digit CCCD prefixes (``001`` Hà Nội … ``096`` Cà Mau)."""

PROVINCE_CODES_2025 = frozenset(
    f"{n:02d}"
    for n in (
        1, 4, 8, 11, 12, 14, 15, 19, 20, 22, 24, 25, 31, 33, 37, 38, 40, 42, 44, 46, 48,
        51, 52, 56, 66, 68, 75, 79, 80, 82, 86, 91, 92, 96,
    )
)  # fmt: skip
"""The 34 province codes of the two-level scheme in force from 1 Jul 2025."""

ABROAD_PREFIXES = range(101, 296)
"""CCCD prefixes for citizens whose birth was registered abroad (country codes)."""


class IdType(StrEnum):
    """Which personal ID a subject is identified by."""

    CCCD12 = "CCCD12"
    CMND9 = "CMND9"


class Sex(StrEnum):
    """Sex as recorded by C06."""

    M = "M"
    F = "F"


def _fail(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, message)


# --- IDs ---------------------------------------------------------------------------------

# [0-9], not \d: \d also matches full-width and other Unicode digits.
_CCCD_RE = re.compile(r"[0-9]{12}")
_CMND_RE = re.compile(r"[0-9]{9}")


def check_personal_id(value: str) -> str:
    """Validate a 12-digit CCCD (structure and prefix); return it unchanged."""
    if not _CCCD_RE.fullmatch(value):
        raise _fail("INVALID_ID_NUMBER", "a CCCD is exactly 12 ASCII digits, nothing else")
    prefix = value[:3]
    if prefix[0] == "0":
        if prefix not in PROVINCE_CODES_HISTORICAL:
            raise _fail("INVALID_ID_PREFIX", "the CCCD's first 3 digits are not a province code")
    elif int(prefix) not in ABROAD_PREFIXES:
        raise _fail("INVALID_ID_PREFIX", "the CCCD's first 3 digits are not a country code")
    return value


def check_old_id(value: str) -> str:
    """Validate a 9-digit CMND; return it unchanged."""
    if not _CMND_RE.fullmatch(value):
        raise _fail("INVALID_ID_NUMBER", "a CMND is exactly 9 ASCII digits, nothing else")
    return value


def check_id_against_birth(id_number: str, birth_date: str, sex: str | None = None) -> None:
    """Cross-check a (valid) CCCD with a (valid) partial birth date and optional sex."""
    digit = int(id_number[3])
    year = 1900 + 100 * (digit // 2) + int(id_number[4:6])
    if partial_date_parts(birth_date)[0] != year:
        raise _fail(
            "ID_BIRTH_MISMATCH", "the CCCD's century and year digits disagree with birth_date"
        )
    if sex is not None and sex != ("F" if digit % 2 else "M"):
        raise _fail("ID_SEX_MISMATCH", "sex disagrees with the CCCD's century/sex digit")


def mask_id(value: str) -> str:
    """Masked display form: first 3 and last 2 characters kept (``001*******45``)."""
    if len(value) < 8:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]


PersonalId = Annotated[str, AfterValidator(check_personal_id)]
"""A 12-digit CCCD, structurally valid."""
OldId = Annotated[str, AfterValidator(check_old_id)]
"""A 9-digit CMND."""


# --- dates -------------------------------------------------------------------------------

_DATE_RE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


def today_vn() -> date:
    """Today's date in Vietnam: a birth registered this morning is not "in the future"."""
    return datetime.now(VN_TZ).date()


def partial_date_parts(value: str) -> tuple[int, int | None, int | None]:
    """``(year, month?, day?)`` of a partial ISO date already validated."""
    m = _DATE_RE.fullmatch(value)
    if m is None:
        raise _fail("INVALID_DATE", "dates are YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = m.groups()
    return int(year), int(month) if month else None, int(day) if day else None


def check_partial_date(value: str, *, today: date | None = None, min_year: int = MIN_YEAR) -> str:
    """Validate ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``: a real day, not future, not too old."""
    if not _DATE_RE.fullmatch(value):
        raise _fail(
            "INVALID_DATE",
            "dates are YYYY, YYYY-MM or YYYY-MM-DD (4-digit year; no dd/MM or 2-digit years)",
        )
    year, month, day = partial_date_parts(value)
    if month is not None and not 1 <= month <= 12:
        raise _fail("INVALID_DATE", "no such month")
    if day is not None:
        try:
            date(year, month or 1, day)
        except ValueError:
            raise _fail("INVALID_DATE", "no such day in that month") from None
    now = today or today_vn()
    given = (year, month or 0, day or 0)
    if given > (now.year, now.month if month else 0, now.day if day else 0):
        raise _fail("DATE_IN_FUTURE", "the date is in the future")
    if year < min_year:
        raise _fail("DATE_TOO_OLD", f"dates before {min_year} are not accepted")
    return value


PartialDate = Annotated[str, AfterValidator(check_partial_date)]
"""A partial ISO date (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``), real, in [1900, today]."""


# --- names -------------------------------------------------------------------------------


def _vietnamese_letters() -> frozenset[str]:
    tones = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")
    bases = ("a", "ă", "â", "e", "ê", "i", "o", "ô", "ơ", "u", "ư", "y")
    lower = {unicodedata.normalize("NFC", b + t) for b in bases for t in tones} | {"đ"}
    return frozenset(lower | {c.upper() for c in lower})


_VN_LETTERS = _vietnamese_letters()
_APOSTROPHES = "'\u2019"  # H'Hen Niê: Ê Đê names carry apostrophes
_JOINERS = _APOSTROPHES + "-"
_MARKUP = frozenset('<>&"/\\;=`{}[]')
# cp1252's 0x80-0x9F: mojibake of UTF-8 lead/continuation bytes shows up as these.
_CP1252_HIGH = {
    ch: byte
    for byte in range(0x80, 0xA0)
    for ch in [bytes([byte]).decode("cp1252", errors="ignore")]
    if ch
}


def _transcodes_as_utf8(word: str) -> bool:
    """True if the word is UTF-8 bytes that were decoded as cp1252/latin-1 (mojibake)."""
    raw = bytearray()
    for ch in word:
        code = ord(ch)
        if code < 0x100:
            raw.append(code)
        elif ch in _CP1252_HIGH:
            raw.append(_CP1252_HIGH[ch])
        else:
            return False
    if raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _legacy_encoding(name: str) -> bool:
    """Mojibake or legacy Vietnamese 8-bit text (TCVN3/ABC, VNI) read as cp1252."""
    for word in name.split(" "):
        if _transcodes_as_utf8(word):
            return True
    for i, ch in enumerate(name):
        code = ord(ch)
        if 0x80 <= code <= 0xFF and ch not in _VN_LETTERS and ch != "\u00a0":
            return True  # TCVN3 "Lª", "V¨n", "§øc"; VNI "Hoaøng"; C1 controls
        if ch in _CP1252_HIGH and ch not in _APOSTROPHES:
            return True  # "…", "‰", "€": cp1252 punctuation never appears in a name
        prev = name[i - 1] if i else ""
        if 0xC0 <= code <= 0xFF and prev and prev in "aeAE":
            return True  # VNI puts the accent after the vowel: "Nguyeãn", "Vaên"
        if 0xC0 <= code <= 0xDE and prev.islower():
            return True  # TCVN3 maps lower-case letters to upper Latin-1: "NguyÔn", "TrÇn"
    return False


def _script(ch: str) -> str:
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def check_full_name(value: str) -> str:
    """Validate a person's name; return it NFC-normalised with runs of spaces collapsed."""
    name = " ".join(unicodedata.normalize("NFC", value).split(" "))
    name = re.sub(" +", " ", name).strip(" ")
    if not name:
        raise _fail("INVALID_NAME", "the name is empty")
    if len(name) > NAME_MAX:
        raise _fail("INVALID_NAME", f"the name is over {NAME_MAX} characters")
    if _legacy_encoding(name):
        raise _fail(
            "NAME_ENCODING",
            "the name looks mis-encoded (UTF-8 read as cp1252, or TCVN3/VNI legacy text); "
            "send it as Unicode",
        )
    scripts = {s for i, ch in enumerate(name) if (s := _letter_script(name, i, ch)) is not None}
    if len(scripts) > 1:
        raise _fail("INVALID_NAME", "the name mixes scripts (look-alike letters?)")
    if scripts != {"LATIN"}:
        raise _fail("INVALID_NAME", "the name must be written in Vietnamese (Latin) letters")
    return name


def _letter_script(name: str, i: int, ch: str) -> str | None:
    """The script of the name's ``i``-th character (``None``: a space or a joiner), or the
    coded failure that character is."""
    if ch == " ":
        return None
    cat = unicodedata.category(ch)
    if cat in ("Cc", "Cf", "Zl", "Zp", "Zs"):
        raise _fail("INVALID_NAME", "the name contains control, invisible or odd spaces")
    if cat.startswith("N"):
        raise _fail("INVALID_NAME", "the name contains digits")
    if ch in _MARKUP:
        raise _fail("INVALID_NAME", "the name contains markup characters")
    if ch in _JOINERS:
        if not (0 < i < len(name) - 1 and name[i - 1].isalpha() and name[i + 1].isalpha()):
            raise _fail("INVALID_NAME", "apostrophes and hyphens must join two letters")
        return None
    if not cat.startswith("L"):
        raise _fail("INVALID_NAME", "the name contains symbols, emoji or punctuation")
    if ch.isascii() or ch in _VN_LETTERS:
        return "LATIN"
    script = _script(ch)
    if script == "LATIN":
        raise _fail("INVALID_NAME", "the name has letters outside the Vietnamese alphabet")
    return script


FullName = Annotated[str, AfterValidator(check_full_name)]
"""A person's full name: NFC, ≤100 characters, Vietnamese Latin letters, no mis-encoding."""

_D_MAP = str.maketrans({"đ": "d", "Đ": "d"})


def normalise_name_for_compare(name: str, *, accent_insensitive: bool = False) -> str:
    """Compare form: NFC, casefold, single spaces, ’ as '; optionally without diacritics.

    ``đ`` has no NFD decomposition, so it is mapped to ``d`` explicitly.
    """
    out = " ".join(unicodedata.normalize("NFC", name).casefold().split())
    out = out.replace("\u2019", "'")
    if accent_insensitive:
        out = out.translate(_D_MAP)
        decomposed = unicodedata.normalize("NFD", out)
        out = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        out = unicodedata.normalize("NFC", out)
    return out
