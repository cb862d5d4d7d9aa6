"""The Store protocol: durable state of the bus (request results for idempotency and async
mode; the audit trail). Implementations: ``sqlite`` (embedded default) and ``postgres``
(production); one contract suite runs against both.

Message results are keyed by (consumer, request_id): request ids are chosen by callers, so
they are only unique per calling system, and one consumer must never see another's result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bus.sealing import Keyring

__all__ = [
    "GENESIS_HASH",
    "SUBJECT_KEYS",
    "AuditRecord",
    "ChainConflict",
    "ChainHead",
    "DeliveryState",
    "LoggedEvent",
    "MessageState",
    "MessageWrite",
    "Store",
    "StoredMessage",
    "record_subject_keys",
]

MessageState = Literal["pending", "done", "fetched"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A request the bus has accepted, and (once done) the answer it gave; ``fetched`` once
    ``GET /v1/messages/{id}`` has handed the answer over (the answer is then gone)."""

    consumer: str
    request_id: str
    body_hash: str
    """SHA-256 hex of the canonical request body: same id + other hash = conflict."""
    state: MessageState
    status: int | None
    """HTTP status of the answer (``None`` while pending)."""
    reply: bytes | None
    """The answer's JSON body exactly as sent (``None`` while pending)."""
    created_at: float
    updated_at: float
    expires_at: float
    key_id: str | None = None
    """Which at-rest key sealed ``reply`` in the store (:mod:`bus.sealing`); the store hands
    ``reply`` out opened."""


@dataclass(frozen=True, slots=True)
class MessageWrite:
    """A message-result write made in the audit writer's transaction
    (:meth:`Store.audit_append_with`): a ``claim`` (as :meth:`Store.message_begin`) or a
    ``finish`` (as :meth:`Store.message_finish`)."""

    kind: Literal["claim", "finish"]
    consumer: str
    request_id: str
    body_hash: str = ""
    ttl_s: float = 0.0
    status: int = 0
    reply: bytes = b""
    key_id: str = ""
    """The key ``reply`` is sealed under (set by the store, which seals it)."""
    lasting: bool = True
    """``False``: this write (and the records it travels with) need only survive the
    process, not the machine (a synchronous request's claim with its ``STARTED``
    record): the store may commit it without waiting for the disk (SQLite
    ``synchronous=NORMAL`` for that commit, PostgreSQL ``synchronous_commit = off``).
    The next lasting commit makes it lasting too. Any lasting write or record in a
    commit makes the whole commit lasting."""


GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record of every chain (and the anchor of an unpruned one)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One sealed record of the audit trail, exactly as stored; :mod:`bus.audit.observer` builds,
    hashes and verifies these. ``kind`` is ``exchange`` (one request) or ``admin``."""

    chain: str
    seq: int
    time_us: int
    """When the exchange began (or the admin action happened), µs since the epoch, UTC."""
    kind: str
    node: str
    request_id: str | None
    correlation_id: str | None
    consumer: str | None
    officer: str | None
    unit: str | None
    service: str | None
    operation: str | None
    purpose: Mapping[str, str]
    subject_key: str | None
    """HMAC-SHA256 (hex) of the subject's ID number under the audit key; never the ID."""
    key_id: str | None
    """Which audit key made ``subject_key`` (a fingerprint, not the key)."""
    fields: tuple[str, ...]
    outcome: str
    status: int
    latency_us: int
    action: str | None
    actor: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""


SUBJECT_KEYS = "subject_keys"
"""``detail`` key of an exchange record: the subject keys of every citizen its answer returned."""


def record_subject_keys(rec: AuditRecord) -> frozenset[str]:
    """Every subject key of a record: the citizen asked about and those the answer returned."""
    keys = {rec.subject_key} if rec.subject_key else set()
    returned = rec.detail.get(SUBJECT_KEYS) if rec.kind == "exchange" else None
    if isinstance(returned, list):
        keys.update(k for k in returned if isinstance(k, str))
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """One writer's chain: its last record, its prune anchor and its current holder."""

    chain: str
    node: str
    head_seq: int
    head_hash: str
    anchor_seq: int
    """Records up to this seq were pruned; the first kept record follows ``anchor_hash``."""
    anchor_hash: str
    holder: str | None
    lease_until: float


