"""The audit writer on each store: group commit, fail_closed / fail_open while the store
refuses writes, leases between writers, admin records. Store faults are real: another
connection holds the write lock (both stores), or the TCP path to PostgreSQL is cut."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import pytest

from bus.audit.chain import AuditEntry
from bus.audit.observer import Auditor, AuditUnavailable, verify_store
from bus.config import AuditSettings
from bus.store import Store, open_store
from bus.store.base import AuditRecord
from tests.support.storetools import sqlite_path
from tests.support.tcpproxy import TcpProxy

KEY = b"test-audit-key-0123456789"
FAST = AuditSettings(commit_timeout_s=0.5, max_backlog=50)


def entry(i: int = 0, **kw: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "time_us": int(time.time() * 1_000_000),
        "kind": "exchange",
        "request_id": f"req-{i:08d}",
        "consumer": "portal",
        "service": "civil-status",
        "operation": "lookup",
        "outcome": "OK",
        "status": 200,
    }
    values.update(kw)
    return AuditEntry(**values)


@pytest.fixture
def fast_url(store_url: str, store: Store) -> str:
    """The (emptied) store's URL, with SQLite waiting briefly for a held lock."""
    return store_url + "?busy_timeout_ms=200" if store_url.startswith("sqlite") else store_url


@asynccontextmanager
async def write_lock(url: str) -> AsyncIterator[None]:
    """Another process holding the store's write lock (readers still read)."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(sqlite_path(url), isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    conn = await asyncpg.connect(url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE lgsp_audit_chains IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def all_records(store: Store) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for head in await store.audit_chains():
        out += await store.audit_records(head.chain, 0, 100_000)
    return out


async def until(predicate: Any, bound_s: float = 15.0) -> None:
    deadline = time.monotonic() + bound_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached within its bound"
        await asyncio.sleep(0.05)


class CountingStore:
    """The real store, counting group commits."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def audit_append(self, chain: str, holder: str, records: Sequence[AuditRecord]) -> None:
        self.batches.append(len(records))
        await self.inner.audit_append(chain, holder, records)


async def test_concurrent_fail_closed_records_share_group_commits(store: Store) -> None:
    counting = CountingStore(store)
    async with Auditor(cast(Store, counting), node="lgsp-1", key=KEY) as auditor:
        await asyncio.gather(*(auditor.record(entry(i), durable=True) for i in range(300)))
        assert auditor.written == 300
    assert sum(counting.batches) == 300
    assert len(counting.batches) < 30, counting.batches
    records = await all_records(store)
    assert sorted(r.request_id or "" for r in records) == [f"req-{i:08d}" for i in range(300)]
    assert all(r.problem is None for r in await verify_store(store))


async def test_fail_closed_withholds_and_fail_open_queues_while_the_store_refuses(
    fast_url: str,
) -> None:
    store = open_store(fast_url)
    await store.connect()
    try:
        async with Auditor(store, node="lgsp-1", key=KEY, settings=FAST) as auditor:
            async with write_lock(fast_url):
                started = time.monotonic()
                with pytest.raises(AuditUnavailable) as refused:
                    await auditor.record(entry(1), durable=True)
                assert refused.value.code == "AUDIT_UNAVAILABLE"
                assert refused.value.status == 503
                assert time.monotonic() - started < 5, "refused within its bound"
                await auditor.record(entry(2), durable=False)  # fail_open: answered at once
                with pytest.raises(AuditUnavailable):  # the store is known bad: fail fast
                    await auditor.record(entry(3), durable=True)
                state = auditor.readiness()
                assert state["audit"]["backlog"] == 3
                assert state["audit"]["state"] == "failing"
            await until(lambda: auditor.backlog == 0)
            assert auditor.readiness()["audit"]["state"] == "ok"
            await auditor.record(entry(4), durable=True)
        outcomes = {r.request_id: (r.outcome, r.status) for r in await all_records(store)}
        assert outcomes == {
            "req-00000001": ("AUDIT_UNAVAILABLE", 503),
            "req-00000002": ("OK", 200),
            "req-00000003": ("AUDIT_UNAVAILABLE", 503),
            "req-00000004": ("OK", 200),
        }
        assert all(r.problem is None for r in await verify_store(store))
    finally:
        await store.aclose()


