"""SQLite store (aiosqlite): the embedded default, one file, WAL journal.

One connection per process, its own thread (aiosqlite). Transactions are serialised in the
process by an asyncio lock (they share the connection) and across processes by SQLite's
write lock (``BEGIN IMMEDIATE`` waits up to ``busy_timeout_ms`` for it), so several
processes on one host may share the file. ``synchronous=FULL`` by default: a committed
transaction survives a power cut, not only a process crash (an fsync per commit, which the
audit writer's group commit amortises); ``?synchronous=normal`` trades that for speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from bus.sealing import Keyring
from bus.store.base import AuditRecord, MessageWrite, StoredMessage
from bus.store.sql import Conn, SqlStore
from bus.store.sqlite_batch import (
    MessageBatcher,
    Op,
    append_audit,
    append_audit_with,
    claim,
    finish,
    release,
)

__all__ = ["SqliteStore"]

_SYNC_MODES = ("off", "normal", "full", "extra")


class _SqliteConn:
    """:class:`Conn` over an aiosqlite connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    # One thread hop per statement (execute_fetchall): each
    # hop costs a loop wake-up and a GIL hand-over, which group commits pay per batch.

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self._db.execute_fetchall(sql, args))

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db.execute_fetchall(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)


async def _rollback(db: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error, ValueError):
        await db.execute("ROLLBACK")


def _owner_only(path: Path) -> None:
    """Create the database file readable and writable by its owner only (0600), or narrow an
    existing one: it holds answers with citizens' data and the audit trail. SQLite gives
    the ``-wal`` and ``-shm`` files the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            side.chmod(0o600)


class SqliteStore(SqlStore):
    """The Store on a SQLite file."""

    backend: ClassVar[str] = "sqlite"

    def __init__(
        self, path: str | Path, *, synchronous: str = "full", busy_timeout_ms: int = 5000
    ) -> None:
        if synchronous.lower() not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC_MODES)}")
        self.path = Path(path)
        self.synchronous = synchronous.lower()
        self.busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._cleanups: set[asyncio.Future[None]] = set()
        self._messages = MessageBatcher(self._on_thread, relaxable=self.synchronous == "full")
        self._keyring: Keyring | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def keyring(self) -> Keyring:
        """The configured keys, else the key file beside the database (made at first use)."""
        if self._keyring is None:
            self._keyring = Keyring.local(self.key_path)
        return self._keyring

    @keyring.setter
    def keyring(self, ring: Keyring) -> None:
        self._keyring = ring

    @property
    def key_path(self) -> Path:
        """The key file beside the database (``<db>.key``) used without ``store.keys``."""
        return self.path.with_name(self.path.name + ".key")

    async def connect(self) -> None:
        """Open the file (creating it and its schema if needed), WAL mode."""
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(self.path)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            self._db = db
            async with self._tx() as conn:
                await self._create_schema(conn, "sqlite")
        except BaseException:
            self._db = None
            await db.close()
            raise

    async def aclose(self) -> None:
        """Close the connection (and its thread)."""
        await self._messages.aclose()
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                if self._cleanups:
                    await asyncio.gather(*self._cleanups)
                await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise ConnectionError("the SQLite store is not connected")
        return self._db

    async def _on_thread(self, op: Op) -> Any:
        """Run ``op`` on the connection's thread in one hop, holding the lock."""
        async with self._lock:
            db = self._conn()
            # aiosqlite has no public "run this on your thread": _execute is what its own
            # methods use. One hop for a whole message batch is the point of batching.
            return await db._execute(lambda: op(db._conn))  # type: ignore[no-untyped-call]

    # The message writes of every request go through the group commit (see sqlite_batch).

    async def _claim(
        self, consumer: str, request_id: str, body_hash: str, ttl_s: float
    ) -> StoredMessage | None:
        """The claim, in the next group commit (``message_begin`` opens the answer)."""
        result: StoredMessage | None = await self._messages.submit(
            claim(consumer, request_id, body_hash, ttl_s)
        )
        return result

    async def message_finish(
        self, consumer: str, request_id: str, status: int, reply: bytes
    ) -> None:
        """Store the answer, sealed, durably, in the next group commit."""
        key_id, sealed = self._seal(consumer, request_id, reply)
        await self._messages.submit(finish(consumer, request_id, status, sealed, key_id))

    async def message_release(self, consumer: str, request_id: str) -> None:
        """Forget a pending claim (in the next group commit)."""
        await self._messages.submit(release(consumer, request_id))

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        async with self._lock:
            db = self._conn()
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield _SqliteConn(db)
                await db.execute("COMMIT")
            except BaseException:
                # aiosqlite runs statements in order on its thread, and a cancelled await
                # does not stop a statement already queued (a BEGIN waiting for the lock, a
                # COMMIT): so always queue a ROLLBACK behind them, and let it finish even if
                # the caller is cancelled again. A transaction left open would make every
                # later BEGIN fail. (After a COMMIT that did land it is a harmless no-op.)
                cleanup = asyncio.ensure_future(_rollback(db))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
                await asyncio.shield(cleanup)
                raise

    async def audit_append(self, chain: str, holder: str, records: Sequence[AuditRecord]) -> None:
        """One statement in the next group commit, beside the message writes (one thread hop
        and one fsync for both): the holder is checked in the statement, the head
        compare-and-set and move by the schema's triggers."""
        if records:
            await self._messages.submit(append_audit(chain, holder, records))

    async def audit_append_with(
        self,
        chain: str,
        holder: str,
        records: Sequence[AuditRecord],
        writes: Sequence[MessageWrite],
        *,
        lasting: bool = True,
    ) -> list[StoredMessage | None]:
        """The message writes (answers sealed) and the records as one write of the next
        group commit."""
        writes = self._sealed_writes(writes)
        results: list[StoredMessage | None] = await self._messages.submit(
            append_audit_with(chain, holder, records, writes), lasting=lasting
        )
        return await self._opened_claims(writes, results)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        # Reads take the lock too: the connection is shared, and a read must never run
        # inside another coroutine's open transaction.
        async with self._lock:
            yield _SqliteConn(self._conn())
