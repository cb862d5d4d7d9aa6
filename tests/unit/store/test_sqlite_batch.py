"""The SQLite store's group commit of message writes: batches, isolation of a failing write,
durability before the answer, and a closed store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.store.base import StoredMessage
from bus.store.sqlite import SqliteStore
from bus.store.sqlite_batch import claim


def claim_op(request_id: str) -> Callable[[sqlite3.Connection], object]:
    return claim("portal", request_id, "h", 60)


async def test_a_failing_write_fails_alone_and_the_batch_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bus.db")
    await store.connect()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    try:
        results = await asyncio.gather(
            store.message_begin("portal", "r1", "h", 60),
            store._messages.submit(broken),
            store.message_begin("portal", "r2", "h", 60),
            store.message_begin("portal", "r1", "h", 60),  # same batch: sees the claim
            return_exceptions=True,
        )
        assert results[0] is None
        assert results[2] is None
        assert isinstance(results[1], sqlite3.OperationalError)
        assert isinstance(results[3], StoredMessage)
        assert results[3].state == "pending"
        await store.message_finish("portal", "r1", 200, b'{"ok":true}')
    finally:
        await store.aclose()
    # Another connection (another gateway, or after a restart) sees every committed write.
    again = SqliteStore(tmp_path / "bus.db")
    await again.connect()
    try:
        done = await again.message_get("portal", "r1")
        assert done is not None
        assert done.state == "done"
        assert done.reply == b'{"ok":true}'
        assert await again.message_get("portal", "r2") is not None
    finally:
        await again.aclose()


async def test_many_concurrent_writes_all_land(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bus.db")
    await store.connect()
    try:
        ids = [f"r{i}" for i in range(300)]  # more than one batch (MAX_BATCH)
        claims = await asyncio.gather(*(store.message_begin("p", i, "h", 60) for i in ids))
        assert all(c is None for c in claims)
        await asyncio.gather(*(store.message_finish("p", i, 201, b"{}") for i in ids))
        for i in ids[::50]:
            record = await store.message_get("p", i)
            assert record is not None
            assert record.status == 201
    finally:
        await store.aclose()


async def test_a_closed_store_fails_writes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bus.db")
    await store.connect()
    await store.aclose()
    with pytest.raises((ConnectionError, ValueError)):
        await store.message_begin("portal", "r1", "h", 60)


async def test_the_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    # 21.11: the file and its WAL held citizens' answers and were created 0644.
    old = os.umask(0o022)
    try:
        path = tmp_path / "bus.sqlite3"
        store = SqliteStore(path)
        await store.connect()
        await store.message_begin("portal", "req-00000001", "0" * 64, 60)
        try:
            for name in (path, path.with_name(path.name + "-wal")):
                assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        finally:
            await store.aclose()
        loose = tmp_path / "old.sqlite3"
        loose.touch(mode=0o644)
        again = SqliteStore(loose)
        await again.connect()
        await again.aclose()
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600  # an existing file is narrowed
    finally:
        os.umask(old)


def _synchronous(conn: sqlite3.Connection) -> tuple[int, list[str]]:
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    seen = [row[0] for row in conn.execute("SELECT request_id FROM lgsp_messages")]
    return int(level), sorted(seen)


async def test_a_batch_of_writes_that_need_not_last_commits_without_fsync(tmp_path: Path) -> None:
    """Issue 14: a sync request's claim (MessageWrite.lasting=False) commits NORMAL; a batch
    with any lasting write stays FULL; the connection is FULL again after either."""
    store = SqliteStore(tmp_path / "bus.db")
    await store.connect()
    batcher = store._messages
    try:
        before = list(batcher.commits)
        assert await batcher.submit(claim_op("r1"), lasting=False) is None
        assert batcher.commits == [before[0], before[1] + 1]  # one relaxed commit
        level, seen = await batcher.submit(_synchronous, lasting=False)
        assert (level, seen) == (1, ["r1"])  # NORMAL (1) inside a relaxed commit
        level, _ = await store._on_thread(_synchronous)
        assert level == 2  # FULL again for every other transaction
        mixed = await asyncio.gather(
            batcher.submit(claim_op("r2"), lasting=False), batcher.submit(claim_op("r3"))
        )
        assert list(mixed) == [None, None]
        assert batcher.commits[0] == before[0] + 1  # the lasting write made it FULL
    finally:
        await store.aclose()
    again = SqliteStore(tmp_path / "bus.db", synchronous="normal")  # nothing to relax there
    await again.connect()
    try:
        assert {r for r in ("r1", "r2", "r3") if await again.message_get("portal", r)} == {
            "r1",
            "r2",
            "r3",
        }
        again_before = list(again._messages.commits)
        await again._messages.submit(claim_op("r4"), lasting=False)
        assert again._messages.commits == [again_before[0] + 1, again_before[1]]
    finally:
        await again.aclose()


async def test_a_commit_that_need_not_wait_for_the_disk_runs_on_the_loop(tmp_path: Path) -> None:
    """Issue 14: a relaxed batch commits on the event loop's thread (no thread hop); a
    lasting one still goes to aiosqlite's thread (its fsync must not stall the loop)."""
    store = SqliteStore(tmp_path / "bus.db")
    await store.connect()
    try:
        assert await store._messages.submit(claim_op("r1"), lasting=False) is None
        assert store.inline_commits == 1
        assert await store._messages.submit(claim_op("r2")) is None
        assert store.inline_commits == 1  # FULL: on the thread
        assert await store._messages.submit(claim_op("r1"), lasting=False) is not None
        assert store.inline_commits == 2  # a repeat claim sees the first: same connection
    finally:
        await store.aclose()


