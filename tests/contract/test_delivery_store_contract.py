"""The Store's one-way delivery methods, on every implementation (SQLite, PostgreSQL):
delivery records, pull subscriptions' logs and cursors."""

from __future__ import annotations

import asyncio
import uuid

from bus.store import Store


def name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


async def test_a_delivery_record_is_created_once_and_moves_through_its_states(
    store: Store,
) -> None:
    stream, msg = name(), name()
    assert await store.delivery_begin(stream, msg, "h1", "ACCEPTING", 60) is None
    existing = await store.delivery_begin(stream, msg, "h2", "ACCEPTING", 60)
    assert existing is not None
    assert (existing.state, existing.body_hash, existing.attempts) == ("ACCEPTING", "h1", 0)
    await store.delivery_set(
        stream, msg, "DELIVERING", attempts=2, last_error="HTTP_503", next_at=9.5
    )
    got = await store.delivery_get(stream, msg)
    assert got is not None
    assert (got.state, got.attempts, got.last_error, got.next_at) == (
        "DELIVERING",
        2,
        "HTTP_503",
        9.5,
    )
    await store.delivery_set(stream, msg, "DELIVERED")  # attempts and error kept
    got = await store.delivery_get(stream, msg)
    assert got is not None
    assert (got.state, got.attempts, got.last_error) == (
        "DELIVERED",
        2,
        "HTTP_503",
    )
    assert await store.delivery_get(name(), msg) is None  # streams are separate
    await store.delivery_forget(stream, msg)
    assert await store.delivery_get(stream, msg) is None


async def test_expired_delivery_records_are_invisible_reclaimable_and_pruned(store: Store) -> None:
    stream, msg = name(), name()
    assert await store.delivery_begin(stream, msg, "h", "QUEUED", 0.01) is None
    await asyncio.sleep(0.05)
    assert await store.delivery_get(stream, msg) is None
    assert await store.delivery_begin(stream, msg, "h", "QUEUED", 0.01) is None  # reclaimed
    await asyncio.sleep(0.05)
    assert await store.deliveries_prune(__import__("time").time()) >= 1


async def test_concurrent_begins_of_one_record_have_one_winner(store: Store) -> None:
    stream, msg = name(), name()
    results = await asyncio.gather(
        *(store.delivery_begin(stream, msg, "h", "ACCEPTING", 60) for _ in range(8))
    )
    assert sum(r is None for r in results) == 1


async def test_the_event_log_appends_in_order_once_per_event_and_pages(store: Store) -> None:
    sub = name()
    seqs = [await store.event_append(sub, f"e{i}", f'{{"i":{i}}}'.encode()) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert await store.event_append(sub, "e2", b"{}") is None  # already there: not again
    assert await store.event_append(name(), "e2", b"{}") == 1  # logs are per subscription
    page = await store.events_after(sub, 1, 2)
    assert [(e.seq, e.event_id, e.body) for e in page] == [
        (2, "e1", b'{"i":1}'),
        (3, "e2", b'{"i":2}'),
    ]
    assert await store.events_after(sub, 5, 10) == []


async def test_a_cursor_starts_at_zero_and_never_moves_back(store: Store) -> None:
    sub = name()
    assert await store.cursor_get(sub) == 0
    await store.cursor_set(sub, 4)
    await store.cursor_set(sub, 2)
    assert await store.cursor_get(sub) == 4
    await store.cursor_set(sub, 7)
    assert await store.cursor_get(sub) == 7


async def test_a_source_remembers_what_it_has_seen(store: Store) -> None:
    source = name()
    assert not await store.source_seen(source, "LT1")
    await store.source_mark(source, "LT1")
    await store.source_mark(source, "LT1")  # idempotent
    assert await store.source_seen(source, "LT1")
    assert not await store.source_seen(name(), "LT1")
