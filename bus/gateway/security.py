"""Who is calling (API keys, client certificates) and what they may call (the ACL).

Authentication, in order:

* ``Authorization: Bearer <key>``: ``routing.yaml`` holds each key only as a reference
  (``env:``/``file:``, resolved once at start) or as its SHA-256; the gateway keeps digests
  and compares in constant time. A consumer may have several keys, each with an optional
  ``expires``, so a new key can be rolled out before the old one stops working;
* else a client certificate the TLS layer has verified against ``gateway.tls.client_ca_file``
  (mutual TLS), matched by its exact subject or its SHA-256 fingerprint.

If both are presented they must name the same consumer. Unknown, malformed or expired
credentials all give the same ``401 UNAUTHENTICATED`` and say nothing about why.

Authorisation is deny by default: a consumer may call exactly the operations its ``allow``
map lists (``"*"`` = every operation of that service) — else ``403 FORBIDDEN_OPERATION``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from bus.config import RoutingConfig, resolve_secret
from bus.config.access import (
    allowed_operations,
    authorize,
    parse_expiry,
    parse_subject,
    subject_attribute,
)
from bus.errors import Unauthenticated

__all__ = [
    "EXPIRY_WARNING",
    "Authenticator",
    "Identity",
    "PeerCertificate",
    "StoredKey",
    "allowed_operations",
    "authorize",
    "bearer_key",
    "key_digest",
]

log = structlog.get_logger("bus.gateway.security")

EXPIRY_WARNING = timedelta(days=14)
"""Keys expiring sooner than this are logged at start (``security.key_expiring``)."""
_MAX_TOKEN = 512


def key_digest(key: str) -> str:
    """SHA-256 hex digest of an API key (what ``routing.yaml`` may store as ``sha256``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A client certificate the TLS layer verified (never taken from a header)."""

    der: bytes
    subject: frozenset[tuple[str, str]]

    @property
    def sha256(self) -> str:
        """Hex SHA-256 fingerprint of the DER encoding."""
        return hashlib.sha256(self.der).hexdigest()

    @classmethod
    def from_ssl(cls, der: bytes | None, info: dict[str, Any] | None) -> PeerCertificate | None:
        """From ``SSLObject.getpeercert(True)`` and ``getpeercert()``; ``None`` if absent."""
        if not der or not info:
            return None
        pairs = {
            (subject_attribute(str(name)), str(value))
            for rdn in info.get("subject", ())
            for name, value in rdn
        }
        return cls(der, frozenset(pairs))


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller: consumer name, how it proved it, which credential."""

    consumer: str
    method: str
    """``api_key`` or ``client_cert``."""
    credential: str
    """The key's label (or ``key-<n>``) or ``cert-<n>``: for logs, never the secret."""


class StoredKey(Protocol):
    """A configured bearer key, kept as the SHA-256 digest of the secret."""

    @property
    def digest(self) -> bytes: ...

    @property
    def expires(self) -> datetime | None: ...


K = TypeVar("K", bound=StoredKey)


def bearer_key(
    authorization: str, keys: Mapping[bytes, K], *, malformed: str = "invalid credentials"
) -> K:
    """The entry of ``keys`` (by digest) that an ``Authorization: Bearer <key>`` value
    presents; ``Unauthenticated`` with ``malformed`` when the value is not a bearer token of
    at most 512 characters, with "invalid credentials" for an unknown or expired key."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN:
        raise Unauthenticated(malformed)
    digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
    found = keys.get(digest)
    # Dict lookup is by digest of the presented key; compare again in constant time
    # so a timing side channel cannot reveal a stored digest.
    if found is None or not hmac.compare_digest(found.digest, digest):
        raise Unauthenticated("invalid credentials")
    if found.expires is not None and found.expires <= datetime.now(UTC):
        raise Unauthenticated("invalid credentials")
    return found


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    identity: Identity
    expires: datetime | None


class Authenticator:
    """Maps a presented bearer key or verified client certificate to a consumer."""

    def __init__(self, config: RoutingConfig, *, now: datetime | None = None) -> None:
        self._keys: dict[bytes, _Key] = {}
        self._by_fingerprint: dict[str, Identity] = {}
        self._by_subject: dict[frozenset[tuple[str, str]], Identity] = {}
        self._cert_required = {n for n, c in config.consumers.items() if c.require_client_cert}
        now = now or datetime.now(UTC)
        for name, consumer in config.consumers.items():
            for i, api_key in enumerate(consumer.api_keys):
                label = api_key.label or f"key-{i}"
                digest = self._digest_of(name, i, api_key.key, api_key.sha256)
                expires = parse_expiry(api_key.expires) if api_key.expires else None
                if digest in self._keys and self._keys[digest].identity.consumer != name:
                    raise ValueError(f"consumers.{name}.api_keys[{i}] is another consumer's key")
                self._keys[digest] = _Key(digest, Identity(name, "api_key", label), expires)
                _warn_expiry(name, label, expires, now)
            for i, cert in enumerate(consumer.client_certs):
                ident = Identity(name, "client_cert", f"cert-{i}")
                if cert.sha256 is not None:
                    self._by_fingerprint[cert.sha256] = ident
                else:
                    assert cert.subject is not None
                    self._by_subject[parse_subject(cert.subject)] = ident

    @staticmethod
    def _digest_of(consumer: str, index: int, ref: str | None, sha256: str | None) -> bytes:
        if ref is None:
            assert sha256 is not None
            return bytes.fromhex(sha256)
        try:
            secret = resolve_secret(ref)
        except (KeyError, OSError, ValueError) as exc:
            # The reference names a variable or file; neither is secret, the value is.
            raise ValueError(f"consumers.{consumer}.api_keys[{index}]: {exc}") from None
        if not secret:
            raise ValueError(f"consumers.{consumer}.api_keys[{index}]: the key is empty")
        return hashlib.sha256(secret.encode("utf-8")).digest()

    def identify(self, authorization: str | None, cert: PeerCertificate | None = None) -> Identity:
        """The caller for an ``Authorization`` value and/or a verified certificate."""
        by_cert = self._certificate(cert) if cert is not None else None
        if authorization:
            by_key = self._api_key(authorization)
            if by_cert is not None and by_cert.consumer != by_key.consumer:
                raise Unauthenticated("invalid credentials")
            if by_cert is None and by_key.consumer in self._cert_required:
                raise Unauthenticated("invalid credentials")  # the key alone is not enough
            return by_key
        if by_cert is not None:
            return by_cert
        if cert is not None:
            raise Unauthenticated("invalid credentials")
        raise Unauthenticated(
            "credentials are required: Authorization: Bearer <key>, or a client certificate"
        )

    def authenticate(self, authorization: str | None) -> str:
        """The consumer for an ``Authorization`` header value; raises ``Unauthenticated``."""
        return self.identify(authorization).consumer

    def _api_key(self, authorization: str) -> Identity:
        return bearer_key(authorization, self._keys).identity

    def _certificate(self, cert: PeerCertificate) -> Identity | None:
        return self._by_fingerprint.get(cert.sha256) or self._by_subject.get(cert.subject)


def _warn_expiry(consumer: str, label: str, expires: datetime | None, now: datetime) -> None:
    if expires is None:
        return
    if expires <= now:
        log.warning("security.key_expired", consumer=consumer, key=label)
    elif expires - now < EXPIRY_WARNING:
        days = round((expires - now) / timedelta(days=1), 1)
        log.warning("security.key_expiring", consumer=consumer, key=label, days_left=days)
