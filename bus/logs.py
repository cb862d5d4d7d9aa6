"""structlog set-up: JSON lines in production, readable lines in a terminal, PII masked.

``configure()`` is called once by the CLI. The correlation id (and service, operation,
consumer) are bound per request with :func:`structlog.contextvars.bind_contextvars` at the
gateway edge and again in the worker from the message, so one id follows a request across
the broker. Records of the standard ``logging`` module (aiohttp, aio-pika, asyncio) go
through the same processors, so they are masked and rendered the same way.

:func:`mask_pii` runs last before rendering, over every value of every event (nested
dicts and lists too, exception text included), so a careless log call cannot leak:

* ID numbers: any run of exactly 9 or 12 digits → ``001*******45``;
* names: the value of a key that holds names (``full_name``, ``name``, ``family`` …,
  C06/MOJ spellings too) → initials only, ``N*** V*** A***``;
* the personal data of the request being served: the gateway and the worker register its
  names and IDs with :func:`remember_pii`, and any occurrence — whatever its case or
  accents — is masked;
* Vietnamese full names in free text: a capitalised run of words starting with one of the
  common family names (Nguyễn, Trần, Lê …, with or without diacritics).

Exchange ids are never altered, so the id a caller reports can be found with grep: under
the id keys (:data:`ID_KEYS`: ``correlation_id``, ``request_id``, ``trace_id`` …) a
value is masked only where it is an ID number as a whole (9 or 12 digits and nothing
else) or holds an ID number of the request being served (those of its body,
:func:`remember_pii`) — a caller who puts a CCCD into its ``request_id`` still gets it
masked — and never for any other run of digits (``trace-123456789-abc`` stays as it is).
The ids the bus generates itself (:func:`bus.canonical.new_id`) contain no run of nine
digits or more, so no rule can match them, wherever they appear.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, MutableMapping
from contextvars import ContextVar, Token
from typing import Any, Literal

import orjson
import structlog

__all__ = [
    "ID_KEYS",
    "NAME_KEYS",
    "PERSONAL_KEYS",
    "configure",
    "forget_pii",
    "mask_id",
    "mask_name",
    "mask_pii",
    "mask_text",
    "mask_value",
    "pii_of",
    "remember_pii",
    "remember_pii_here",
    "reset",
]

_ID_RE = re.compile(r"(?<![0-9])([0-9]{12}|[0-9]{9})(?![0-9])")

NAME_KEYS = frozenset(
    {
        "full_name",
        "fullname",
        "name",
        "family",
        "middle",
        "given",
        "full",
        "signer_name",
        "officer_account",
        "ho",
        "ten",
        "chudem",
        "chu_dem",
        "hoten",
        "ho_ten",
        "hovaten",
        "ho_va_ten",
        "nguoiky",
    }
)
"""Keys (compared case-insensitively) whose string values are people's names."""
_NAME_SUFFIXES = ("_full_name", "hoten", "hovaten")

_FAMILIES = (
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi",
    "Đỗ", "Hồ", "Ngô", "Dương", "Lý", "Đinh", "Đoàn", "Lâm", "Trịnh", "Trương", "Lương",
    "Đào", "Vương", "Hà", "Mai", "Tạ", "Tô", "Cao", "Kiều", "Lưu", "Triệu", "Quách",
    "Thái", "Châu", "Văn",
)  # fmt: skip
"""Common family names (most of the population): the free-text name heuristic's anchor."""


