"""``lgsp-bus store keys|retire-keys``: the at-rest keys of the stored answers.

``keys`` prints each key id in the keyring (the first seals) and how many stored answers
each key id sealed (``-``: none, rows kept before answers were sealed, read as absent).
``retire-keys`` deletes the stored answers sealed under a key id not in the keyring: after
a rotation (the new key put first in ``store.keys``), run it before dropping the old key
— or simply wait ``gateway.idempotency_ttl_s``, after which every answer the old key
sealed has expired. Answers are not re-sealed: they are a cache of at most that TTL.
The keyring is ``store.keys``, else the store's default (:mod:`bus.sealing`). The store is
``--store``, else ``$LGSP_STORE_URL``, else ``./lgsp-bus.sqlite3``. Exit codes: 0 done,
2 keys unreadable or store unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bus.cli.common import CONFIG_HELP, load_or_exit
from bus.config import RoutingConfig
from bus.config.atrest import keyring_for, keyring_of
from bus.sealing import Keyring
from bus.store import open_store, store_url_from_env

__all__ = ["check_store_keys", "register"]

_HELP = """Stored answers (idempotency, async mode) are sealed under store.keys: the first
key seals, every one opens. 'keys' prints each configured key id with the number of
stored answers it sealed, then ids no longer configured (read as absent). After a
rotation (the new key first in store.keys, processes restarted), 'retire-keys' deletes
the answers sealed under ids no longer configured; or wait gateway.idempotency_ttl_s.
Without store.keys a SQLite store uses the key file <db>.key beside it. The store is
--store, else LGSP_STORE_URL, else ./lgsp-bus.sqlite3. Exit codes: 0 done, 2 keys
unreadable or store unreachable."""


def check_store_keys(config: RoutingConfig, role: str) -> Keyring | None:
    """For start-up: exit 2 with a plain message if ``store.keys`` cannot be used."""
    try:
        return keyring_of(config)
    except (KeyError, OSError, ValueError) as exc:
        print(f"lgsp-bus {role}: store.keys: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _keys(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    check_store_keys(config, "store")
    url = args.store or store_url_from_env()
    try:
        store = open_store(url, keyring_for(config, url))
        await store.connect()
    except (ValueError, OSError) as exc:
        print(f"store: cannot open the store: {exc}", file=sys.stderr)
        return 2
    try:
        ids = store.keyring.ids
        if args.store_command == "retire-keys":
            removed = await store.messages_retire(ids)
            print(f"store: deleted {removed} stored answer(s) under key ids not in {list(ids)}")
            return 0
        use = await store.messages_key_use()
        for key_id in ids:
            print(f"{key_id}\t{use.pop(key_id, 0)}\t{'seals' if key_id == ids[0] else 'opens'}")
        for key_id, count in sorted(use.items()):
            print(f"{key_id or '-'}\t{count}\tretired (read as absent)")
        return 0
    finally:
        await store.aclose()


def register(sub: Any) -> None:
    """Add the ``store`` command group."""
    store = sub.add_parser(
        "store",
        help="at-rest keys of the stored answers: use per key, retire old keys",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = store.add_subparsers(dest="store_command", required=True)
    for name, text in (
        ("keys", "stored answers per key id"),
        ("retire-keys", "delete stored answers sealed under a key no longer configured"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument("--store", help="store URL (default: $LGSP_STORE_URL)")
        p.set_defaults(handler=lambda args: asyncio.run(_keys(args)))
