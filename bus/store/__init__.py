"""Store backends: ``sqlite`` (embedded default) and ``postgres`` (production).

The store is chosen by URL (``LGSP_STORE_URL``; default ``sqlite:///lgsp-bus.sqlite3``, a
file in the working directory):

* ``sqlite:///relative/path.sqlite3``, ``sqlite:////absolute/path.sqlite3`` or a plain
  path — SQLite, WAL journal; query options ``synchronous=full|normal`` (default full) and
  ``busy_timeout_ms`` (default 5000);
* ``postgresql://user:pass@host:port/db`` (or ``postgres://``) — PostgreSQL via asyncpg;
  query option ``pool_max`` (default 10), other options go to asyncpg.
"""

import os
from urllib.parse import parse_qsl

from bus.store.base import (
    GENESIS_HASH,
    AuditRecord,
    ChainConflict,
    ChainHead,
    MessageState,
    Store,
    StoredMessage,
)
from bus.store.postgres import PostgresStore
from bus.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_STORE_URL",
    "GENESIS_HASH",
    "STORE_URL_ENV",
    "AuditRecord",
    "ChainConflict",
    "ChainHead",
    "MessageState",
    "Store",
    "StoredMessage",
    "open_store",
    "store_url_from_env",
]

STORE_URL_ENV = "LGSP_STORE_URL"
DEFAULT_STORE_URL = "sqlite:///lgsp-bus.sqlite3"


def store_url_from_env() -> str:
    """``$LGSP_STORE_URL``, else the SQLite file ``./lgsp-bus.sqlite3``."""
    return os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL


def open_store(url: str) -> Store:
    """An unconnected store for ``url`` (see the module docstring); ``ValueError`` if the
    URL names no known backend."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith("sqlite://"):
        rest = url.removeprefix("sqlite://")
        if not rest.startswith("/") or rest == "/":
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        path, _, query = rest[1:].partition("?")
    elif "://" in url:
        raise ValueError(f"unknown store URL scheme {url.split('://', 1)[0]!r}")
    else:
        path, query = url, ""
    options = dict(parse_qsl(query))
    unknown = set(options) - {"synchronous", "busy_timeout_ms"}
    if unknown:
        raise ValueError(f"unknown SQLite store option(s): {', '.join(sorted(unknown))}")
    return SqliteStore(
        path,
        synchronous=options.get("synchronous", "full"),
        busy_timeout_ms=int(options.get("busy_timeout_ms", "5000")),
    )
