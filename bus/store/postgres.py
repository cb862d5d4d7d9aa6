"""PostgreSQL store (asyncpg): production, shared by every gateway and worker instance.

A connection pool per process (1..``pool_max``, default 10; ``?pool_max=N`` in the URL).
Every statement has a timeout (``command_timeout``, 10 s). The schema is created at
connect under a transaction-scoped advisory lock, so instances starting together do not
race on ``CREATE``. Transactions run at READ COMMITTED: the chain head compare-and-set and
the message upsert lock the rows they touch, which is all the isolation they need.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bus.sealing import Keyring
from bus.store.base import AuditRecord, ChainConflict, MessageWrite, StoredMessage
from bus.store.schema import AUDIT_COLS, AUDIT_COLUMNS, audit_row, stored_message
from bus.store.sql import MESSAGE_CLAIM, MESSAGE_FINISH, MESSAGE_SELECT, Conn, SqlStore

__all__ = ["PostgresStore"]

_PLACEHOLDER = re.compile(r"\?")
_SCHEMA_LOCK = 0x6C677370  # "lgsp": advisory lock key for schema creation


_TYPES = {"seq": "bigint", "time_us": "bigint", "status": "integer", "latency_us": "bigint"}
_ARRAYS = ", ".join(f"${i}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(AUDIT_COLUMNS, 7))
_APPEND = (
    "WITH moved AS (UPDATE lgsp_audit_chains SET head_seq = $1, head_hash = $2 "  # noqa: S608 - constants only
    "WHERE chain = $3 AND holder = $4 AND head_seq = $5 AND head_hash = $6 RETURNING chain) "
    f"INSERT INTO lgsp_audit_records ({AUDIT_COLS}) SELECT * FROM unnest({_ARRAYS}) "
    "WHERE EXISTS (SELECT 1 FROM moved)"
)
"""The head compare-and-set and the batch insert as one statement ($7… one array per column)."""


def _numbered(sql: str, cache: dict[str, str]) -> str:
    """``?`` placeholders → ``$1, $2 …`` (our SQL has no ``?`` inside literals)."""
    out = cache.get(sql)
    if out is None:
        counter = iter(range(1, 10_000))
        out = cache[sql] = _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)
    return out


def _append_args(chain: str, holder: str, records: Sequence[AuditRecord]) -> list[Any]:
    """The arguments of :data:`_APPEND` for ``records``."""
    first, last = records[0], records[-1]
    columns = zip(*(audit_row(r) for r in records), strict=True)
    head = [last.seq, last.hash, chain, holder, first.seq - 1, first.prev_hash]
    return [*head, *(list(c) for c in columns)]


class _PgConn:
    """:class:`Conn` over an asyncpg connection."""

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record], cache: dict[str, str]) -> None:
        self._conn = conn
        self._cache = cache

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return [tuple(r) for r in await self._conn.fetch(_numbered(sql, self._cache), *args)]

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(_numbered(sql, self._cache), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(_numbered(sql, self._cache), rows)


def _split_options(url: str) -> tuple[str, int]:
    """Take our own ``pool_max`` out of the URL; asyncpg gets the rest."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    pool_max = 10
    kept = []
    for key, value in query:
        if key == "pool_max":
            pool_max = int(value)
            if not 1 <= pool_max <= 200:
                raise ValueError("pool_max must be 1..200")
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), pool_max


class PostgresStore(SqlStore):
    """The Store on PostgreSQL."""

    backend: ClassVar[str] = "postgres"

    def __init__(self, url: str, *, command_timeout: float = 10.0) -> None:
        self.dsn, self.pool_max = _split_options(url)
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._sql: dict[str, str] = {}
        self.keyring = Keyring.generated()

    def __repr__(self) -> str:
        parts = urlsplit(self.dsn)
        return f"PostgresStore({parts.hostname}:{parts.port or 5432}{parts.path})"

    async def connect(self) -> None:
        """Open the pool and create the schema if needed."""
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_max,
            command_timeout=self.command_timeout,
            timeout=self.command_timeout,
        )
        try:
            self._pool = pool
            async with self._tx() as conn:
                await conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                await self._create_schema(conn, "postgres")
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def aclose(self) -> None:
        """Close the pool (waiting for connections in use, at most the command timeout)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except TimeoutError:
                pool.terminate()

    def _pool_or_fail(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ConnectionError("the PostgreSQL store is not connected")
        return self._pool

    async def audit_append(self, chain: str, holder: str, records: Sequence[AuditRecord]) -> None:
        """One statement, so one round trip and one commit per batch (the group commit's
        fixed cost): the head compare-and-set in a CTE, the rows from arrays, inserted only
        if the head moved — atomically (autocommit)."""
        if not records:
            return
        pool = self._pool_or_fail()
        async with pool.acquire(timeout=self.command_timeout) as conn:
            status = await conn.execute(_APPEND, *_append_args(chain, holder, records))
        if status != f"INSERT 0 {len(records)}":
            raise ChainConflict(f"chain {chain} is not held by this writer at this head")

    async def audit_append_with(
        self,
        chain: str,
        holder: str,
        records: Sequence[AuditRecord],
        writes: Sequence[MessageWrite],
        *,
        lasting: bool = True,
    ) -> list[StoredMessage | None]:
        """The message writes, then the append statement, in one transaction (one commit)."""
        pool = self._pool_or_fail()
        writes = self._sealed_writes(writes)
        async with pool.acquire(timeout=self.command_timeout) as conn, conn.transaction():
            if not lasting:  # see MessageWrite.lasting: survives the process, not the host
                await conn.execute("SET LOCAL synchronous_commit = off")
            results = [await self._write(conn, w) for w in writes]
            if records:
                status = await conn.execute(_APPEND, *_append_args(chain, holder, records))
                if status != f"INSERT 0 {len(records)}":  # raised inside: rolled back
                    raise ChainConflict(f"chain {chain} is not held by this writer at this head")
        return await self._opened_claims(writes, results)

    async def _write(
        self, conn: PoolConnectionProxy[asyncpg.Record], write: MessageWrite
    ) -> StoredMessage | None:
        now, key = time.time(), (write.consumer, write.request_id)
        if write.kind == "finish":
            sql = _numbered(MESSAGE_FINISH, self._sql)
            await conn.execute(sql, write.status, write.reply, write.key_id, now, *key)
            return None
        claim = _numbered(MESSAGE_CLAIM, self._sql)
        if await conn.fetch(claim, *key, write.body_hash, now, now, now + write.ttl_s):
            return None
        rows = await conn.fetch(_numbered(MESSAGE_SELECT, self._sql), *key)
        return stored_message(tuple(rows[0]))

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        pool = self._pool_or_fail()
        async with pool.acquire(timeout=self.command_timeout) as conn, conn.transaction():
            yield _PgConn(conn, self._sql)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        async with self._pool_or_fail().acquire(timeout=self.command_timeout) as conn:
            yield _PgConn(conn, self._sql)