def _fold_char(ch: str) -> str:
    if ch in "đĐ":
        return "d" if ch == "đ" else "D"
    base = [c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn"]
    return base[0] if len(base) == 1 else ch


class _FoldTable(dict[int, str]):
    """``str.translate`` table that works out (and keeps) each character's fold on first use."""

    def __missing__(self, code: int) -> str:
        folded = self[code] = _fold_char(chr(code))
        return folded


_FOLD = _FoldTable()


def _fold(text: str) -> str:
    """Without diacritics, one character for one (so positions still match the original)."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", text).translate(_FOLD)


_FREE_NAME_RE = re.compile(
    r"(?<!\w)(?i:" + "|".join(sorted({_fold(f) for f in _FAMILIES}, key=len, reverse=True)) + r")"
    r"(?:[ \t]+[^\W\d_]+){1,4}"
)
_WORD_RE = re.compile(r"[^ \t]+")


def mask_id(value: str) -> str:
    """``001234567845`` → ``001*******45`` (first three and last two digits kept)."""
    if len(value) < 6:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]


def mask_name(value: str) -> str:
    """``Nguyễn Văn An`` → ``N*** V*** A***``: initials only, the length hidden."""
    return " ".join(word[0] + "***" for word in value.split() if word) or "***"


def _free_name_span(m: re.Match[str]) -> tuple[int, int] | None:
    """The capitalised run of a family-name match (two words at least), if it is one."""
    words = list(_WORD_RE.finditer(m.group(0)))
    if not words[0].group(0)[0].isupper():
        return None
    n = 1
    while n < len(words) and words[n].group(0)[0].isupper():
        n += 1
    if n < 2:
        return None
    return m.start(), m.start() + words[n - 1].end()


class _Known:
    """The personal data of the request being served: IDs, and names as one pattern."""

    __slots__ = ("_pattern", "_source", "has_names", "id_masks", "ids", "needles")

    def __init__(self, values: Iterable[str]) -> None:
        names: set[str] = set()
        needles: set[str] = set()
        self.ids: set[str] = set()
        for value in values:
            value = " ".join(unicodedata.normalize("NFC", value).split())
            if value.isdigit():
                if len(value) >= 6:
                    self.ids.add(value)
            elif " " in value or len(value) >= 4:
                # A lone short word ("An", "Thị") is a part of a name, not one: the whole
                # name is remembered too, and masking every "an" would garble the logs.
                names.add(re.escape(_fold(value)).replace(r"\ ", r"\s+"))
                needles.add(_fold(value).split(" ", 1)[0].lower())
        # Any match starts with its name's first word: a cheap test before the regex.
        self.needles = tuple(needles)
        self.id_masks = tuple((value, mask_id(value)) for value in self.ids)
        alternatives = "|".join(sorted(names, key=len, reverse=True))
        # Compiled on first use only: most requests log no value that could hold a name,
        # and each request's names make a new pattern (re's cache would not help).
        self._source = rf"(?<!\w)(?:{alternatives})(?!\w)" if names else ""
        self._pattern: re.Pattern[str] | None = None
        self.has_names = bool(names)

    def pattern(self) -> re.Pattern[str]:
        """The names as one case-insensitive pattern over folded text."""
        if self._pattern is None:
            self._pattern = re.compile(self._source, re.IGNORECASE)
        return self._pattern


_KNOWN: ContextVar[_Known | None] = ContextVar("lgsp_known_pii", default=None)


@contextlib.contextmanager
def remember_pii(values: Iterable[str]) -> Iterator[None]:
    """Within the block, mask these names and IDs wherever they appear in a log event."""
    token = _KNOWN.set(_Known(values))
    try:
        yield
    finally:
        _KNOWN.reset(token)


def remember_pii_here(values: Iterable[str]) -> Token[_Known | None]:
    """Like :func:`remember_pii`, until :func:`forget_pii` or the end of the current task
    (aiohttp runs each request in a task of its own)."""
    return _KNOWN.set(_Known(values))


def forget_pii(token: Token[_Known | None]) -> None:
    """Undo a :func:`remember_pii_here`."""
    _KNOWN.reset(token)


def pii_of(body: Any) -> list[str]:
    """Names and ID-like strings anywhere in a (request) body, for :func:`remember_pii`."""
    found: list[str] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and (_is_name_key(key) or _ID_RE.fullmatch(value)):
            found.append(value)

    walk(body, "")
    return found


_NAME_KEY_MEMO: dict[str, bool] = {}
_NAME_KEY_MEMO_MAX = 4096  # keys come from code and request bodies: bounded, not trusted


def _is_name_key(key: str) -> bool:
    known = _NAME_KEY_MEMO.get(key)
    if known is not None:
        return known
    low = key.lower()
    answer = low in NAME_KEYS or low.endswith(_NAME_SUFFIXES)
    if len(_NAME_KEY_MEMO) < _NAME_KEY_MEMO_MAX:
        _NAME_KEY_MEMO[key] = answer
    return answer


def _mask_id_match(m: re.Match[str]) -> str:
    return mask_id(m.group(0))


def mask_text(text: str) -> str:  # noqa: C901 (ARCHITECTURE.md)
    """Mask IDs, the request's known personal data and free-text Vietnamese names."""
    known = _KNOWN.get()
    if known is not None:
        for value, masked in known.id_masks:
            if value in text:
                text = text.replace(value, masked)
    text = _ID_RE.sub(_mask_id_match, text)
    has_space = " " in text or "\t" in text
    if not has_space and (known is None or not known.has_names):
        return text  # no name of two words and none known: most values end here
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    folded = _fold(text)  # same length as text: spans found in it apply to text
    lowered = folded.lower()
    known_hit = False
    if known is not None and known.has_names:
        for needle in known.needles:
            if needle in lowered:
                known_hit = True
                break
    if not has_space and not known_hit:
        return text
    spans: list[tuple[int, int]] = []
    if known_hit and known is not None:
        spans.extend(m.span() for m in known.pattern().finditer(folded))
    if has_space:
        for m in _FREE_NAME_RE.finditer(folded):
            span = _free_name_span(m)
            if span is not None:
                spans.append(span)
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        if start < pos:  # overlaps one already masked
            start = pos
        if start >= end:
            continue
        out.append(text[pos:start])
        out.append(mask_name(text[start:end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


_PLAIN = (int, float, bool, type(None))
"""Values that cannot hold personal data as they are (a number is not an ID string)."""


PERSONAL_KEYS = re.compile(r"birth|address|residence|id_number|personal_id|phone|email", re.I)
"""Keys (searched, case-insensitively) whose string values are personal data other than
names — dates of birth, addresses, ID numbers, contacts: masked whole (``***``)."""


ID_KEYS = frozenset(
    {"correlation_id", "request_id", "trace_id", "message_id", "dead_id", "x-request-id"}
)
"""Keys whose values are exchange ids: only the request's own ID numbers are masked there."""


def _mask_exchange_id(value: str) -> str:
    if _ID_RE.fullmatch(value):  # nothing but an ID number: indistinguishable from one
        return mask_id(value)
    known = _KNOWN.get()
    if known is not None:
        for number, masked in known.id_masks:
            if number in value:
                value = value.replace(number, masked)
    return value


def mask_value(value: Any, key: str = "", *, whole_names: bool = False) -> Any:
    """``value`` (any JSON-like structure) with its personal data masked: the one masker of
    logs and of dead letters shown to operators. Under a name key (:data:`NAME_KEYS`) a
    string is masked as a name (``whole_names``: as ``***``), under a :data:`PERSONAL_KEYS`
    key whole, elsewhere its ID numbers and free-text names are masked."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, str):
        if key in ID_KEYS:
            return _mask_exchange_id(value)
        if key and _is_name_key(key):
            return "***" if whole_names else mask_name(value)
        if key and _is_personal_key(key):
            return "***"
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(v, str(k), whole_names=whole_names) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v, key, whole_names=whole_names) for v in value]
    if isinstance(value, BaseException):
        return mask_text(repr(value))
    return value


_PERSONAL_KEY_MEMO: dict[str, bool] = {}


def _is_personal_key(key: str) -> bool:
    known = _PERSONAL_KEY_MEMO.get(key)
    if known is None:
        known = PERSONAL_KEYS.search(key) is not None
        if len(_PERSONAL_KEY_MEMO) < _NAME_KEY_MEMO_MAX:
            _PERSONAL_KEY_MEMO[key] = known
    return known


_STATIC_KEYS = frozenset({"event", "level", "logger", "service", "operation", "consumer", "code"})
"""Keys whose values come from code or the routing config (event names, levels, config
names, error codes), never from a request body: the same value is masked the same way on
every line, so its masked form is remembered (:data:`_STATIC_MEMO`). ID-like digits and
free-text names in them are still masked; only the per-request known-PII pass is skipped."""
_STATIC_MEMO: dict[str, str] = {}
_STATIC_MEMO_MAX = 4096  # bounded: a poison message's headers can be anything


def _mask_static(value: str) -> str:
    masked = _STATIC_MEMO.get(value)
    if masked is None:
        token = _KNOWN.set(None)
        try:
            masked = mask_text(value)
        finally:
            _KNOWN.reset(token)
        if len(_STATIC_MEMO) < _STATIC_MEMO_MAX:
            _STATIC_MEMO[value] = masked
    return masked


def mask_pii(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask ID numbers and names in every value of the event.

    ``timestamp`` is left alone: :func:`configure` puts ``TimeStamper`` right before this
    processor in both chains, so it is always the stamper's ISO time (a caller's own
    ``timestamp=`` is overwritten). Masking it cost a regex pass per line, and remembering it
    filled :data:`_STATIC_MEMO` with unique times, so later static values were not memoized."""
    for key, value in event_dict.items():
        if key == "timestamp":
            continue
        if type(value) is str and key in _STATIC_KEYS:
            event_dict[key] = _mask_static(value)
        else:
            event_dict[key] = mask_value(value, key)
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A :class:`structlog.PrintLogger` that knows its name (``structlog.get_logger(name)``)."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    """Logger factory: lines of ``structlog.get_logger("bus.x")`` carry ``"logger": "bus.x"``."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "lgsp-bus")


QUIET_LIBRARIES = {"watchfiles": logging.WARNING}
"""Libraries whose info lines are chatter, not events: logged from this level only
(watchfiles says "1 change detected" for every file event it sees)."""


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler :func:`configure` adds, so a second call replaces it."""


def configure(
    fmt: Literal["json", "console"] | None = None,
    level: str = "info",
    stream: Any = None,
    *,
    cache: bool = True,
) -> None:
    """Configure structlog (and stdlib logging) once for the process.

    ``fmt=None``: console on a TTY, else JSON. ``cache=False`` lets a later call (tests)
    re-route loggers that were already used.
    """
    out = stream or sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda o, **_: orjson.dumps(o, default=str).decode()
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.stdlib.add_logger_name,  # structlog's name, or the stdlib record's
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            mask_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    handler = _StdlibHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.contextvars.merge_contextvars, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_pii,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Library debug output (aio-pika frames …) would drown ours: stdlib stays at info or above.
    root.setLevel(max(numeric, logging.INFO))
    for name, quiet in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(numeric, quiet))


def reset() -> None:
    """Undo :func:`configure` (tests): structlog's defaults, our stdlib handler removed."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
