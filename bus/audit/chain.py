"""The audit trail's pure core: canonical serialisation, record hashes, subject keys and
chain verification. No I/O here; :mod:`bus.audit.observer` writes and reads through the store.

Canonical form (format ``v`` 1), the bytes a record's hash is taken over: a JSON object of
every stored field except ``hash``, plus ``"v": 1``; keys sorted by code point at every
level, no insignificant whitespace, UTF-8 with non-ASCII characters unescaped, strings NFC
(normalised when the entry is built, so the stored text is what is hashed), integers only —
times and latencies are whole microseconds, no floats anywhere. That is
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` of Python's
standard library (rendered with orjson where that is provably the same bytes, see
:func:`_dumps`), and for this subset it coincides with RFC 8785 (JCS) canonical JSON, so a
third party can recompute a hash without our code::

    hash = sha256(canonical(record without "hash")).hexdigest()
    record.prev_hash == hash of the record before it in its chain (GENESIS_HASH for seq 1,
                        the chain's anchor hash for the first record kept after a prune)

The subject key is ``HMAC-SHA256(audit key, id_number)`` in hex: the same citizen gets the
same key under the same audit key, and the ID cannot be recovered without the key. An
exchange record's ``subject_key`` is the citizen the request named; ``detail.subject_keys``
(a sorted list, hashed with the rest of ``detail``) keys every citizen its answer returned —
the person, parents, spouse… (:func:`record_subject_keys` is both).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bus.store.base import SUBJECT_KEYS, AuditRecord, ChainHead, record_subject_keys

__all__ = [
    "FORMAT_VERSION",
    "PRUNE_ACTION",
    "SUBJECT_KEYS",
    "AuditEntry",
    "ChainProblem",
    "ChainVerifier",
    "Pin",
    "canonical_bytes",
    "canonical_record",
    "key_fingerprint",
    "nfc",
    "record_hash",
    "record_subject_keys",
    "seal",
    "subject_key",
]

FORMAT_VERSION = 1
PRUNE_ACTION = "audit.prune"
"""Admin action whose ``detail.anchors`` witness every chain's prune anchor."""


def nfc(value: Any) -> Any:
    """Strings (also inside lists and dicts) in NFC; floats become their ``repr`` string,
    because the canonical form has no floats."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {nfc(str(k)): nfc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nfc(v) for v in value]
    return nfc(str(value))


def _check(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("the canonical form has no floats")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("object keys must be strings")
            _check(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check(v)


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
"""orjson's integer range; outside it orjson refuses where the stdlib renders digits."""
_MAX_DEPTH = 250
"""Below orjson's nesting limit (255); deeper objects take the stdlib."""


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether orjson renders ``value`` byte for byte as the stdlib form does: only exact
    str/int/bool/None/list/tuple/dict with str keys. orjson also renders datetimes, UUIDs,
    dataclasses and enums, which the stdlib refuses, so anything else takes the stdlib."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if depth > _MAX_DEPTH:  # orjson refuses it anyway; don't walk into a RecursionError
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            # Strings inline: a record is mostly flat, and a call per field costs 2 µs.
            if type(item) is not str and not _plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(item) is str or _plain(item, depth + 1) for item in value)
    return False


