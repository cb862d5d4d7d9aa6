"""The SQL schema both stores share, the connection seam, and row ⇄ record conversion.

Tables (prefixed ``lgsp_`` so the bus can share a database):

* ``lgsp_messages`` — request results for idempotency and async mode, each answer sealed
  (``key_id``: the at-rest key that sealed it; added in place to older databases);
* ``lgsp_audit_records`` — the audit trail, primary key (chain, seq), indexes on subject
  key + time, time, and request id; UPDATE is refused by a trigger (append-only; prune
  deletes only whole chain prefixes);
* ``lgsp_audit_chains`` — one row per writer chain: head, prune anchor, lease holder;
* ``lgsp_deliveries`` — state of one-way sends and event deliveries (attempts, next
  attempt, last error); ``lgsp_event_log`` + ``lgsp_cursors`` — pull subscriptions' logs
  and each subscriber's acknowledged position; ``lgsp_source_seen`` — the items each
  scheduled pull has turned into events (added in place: version 1 databases get
  them at connect, ``CREATE … IF NOT EXISTS``);
* ``lgsp_schema`` — the schema version (a database of another version is refused).

JSON columns (purpose, fields, detail) are text, not ``jsonb``: the text read back parses
to exactly what was hashed, on both stores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from bus.store.base import AuditRecord, ChainHead, StoredMessage

__all__ = [
    "AUDIT_COLS",
    "AUDIT_COLUMNS",
    "CHAIN_COLUMNS",
    "CHAIN_CONFLICT",
    "MESSAGE_COLUMNS",
    "MESSAGE_READ",
    "SCHEMA_VERSION",
    "Conn",
    "audit_record",
    "audit_row",
    "chain_head",
    "schema_statements",
    "stored_message",
]

SCHEMA_VERSION = 1
CHAIN_CONFLICT = "lgsp audit chain conflict"
"""The error a SQLite trigger raises for a record that does not continue its chain."""

AUDIT_COLUMNS = (
    "chain",
    "seq",
    "time_us",
    "kind",
    "node",
    "request_id",
    "correlation_id",
    "consumer",
    "officer",
    "unit",
    "service",
    "operation",
    "purpose",
    "subject_key",
    "key_id",
    "fields",
    "outcome",
    "status",
    "latency_us",
    "action",
    "actor",
    "detail",
    "prev_hash",
    "hash",
)
AUDIT_COLS = ", ".join(AUDIT_COLUMNS)
CHAIN_COLUMNS = "chain, node, head_seq, head_hash, anchor_seq, anchor_hash, holder, lease_until"
MESSAGE_COLUMNS = (
    "consumer, request_id, body_hash, state, status, reply, created_at, updated_at, expires_at"
)
MESSAGE_READ = MESSAGE_COLUMNS + ", key_id"
"""What a message read returns: the columns, then the id of the key that sealed ``reply``."""


def schema_statements(dialect: str) -> list[str]:
    """``CREATE … IF NOT EXISTS`` statements of the schema (idempotent)."""
    blob = "BLOB" if dialect == "sqlite" else "BYTEA"
    stmts = [
        "CREATE TABLE IF NOT EXISTS lgsp_schema (version INTEGER NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS lgsp_messages (
            consumer TEXT NOT NULL, request_id TEXT NOT NULL, body_hash TEXT NOT NULL,
            state TEXT NOT NULL, status INTEGER, reply {blob},
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL, key_id TEXT,
            PRIMARY KEY (consumer, request_id))""",
        "CREATE INDEX IF NOT EXISTS lgsp_messages_expiry ON lgsp_messages (expires_at)",
        """CREATE TABLE IF NOT EXISTS lgsp_audit_records (
            chain TEXT NOT NULL, seq BIGINT NOT NULL, time_us BIGINT NOT NULL,
            kind TEXT NOT NULL, node TEXT NOT NULL, request_id TEXT, correlation_id TEXT,
            consumer TEXT, officer TEXT, unit TEXT, service TEXT, operation TEXT,
            purpose TEXT NOT NULL, subject_key TEXT, key_id TEXT, fields TEXT NOT NULL,
            outcome TEXT NOT NULL, status INTEGER NOT NULL, latency_us BIGINT NOT NULL,
            action TEXT, actor TEXT, detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
            PRIMARY KEY (chain, seq))""",
        "CREATE INDEX IF NOT EXISTS lgsp_audit_subject ON lgsp_audit_records "
        "(subject_key, time_us) WHERE subject_key IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS lgsp_audit_time ON lgsp_audit_records (time_us)",
        "CREATE INDEX IF NOT EXISTS lgsp_audit_request ON lgsp_audit_records (request_id)",
        """CREATE TABLE IF NOT EXISTS lgsp_audit_chains (
            chain TEXT PRIMARY KEY, node TEXT NOT NULL,
            head_seq BIGINT NOT NULL, head_hash TEXT NOT NULL,
            anchor_seq BIGINT NOT NULL, anchor_hash TEXT NOT NULL,
            holder TEXT, lease_until DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS lgsp_deliveries (
            stream TEXT NOT NULL, msg_id TEXT NOT NULL, body_hash TEXT NOT NULL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT,
            next_at DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (stream, msg_id))""",
        "CREATE INDEX IF NOT EXISTS lgsp_deliveries_expiry ON lgsp_deliveries (expires_at)",
        f"""CREATE TABLE IF NOT EXISTS lgsp_event_log (
            subscription TEXT NOT NULL, seq BIGINT NOT NULL, event_id TEXT NOT NULL,
            body {blob} NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (subscription, seq), UNIQUE (subscription, event_id))""",
        """CREATE TABLE IF NOT EXISTS lgsp_source_seen (
            source TEXT NOT NULL, item_id TEXT NOT NULL, seen_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (source, item_id))""",
        """CREATE TABLE IF NOT EXISTS lgsp_cursors (
            subscription TEXT PRIMARY KEY, position BIGINT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL)""",
    ]
    if dialect == "sqlite":
        stmts += [
            "CREATE TRIGGER IF NOT EXISTS lgsp_audit_append_only BEFORE UPDATE ON "
            "lgsp_audit_records BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END",
            # SQLite appends a batch in one statement (see SqliteStore.audit_append): each
            # row must continue its chain's head, which then moves to it. Row triggers run
            # row by row, in the statement's transaction.
            "CREATE TRIGGER IF NOT EXISTS lgsp_audit_link BEFORE INSERT ON lgsp_audit_records "  # noqa: S608
            "WHEN NOT EXISTS (SELECT 1 FROM lgsp_audit_chains WHERE chain = NEW.chain "
            "AND head_seq = NEW.seq - 1 AND head_hash = NEW.prev_hash) "
            f"BEGIN SELECT RAISE(ABORT, '{CHAIN_CONFLICT}'); END",
            "CREATE TRIGGER IF NOT EXISTS lgsp_audit_head AFTER INSERT ON lgsp_audit_records "
            "BEGIN UPDATE lgsp_audit_chains SET head_seq = NEW.seq, head_hash = NEW.hash "
            "WHERE chain = NEW.chain; END",
        ]
    else:
        stmts += [
            "CREATE OR REPLACE FUNCTION lgsp_audit_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit records are append-only'; END $$ LANGUAGE plpgsql",
            "DROP TRIGGER IF EXISTS lgsp_audit_append_only ON lgsp_audit_records",
            "CREATE TRIGGER lgsp_audit_append_only BEFORE UPDATE ON lgsp_audit_records "
            "FOR EACH ROW EXECUTE FUNCTION lgsp_audit_append_only()",
        ]
    return stmts


