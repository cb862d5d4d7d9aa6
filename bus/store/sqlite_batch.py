"""Group commit of a process's writes on SQLite: idempotency claims and answers, and the
audit writer's record batches.

Every request writes its message record twice (the claim, then the answer), and its audit
record once. Done one by one, each write is a transaction, each a hop to aiosqlite's
thread and an fsync under ``synchronous=FULL`` — all serialised behind the connection's
lock. Here the writes that queue up while one batch is being committed go together into
the next: one hop, one ``BEGIN IMMEDIATE … COMMIT``, one fsync for the lot. Nothing is
weakened: each caller is answered only after the transaction holding its write has
committed (same durability as before), the statements are the same, run in arrival order
in one transaction (so two claims of one key in a batch see each other), and
``BEGIN IMMEDIATE`` still takes SQLite's write lock across processes.

A statement that fails fails only its own write (SQLite undoes just that statement); a
failed ``BEGIN`` or ``COMMIT`` fails every write of the batch, which the callers see as
the store failing, as they would have one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bus.store.base import AuditRecord, ChainConflict, MessageWrite, StoredMessage
from bus.store.schema import AUDIT_COLS, AUDIT_COLUMNS, CHAIN_CONFLICT, audit_row, stored_message
from bus.store.sql import MESSAGE_CLAIM, MESSAGE_FINISH, MESSAGE_RELEASE, MESSAGE_SELECT

__all__ = [
    "MAX_BATCH",
    "MessageBatcher",
    "append_audit",
    "append_audit_with",
    "claim",
    "finish",
    "release",
]

MAX_BATCH = 256
"""Most writes in one transaction (bounds how long the write lock is held)."""

Op = Callable[[sqlite3.Connection], Any]


def claim(consumer: str, request_id: str, body_hash: str, ttl_s: float) -> Op:
    """The claim of :meth:`Store.message_begin`, as one write of a batch."""

    def op(conn: sqlite3.Connection) -> StoredMessage | None:
        now = time.time()
        args = (consumer, request_id, body_hash, now, now, now + ttl_s)
        if conn.execute(MESSAGE_CLAIM, args).fetchall():
            return None
        rows = conn.execute(MESSAGE_SELECT, (consumer, request_id)).fetchall()
        if not rows:  # pragma: no cover - same transaction, nothing can delete it
            raise RuntimeError("message record vanished while claimed")
        return stored_message(rows[0])

    return op


def finish(consumer: str, request_id: str, status: int, reply: bytes, key_id: str) -> Op:
    """The answer of :meth:`Store.message_finish` (``reply`` sealed under ``key_id``), as
    one write of a batch."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(MESSAGE_FINISH, (status, reply, key_id, time.time(), consumer, request_id))

    return op


