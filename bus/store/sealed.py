"""Stored answers sealed at rest (mixed into :class:`~bus.store.sql.SqlStore`): the
``reply`` column holds AES-GCM bytes under the store's :class:`~bus.sealing.Keyring`, bound
to (consumer, request_id), with the key's id in ``key_id``; and the message methods that
exist for it (hand an answer over, purge a consumer's, retire a key). Same SQL on both
stores.
"""

# Constant column lists only are spliced in; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from bus.sealing import Keyring
from bus.store.base import MessageWrite, StoredMessage
from bus.store.schema import Conn

__all__ = ["SealedMessages", "add_key_column"]


async def add_key_column(conn: Conn, dialect: str) -> None:
    """Give a database made before answers were sealed its ``key_id`` column (its rows,
    under no key, then read as absent until pruned)."""
    if dialect == "postgres":
        await conn.execute("ALTER TABLE lgsp_messages ADD COLUMN IF NOT EXISTS key_id TEXT")
        return
    columns = await conn.fetch("PRAGMA table_info(lgsp_messages)")
    if "key_id" not in {row[1] for row in columns}:
        await conn.execute("ALTER TABLE lgsp_messages ADD COLUMN key_id TEXT")


class SealedMessages:
    """Sealing and opening of answers, and the message methods beyond claim/answer/read."""

    keyring: Keyring

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    def _seal(self, consumer: str, request_id: str, reply: bytes) -> tuple[str, bytes]:
        return self.keyring.seal((consumer, request_id), reply)

    def _opened(self, record: StoredMessage) -> StoredMessage | None:
        """``record`` with its answer opened; ``None`` if it does not open (another key, or
        another row's answer): such a record is treated as absent."""
        if record.reply is None:
            return record
        plain = self.keyring.open(record.key_id, (record.consumer, record.request_id), record.reply)
        return None if plain is None else dataclasses.replace(record, reply=plain)

    def _sealed_writes(self, writes: Sequence[MessageWrite]) -> list[MessageWrite]:
        """``writes`` with each answer sealed (for :meth:`Store.audit_append_with`)."""
        out: list[MessageWrite] = []
        for w in writes:
            if w.kind == "finish":
                key_id, sealed = self._seal(w.consumer, w.request_id, w.reply)
                w = dataclasses.replace(w, reply=sealed, key_id=key_id)
            out.append(w)
        return out

    async def _opened_claims(
        self, writes: Sequence[MessageWrite], results: Sequence[StoredMessage | None]
    ) -> list[StoredMessage | None]:
        """The claims' results with their answers opened; a live record whose answer does
        not open is deleted and the key claimed afresh (as :meth:`message_begin` does)."""
        out: list[StoredMessage | None] = []
        for w, record in zip(writes, results, strict=True):
            if w.kind == "claim" and record is not None:
                opened = self._opened(record)
                if opened is None:
                    await self._forget_unreadable(record)
                    opened = await self.message_begin(
                        w.consumer, w.request_id, w.body_hash, w.ttl_s
                    )
                record = opened
            out.append(record)
        return out

    async def message_begin(
        self, consumer: str, request_id: str, body_hash: str, ttl_s: float
    ) -> StoredMessage | None:
        raise NotImplementedError

    async def _forget_unreadable(self, record: StoredMessage) -> None:
        """Delete a record whose answer does not open (unless it changed meanwhile)."""
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM lgsp_messages WHERE consumer = ? AND request_id = ? "
                "AND updated_at = ?",
                record.consumer,
                record.request_id,
                record.updated_at,
            )

    async def message_fetched(self, consumer: str, request_id: str) -> bool:
        """Hand the answer over: ``fetched``, answer deleted (see :class:`Store`)."""
        async with self._tx() as conn:
            rows = await conn.fetch(
                "UPDATE lgsp_messages SET state = 'fetched', reply = NULL, key_id = NULL, "
                "updated_at = ? WHERE consumer = ? AND request_id = ? AND state = 'done' "
                "RETURNING consumer",
                time.time(),
                consumer,
                request_id,
            )
        return bool(rows)

    async def messages_purge(self, consumers: Sequence[str]) -> int:
        """Delete every record of ``consumers``."""
        if not consumers:
            return 0
        async with self._tx() as conn:
            rows = await conn.fetch(
                f"DELETE FROM lgsp_messages WHERE consumer IN ({', '.join('?' * len(consumers))}) "
                "RETURNING consumer",
                *consumers,
            )
        return len(rows)

    async def messages_key_use(self) -> dict[str, int]:
        """Stored answers per key id."""
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT COALESCE(key_id, ''), COUNT(*) FROM lgsp_messages "
                "WHERE reply IS NOT NULL GROUP BY COALESCE(key_id, '')"
            )
        return {str(key_id): int(count) for key_id, count in rows}

    async def messages_retire(self, keep: Sequence[str]) -> int:
        """Delete the records sealed under a key id not in ``keep`` (or under none)."""
        marks = ", ".join("?" * len(keep)) or "NULL"
        async with self._tx() as conn:
            rows = await conn.fetch(
                "DELETE FROM lgsp_messages WHERE reply IS NOT NULL AND "
                f"(key_id IS NULL OR key_id NOT IN ({marks})) RETURNING consumer",
                *keep,
            )
        return len(rows)
