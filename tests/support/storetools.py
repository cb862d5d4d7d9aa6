"""Raw SQL on a store's database, behind the bus's back: what a tamperer (or an operator
with a SQL prompt) can do. Tests use it to alter the audit trail and inspect every table."""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg

__all__ = ["allow_updates", "raw_execute", "raw_fetch", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL."""
    return url.removeprefix("sqlite:///").partition("?")[0]


def _sqlite_sql(sql: str) -> str:
    return sql.replace("$1", "?").replace("$2", "?").replace("$3", "?")


async def raw_fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (placeholders ``$1``…) on the store's database."""
    if url.startswith("sqlite:"):
        db = sqlite3.connect(sqlite_path(url), timeout=10)
        try:
            return [tuple(r) for r in db.execute(_sqlite_sql(sql), args).fetchall()]
        finally:
            db.close()
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def raw_execute(url: str, *statements: str) -> None:
    """Run statements (no parameters) in one transaction on the store's database."""
    if url.startswith("sqlite:"):
        db = sqlite3.connect(sqlite_path(url), timeout=10, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql in statements:
                db.execute(sql)
            db.execute("COMMIT")
        finally:
            db.close()
        return
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for sql in statements:
                await conn.execute(sql)
    finally:
        await conn.close()


def allow_updates(url: str) -> list[str]:
    """Statements that lift the append-only trigger, as a tamperer with DDL rights would."""
    if url.startswith("sqlite:"):
        return ["DROP TRIGGER IF EXISTS lgsp_audit_append_only"]
    return ["ALTER TABLE lgsp_audit_records DISABLE TRIGGER lgsp_audit_append_only"]
