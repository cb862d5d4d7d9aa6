"""The at-rest keys of a config (``store.keys``): resolved into a :class:`~bus.sealing.Keyring`
for the store and the brokers' dead letters, checked by ``config validate``.
"""

from __future__ import annotations

import contextlib

from bus.config.models import RoutingConfig, resolve_secret
from bus.config.source import ConfigIssue, PathKey, YamlDocument
from bus.sealing import MIN_KEY_CHARS, Keyring

__all__ = ["atrest_problems", "atrest_warnings", "keyring_of"]


def keyring_of(config: RoutingConfig) -> Keyring | None:
    """The keyring of ``store.keys`` (references resolved, the first seals); ``None`` when
    none is configured (the store then uses its own default: see :mod:`bus.sealing`).
    ``KeyError``/``OSError``/``ValueError`` if a key cannot be read or is too short."""
    keys = config.store.keys
    if not keys:
        return None
    return Keyring.from_texts([(k.id, resolve_secret(k.key)) for k in keys])


def atrest_problems(config: RoutingConfig) -> list[tuple[PathKey, str]]:
    """What ``run`` would refuse about the at-rest keys' values (``--secrets``)."""
    found: list[tuple[PathKey, str]] = []
    for i, entry in enumerate(config.store.keys):
        with contextlib.suppress(KeyError, OSError, ValueError):  # unresolvable: reported apart
            if len(resolve_secret(entry.key)) < MIN_KEY_CHARS:
                found.append(
                    (
                        ("store", "keys", i, "key"),
                        f"an at-rest key must be at least {MIN_KEY_CHARS} characters "
                        "(run refuses a shorter one)",
                    )
                )
    return found


def atrest_warnings(config: RoutingConfig, doc: YamlDocument | None) -> list[ConfigIssue]:
    """A production profile (the gateway serves TLS) without ``store.keys``."""
    if config.gateway.tls is None or config.store.keys:
        return []
    return [
        ConfigIssue.at(
            doc,
            ("gateway", "tls"),
            "store.keys is not set: stored answers and dead letters are sealed under a key "
            "file beside a SQLite store, or a key of each process on PostgreSQL (other "
            "instances cannot read them); set store.keys for production",
        )
    ]
