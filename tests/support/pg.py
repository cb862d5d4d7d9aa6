"""A throw-away PostgreSQL database per test run, so runs never collide and leave nothing."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg

__all__ = ["TestDatabase"]


class TestDatabase:
    """Creates ``lgsp_test_<random>`` on the local server (trust auth); drops it on close."""

    __test__ = False

    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.name = f"lgsp_test_{uuid.uuid4().hex[:10]}"
        self.host = host
        self.port = port
        self.user = os.environ.get("LGSP_TEST_PG_USER", "postgres")
        self._admin(f'CREATE DATABASE "{self.name}"')

    def _admin(self, sql: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(
                host=self.host, port=self.port, user=self.user, database="postgres", timeout=10
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        # A private loop: asyncio.run() would reset the thread's current loop under
        # pytest-asyncio's feet.
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(run())
        finally:
            loop.close()

    def url(self, host: str | None = None, port: int | None = None) -> str:
        """URL of the database (optionally through a proxy at host:port)."""
        return f"postgresql://{self.user}@{host or self.host}:{port or self.port}/{self.name}"

    def close(self) -> None:
        """Drop the database, closing any connection left to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
