"""Shared fixtures: a RabbitMQ vhost per run, brokers of every kind, loopback helpers."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bus.broker import Broker, open_broker
from bus.store import Store, open_store
from tests.support.pg import TestDatabase
from tests.support.rabbit import TestVhost


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A test that runs the CLI's ``main()`` configures logging onto the stderr pytest
    captured for it, which is closed afterwards; later tests' logs would fail on it."""
    yield
    from bus import logs

    logs.reset()


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[TestVhost]:
    """A fresh vhost on the real RabbitMQ for this test run."""
    if not _reachable("127.0.0.1", 5672):
        message = "RabbitMQ is not reachable on 127.0.0.1:5672 (the test command starts it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    vhost = TestVhost()
    yield vhost
    vhost.close()


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-memory broker, else an AMQP URL of this run's vhost."""
    if request.param == "memory":
        return None
    vhost: TestVhost = request.getfixturevalue("rabbit_vhost")
    return vhost.url()


@pytest.fixture
async def broker(broker_url: str | None) -> AsyncIterator[Broker]:
    """A connected broker of each kind."""
    b = open_broker(broker_url, name="lgsp-test")
    await b.connect()
    yield b
    await b.aclose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[TestDatabase]:
    """A fresh database on the real PostgreSQL for this test run."""
    if not _reachable("127.0.0.1", 5432):
        message = "PostgreSQL is not reachable on 127.0.0.1:5432"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    db = TestDatabase()
    yield db
    db.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL of each backend: a new SQLite file, or this run's PostgreSQL database
    (shared by the run's tests: the ``store`` fixture empties it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    db: TestDatabase = request.getfixturevalue("pg_database")
    return db.url()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A connected, empty store of each backend."""
    s = open_store(store_url)
    await s.connect()
    if store_url.startswith("postgresql:"):
        import asyncpg

        conn = await asyncpg.connect(store_url)
        try:
            await conn.execute("TRUNCATE lgsp_messages, lgsp_audit_records, lgsp_audit_chains")
        finally:
            await conn.close()
    yield s
    await s.aclose()
