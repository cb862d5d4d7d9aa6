"""Store backends: ``sqlite`` (embedded default) and ``postgres`` (production).

The store is chosen by URL (``LGSP_STORE_URL``; default ``sqlite:///lgsp-bus.sqlite3``, a
file in the working directory):

* ``sqlite:///relative/path.sqlite3``, ``sqlite:////absolute/path.sqlite3`` or a plain
  path — SQLite, WAL journal; query options ``synchronous=full|normal`` (default full) and
  ``busy_timeout_ms`` (default 5000);
* ``postgresql://user:pass@host:port/db`` (or ``postgres://``) — PostgreSQL via asyncpg;
  query option ``pool_max`` (default 10), other options go to asyncpg.

Stored answers are sealed under ``store.keys`` (:func:`open_store`'s ``keyring``), else a
SQLite store's key file ``<db>.key`` or a PostgreSQL store's key of the process
(:mod:`bus.sealing`); :func:`dead_letter_keyring` says what dead letters are sealed under.
"""

import os
from urllib.parse import parse_qsl

import structlog

from bus.config import RoutingConfig
from bus.config.atrest import keyring_for, keyring_of
from bus.sealing import Keyring
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
    "dead_letter_keyring",
    "open_store",
    "store_url_from_env",
]

log = structlog.get_logger("bus.store")

STORE_URL_ENV = "LGSP_STORE_URL"
DEFAULT_STORE_URL = "sqlite:///lgsp-bus.sqlite3"


def store_url_from_env() -> str:
    """``$LGSP_STORE_URL``, else the SQLite file ``./lgsp-bus.sqlite3``."""
    return os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL


def open_store(url: str, keyring: Keyring | None = None) -> Store:
    """An unconnected store for ``url`` (see the module docstring), its answers sealed
    under ``keyring`` (else the backend's default); ``ValueError`` if the URL names no
    known backend."""
    store = _open(url)
    if keyring is not None:
        store.keyring = keyring
    return store


def dead_letter_keyring(config: RoutingConfig, url: str, *, make: bool = True) -> Keyring | None:
    """What dead letters are sealed under: ``store.keys``; else the key file of the SQLite
    store at ``url`` (shared by every process using that database); else, on PostgreSQL,
    the key derived from ``audit.subject_key``; else ``None`` (kept as they are: a key of
    one process could not open them in another). Logs a warning without ``store.keys``.
    ``make=False`` (the ``dlq`` commands, which only open letters): a SQLite key file that
    does not exist is not created — nothing was sealed under it."""
    ring = keyring_of(config)
    if ring is not None:
        return ring
    shared = keyring_for(config, url)  # PostgreSQL: derived from audit.subject_key
    store = _open(url)
    local = isinstance(store, SqliteStore)
    where = "key file beside the database" if local else "key derived from audit.subject_key"
    log.warning(
        "store.no_at_rest_keys",
        answers=where if local or shared else "a key of this process",
        dead_letters=where if local or shared else "not sealed",
        hint="set store.keys for production",
    )
    if local and not make:
        assert isinstance(store, SqliteStore)
        if not store.key_path.exists():
            return None
    return store.keyring if local else shared


def _open(url: str) -> Store:
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
