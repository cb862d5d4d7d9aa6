"""Who is calling (API keys) and what they may call (consumer × service × operation ACL).

Keys live in ``routing.yaml`` only as references (``env:``/``file:``) or SHA-256 digests; the
gateway keeps digests and compares in constant time. Deny by default: a consumer may call
exactly the operations its ``allow`` map lists (``"*"`` = every operation of that service).
Unknown, malformed or expired credentials all give the same ``401 UNAUTHENTICATED``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, date, datetime

from bus.config import RoutingConfig, resolve_secret
from bus.errors import Forbidden, Unauthenticated

__all__ = ["Authenticator", "allowed_operations", "authorize", "key_digest"]


def key_digest(key: str) -> str:
    """SHA-256 hex digest of an API key (what ``routing.yaml`` may store as ``sha256``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = datetime.combine(date.fromisoformat(value), datetime.max.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    consumer: str
    expires: datetime | None


class Authenticator:
    """Maps a presented bearer key to a consumer name."""

    def __init__(self, config: RoutingConfig) -> None:
        self._keys: dict[bytes, _Key] = {}
        for name, consumer in config.consumers.items():
            for api_key in consumer.api_keys:
                if api_key.key is not None:
                    digest = key_digest(resolve_secret(api_key.key))
                else:
                    assert api_key.sha256 is not None
                    digest = api_key.sha256
                raw = bytes.fromhex(digest)
                self._keys[raw] = _Key(raw, name, _expiry(api_key.expires))

    def authenticate(self, authorization: str | None) -> str:
        """The consumer for an ``Authorization`` header value; raises ``Unauthenticated``."""
        if not authorization:
            raise Unauthenticated("an API key is required: Authorization: Bearer <key>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            raise Unauthenticated("invalid credentials")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found = self._keys.get(digest)
        # Dict lookup is by digest of the presented key; compare again in constant time
        # so a timing side channel cannot reveal a stored digest.
        if found is None or not hmac.compare_digest(found.digest, digest):
            raise Unauthenticated("invalid credentials")
        if found.expires is not None and found.expires <= datetime.now(UTC):
            raise Unauthenticated("invalid credentials")
        return found.consumer


def allowed_operations(config: RoutingConfig, consumer: str) -> dict[str, list[str]]:
    """Service → operations ``consumer`` may call (``*`` expanded)."""
    spec = config.consumers.get(consumer)
    if spec is None:
        return {}
    out: dict[str, list[str]] = {}
    for service, ops in spec.allow.items():
        svc = config.services.get(service)
        if svc is None:
            continue
        names = list(svc.operations) if "*" in ops else [op for op in ops if op in svc.operations]
        if names:
            out[service] = names
    return out


def authorize(config: RoutingConfig, consumer: str, service: str, operation: str) -> None:
    """Raise ``Forbidden`` unless ``consumer`` may call ``service.operation``."""
    spec = config.consumers.get(consumer)
    ops = spec.allow.get(service) if spec else None
    if not ops or ("*" not in ops and operation not in ops):
        raise Forbidden(f"consumer may not call {service}/{operation}")
