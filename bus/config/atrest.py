"""The at-rest keys of a config (``store.keys``): resolved into a :class:`~bus.sealing.Keyring`
for the store and the brokers' dead letters, checked by ``config validate``.
"""

from __future__ import annotations

import contextlib

from bus.config.models import RoutingConfig, resolve_secret
from bus.config.source import ConfigIssue, PathKey, YamlDocument
from bus.sealing import MIN_KEY_CHARS, Keyring, digest_key

__all__ = ["atrest_problems", "atrest_warnings", "keyring_for", "keyring_of", "request_digest_key"]


def keyring_of(config: RoutingConfig) -> Keyring | None:
    """The keyring of ``store.keys`` (references resolved, the first seals); ``None`` when
    none is configured (the store then uses its own default: see :mod:`bus.sealing`).
    ``KeyError``/``OSError``/``ValueError`` if a key cannot be read or is too short."""
    keys = config.store.keys
    if not keys:
        return None
    return Keyring.from_texts([(k.id, resolve_secret(k.key)) for k in keys])


def keyring_for(config: RoutingConfig, store_url: str) -> Keyring | None:
    """:func:`keyring_of`; without ``store.keys``, for a PostgreSQL store (several gateways
    share it: each must open the others' answers) the key derived from
    ``audit.subject_key`` (when set and readable). ``None``: the store's own default."""
    ring = keyring_of(config)
    if ring is not None or not store_url.startswith(("postgresql://", "postgres://")):
        return ring
    audit_key = _audit_key(config)
    return Keyring.from_audit_key(audit_key) if audit_key is not None else None


def request_digest_key(config: RoutingConfig) -> bytes | None:
    """The key the stored request digests are HMACs under (derived from
    ``audit.subject_key``, which every instance of a bus shares); ``None`` without a
    readable audit key (the digest is then a plain SHA-256)."""
    audit_key = _audit_key(config)
    return digest_key(audit_key) if audit_key is not None else None


def _audit_key(config: RoutingConfig) -> bytes | None:
    """``audit.subject_key``'s bytes; ``None`` if unset or unreadable (the audit trail then
    refuses to start and says why: ``bus.audit.observer.load_subject_key``)."""
    ref = config.audit.subject_key
    if ref is None:
        return None
    try:
        return resolve_secret(ref).encode("utf-8")
    except (KeyError, OSError, ValueError):
        return None


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
            "file beside a SQLite store, or a key derived from audit.subject_key on "
            "PostgreSQL (whoever holds that key can open them); set store.keys for production",
        )
    ]
