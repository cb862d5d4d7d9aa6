"""Every Store method in SQL, shared by both stores over a tiny connection seam.

SQLite and PostgreSQL differ only in how a connection and a transaction are had
(:class:`SqlStore` subclasses provide :meth:`SqlStore._tx` and :meth:`SqlStore._read`) and
in placeholders (written here as ``?``; the PostgreSQL store numbers them). Everything else
— upserts with ``RETURNING``, the chain head compare-and-set — is the same SQL on both.
The schema is in :mod:`bus.store.schema`.
"""

# The f-strings below only splice in the schema's own constant column lists and
# placeholders; every value goes through a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

from bus.sealing import Keyring
from bus.store.base import (
    GENESIS_HASH,
    AuditRecord,
    ChainConflict,
    ChainHead,
    StoredMessage,
    record_subject_keys,
)
from bus.store.deliveries import DeliverySql
from bus.store.schema import (
    AUDIT_COLS,
    CHAIN_COLUMNS,
    MESSAGE_COLUMNS,
    MESSAGE_READ,
    SCHEMA_VERSION,
    Conn,
    audit_record,
    chain_head,
    schema_statements,
    stored_message,
)
from bus.store.sealed import SealedMessages, add_key_column

__all__ = [
    "MAX_CHAIN_SLOTS",
    "MESSAGE_CLAIM",
    "MESSAGE_FINISH",
    "MESSAGE_RELEASE",
    "MESSAGE_SELECT",
    "Conn",
    "SqlStore",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
"""A subject key (HMAC-SHA256 hex): only these are looked for in ``detail``."""
MAX_CHAIN_SLOTS = 1000

# The message-result statements, shared with the SQLite store's batched path.
MESSAGE_CLAIM = (
    f"INSERT INTO lgsp_messages ({MESSAGE_COLUMNS}) "
    "VALUES (?, ?, ?, 'pending', NULL, NULL, ?, ?, ?) "
    "ON CONFLICT (consumer, request_id) DO UPDATE SET "
    "body_hash = excluded.body_hash, state = 'pending', status = NULL, "
    "reply = NULL, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at, expires_at = excluded.expires_at "
    "WHERE lgsp_messages.expires_at <= excluded.created_at RETURNING consumer"
)
"""Claim (consumer, request_id, body_hash, now, now, expires_at): a row back if claimed."""
MESSAGE_SELECT = f"SELECT {MESSAGE_READ} FROM lgsp_messages WHERE consumer = ? AND request_id = ?"
"""The record of (consumer, request_id), live or not."""
MESSAGE_FINISH = (
    "UPDATE lgsp_messages SET state = 'done', status = ?, reply = ?, key_id = ?, updated_at = ? "
    "WHERE consumer = ? AND request_id = ?"
)
"""Store (status, sealed reply, key id, now) as the answer of (consumer, request_id)."""
MESSAGE_RELEASE = (
    "DELETE FROM lgsp_messages WHERE consumer = ? AND request_id = ? AND state = 'pending'"
)
"""Forget the pending claim of (consumer, request_id)."""


class SqlStore(SealedMessages, DeliverySql):
    """Every Store method, in SQL; subclasses supply connections. Answers are sealed under
    ``keyring`` (set it before use; by default a key of this process only)."""

    backend: ClassVar[str] = "sql"
    keyring: Keyring

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        """A connection inside a write transaction (serialised with other writers)."""
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads."""
        raise NotImplementedError

    async def ping(self) -> bool:
        """True if the store answers."""
        try:
            async with self._read() as conn:
                await conn.fetch("SELECT 1")
        except Exception:
            return False
        return True

    async def _create_schema(self, conn: Conn, dialect: str) -> None:
        for stmt in schema_statements(dialect):
            await conn.execute(stmt)
        await add_key_column(conn, dialect)
        rows = await conn.fetch("SELECT version FROM lgsp_schema")
        if not rows:
            await conn.execute("INSERT INTO lgsp_schema (version) VALUES (?)", SCHEMA_VERSION)
        elif int(rows[0][0]) != SCHEMA_VERSION:
            raise RuntimeError(
                f"store schema version {rows[0][0]} is not {SCHEMA_VERSION}: "
                "this lgsp-bus cannot use that database"
            )

    # -- message results ------------------------------------------------------------------

    async def message_begin(
        self, consumer: str, request_id: str, body_hash: str, ttl_s: float
    ) -> StoredMessage | None:
        """Claim (consumer, request_id) unless a live record exists; see :class:`Store`. A
        live record whose answer does not open is deleted and the key claimed afresh."""
        for _ in range(3):
            record = await self._claim(consumer, request_id, body_hash, ttl_s)
            if record is None:
                return None
            opened = self._opened(record)
            if opened is not None:
                return opened
            await self._forget_unreadable(record)
        raise RuntimeError("message record keeps changing while claimed")

    async def _claim(
        self, consumer: str, request_id: str, body_hash: str, ttl_s: float
    ) -> StoredMessage | None:
        """The claim itself: ``None`` if claimed, else the live record (answer sealed)."""
        now = time.time()
        async with self._tx() as conn:
            claimed = await conn.fetch(
                MESSAGE_CLAIM, consumer, request_id, body_hash, now, now, now + ttl_s
            )
            if claimed:
                return None
            # The conflicting row is live (and locked by the upsert on PostgreSQL).
            rows = await conn.fetch(MESSAGE_SELECT, consumer, request_id)
        if not rows:  # pragma: no cover - the row was locked above
            raise RuntimeError("message record vanished while claimed")
        return stored_message(rows[0])

    async def message_finish(
        self, consumer: str, request_id: str, status: int, reply: bytes
    ) -> None:
        """Store the answer, sealed (no-op if the claim has expired and been pruned)."""
        key_id, sealed = self._seal(consumer, request_id, reply)
        async with self._tx() as conn:
            await conn.execute(
                MESSAGE_FINISH, status, sealed, key_id, time.time(), consumer, request_id
            )

    async def message_release(self, consumer: str, request_id: str) -> None:
        """Forget a pending claim."""
        async with self._tx() as conn:
            await conn.execute(MESSAGE_RELEASE, consumer, request_id)

    async def message_get(self, consumer: str, request_id: str) -> StoredMessage | None:
        """The live record of (consumer, request_id)."""
        async with self._read() as conn:
            rows = await conn.fetch(
                f"SELECT {MESSAGE_READ} FROM lgsp_messages "
                "WHERE consumer = ? AND request_id = ? AND expires_at > ?",
                consumer,
                request_id,
                time.time(),
            )
        return self._opened(stored_message(rows[0])) if rows else None

    async def messages_prune(self, now: float) -> int:
        """Delete expired records."""
        async with self._tx() as conn:
            rows = await conn.fetch(
                "DELETE FROM lgsp_messages WHERE expires_at <= ? RETURNING consumer", now
            )
        return len(rows)

    # -- audit chains -----------------------------------------------------------------------

    async def audit_claim(self, node: str, holder: str, lease_s: float, now: float) -> ChainHead:
        """Claim the first free chain slot of ``node``."""
        async with self._tx() as conn:
            for slot in range(1, MAX_CHAIN_SLOTS + 1):
                rows = await conn.fetch(
                    f"INSERT INTO lgsp_audit_chains ({CHAIN_COLUMNS}) "
                    "VALUES (?, ?, 0, ?, 0, ?, ?, ?) "
                    "ON CONFLICT (chain) DO UPDATE SET holder = excluded.holder, "
                    "lease_until = excluded.lease_until "
                    "WHERE lgsp_audit_chains.holder IS NULL "
                    "OR lgsp_audit_chains.lease_until < ? "
                    "OR lgsp_audit_chains.holder = excluded.holder "
                    f"RETURNING {CHAIN_COLUMNS}",
                    f"{node}/{slot}",
                    node,
                    GENESIS_HASH,
                    GENESIS_HASH,
                    holder,
                    now + lease_s,
                    now,
                )
                if rows:
                    return chain_head(rows[0])
        raise ChainConflict(f"all {MAX_CHAIN_SLOTS} audit chains of node {node} are held")

    async def audit_renew(self, chain: str, holder: str, lease_s: float, now: float) -> bool:
        """Extend the lease if still held."""
        async with self._tx() as conn:
            rows = await conn.fetch(
                "UPDATE lgsp_audit_chains SET lease_until = ? WHERE chain = ? AND holder = ? "
                "RETURNING chain",
                now + lease_s,
                chain,
                holder,
            )
        return bool(rows)

    async def audit_release(self, chain: str, holder: str) -> None:
        """Give the chain up."""
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE lgsp_audit_chains SET holder = NULL, lease_until = 0 "
                "WHERE chain = ? AND holder = ?",
                chain,
                holder,
            )

    async def audit_append(self, chain: str, holder: str, records: Sequence[AuditRecord]) -> None:
        """Each store appends a batch in one statement (one round trip, one commit): see
        ``SqliteStore.audit_append`` and ``PostgresStore.audit_append``."""
        raise NotImplementedError

    async def audit_head(self, chain: str) -> ChainHead | None:
        """One chain's head."""
        async with self._read() as conn:
            rows = await conn.fetch(
                f"SELECT {CHAIN_COLUMNS} FROM lgsp_audit_chains WHERE chain = ?", chain
            )
        return chain_head(rows[0]) if rows else None

    async def audit_chains(self) -> list[ChainHead]:
        """Every chain."""
        async with self._read() as conn:
            rows = await conn.fetch(f"SELECT {CHAIN_COLUMNS} FROM lgsp_audit_chains ORDER BY chain")
        return [chain_head(r) for r in rows]

    async def audit_records(self, chain: str, after_seq: int, limit: int) -> list[AuditRecord]:
        """A page of one chain, by seq."""
        async with self._read() as conn:
            rows = await conn.fetch(
                f"SELECT {AUDIT_COLS} FROM lgsp_audit_records WHERE chain = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                chain,
                after_seq,
                limit,
            )
        return [audit_record(r) for r in rows]

    async def audit_find(
        self,
        *,
        subject_keys: Sequence[str] = (),
        request_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Records by subject key(s), request id and time range."""
        where: list[str] = []
        args: list[Any] = []
        wanted = {k for k in subject_keys if _HEX64.fullmatch(k)}
        if subject_keys:
            # The asked-about citizen by its index; a citizen the answer returned is in
            # detail.subject_keys (a scan of detail: 64 hex digits, no LIKE wildcards),
            # confirmed on the parsed record below.
            held = " OR ".join("detail LIKE ?" for _ in wanted)
            where.append(
                f"(subject_key IN ({', '.join('?' * len(subject_keys))})"
                + (f" OR (kind = 'exchange' AND ({held}))" if held else "")
                + ")"
            )
            args += list(subject_keys) + [f'%"{k}"%' for k in sorted(wanted)]
        if request_id is not None:
            where.append("request_id = ?")
            args.append(request_id)
        if since_us is not None:
            where.append("time_us >= ?")
            args.append(since_us)
        if until_us is not None:
            where.append("time_us < ?")
            args.append(until_us)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        async with self._read() as conn:
            rows = await conn.fetch(
                f"SELECT {AUDIT_COLS} FROM lgsp_audit_records {clause}"
                "ORDER BY time_us, chain, seq LIMIT ?",
                *args,
                limit,
            )
        found = [audit_record(r) for r in rows]
        if not subject_keys:
            return found
        keys = set(subject_keys)
        return [r for r in found if keys & record_subject_keys(r)]

    async def audit_key_use(self, key_id: str) -> tuple[bool, bool]:
        """This key used by an exchange record; another key used by any record."""
        async with self._read() as conn:
            mine = await conn.fetch(
                "SELECT 1 FROM lgsp_audit_records WHERE key_id = ? AND kind = 'exchange' LIMIT 1",
                key_id,
            )
            other = await conn.fetch(
                "SELECT 1 FROM lgsp_audit_records WHERE key_id IS NOT NULL AND key_id <> ? LIMIT 1",
                key_id,
            )
        return bool(mine), bool(other)

    async def audit_prune_plan(self, before_us: int) -> dict[str, tuple[int, str]]:
        """Per chain, the last record of its all-older prefix."""
        plan: dict[str, tuple[int, str]] = {}
        async with self._read() as conn:
            chains = await conn.fetch(
                "SELECT c.chain, c.anchor_seq, c.head_seq, (SELECT MIN(r.seq) FROM "
                "lgsp_audit_records r WHERE r.chain = c.chain AND r.time_us >= ?) "
                "FROM lgsp_audit_chains c ORDER BY c.chain",
                before_us,
            )
            for chain, anchor_seq, head_seq, first_new in chains:
                cut = int(first_new) - 1 if first_new is not None else int(head_seq)
                if cut <= int(anchor_seq):
                    continue
                rows = await conn.fetch(
                    "SELECT hash FROM lgsp_audit_records WHERE chain = ? AND seq = ?", chain, cut
                )
                if rows:
                    plan[chain] = (cut, rows[0][0])
        return plan

    async def audit_prune(self, cuts: Mapping[str, tuple[int, str]]) -> int:
        """Delete chain prefixes; move anchors forward."""
        deleted = 0
        async with self._tx() as conn:
            for chain, (seq, digest) in sorted(cuts.items()):
                moved = await conn.fetch(
                    "UPDATE lgsp_audit_chains SET anchor_seq = ?, anchor_hash = ? "
                    "WHERE chain = ? AND anchor_seq < ? AND head_seq >= ? RETURNING chain",
                    seq,
                    digest,
                    chain,
                    seq,
                    seq,
                )
                if not moved:
                    continue
                rows = await conn.fetch(
                    "DELETE FROM lgsp_audit_records WHERE chain = ? AND seq <= ? RETURNING seq",
                    chain,
                    seq,
                )
                deleted += len(rows)
        return deleted