def _dumps(obj: dict[str, Any]) -> bytes:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in
    UTF-8. orjson (≈10× faster; this runs for every request) sorts keys by code point and
    escapes exactly the stdlib's set (``"``, ``\\``, controls, ``\\b\\f\\n\\r\\t`` short
    forms) — tests/test_audit_canonical.py proves it over generated records. What it
    would render differently, or refuses (lone surrogates, > 255 levels), takes the
    stdlib, which then behaves exactly as before."""
    if _plain(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def canonical_bytes(obj: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of ``obj`` (see the module docstring)."""
    _check(obj)
    if type(obj) is dict:
        return _dumps(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _hashed_fields(rec: AuditRecord) -> dict[str, Any]:
    return {
        "v": FORMAT_VERSION,
        "chain": rec.chain,
        "seq": rec.seq,
        "time_us": rec.time_us,
        "kind": rec.kind,
        "node": rec.node,
        "request_id": rec.request_id,
        "correlation_id": rec.correlation_id,
        "consumer": rec.consumer,
        "officer": rec.officer,
        "unit": rec.unit,
        "service": rec.service,
        "operation": rec.operation,
        "purpose": dict(rec.purpose),
        "subject_key": rec.subject_key,
        "key_id": rec.key_id,
        "fields": list(rec.fields),
        "outcome": rec.outcome,
        "status": rec.status,
        "latency_us": rec.latency_us,
        "action": rec.action,
        "actor": rec.actor,
        "detail": dict(rec.detail),
        "prev_hash": rec.prev_hash,
    }


def canonical_record(rec: AuditRecord) -> bytes:
    """The bytes ``rec.hash`` is the SHA-256 of."""
    # Only the free-form mappings can hold a float; the other fields are typed (a float
    # tampered into one renders differently from the int, so its hash fails anyway).
    _check(rec.purpose)
    _check(rec.detail)
    return _dumps(_hashed_fields(rec))


def record_hash(rec: AuditRecord) -> str:
    """SHA-256 hex of the record's canonical form; a record that cannot be put in
    canonical form (e.g. a float written into it) gets a hash no record has."""
    try:
        return hashlib.sha256(canonical_record(rec)).hexdigest()
    except (TypeError, ValueError):
        return "!" * 64


def subject_key(key: bytes, id_number: str) -> str:
    """HMAC-SHA256 hex of an ID number under the audit key."""
    return hmac.new(key, id_number.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """A short public name of an audit key (not reversible), stored with every subject key
    so a query under another key can say so instead of silently finding nothing."""
    return hashlib.sha256(b"lgsp-bus audit key id\x00" + key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record before it is sealed into a chain: no chain, seq or hashes yet."""

    time_us: int
    kind: Literal["exchange", "admin", "delivery"]
    request_id: str | None = None
    correlation_id: str | None = None
    consumer: str | None = None
    officer: str | None = None
    unit: str | None = None
    service: str | None = None
    operation: str | None = None
    purpose: Mapping[str, str] = field(default_factory=dict)
    subject_key: str | None = None
    key_id: str | None = None
    fields: tuple[str, ...] = ()
    outcome: str = "OK"
    status: int = 0
    latency_us: int = 0
    action: str | None = None
    actor: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def seal(entry: AuditEntry, *, chain: str, node: str, seq: int, prev_hash: str) -> AuditRecord:
    """Put ``entry`` at ``seq`` of ``chain`` after ``prev_hash``; compute its hash."""
    values: dict[str, Any] = {
        "chain": chain,
        "seq": seq,
        "time_us": entry.time_us,
        "kind": entry.kind,
        "node": node,
        "request_id": entry.request_id,
        "correlation_id": entry.correlation_id,
        "consumer": entry.consumer,
        "officer": entry.officer,
        "unit": entry.unit,
        "service": entry.service,
        "operation": entry.operation,
        "purpose": dict(entry.purpose),
        "subject_key": entry.subject_key,
        "key_id": entry.key_id,
        "fields": tuple(entry.fields),
        "outcome": entry.outcome,
        "status": entry.status,
        "latency_us": entry.latency_us,
        "action": entry.action,
        "actor": entry.actor,
        "detail": dict(entry.detail),
        "prev_hash": prev_hash,
    }
    # Built once, hash included (this runs for every request); the bytes hashed are
    # exactly canonical_record(result) — tests/test_audit_chain.py pins both.
    _check(values["purpose"])
    _check(values["detail"])
    hashed = {**values, "v": FORMAT_VERSION, "fields": list(entry.fields)}
    return AuditRecord(**values, hash=hashlib.sha256(_dumps(hashed)).hexdigest())


ProblemKind = Literal["altered", "missing", "unlinked", "truncated", "inserted", "head", "anchor"]


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first thing wrong with one chain."""

    chain: str
    seq: int
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"{self.chain} seq {self.seq}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class Pin:
    """A record hash an operator wrote down earlier (e.g. from a checkpoint log line)."""

    chain: str
    seq: int
    hash: str


class ChainVerifier:
    """Walks one chain in seq order and reports its first problem.

    Feed every record of the chain in seq order, then call :meth:`finish`. Altered content
    breaks the record's own hash; a deleted record leaves a seq gap; a swapped, reordered or
    inserted record breaks the ``prev_hash`` link or its hash (seq is hashed); a truncated
    tail stops short of the head the chain table names.
    """

    def __init__(self, head: ChainHead, pins: Iterable[Pin] = ()) -> None:
        self.head = head
        self.expected_seq = head.anchor_seq + 1
        self.expected_prev = head.anchor_hash
        self.checked = 0
        self.problem: ChainProblem | None = None
        self.witnesses: set[tuple[str, int, str]] = set()
        """(chain, anchor seq, anchor hash) named by verified ``audit.prune`` records."""
        self._pins = {p.seq: p.hash for p in pins if p.chain == head.chain}

    def _fail(self, seq: int, kind: ProblemKind, message: str) -> ChainProblem:
        self.problem = ChainProblem(self.head.chain, seq, kind, message)
        return self.problem

    def feed(self, rec: AuditRecord) -> ChainProblem | None:  # noqa: C901 (ARCHITECTURE.md)
        """Check the next record; returns (and keeps) the chain's first problem."""
        if self.problem is not None:
            return self.problem
        head = self.head
        if rec.seq > head.head_seq:
            return self._fail(
                rec.seq, "inserted", f"record beyond the chain's head (seq {head.head_seq})"
            )
        if rec.seq < self.expected_seq:
            return self._fail(rec.seq, "inserted", "record at or before the prune anchor")
        if rec.seq > self.expected_seq:
            gap = f"{self.expected_seq}" + (
                f"..{rec.seq - 1}" if rec.seq - 1 > self.expected_seq else ""
            )
            return self._fail(self.expected_seq, "missing", f"record(s) {gap} deleted")
        if rec.chain != head.chain or record_hash(rec) != rec.hash:
            return self._fail(
                rec.seq, "altered", "content does not match its hash (altered or swapped)"
            )
        if rec.prev_hash != self.expected_prev:
            # This record is intact but links to another predecessor: most likely the one
            # before it was replaced with its hash recomputed (or this one was forged).
            if rec.seq - 1 > head.anchor_seq:
                return self._fail(
                    rec.seq - 1,
                    "unlinked",
                    f"is not the record {rec.seq} links to: replaced (hash recomputed), "
                    f"or record {rec.seq} was forged",
                )
            return self._fail(rec.seq, "unlinked", "does not link to the chain's prune anchor")
        pinned = self._pins.pop(rec.seq, None)
        if pinned is not None and pinned != rec.hash:
            return self._fail(rec.seq, "altered", "hash differs from the pinned hash")
        if rec.kind == "admin" and rec.action == PRUNE_ACTION:
            anchors = rec.detail.get("anchors")
            if isinstance(anchors, Mapping):
                for name, value in anchors.items():
                    if isinstance(value, list) and len(value) == 2:
                        self.witnesses.add((str(name), int(value[0]), str(value[1])))
        self.expected_seq = rec.seq + 1
        self.expected_prev = rec.hash
        self.checked += 1
        return None

    def finish(self) -> ChainProblem | None:
        """After the last record: a short chain was truncated; the head must match."""
        if self.problem is not None:
            return self.problem
        head = self.head
        last = self.expected_seq - 1
        if last < head.head_seq:
            gap = f"{last + 1}" + (f"..{head.head_seq}" if head.head_seq > last + 1 else "")
            return self._fail(last + 1, "truncated", f"record(s) {gap} missing at the end")
        if self.expected_prev != head.head_hash:
            return self._fail(
                head.head_seq, "head", "the last record's hash is not the chain head's hash"
            )
        for seq in sorted(self._pins):
            if seq > head.anchor_seq:
                return self._fail(seq, "missing", "a pinned record is not in the chain")
        return None
