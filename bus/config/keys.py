"""Key values across roles: an admin key must not have a consumer key's value.

References are resolved (``env:``/``file:``) and compared by SHA-256 of the value, since
two references with different names may hold the same key.
"""

from __future__ import annotations

import contextlib
import hashlib

from bus.config.atrest import atrest_problems
from bus.config.models import MIN_AUDIT_KEY_CHARS, RoutingConfig, resolve_secret
from bus.config.source import PathKey

__all__ = ["key_problems", "shared_keys"]


def shared_keys(config: RoutingConfig) -> list[tuple[PathKey, str]]:
    """Admin keys whose *value* is also a consumer's key (references resolved; those that do
    not resolve are reported elsewhere): such a consumer key would open ``/admin/*``. The
    roles are told apart by value, not by the reference's name."""
    consumers: dict[str, str] = {}
    idents: set[str | None] = set()
    for cname, consumer in config.consumers.items():
        for i, key in enumerate(consumer.api_keys):
            idents.add(key.key or key.sha256)
            digest = _key_digest(key.key, key.sha256)
            if digest is not None:
                consumers.setdefault(digest, f"consumers.{cname}.api_keys[{i}]")
    found: list[tuple[PathKey, str]] = []
    for i, entry in enumerate(config.admin.api_keys):
        if (entry.key or entry.sha256) in idents:
            continue  # the same reference or digest: the schema rules report it already
        other = consumers.get(_key_digest(entry.key, entry.sha256) or "")
        if other is not None:
            found.append(
                (
                    ("admin", "api_keys", i),
                    f"admin.api_keys[{i}] has the same value as {other}: an admin key must be "
                    "a key of its own",
                )
            )
    return found


def _key_digest(ref: str | None, sha256: str | None) -> str | None:
    if ref is None:
        return sha256
    try:
        secret = resolve_secret(ref)
    except (KeyError, OSError, ValueError):
        return None
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_problems(config: RoutingConfig) -> list[tuple[PathKey, str]]:
    """What ``run`` would refuse about the keys' values (``config validate --secrets``):
    an admin key with a consumer key's value, an audit key shorter than
    :data:`~bus.config.models.MIN_AUDIT_KEY_CHARS`, an at-rest key shorter than 32."""
    found = shared_keys(config)
    ref = config.audit.subject_key
    with contextlib.suppress(KeyError, OSError, ValueError):  # unresolvable: reported apart
        if ref is not None and len(resolve_secret(ref)) < MIN_AUDIT_KEY_CHARS:
            found.append(
                (
                    ("audit", "subject_key"),
                    f"the audit key must be at least {MIN_AUDIT_KEY_CHARS} characters "
                    "(run refuses a shorter one)",
                )
            )
    return found + atrest_problems(config)