async def test_a_full_backlog_refuses_answers_but_keeps_their_records(fast_url: str) -> None:
    store = open_store(fast_url)
    await store.connect()
    settings = AuditSettings(commit_timeout_s=0.5, max_backlog=5)
    try:
        async with Auditor(store, node="lgsp-1", key=KEY, settings=settings) as auditor:
            async with write_lock(fast_url):
                for i in range(5):
                    await auditor.record(entry(i), durable=False)
                with pytest.raises(AuditUnavailable, match="backlog is full"):
                    await auditor.record(entry(5), durable=False)
                assert auditor.backlog == 6
            await until(lambda: auditor.backlog == 0)
        assert len(await all_records(store)) == 6
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_connection_cut_then_back(pg_database: Any) -> None:
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    store = open_store(pg_database.url(port=proxy.port))
    await store.connect()
    try:
        async with Auditor(store, node="cut", key=KEY, settings=FAST) as auditor:
            await auditor.record(entry(1), durable=True)
            proxy.accepting = False
            proxy.cut()
            with pytest.raises(AuditUnavailable):
                await auditor.record(entry(2), durable=True)
            await auditor.record(entry(3), durable=False)
            proxy.accepting = True
            await until(lambda: auditor.backlog == 0)
            await auditor.record(entry(4), durable=True)
        records = [r for r in await all_records(store) if r.chain.startswith("cut/")]
        assert [r.outcome for r in records] == ["OK", "AUDIT_UNAVAILABLE", "OK", "OK"]
        assert all(r.problem is None for r in await verify_store(store))
    finally:
        await store.aclose()
        await proxy.aclose()


async def test_writers_hold_separate_chains_and_a_restart_continues_one(store: Store) -> None:
    async with (
        Auditor(store, node="lgsp-1", key=KEY) as one,
        Auditor(store, node="lgsp-1", key=KEY) as two,
    ):
        assert (one.chain, two.chain) == ("lgsp-1/1", "lgsp-1/2")
        await asyncio.gather(one.record(entry(1), durable=True), two.record(entry(2), durable=True))
    async with Auditor(store, node="lgsp-1", key=KEY) as again:
        assert again.chain == "lgsp-1/1"
        await again.record(entry(3), durable=True)
    seqs = [(r.chain, r.seq) for r in await all_records(store)]
    assert seqs == [("lgsp-1/1", 1), ("lgsp-1/1", 2), ("lgsp-1/2", 1)]
    assert all(r.problem is None for r in await verify_store(store))


async def test_a_writer_whose_chain_was_taken_moves_to_another(store: Store) -> None:
    async with Auditor(store, node="lgsp-1", key=KEY) as auditor:
        await auditor.record(entry(1), durable=True)
        # Its lease "expired" (a long stall) and another process took the chain over.
        await store.audit_claim("lgsp-1", "usurper", 30, time.time() + 60)
        await auditor.record(entry(2), durable=True)
        assert auditor.chain == "lgsp-1/2"
    chains = {r.request_id: r.chain for r in await all_records(store)}
    assert chains == {"req-00000001": "lgsp-1/1", "req-00000002": "lgsp-1/2"}
    assert all(r.problem is None for r in await verify_store(store))


async def test_admin_actions_are_recorded_durably_with_a_hashed_subject(store: Store) -> None:
    async with Auditor(store, node="lgsp-1", key=KEY) as auditor:
        await auditor.admin_action(
            "dlq.replay",
            "ops-anh",
            {"service": "population", "count": 3},
            subject_id="001085000999",
        )
        await auditor.admin_action("config.reload", "ops-anh", {"version": "abc"}, outcome="FAILED")
    replay, reload_ = await all_records(store)
    assert (replay.kind, replay.action, replay.actor) == ("admin", "dlq.replay", "ops-anh")
    assert replay.detail == {"service": "population", "count": 3}
    assert replay.subject_key == auditor.subject_key("001085000999")
    assert replay.key_id == auditor.key_id
    assert (reload_.action, reload_.outcome, reload_.subject_key) == (
        "config.reload",
        "FAILED",
        None,
    )


async def test_a_closed_auditor_refuses_rather_than_losing(store: Store) -> None:
    auditor = Auditor(store, node="lgsp-1", key=KEY)
    async with auditor:
        await auditor.record(entry(1), durable=False)
    assert auditor.backlog == 0, "close drains the backlog"
    with pytest.raises(AuditUnavailable):
        await auditor.record(entry(2), durable=False)