def release(consumer: str, request_id: str) -> Op:
    """The forgetting of :meth:`Store.message_release`, as one write of a batch."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(MESSAGE_RELEASE, (consumer, request_id))

    return op


def append_audit(chain: str, holder: str, records: Sequence[AuditRecord]) -> Op:
    """:meth:`Store.audit_append` as one write of a batch: one statement, so the whole
    record batch lands or none of it (SQLite undoes a failed statement). The holder is
    checked in the statement, the head compare-and-set and move by the schema's triggers;
    ``rowcount`` says whether the holder still held the chain (no ``RETURNING``: every
    returned row would be a separate step)."""
    row = f"({', '.join('?' * len(AUDIT_COLUMNS))})"
    sql = (
        f"INSERT INTO lgsp_audit_records ({AUDIT_COLS}) "  # noqa: S608 - constants only
        f"SELECT * FROM (VALUES {', '.join([row] * len(records))}) "
        "WHERE EXISTS (SELECT 1 FROM lgsp_audit_chains WHERE chain = ? AND holder = ?) "
        "ORDER BY column2"  # column2: seq, as in AUDIT_COLUMNS
    )
    args = [value for rec in records for value in audit_row(rec)] + [chain, holder]

    def op(conn: sqlite3.Connection) -> None:
        try:
            cursor = conn.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            if CHAIN_CONFLICT in str(exc):
                raise ChainConflict(f"chain {chain} has moved past this writer") from None
            raise
        if cursor.rowcount != len(records):
            raise ChainConflict(f"chain {chain} is not held by this writer")

    return op


def append_audit_with(
    chain: str, holder: str, records: Sequence[AuditRecord], writes: Sequence[MessageWrite]
) -> Op:
    """:meth:`Store.audit_append_with` as one write of a batch: the message writes, then
    the records, under a savepoint, so a chain conflict undoes the writes too."""
    ops = [
        claim(w.consumer, w.request_id, w.body_hash, w.ttl_s)
        if w.kind == "claim"
        else finish(w.consumer, w.request_id, w.status, w.reply, w.key_id)
        for w in writes
    ]
    append = append_audit(chain, holder, records)

    def op(conn: sqlite3.Connection) -> list[StoredMessage | None]:
        conn.execute("SAVEPOINT lgsp_audit_with")
        try:
            results = [write(conn) for write in ops]
            append(conn)
        except BaseException:
            conn.execute("ROLLBACK TO lgsp_audit_with")
            conn.execute("RELEASE lgsp_audit_with")
            raise
        conn.execute("RELEASE lgsp_audit_with")
        return results

    return op


def _commit_all(
    conn: sqlite3.Connection, ops: list[Op], relax: bool = False
) -> list[tuple[bool, Any]]:
    """On the connection's thread: one transaction for all of ``ops``; ``relax``: none of
    them need outlive the machine, so this one commit is ``synchronous=NORMAL`` (no fsync:
    in WAL mode it survives a killed process, and the next FULL commit's fsync of the log
    makes it lasting too)."""
    if relax:
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return _commit_all(conn, ops)
        finally:
            conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        results: list[tuple[bool, Any]] = []
        for op in ops:
            try:
                results.append((True, op(conn)))
            except Exception as exc:  # this write only; the statement was undone
                results.append((False, exc))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return results


class MessageBatcher:
    """Queues message writes and commits them in batches, one batch at a time.

    ``run(fn, quick)`` runs a function on the connection, holding the store's lock (so a
    batch never interleaves with another transaction on the shared connection); ``quick``:
    the batch's commit does not wait for the disk, so the store may run it on the event
    loop's thread instead of paying a thread hop (``SqliteStore._run_batch``)."""

    def __init__(
        self,
        run: Callable[[Op, bool], Awaitable[Any]],
        *,
        relaxable: bool = False,
        unsynced: bool = False,
    ) -> None:
        self._run = run
        self._relaxable = relaxable
        """The store is ``synchronous=FULL``: a batch of writes none of which must be
        lasting may commit ``NORMAL`` (see :func:`_commit_all`)."""
        self._unsynced = unsynced
        """The store commits without an fsync anyway (``synchronous`` off or normal)."""
        self._queue: list[tuple[Op, asyncio.Future[Any], bool]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = [0, 0]
        """Commits made: ``[lasting, relaxed]``."""

    async def submit(self, op: Op, *, lasting: bool = True) -> Any:
        """Run ``op`` in the next batch; its result once that batch has committed.
        ``lasting=False``: ``op`` need only outlive the process (``MessageWrite.lasting``);
        its batch commits without an fsync unless another write in it is lasting."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future, lasting))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            ops = [op for op, _, _ in batch]
            relax = self._relaxable and not any(lasting for _, _, lasting in batch)
            self.commits[relax] += 1
            try:
                results = await self._run(
                    functools.partial(_commit_all, ops=ops, relax=relax), relax or self._unsynced
                )
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else ConnectionError("store closing")
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(failure)
                if not isinstance(exc, Exception):
                    self._fail_queued(failure)
                    raise
                continue
            for (_, future, _), (ok, value) in zip(batch, results, strict=True):
                if future.done():  # the caller was cancelled; its write stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _fail_queued(self, failure: Exception) -> None:
        queued, self._queue = self._queue, []
        for _, future, _ in queued:
            if not future.done():
                future.set_exception(failure)

    async def aclose(self) -> None:
        """Let the batch in progress finish; fail what is still queued."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(flusher)
        self._fail_queued(ConnectionError("the SQLite store is closed"))
