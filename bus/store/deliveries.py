"""The Store's one-way delivery methods in SQL (mixed into :class:`~bus.store.sql.SqlStore`):
delivery records, pull subscriptions' event logs and cursors. Same SQL on both stores.
"""

# Constant column lists only are spliced in; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from bus.store.base import DeliveryState, LoggedEvent
from bus.store.schema import Conn

__all__ = ["DeliverySql"]

_COLUMNS = "stream, msg_id, body_hash, state, attempts, last_error, next_at, created_at, updated_at"


def _state(row: Sequence[Any]) -> DeliveryState:
    return DeliveryState(
        stream=row[0],
        msg_id=row[1],
        body_hash=row[2],
        state=row[3],
        attempts=int(row[4]),
        last_error=row[5],
        next_at=float(row[6]),
        created_at=float(row[7]),
        updated_at=float(row[8]),
    )


class DeliverySql:
    """The delivery methods of the Store protocol, over ``_tx``/``_read`` connections."""

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    async def delivery_begin(
        self, stream: str, msg_id: str, body_hash: str, state: str, ttl_s: float
    ) -> DeliveryState | None:
        """Create the record unless a live one exists; see the Store protocol."""
        now = time.time()
        async with self._tx() as conn:
            created = await conn.fetch(
                f"INSERT INTO lgsp_deliveries ({_COLUMNS}, expires_at) "
                "VALUES (?, ?, ?, ?, 0, NULL, 0, ?, ?, ?) "
                "ON CONFLICT (stream, msg_id) DO UPDATE SET body_hash = excluded.body_hash, "
                "state = excluded.state, attempts = 0, last_error = NULL, next_at = 0, "
                "created_at = excluded.created_at, updated_at = excluded.updated_at, "
                "expires_at = excluded.expires_at "
                "WHERE lgsp_deliveries.expires_at <= excluded.created_at RETURNING stream",
                stream,
                msg_id,
                body_hash,
                state,
                now,
                now,
                now + ttl_s,
            )
            if created:
                return None
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM lgsp_deliveries WHERE stream = ? AND msg_id = ?",
                stream,
                msg_id,
            )
        return _state(rows[0]) if rows else None

    async def delivery_set(
        self,
        stream: str,
        msg_id: str,
        state: str,
        *,
        attempts: int | None = None,
        last_error: str | None = None,
        next_at: float = 0.0,
    ) -> None:
        """Move the record to ``state``."""
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE lgsp_deliveries SET state = ?, attempts = COALESCE(?, attempts), "
                "last_error = COALESCE(?, last_error), next_at = ?, updated_at = ? "
                "WHERE stream = ? AND msg_id = ?",
                state,
                attempts,
                last_error,
                next_at,
                time.time(),
                stream,
                msg_id,
            )

    async def delivery_get(self, stream: str, msg_id: str) -> DeliveryState | None:
        """The live record."""
        async with self._read() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM lgsp_deliveries "
                "WHERE stream = ? AND msg_id = ? AND expires_at > ?",
                stream,
                msg_id,
                time.time(),
            )
        return _state(rows[0]) if rows else None

    async def delivery_forget(self, stream: str, msg_id: str) -> None:
        """Delete the record."""
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM lgsp_deliveries WHERE stream = ? AND msg_id = ?", stream, msg_id
            )

    async def deliveries_prune(self, now: float) -> int:
        """Delete expired delivery records."""
        async with self._tx() as conn:
            rows = await conn.fetch(
                "DELETE FROM lgsp_deliveries WHERE expires_at <= ? RETURNING stream", now
            )
        return len(rows)

    async def event_append(self, subscription: str, event_id: str, body: bytes) -> int | None:
        """Append unless the event is in the log already (one writer per subscription)."""
        async with self._tx() as conn:
            known = await conn.fetch(
                "SELECT seq FROM lgsp_event_log WHERE subscription = ? AND event_id = ?",
                subscription,
                event_id,
            )
            if known:
                return None
            rows = await conn.fetch(
                "INSERT INTO lgsp_event_log (subscription, seq, event_id, body, created_at) "
                "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM lgsp_event_log "
                "WHERE subscription = ? RETURNING seq",
                subscription,
                event_id,
                body,
                time.time(),
                subscription,
            )
        return int(rows[0][0])

    async def events_after(self, subscription: str, after: int, limit: int) -> list[LoggedEvent]:
        """A page of the log, by seq."""
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT seq, event_id, body FROM lgsp_event_log "
                "WHERE subscription = ? AND seq > ? ORDER BY seq LIMIT ?",
                subscription,
                after,
                limit,
            )
        return [LoggedEvent(int(r[0]), r[1], bytes(r[2])) for r in rows]

    async def cursor_get(self, subscription: str) -> int:
        """The acknowledged position."""
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT position FROM lgsp_cursors WHERE subscription = ?", subscription
            )
        return int(rows[0][0]) if rows else 0

    async def cursor_set(self, subscription: str, position: int) -> None:
        """Acknowledge up to ``position`` (forward only)."""
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO lgsp_cursors (subscription, position, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (subscription) DO UPDATE SET position = excluded.position, "
                "updated_at = excluded.updated_at "
                "WHERE lgsp_cursors.position < excluded.position",
                subscription,
                position,
                time.time(),
            )

    async def source_seen(self, source: str, item_id: str) -> bool:
        """Whether the scheduled pull ``source`` has handled ``item_id``."""
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT 1 FROM lgsp_source_seen WHERE source = ? AND item_id = ?", source, item_id
            )
        return bool(rows)

    async def source_mark(self, source: str, item_id: str) -> None:
        """Remember that ``source`` has handled ``item_id`` (idempotent)."""
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO lgsp_source_seen (source, item_id, seen_at) VALUES (?, ?, ?) "
                "ON CONFLICT (source, item_id) DO NOTHING",
                source,
                item_id,
                time.time(),
            )