class Conn(Protocol):
    """What :class:`SqlStore` needs of a connection (placeholders written as ``?``)."""

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """Rows of a query."""
        ...

    async def execute(self, sql: str, *args: Any) -> None:
        """Run a statement."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row."""
        ...


def _json(value: Any) -> str:
    # orjson (several times faster, per audit row) gives the same compact, key-sorted text
    # for the plain values audited; the stdlib handles whatever it refuses (int keys …).
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _loads(text: Any, fallback: Any) -> Any:
    # A tampered column must not crash the verifier: an unreadable value is kept as a
    # string, which then fails the record's hash like any other alteration.
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"<unreadable>": str(text)} if isinstance(fallback, dict) else [str(text)]
    return value if isinstance(value, type(fallback)) else fallback


def audit_row(rec: AuditRecord) -> tuple[Any, ...]:
    """Column values of a record, in :data:`AUDIT_COLUMNS` order."""
    values = {name: getattr(rec, name) for name in AUDIT_COLUMNS}
    values["purpose"] = _json(dict(rec.purpose))
    values["fields"] = _json(list(rec.fields))
    values["detail"] = _json(dict(rec.detail))
    return tuple(values[name] for name in AUDIT_COLUMNS)


def audit_record(row: Sequence[Any]) -> AuditRecord:
    """A record from its columns."""
    values = dict(zip(AUDIT_COLUMNS, row, strict=True))
    values["purpose"] = _loads(values["purpose"], {})
    values["fields"] = tuple(str(f) for f in _loads(values["fields"], []))
    values["detail"] = _loads(values["detail"], {})
    return AuditRecord(**values)


def chain_head(row: Sequence[Any]) -> ChainHead:
    return ChainHead(
        chain=row[0],
        node=row[1],
        head_seq=int(row[2]),
        head_hash=row[3],
        anchor_seq=int(row[4]),
        anchor_hash=row[5],
        holder=row[6],
        lease_until=float(row[7]),
    )


def stored_message(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        consumer=row[0],
        request_id=row[1],
        body_hash=row[2],
        state=row[3],
        status=row[4],
        reply=bytes(row[5]) if row[5] is not None else None,
        created_at=float(row[6]),
        updated_at=float(row[7]),
        expires_at=float(row[8]),
        key_id=row[9] if len(row) > 9 else None,
    )