async def test_an_inline_commit_never_waits_for_another_process_lock(tmp_path: Path) -> None:
    """Another connection holds SQLite's write lock: the relaxed batch does not block the
    loop (other tasks keep running), waits on aiosqlite's thread instead, and lands once
    the lock is released."""
    store = SqliteStore(tmp_path / "bus.db", busy_timeout_ms=30_000)
    await store.connect()
    other = sqlite3.connect(tmp_path / "bus.db", isolation_level=None)
    loop = asyncio.get_running_loop()
    try:
        other.execute("BEGIN IMMEDIATE")
        claimed = asyncio.ensure_future(store._messages.submit(claim_op("r1"), lasting=False))
        gaps, last = [], loop.time()
        for _ in range(20):
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - last)
            last = loop.time()
        # Waiting inline would have held the loop for the 30 s busy timeout.
        assert max(gaps) < 10
        assert not claimed.done()  # the claim waits for the lock, on the thread
        other.execute("COMMIT")
        assert await claimed is None
        assert store.inline_commits == 0  # it took the hop
        assert await store._messages.submit(claim_op("r2"), lasting=False) is None
        assert store.inline_commits == 1  # the next one, with the lock free, did not
    finally:
        other.close()
        await store.aclose()


async def test_the_wal_is_checkpointed_by_the_store(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint is off on the store's connection (it would run inside
    an inline commit); the store checkpoints on its thread every CHECKPOINT_EVERY commits,
    so the rows reach the database file itself."""
    from bus.store.sqlite import CHECKPOINT_EVERY

    store = SqliteStore(tmp_path / "bus.db")
    await store.connect()
    try:
        empty = (tmp_path / "bus.db").stat().st_size
        for i in range(CHECKPOINT_EVERY * 3):
            await store._messages.submit(claim("portal", f"r{i}", "h" * 64, 60), lasting=False)
        assert store._checkpointing is not None
        await store._checkpointing
        assert (tmp_path / "bus.db").stat().st_size > empty
        level = await store._on_thread(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert level == 0
        # Commits outside the group commit (delivery, outbox, purges: _tx) count too, so a
        # process that writes only through them still checkpoints.
        before = store._checkpointing
        for i in range(CHECKPOINT_EVERY):
            async with store._tx() as conn:
                await conn.execute("CREATE TABLE IF NOT EXISTS t (v)")
                await conn.execute("INSERT INTO t VALUES (?)", i)
        assert store._checkpointing is not before
        await store._checkpointing
    finally:
        await store.aclose()
