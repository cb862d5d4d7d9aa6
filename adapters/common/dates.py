"""Partial dates: canonical ISO (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``) and the MOJ spellings.

The MOJ civil-status DB writes dates in records as ``dd/MM/yyyy`` or ``yyyy`` (its quality
checkers accept only those two lengths), some feeds use ``yyyyMMdd``, and dates re-sent to
the MOJ use ``dd.MM.yyyy`` (DOMAIN.md §2.3). Each :class:`MojDateStyle` therefore has a
year-only form, and — our convention, since MOJ has none — a month form (``MM/yyyy``,
``yyyyMM``, ``MM.yyyy``) so a month-precision canonical date survives a round trip.

Reading is lenient the way old registers need: zero day/month (``00/05/1950``) widens the
precision, one-digit day/month is accepted, and a time suffix (``dd/MM/yyyy HH:mm:ss``) is
ignored. Error messages never quote the value: dates of birth are personal data.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum

__all__ = [
    "VN_TZ",
    "MojDateError",
    "MojDateStyle",
    "PartialDate",
    "from_moj",
    "to_moj",
    "today_vn",
]

VN_TZ = timezone(timedelta(hours=7), "ICT")
"""Vietnam's offset (no DST): "today" for future-date checks is today in Vietnam."""

_ISO_RE = re.compile(r"^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?\Z")
# Day/month of one or two digits, separated by "/" or "."; an optional time part is dropped.
_DMY_RE = re.compile(r"^([0-9]{1,2})([/.])([0-9]{1,2})\2([0-9]{4})(?:[ T][0-9:.]+)?\Z")
_MY_RE = re.compile(r"^([0-9]{1,2})[/.]([0-9]{4})\Z")
_COMPACT_RE = re.compile(r"^([0-9]{4})([0-9]{2})?([0-9]{2})?\Z")


class MojDateError(ValueError):
    """An upstream date this module cannot read (the message never holds the value)."""


class MojDateStyle(StrEnum):
    """How one MOJ interface spells a full date."""

    SLASH = "dd/MM/yyyy"
    COMPACT = "yyyyMMdd"
    DOTTED = "dd.MM.yyyy"


@dataclass(frozen=True, slots=True)
class PartialDate:
    """A date known to the year, the month or the day."""

    year: int
    month: int | None = None
    day: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.year <= 9999:
            raise ValueError("year out of range")
        if self.month is None:
            if self.day is not None:
                raise ValueError("a day needs a month")
            return
        if not 1 <= self.month <= 12:
            raise ValueError("month out of range")
        if self.day is not None:
            try:
                date(self.year, self.month, self.day)  # in C: cheaper than calendar's Python
            except ValueError:
                raise ValueError("day out of range for its month") from None

    @classmethod
    def parse_iso(cls, text: str) -> PartialDate:
        """Parse ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (ASCII digits only)."""
        match = _ISO_RE.match(text)
        if match is None:
            raise ValueError("not a YYYY, YYYY-MM or YYYY-MM-DD date")
        year, month, day = match.groups()
        return cls(int(year), _opt_int(month), _opt_int(day))

    def iso(self) -> str:
        """The canonical spelling."""
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    def earliest(self) -> date:
        """The first day the partial date can mean."""
        return date(self.year, self.month or 1, self.day or 1)

    def latest(self) -> date:
        """The last day the partial date can mean."""
        month = self.month or 12
        day = self.day or calendar.monthrange(self.year, month)[1]
        return date(self.year, month, day)


def _opt_int(text: str | None) -> int | None:
    return None if text is None else int(text)


def today_vn() -> date:
    """Today's date in Vietnam."""
    return datetime.now(VN_TZ).date()


def to_moj(iso: str, style: MojDateStyle = MojDateStyle.SLASH) -> str:
    """Spell a canonical partial date the way ``style`` does (year-only stays ``yyyy``)."""
    d = PartialDate.parse_iso(iso)
    y = f"{d.year:04d}"
    if d.month is None:
        return y
    m = f"{d.month:02d}"
    if style is MojDateStyle.COMPACT:
        return y + m + ("" if d.day is None else f"{d.day:02d}")
    sep = "/" if style is MojDateStyle.SLASH else "."
    if d.day is None:
        return f"{m}{sep}{y}"
    return f"{d.day:02d}{sep}{m}{sep}{y}"


def from_moj(text: str | None, field: str = "date") -> str | None:
    """Read any MOJ date spelling into canonical ISO; empty means unknown (``None``)."""
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    try:
        if match := _DMY_RE.match(value):
            day, _, month, year = match.groups()
            return _widened(int(year), int(month), int(day))
        if match := _MY_RE.match(value):
            month, year = match.groups()
            return _widened(int(year), int(month), 0)
        if match := _COMPACT_RE.match(value):
            year, month, day = match.groups()
            return _widened(int(year), int(month or 0), int(day or 0))
    except ValueError as exc:
        raise MojDateError(f"{field}: not a valid date") from exc
    raise MojDateError(f"{field}: unrecognised date format")


def _widened(year: int, month: int, day: int) -> str:
    # Old registers write unknown parts as zeros; a zero month makes the day meaningless too.
    if month == 0:
        return PartialDate(year).iso()
    if day == 0:
        return PartialDate(year, month).iso()
    return PartialDate(year, month, day).iso()
