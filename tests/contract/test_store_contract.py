"""The Store contract, run against every implementation (SQLite file and real PostgreSQL):
message results (idempotency, async mode) and the audit trail's chains."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import pytest

from bus.audit.chain import AuditEntry, seal
from bus.sealing import Keyring
from bus.store import GENESIS_HASH, ChainConflict, Store, open_store
from bus.store.base import AuditRecord, MessageWrite
from bus.store.postgres import PostgresStore
from bus.store.sqlite import SqliteStore
from tests.support.storetools import raw_execute, raw_fetch

LEASE = 30.0


def rid() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


# -- message results -------------------------------------------------------------------------


async def test_begin_claims_once_then_reports_the_pending_record(store: Store) -> None:
    request_id = rid()
    assert await store.message_begin("portal", request_id, "h1", 60) is None
    again = await store.message_begin("portal", request_id, "h2", 60)
    assert again is not None
    assert (again.state, again.body_hash, again.status, again.reply) == (
        "pending",
        "h1",
        None,
        None,
    )
    assert again.expires_at > time.time() + 50


async def test_finish_stores_the_answer_exactly(store: Store) -> None:
    request_id = rid()
    reply = '{"họ_tên":"NGUYỄN VĂN A","n":1}'.encode()
    await store.message_begin("portal", request_id, "h", 60)
    await store.message_finish("portal", request_id, 200, reply)
    got = await store.message_get("portal", request_id)
    assert got is not None
    assert (got.state, got.status, got.reply) == ("done", 200, reply)
    repeat = await store.message_begin("portal", request_id, "h", 60)
    assert repeat is not None
    assert repeat.state == "done"
    assert repeat.reply == reply


async def test_request_ids_are_per_consumer(store: Store) -> None:
    request_id = rid()
    assert await store.message_begin("portal", request_id, "a", 60) is None
    assert await store.message_begin("other", request_id, "b", 60) is None
    await store.message_finish("other", request_id, 201, b"{}")
    mine = await store.message_get("portal", request_id)
    assert mine is not None
    assert mine.state == "pending"
    assert mine.body_hash == "a"


async def test_release_forgets_only_a_pending_claim(store: Store) -> None:
    pending, done = rid(), rid()
    await store.message_begin("portal", pending, "h", 60)
    await store.message_release("portal", pending)
    assert await store.message_get("portal", pending) is None
    assert await store.message_begin("portal", pending, "h", 60) is None
    await store.message_begin("portal", done, "h", 60)
    await store.message_finish("portal", done, 200, b"{}")
    await store.message_release("portal", done)
    assert await store.message_get("portal", done) is not None


async def test_expired_records_are_invisible_reclaimable_and_pruned(store: Store) -> None:
    request_id, live = rid(), rid()
    await store.message_begin("portal", request_id, "old", 0.05)
    await store.message_begin("portal", live, "h", 60)
    await asyncio.sleep(0.1)
    assert await store.message_get("portal", request_id) is None
    assert await store.message_begin("portal", request_id, "new", 0.05) is None
    await asyncio.sleep(0.1)
    assert await store.messages_prune(time.time()) == 1
    assert await store.message_get("portal", live) is not None


async def test_concurrent_begins_have_exactly_one_winner(store: Store, store_url: str) -> None:
    # A second instance on the same database stands for another gateway process.
    other = open_store(store_url)
    await other.connect()
    try:
        request_id = rid()
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).message_begin("portal", request_id, "h", 60)
                for i in range(20)
            )
        )
    finally:
        await other.aclose()
    assert sum(r is None for r in results) == 1


async def test_ping_and_reconnect_is_idempotent(store: Store, store_url: str) -> None:
    assert await store.ping()
    again = open_store(store_url)
    await again.connect()  # schema exists: creating it again changes nothing
    assert await again.ping()
    await again.aclose()
    assert not await again.ping()


# -- audit chains ----------------------------------------------------------------------------


def entries(
    n: int, *, start_us: int = 1_700_000_000_000_000, subject: str | None = None
) -> list[AuditEntry]:
    return [
        AuditEntry(
            time_us=start_us + i * 1_000_000,
            kind="exchange",
            request_id=f"req-{i:08d}",
            consumer="portal",
            officer="001085000123",
            unit="H01",
            service="civil-status",
            operation="lookup",
            purpose={
                "procedure_code": "1.001234",
                "dossier_id": "HS-1",
                "legal_basis": "LEGAL_DUTY",
            },
            subject_key=subject,
            key_id="k1" if subject else None,
            fields=("persons", "status"),
            outcome="OK",
            status=200,
            latency_us=1234,
            detail={"ghi_chú": "Đã tra cứu"},
        )
        for i in range(n)
    ]


def sealed(
    chain: str, items: list[AuditEntry], after: tuple[int, str] = (0, GENESIS_HASH)
) -> list[AuditRecord]:
    seq, prev = after
    out = []
    for entry in items:
        seq += 1
        rec = seal(entry, chain=chain, node="lgsp-1", seq=seq, prev_hash=prev)
        out.append(rec)
        prev = rec.hash
    return out


async def test_each_holder_claims_its_own_chain(store: Store) -> None:
    now = time.time()
    a = await store.audit_claim("lgsp-1", "a", LEASE, now)
    b = await store.audit_claim("lgsp-1", "b", LEASE, now)
    assert (a.chain, b.chain) == ("lgsp-1/1", "lgsp-1/2")
    assert (a.head_seq, a.head_hash, a.anchor_hash) == (0, GENESIS_HASH, GENESIS_HASH)
    assert (await store.audit_claim("lgsp-1", "a", LEASE, now)).chain == "lgsp-1/1"
    await store.audit_append("lgsp-1/1", "a", sealed("lgsp-1/1", entries(2)))
    await store.audit_release("lgsp-1/1", "a")
    c = await store.audit_claim("lgsp-1", "c", LEASE, now)
    assert (c.chain, c.head_seq) == ("lgsp-1/1", 2), "a released chain is continued"
    assert [h.chain for h in await store.audit_chains()] == ["lgsp-1/1", "lgsp-1/2"]


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_refused(store: Store) -> None:
    now = time.time()
    await store.audit_claim("lgsp-1", "dead", 0.5, now)
    taken = await store.audit_claim("lgsp-1", "new", LEASE, now + 1)
    assert taken.chain == "lgsp-1/1"
    assert not await store.audit_renew("lgsp-1/1", "dead", LEASE, now + 1)
    with pytest.raises(ChainConflict):
        await store.audit_append("lgsp-1/1", "dead", sealed("lgsp-1/1", entries(1)))
    assert await store.audit_renew("lgsp-1/1", "new", LEASE, now + 1)


async def test_append_reads_back_identical_records_and_moves_the_head(store: Store) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    first = sealed("lgsp-1/1", entries(3, subject="ab" * 32))
    await store.audit_append("lgsp-1/1", "w", first)
    more = sealed("lgsp-1/1", entries(2), after=(3, first[-1].hash))
    await store.audit_append("lgsp-1/1", "w", more)
    assert await store.audit_records("lgsp-1/1", 0, 100) == first + more
    assert await store.audit_records("lgsp-1/1", 3, 1) == more[:1]
    head = await store.audit_head("lgsp-1/1")
    assert head is not None
    assert (head.head_seq, head.head_hash) == (5, more[-1].hash)


async def test_append_that_does_not_continue_the_head_changes_nothing(store: Store) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    await store.audit_append("lgsp-1/1", "w", sealed("lgsp-1/1", entries(2)))
    with pytest.raises(ChainConflict):  # a fork from the genesis
        await store.audit_append("lgsp-1/1", "w", sealed("lgsp-1/1", entries(1)))
    with pytest.raises(ChainConflict):  # not the holder
        await store.audit_append("lgsp-1/1", "x", sealed("lgsp-1/1", entries(1)))
    assert len(await store.audit_records("lgsp-1/1", 0, 100)) == 2


def claim(request_id: str, digest: str = "h1") -> MessageWrite:
    return MessageWrite("claim", "portal", request_id, body_hash=digest, ttl_s=60)


async def test_append_with_writes_lands_claims_answers_and_records_in_one_go(
    store: Store,
) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    first, second = rid(), rid()
    assert await store.message_begin("portal", second, "h2", 60) is None  # claimed earlier
    recs = sealed("lgsp-1/1", entries(2))
    results = await store.audit_append_with(
        "lgsp-1/1", "w", recs, [claim(first), claim(second, "h9")]
    )
    assert results[0] is None  # this call claimed it, as message_begin says
    assert results[1] is not None
    assert (results[1].state, results[1].body_hash) == ("pending", "h2")
    assert await store.audit_records("lgsp-1/1", 0, 100) == recs
    answer = MessageWrite("finish", "portal", first, status=200, reply=b'{"ok":1}')
    more = sealed("lgsp-1/1", entries(1), after=(2, recs[-1].hash))
    assert await store.audit_append_with("lgsp-1/1", "w", more, [answer]) == [None]
    done = await store.message_get("portal", first)
    assert done is not None
    assert (done.state, done.status, done.reply) == ("done", 200, b'{"ok":1}')
    head = await store.audit_head("lgsp-1/1")
    assert head is not None
    assert (head.head_seq, head.head_hash) == (3, more[-1].hash)


async def test_append_with_writes_that_conflicts_changes_nothing(store: Store) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    await store.audit_append("lgsp-1/1", "w", sealed("lgsp-1/1", entries(1)))
    request_id = rid()
    with pytest.raises(ChainConflict):  # a fork: neither the records nor the claim land
        await store.audit_append_with(
            "lgsp-1/1", "w", sealed("lgsp-1/1", entries(1)), [claim(request_id)]
        )
    with pytest.raises(ChainConflict):  # not the holder
        await store.audit_append_with(
            "lgsp-1/1", "x", sealed("lgsp-1/1", entries(1)), [claim(request_id)]
        )
    assert await store.message_get("portal", request_id) is None
    assert len(await store.audit_records("lgsp-1/1", 0, 100)) == 1
    assert await store.message_begin("portal", request_id, "h1", 60) is None  # still free


async def test_find_by_subject_time_and_request(store: Store) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    t0 = 1_700_000_000_000_000
    recs = sealed(
        "lgsp-1/1",
        entries(3, start_us=t0, subject="a" * 64)
        + entries(2, start_us=t0 + 10_000_000, subject="b" * 64)
        + entries(1, start_us=t0 + 20_000_000),
    )
    await store.audit_append("lgsp-1/1", "w", recs)
    assert await store.audit_find(subject_keys=["a" * 64]) == recs[:3]
    assert await store.audit_find(subject_keys=["a" * 64, "b" * 64]) == recs[:5]
    assert await store.audit_find(subject_keys=["c" * 64]) == []
    window = await store.audit_find(
        subject_keys=["a" * 64], since_us=t0 + 1, until_us=t0 + 2_000_000
    )
    assert window == recs[1:2]
    assert await store.audit_find(request_id="req-00000001") == [recs[1], recs[4]]
    assert await store.audit_find(limit=2) == recs[:2]


async def test_find_by_a_citizen_the_answer_returned(store: Store) -> None:
    # 21.9: detail.subject_keys keys every citizen an answer returned; found like subject_key
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    base = entries(4, subject="a" * 64)
    items = [
        dataclasses.replace(base[0], detail={"subject_keys": ["b" * 64, "c" * 64]}),
        dataclasses.replace(base[1], subject_key=None, detail={"subject_keys": ["c" * 64]}),
        dataclasses.replace(base[2], detail={"note": "c" * 64}),  # the text, not a key
        dataclasses.replace(base[3], kind="admin", detail={"subject_keys": ["c" * 64]}),
    ]
    recs = sealed("lgsp-1/1", items)
    await store.audit_append("lgsp-1/1", "w", recs)
    assert await store.audit_find(subject_keys=["c" * 64]) == recs[:2]
    assert await store.audit_find(subject_keys=["b" * 64]) == recs[:1]
    assert await store.audit_find(subject_keys=["a" * 64]) == recs[:1] + recs[2:]
    assert await store.audit_find(subject_keys=["d" * 64]) == []


async def test_prune_moves_the_anchor_and_deletes_only_the_old_prefix(store: Store) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    t0 = 1_700_000_000_000_000
    recs = sealed("lgsp-1/1", entries(5, start_us=t0))
    await store.audit_append("lgsp-1/1", "w", recs)
    plan = await store.audit_prune_plan(t0 + 2_500_000)
    assert plan == {"lgsp-1/1": (3, recs[2].hash)}
    assert await store.audit_prune(plan) == 3
    assert await store.audit_records("lgsp-1/1", 0, 100) == recs[3:]
    head = await store.audit_head("lgsp-1/1")
    assert head is not None
    assert (head.anchor_seq, head.anchor_hash) == (3, recs[2].hash)
    assert await store.audit_prune(plan) == 0, "an anchor never moves back or repeats"
    assert await store.audit_prune_plan(t0 + 2_500_000) == {}
    more = sealed("lgsp-1/1", entries(1, start_us=t0 + 9_000_000), after=(5, recs[-1].hash))
    await store.audit_append("lgsp-1/1", "w", more)  # the head is unaffected by pruning


async def test_audit_records_refuse_updates(store: Store, store_url: str) -> None:
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    await store.audit_append("lgsp-1/1", "w", sealed("lgsp-1/1", entries(1)))
    with pytest.raises(Exception, match="append-only"):
        await raw_execute(store_url, "UPDATE lgsp_audit_records SET outcome = 'X'")


def test_store_urls() -> None:
    assert isinstance(open_store("sqlite:///rel/bus.sqlite3"), SqliteStore)
    absolute = open_store("sqlite:////var/lib/lgsp/bus.sqlite3?synchronous=normal")
    assert isinstance(absolute, SqliteStore)
    assert str(absolute.path) == "/var/lib/lgsp/bus.sqlite3"
    assert absolute.synchronous == "normal"
    assert isinstance(open_store("plain.sqlite3"), SqliteStore)
    pg = open_store("postgresql://u:secret@db:5432/lgsp?pool_max=4&sslmode=require")
    assert isinstance(pg, PostgresStore)
    assert pg.pool_max == 4
    assert "sslmode=require" in pg.dsn
    assert "secret" not in repr(pg)
    for bad in ("mysql://x/y", "sqlite://relative", "sqlite:///x?colour=red"):
        with pytest.raises(ValueError, match=r"\S"):
            open_store(bad)


# -- answers sealed at rest (bus/sealing.py) -------------------------------------------------

CITIZEN_ID = "001085000123"
ANSWER = f'{{"persons":[{{"personal_id":"{CITIZEN_ID}","full_name":"NGUYEN VAN AN"}}]}}'.encode()


def ring(*ids: str) -> Keyring:
    return Keyring.from_texts(
        [(key_id, f"{key_id}-at-rest-key-of-the-test-bus-0123") for key_id in ids]
    )


async def answered(store: Store, consumer: str = "portal") -> str:
    request_id = rid()
    await store.message_begin(consumer, request_id, "h", 60)
    await store.message_finish(consumer, request_id, 200, ANSWER)
    return request_id


async def test_raw_rows_hold_no_citizen_data(store: Store, store_url: str) -> None:
    store.keyring = ring("k1")
    request_id = await answered(store)
    rows = await raw_fetch(
        store_url, "SELECT reply, key_id FROM lgsp_messages WHERE request_id = $1", request_id
    )
    assert len(rows) == 1
    reply, key_id = bytes(rows[0][0]), rows[0][1]
    assert key_id == "k1"
    assert CITIZEN_ID.encode() not in reply
    assert b"NGUYEN" not in reply
    got = await store.message_get("portal", request_id)
    assert got is not None
    assert (got.reply, got.key_id) == (ANSWER, "k1")


async def test_an_answer_stored_with_its_audit_record_is_sealed_too(
    store: Store, store_url: str
) -> None:
    """The joint write (answer + final audit record, one commit) seals like message_finish,
    and a claim meeting it returns the answer opened."""
    store.keyring = ring("k1")
    await store.audit_claim("lgsp-1", "w", LEASE, time.time())
    request_id = rid()
    recs = sealed("lgsp-1/1", entries(1))
    assert await store.audit_append_with("lgsp-1/1", "w", recs, [claim(request_id, "h")]) == [None]
    answer = MessageWrite("finish", "portal", request_id, status=200, reply=ANSWER)
    more = sealed("lgsp-1/1", entries(1), after=(1, recs[-1].hash))
    await store.audit_append_with("lgsp-1/1", "w", more, [answer])
    rows = await raw_fetch(
        store_url, "SELECT reply, key_id FROM lgsp_messages WHERE request_id = $1", request_id
    )
    assert rows[0][1] == "k1"
    assert CITIZEN_ID.encode() not in bytes(rows[0][0])
    again = sealed("lgsp-1/1", entries(1), after=(2, more[-1].hash))
    (met,) = await store.audit_append_with("lgsp-1/1", "w", again, [claim(request_id, "h")])
    assert met is not None
    assert (met.state, met.reply) == ("done", ANSWER)


async def test_a_row_swapped_into_another_does_not_open(store: Store, store_url: str) -> None:
    store.keyring = ring("k1")
    mine, theirs = await answered(store, "portal"), await answered(store, "other")
    await raw_execute(
        store_url,
        "UPDATE lgsp_messages SET reply = (SELECT reply FROM lgsp_messages "  # noqa: S608 - test ids
        f"WHERE request_id = '{theirs}') WHERE request_id = '{mine}'",
    )
    before = store.keyring.unreadable["bad_tag"]
    assert await store.message_get("portal", mine) is None  # treated as absent
    assert store.keyring.unreadable["bad_tag"] == before + 1
    # ... and a repeat claims the key afresh (the unreadable record is deleted).
    assert await store.message_begin("portal", mine, "h", 60) is None
    assert await store.message_get("other", theirs) is not None


async def test_rotation_the_first_key_seals_every_key_opens(store: Store, store_url: str) -> None:
    store.keyring = ring("k1")
    old = await answered(store)
    store.keyring = ring("k2", "k1")  # k2 is new: it seals, k1 still opens
    new = await answered(store)
    for request_id, key_id in ((old, "k1"), (new, "k2")):
        got = await store.message_get("portal", request_id)
        assert got is not None
        assert (got.reply, got.key_id) == (ANSWER, key_id)
    assert await store.messages_key_use() == {"k1": 1, "k2": 1}
    # k1 retired without purging: its rows are treated as absent, counted, never served.
    store.keyring = ring("k2")
    assert await store.message_get("portal", old) is None
    assert store.keyring.unreadable["unknown_key"] == 1
    assert await store.messages_retire(store.keyring.ids) == 1
    assert await store.messages_key_use() == {"k2": 1}


async def test_a_fetched_answer_is_deleted_and_marked(store: Store, store_url: str) -> None:
    request_id = await answered(store)
    pending = rid()
    await store.message_begin("portal", pending, "h", 60)
    assert not await store.message_fetched("portal", pending)  # not done: nothing to hand over
    assert await store.message_fetched("portal", request_id)
    assert not await store.message_fetched("portal", request_id)  # once only
    got = await store.message_get("portal", request_id)
    assert got is not None
    assert (got.state, got.reply) == ("fetched", None)
    again = await store.message_begin("portal", request_id, "h", 60)
    assert again is not None
    assert again.state == "fetched"
    rows = await raw_fetch(
        store_url, "SELECT reply, key_id FROM lgsp_messages WHERE request_id = $1", request_id
    )
    assert rows == [(None, None)]


async def test_purge_deletes_only_the_named_consumers(store: Store) -> None:
    mine, theirs = await answered(store, "portal"), await answered(store, "other")
    assert await store.messages_purge(["portal"]) == 1
    assert await store.message_get("portal", mine) is None
    assert await store.message_get("other", theirs) is not None
    assert await store.messages_purge([]) == 0


async def test_a_database_from_before_sealing_gets_its_key_column(
    store: Store, store_url: str
) -> None:
    legacy = await answered(store)
    await raw_execute(store_url, "ALTER TABLE lgsp_messages DROP COLUMN key_id")
    again = open_store(store_url)
    await again.connect()
    try:
        again.keyring = store.keyring
        # Its rows were kept unsealed (under no key): read as absent, never served.
        assert await again.message_get("portal", legacy) is None
        request_id = await answered(again)
        got = await again.message_get("portal", request_id)
        assert got is not None
        assert got.reply == ANSWER
    finally:
        await again.aclose()