DeliveryPhase = Literal["ACCEPTING", "QUEUED", "DELIVERING", "DELIVERED", "DEAD"]


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """Where one one-way message stands (a send, or one subscription's copy of an event).

    ``stream`` names the queue of messages it belongs to: ``send:<consumer>`` for a send
    (``msg_id`` is the caller's request_id), ``sub:<consumer>.<subscription>`` for an event
    (``msg_id`` is the event_id). ``ACCEPTING`` while the gateway waits for the broker's
    confirm; ``QUEUED`` once confirmed; ``DELIVERING`` after a failed attempt (the next one
    not before ``next_at``); ``DELIVERED`` / ``DEAD`` at the end."""

    stream: str
    msg_id: str
    body_hash: str
    state: DeliveryPhase
    attempts: int
    last_error: str | None
    next_at: float
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One event in a pull subscription's log, as the subscriber gets it."""

    seq: int
    event_id: str
    body: bytes


class ChainConflict(Exception):
    """The chain is not where the writer thinks: another holder took it or wrote to it."""


class Store(Protocol):
    """Durable state; every method is safe to call from several processes at once.

    Answers are kept sealed under ``keyring`` (its first key; bound to consumer and request
    id): a record whose answer does not open is treated as absent."""

    keyring: Keyring

    async def connect(self) -> None:
        """Open connections and create the schema if it does not exist (idempotent)."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...

    async def ping(self) -> bool:
        """True if the store answers (for ``/readyz``)."""
        ...

    async def message_begin(
        self, consumer: str, request_id: str, body_hash: str, ttl_s: float
    ) -> StoredMessage | None:
        """Claim (consumer, request_id) as ``pending``; ``None`` if this call claimed it,
        else the existing record (pending or done) — atomically, across processes."""
        ...

    async def message_finish(
        self, consumer: str, request_id: str, status: int, reply: bytes
    ) -> None:
        """Store the answer of a claimed request (state becomes ``done``)."""
        ...

    async def message_release(self, consumer: str, request_id: str) -> None:
        """Forget a ``pending`` claim (the request was never sent, e.g. rejected first)."""
        ...

    async def message_get(self, consumer: str, request_id: str) -> StoredMessage | None:
        """The record of (consumer, request_id), if any and not expired."""
        ...

    async def messages_prune(self, now: float) -> int:
        """Delete records whose ``expires_at`` has passed; returns how many."""
        ...

    async def message_fetched(self, consumer: str, request_id: str) -> bool:
        """Hand a ``done`` answer over: the record becomes ``fetched`` (answer deleted, kept
        until it expires so a repeat is told); ``False`` if it was not ``done``."""
        ...

    async def messages_purge(self, consumers: Sequence[str]) -> int:
        """Delete every record of these consumers (their grants were revoked)."""
        ...

    async def messages_key_use(self) -> dict[str, int]:
        """How many stored answers each key id sealed (``""``: none, or an unsealed row)."""
        ...

    async def messages_retire(self, keep: Sequence[str]) -> int:
        """Delete the records whose answer is sealed under a key id not in ``keep``."""
        ...

    # One-way deliveries (bus/store/deliveries.py).

    async def delivery_begin(
        self, stream: str, msg_id: str, body_hash: str, state: str, ttl_s: float
    ) -> DeliveryState | None:
        """Create the record in ``state`` (attempts 0); ``None`` if this call created it,
        else the existing live record — atomically, across processes."""
        ...

    async def delivery_set(
        self,
        stream: str,
        msg_id: str,
        state: str,
        *,
        attempts: int | None = None,
        last_error: str | None = None,
        next_at: float = 0.0,
    ) -> None:
        """Move the record to ``state`` (``attempts``, ``last_error`` replaced when given)."""
        ...

    async def delivery_get(self, stream: str, msg_id: str) -> DeliveryState | None:
        """The live record, if any."""
        ...

    async def delivery_forget(self, stream: str, msg_id: str) -> None:
        """Delete the record (the message was never accepted)."""
        ...

    async def deliveries_prune(self, now: float) -> int:
        """Delete expired delivery records; returns how many."""
        ...

    async def event_append(self, subscription: str, event_id: str, body: bytes) -> int | None:
        """Append to a pull subscription's log (one writer per subscription); the new seq,
        or ``None`` if ``event_id`` is already in the log."""
        ...

    async def events_after(self, subscription: str, after: int, limit: int) -> list[LoggedEvent]:
        """Up to ``limit`` events of the log with seq > ``after``, by seq."""
        ...

    async def cursor_get(self, subscription: str) -> int:
        """The subscriber's acknowledged position (0 if it never acknowledged)."""
        ...

    async def cursor_set(self, subscription: str, position: int) -> None:
        """Acknowledge up to ``position`` (never moves backwards)."""
        ...

    async def source_seen(self, source: str, item_id: str) -> bool:
        """Whether the scheduled pull ``source`` has handled ``item_id``."""
        ...

    async def source_mark(self, source: str, item_id: str) -> None:
        """Remember that ``source`` has handled ``item_id`` (idempotent)."""
        ...

    # The audit trail. Records are append-only; each writer (process) holds one chain,
    # claimed with a lease, so writers never contend on one chain.

    async def audit_claim(self, node: str, holder: str, lease_s: float, now: float) -> ChainHead:
        """Claim the first chain ``<node>/<n>`` whose lease is free (or already ours),
        creating it if every one is held; the lease lasts ``lease_s`` from ``now``."""
        ...

    async def audit_renew(self, chain: str, holder: str, lease_s: float, now: float) -> bool:
        """Extend the lease; ``False`` if ``holder`` no longer holds ``chain``."""
        ...

    async def audit_release(self, chain: str, holder: str) -> None:
        """Give the chain up (clean shutdown) so the next process may continue it."""
        ...

    async def audit_append(self, chain: str, holder: str, records: Sequence[AuditRecord]) -> None:
        """Insert ``records`` (consecutive seqs continuing the head) and advance the head,
        in one transaction; :class:`ChainConflict` if ``holder`` does not hold the chain or
        its head is not ``records[0].seq - 1`` / ``records[0].prev_hash``."""
        ...

    async def audit_append_with(
        self,
        chain: str,
        holder: str,
        records: Sequence[AuditRecord],
        writes: Sequence[MessageWrite],
        *,
        lasting: bool = True,
    ) -> list[StoredMessage | None]:
        """:meth:`audit_append` and the message ``writes`` (first, in order) in one
        transaction: all land or none (a :class:`ChainConflict` undoes the writes too). Each
        write's result: a claim's as :meth:`message_begin`'s, ``None`` for a finish. An
        exchange's audit record and its idempotency claim (or answer) cost one commit.
        ``lasting=False`` (the caller's word that no write or record of it needs more, see
        :attr:`MessageWrite.lasting`): the commit need not reach the disk before returning
        (it survives a killed process, not a power cut)."""
        ...

    async def audit_head(self, chain: str) -> ChainHead | None:
        """One chain's head, if the chain exists."""
        ...

    async def audit_chains(self) -> list[ChainHead]:
        """Every chain, by name."""
        ...

    async def audit_records(self, chain: str, after_seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` records of ``chain`` with seq > ``after_seq``, by seq."""
        ...

    async def audit_find(
        self,
        *,
        subject_keys: Sequence[str] = (),
        request_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Records matching every given filter (any of ``subject_keys``; time is
        ``since_us <= time_us < until_us``), by time."""
        ...

    async def audit_key_use(self, key_id: str) -> tuple[bool, bool]:
        """Whether exchange records keyed under ``key_id`` exist, and whether records keyed
        under any other key id do (``audit query`` refuses a key the trail was not written
        with instead of reporting 0 accesses)."""
        ...

    async def audit_prune_plan(self, before_us: int) -> dict[str, tuple[int, str]]:
        """Per chain, the longest prefix of records all older than ``before_us``:
        chain → (seq of its last record, that record's hash). Chains with none are left out."""
        ...

    async def audit_prune(self, cuts: Mapping[str, tuple[int, str]]) -> int:
        """Delete each chain's records up to its cut seq and make the cut its anchor (only
        ever forward), in one transaction; returns how many records were deleted."""
        ...
