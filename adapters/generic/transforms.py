"""The value side of the declarative mapping (:mod:`adapters.generic.mapping`): pure functions.

* :data:`TRANSFORMS` — the safe transforms a rule may name (there is no expression
  language: nothing from ``routing.yaml`` is evaluated);
* :func:`jsonable` — upstream values (zeep's ``Decimal``/``date``…) as canonical JSON, NFC.

Dates reuse :mod:`adapters.common.dates` (the MOJ spellings ``dd/MM/yyyy``,
``yyyyMMdd``, ``dd.MM.yyyy``, zero day/month = unknown). Error messages name the target,
never the value (it may be personal data).
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from adapters.common.dates import VN_TZ, MojDateError, MojDateStyle, from_moj, to_moj
from adapters.common.dates import PartialDate as DateParts
from adapters.common.http import SAFE_CODE

__all__ = [
    "DATE_STYLES",
    "SAFE_CODE",
    "TRANSFORMS",
    "MappingError",
    "jsonable",
    "run_transform",
    "scalar_text",
]

DATE_STYLES = ("yyyy-MM-dd", *(style.value for style in MojDateStyle))
"""Spellings ``format_date`` writes (a year alone stays ``yyyy``)."""
_ISO_PARTIAL = re.compile(r"[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?")
_D_MAP = str.maketrans({"đ": "d", "Đ": "D"})


class MappingError(ValueError):
    """A value a rule cannot produce; the message names the target, never the value."""


def scalar_text(value: Any) -> str:
    """A scalar as text, the way map keys and comparisons see it (``true``, ``12``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    return str(value)


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    raise MappingError(f"{where}: not a text value")


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.translate(_D_MAP))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise MappingError(f"{where}: not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,30}", value.strip()):
        return int(value.strip())
    raise MappingError(f"{where}: not an integer")


def _number(value: Any, where: str) -> int | float:
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        raise MappingError(f"{where}: not a number") from None
    if isinstance(value, bool) or not number.is_finite():
        raise MappingError(f"{where}: not a number")
    return int(number) if number == number.to_integral_value() else float(number)


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = scalar_text(value).strip().lower()
    if text in ("true", "1", "yes", "y"):
        return True
    if text in ("false", "0", "no", "n"):
        return False
    raise MappingError(f"{where}: not a boolean")


def _parse_date(value: Any, where: str) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = _text(value, where).strip()
    try:
        if _ISO_PARTIAL.fullmatch(text):
            return DateParts.parse_iso(text).iso()
        if re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T", text):
            return DateParts.parse_iso(text[:10]).iso()
        parsed = from_moj(text, where)
    except (MojDateError, ValueError):
        raise MappingError(f"{where}: not a date this mapping can read") from None
    if parsed is None:
        raise MappingError(f"{where}: an empty date")
    return parsed


def _format_date(value: Any, where: str, style: str) -> str:
    iso = value.isoformat() if isinstance(value, date) else _text(value, where)
    try:
        if style == "yyyy-MM-dd":
            return DateParts.parse_iso(iso).iso()
        return to_moj(iso, MojDateStyle(style))
    except ValueError:
        raise MappingError(f"{where}: not a canonical date (YYYY, YYYY-MM or YYYY-MM-DD)") from None


def _datetime(value: Any, where: str) -> str:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(_text(value, where).strip())
        except ValueError:
            raise MappingError(f"{where}: not an ISO date-time") from None
    # Vietnamese systems write local time without an offset; canonical times carry one.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=VN_TZ)
    return moment.isoformat()


_Transform = Callable[[Any, str, str], Any]
TRANSFORMS: dict[str, _Transform] = {
    "nfc": lambda v, w, a: unicodedata.normalize("NFC", _text(v, w)),
    "upper": lambda v, w, a: unicodedata.normalize("NFC", _text(v, w).upper()),
    "lower": lambda v, w, a: unicodedata.normalize("NFC", _text(v, w).lower()),
    "strip": lambda v, w, a: " ".join(_text(v, w).split()),
    "ascii": lambda v, w, a: _ascii(_text(v, w)),
    "string": lambda v, w, a: scalar_text(v),
    "integer": lambda v, w, a: _integer(v, w),
    "number": lambda v, w, a: _number(v, w),
    "boolean": lambda v, w, a: _boolean(v, w),
    "parse_date": lambda v, w, a: _parse_date(v, w),
    "format_date": lambda v, w, a: _format_date(v, w, a),
    "datetime": lambda v, w, a: _datetime(v, w),
}
"""Transform name → function. ``format_date`` takes a style: ``format_date:dd/MM/yyyy``."""
_ARGS: dict[str, tuple[str, ...]] = {"format_date": DATE_STYLES}


def run_transform(spec: str, value: Any, *, where: str = "value") -> Any:
    """Apply ``name`` or ``name:arg`` to ``value`` (item by item for a list).

    With ``value`` ``None`` it only checks the spec, raising ``ValueError`` if it is wrong.
    """
    name, _, arg = spec.partition(":")
    allowed = _ARGS.get(name, ())
    if (arg not in allowed) if allowed else bool(arg):
        expected = f"one of {', '.join(allowed)}" if allowed else "no argument"
        raise ValueError(f"transform {name!r} takes {expected}")
    if value is None:
        return None
    function = TRANSFORMS[name]
    if isinstance(value, list):
        return [function(item, where, arg) for item in value]
    return function(value, where, arg)


def jsonable(value: Any, where: str = "answer") -> Any:
    """An upstream value as canonical JSON: NFC text, ``Decimal`` as exact text, ISO times."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, where) for v in value]
    raise MappingError(f"{where}: a value of a kind the bus cannot pass on")
