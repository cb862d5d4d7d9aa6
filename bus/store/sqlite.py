"""SQLite store (aiosqlite): the embedded default, one file, WAL journal.

One connection per process, its own thread (aiosqlite). Transactions are serialised in the
process by an asyncio lock (they share the connection) and across processes by SQLite's
write lock (``BEGIN IMMEDIATE`` waits up to ``busy_timeout_ms`` for it), so several
processes on one host may share the file. ``synchronous=FULL`` by default: a committed
transaction survives a power cut, not only a process crash (an fsync per commit, which the
audit writer's group commit amortises); ``?synchronous=normal`` trades that for speed.

A group commit that does not wait for the disk (a relaxed batch, or every batch under
``synchronous`` normal/off: tens of µs of CPU) runs on the event loop's thread instead of
aiosqlite's: a thread hop costs ≈ 55 µs of CPU by itself (``python -m bench.commit_cost``),
more than the commit. So that such a commit never stalls the loop it waits for nothing: it
runs only if the connection is idle (a threading lock guards every use of it), SQLite's
busy timeout is 0 for it, and a batch that finds the write lock taken (another process)
goes to the thread as before. The WAL is checkpointed on aiosqlite's thread every
:data:`CHECKPOINT_EVERY` commits, not by SQLite inside whichever commit crosses its
threshold (a checkpoint fsyncs the database file), so the loop never pays for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
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

__all__ = ["CHECKPOINT_EVERY", "SqliteStore"]

_BUSY: Any = object()
"""What :meth:`SqliteStore._inline` returns when the batch must take the hop instead."""

_SYNC_MODES = ("off", "normal", "full", "extra")
CHECKPOINT_EVERY = 64
"""Commits between two WAL checkpoints (each commit adds a handful of 4 KiB pages; SQLite's
own automatic checkpoint, turned off on this connection, would run at 1000 pages)."""


class _SqliteConn:
    """:class:`Conn` over the store's connection, one thread hop per statement (each hop
    costs a loop wake-up and a GIL hand-over, which group commits pay once per batch)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self._store._hop(_statement(sql, args))
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await self._store._hop(_statement(sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._store._hop(lambda conn: conn.executemany(sql, rows).close())


async def _rollback(store: SqliteStore) -> None:
    with contextlib.suppress(sqlite3.Error, ValueError, ConnectionError):
        await store._hop(_statement("ROLLBACK"))


def _statement(sql: str, args: Sequence[Any] = ()) -> Op:
    """``sql`` as a function of the connection, its rows read (a cursor left unread keeps
    its statement open, and SQLite then refuses to commit)."""

    def run(conn: sqlite3.Connection) -> list[Any]:
        return conn.execute(sql, args).fetchall()

    return run


def _busy(exc: sqlite3.OperationalError) -> bool:
    # The primary code: SQLITE_BUSY_SNAPSHOT, _RECOVERY, _TIMEOUT… are busy too.
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


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
        self._messages = MessageBatcher(
            self._run_batch,
            relaxable=self.synchronous == "full",
            unsynced=self.synchronous in ("off", "normal"),
        )
        self._gate = threading.Lock()
        """Held by whichever thread is using the sqlite3 connection."""
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self.inline_commits = 0
        """Group commits run on the loop's thread (the rest took the hop)."""
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
        # Any thread may use the connection, one at a time (self._gate).
        db = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            await db.execute("PRAGMA wal_autocheckpoint = 0")  # ours: _checkpoint
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
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
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

    async def _hop(self, op: Op) -> Any:
        """Run ``op`` on aiosqlite's thread (the caller holds the lock)."""
        db = self._conn()

        def guarded() -> Any:
            with self._gate:
                return op(db._conn)

        # aiosqlite has no public "run this on your thread": _execute is what its own
        # methods use. One hop for a whole message batch is the point of batching.
        return await db._execute(guarded)  # type: ignore[no-untyped-call]

    async def _on_thread(self, op: Op) -> Any:
        """Run ``op`` on the connection's thread in one hop, holding the lock."""
        async with self._lock:
            return await self._hop(op)

    async def _run_batch(self, op: Op, quick: bool) -> Any:
        """A group commit: on the loop's thread if it is ``quick`` (no fsync) and the
        connection and SQLite's write lock are free at once, else in a hop."""
        async with self._lock:
            result = self._inline(op) if quick else _BUSY
            if result is _BUSY:
                result = await self._hop(op)
            else:
                self.inline_commits += 1
        self._committed()
        return result

    def _committed(self) -> None:
        """Count a commit (group commit or :meth:`_tx`); every :data:`CHECKPOINT_EVERY`
        of them, checkpoint the WAL in the background (SQLite's own is off)."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY and (
            self._checkpointing is None or self._checkpointing.done()
        ):
            self._since_checkpoint = 0
            self._checkpointing = asyncio.ensure_future(self._checkpoint())

    def _inline(self, op: Op) -> Any:
        """``op`` here and now, waiting for nothing; :data:`_BUSY` if it would have to."""
        conn = self._conn()._conn
        if not self._gate.acquire(blocking=False):
            return _BUSY  # a statement left running by a cancelled caller
        try:
            conn.execute("PRAGMA busy_timeout = 0").close()
            try:
                return op(conn)
            except sqlite3.OperationalError as exc:
                if _busy(exc) and not conn.in_transaction:
                    return _BUSY  # the write lock is another process's: wait on the thread
                raise
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}").close()
        finally:
            self._gate.release()

    async def _checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file (PASSIVE: waits for no
        reader or writer), on aiosqlite's thread."""
        with contextlib.suppress(sqlite3.Error, ConnectionError, ValueError):
            await self._on_thread(_statement("PRAGMA wal_checkpoint(PASSIVE)"))

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
            self._conn()
            try:
                await self._hop(_statement("BEGIN IMMEDIATE"))
                yield _SqliteConn(self)
                await self._hop(_statement("COMMIT"))
                self._committed()
            except BaseException:
                # aiosqlite runs statements in order on its thread, and a cancelled await
                # does not stop a statement already queued (a BEGIN waiting for the lock, a
                # COMMIT): so always queue a ROLLBACK behind them, and let it finish even if
                # the caller is cancelled again. A transaction left open would make every
                # later BEGIN fail. (After a COMMIT that did land it is a harmless no-op.)
                cleanup = asyncio.ensure_future(_rollback(self))
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
            self._conn()
            yield _SqliteConn(self)
