"""Encryption at rest (AES-256-GCM) of what the bus keeps about citizens: the stored answers
(:mod:`bus.store`) and the dead letters the worker copies to a DLQ (:mod:`bus.broker`).

A :class:`Keyring` holds keys by id: the first seals, every one opens (rotation: put the
new key first, keep the old ones until what they sealed has expired or been purged). A
sealed value is kept beside the id of the key that sealed it, and AES-GCM's associated
data binds it to that id and to where it belongs (``context``: a row's consumer and
request id, a dead letter's service and id), so a value copied to another row, or
relabelled with another key id, does not open. Sealed bytes: a random 12-byte nonce, the
ciphertext, the 16-byte tag.

Keys come from ``store.keys`` in routing.yaml (secret references, each at least
:data:`MIN_KEY_CHARS` characters; the AES key is HKDF-SHA256 of the text). Without any, a
SQLite store uses a key generated into a file beside the database (``<db>.key``, 0600,
key id ``local``: every process on the host that opens the database shares it, and it
survives restarts — :meth:`Keyring.local`), and a PostgreSQL store — shared by several
gateways, which must open each other's answers — a key derived from ``audit.subject_key``
(:meth:`Keyring.from_audit_key`, key id ``audit``; every instance of a bus shares that key),
or, without one either, a key of the process only (:meth:`Keyring.generated`: what it
seals opens in that process, until it stops).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "AUDIT_KEY_ID",
    "EPHEMERAL_KEY_ID",
    "KEY_ID_RE",
    "LOCAL_KEY_ID",
    "MIN_KEY_CHARS",
    "Keyring",
    "derive_key",
    "digest_key",
]

log = structlog.get_logger("bus.sealing")

MIN_KEY_CHARS = 32
"""Shortest key text accepted (``run`` refuses a shorter one)."""
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
EPHEMERAL_KEY_ID = "ephemeral"
LOCAL_KEY_ID = "local"
AUDIT_KEY_ID = "audit"
"""The key derived from ``audit.subject_key`` (PostgreSQL without ``store.keys``)."""
_NONCE = 12
_INFO = b"lgsp-bus at-rest v1"
_AUDIT_INFO = b"lgsp-bus at-rest from audit.subject_key v1"
_DIGEST_INFO = b"lgsp-bus request digest v1"


def derive_key(secret: str) -> bytes:
    """The AES-256 key of a key text (HKDF-SHA256, no salt: the text is the secret)."""
    if len(secret) < MIN_KEY_CHARS:
        raise ValueError(f"an at-rest key must be at least {MIN_KEY_CHARS} characters")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return hkdf.derive(secret.encode("utf-8"))


def digest_key(audit_key: bytes) -> bytes:
    """The HMAC key of the stored request digests (``body_hash`` of an idempotency claim or
    a send's delivery record), derived from the audit key with its own label: a digest of a
    request holding an ID number cannot be tested against guessed IDs without it."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DIGEST_INFO)
    return hkdf.derive(audit_key)


class Keyring:
    """Keys by id; the first seals. ``unreadable`` counts values that did not open, by
    reason (``unknown_key``: sealed under a key not in the ring; ``bad_tag``: altered,
    moved to another row, or sealed under another key of the same id)."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, ephemeral: bool = False) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key_id, key in keys:
            if not KEY_ID_RE.fullmatch(key_id):
                raise ValueError(f"invalid key id {key_id!r} (letters, digits, . _ -; ≤ 32)")
            if len(key) != 32:
                raise ValueError("an at-rest key is 32 bytes (AES-256)")
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise ValueError("key ids must be unique")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys}
        self.current = ids[0]
        self.ephemeral = ephemeral
        self.unreadable: Counter[str] = Counter()

    @classmethod
    def generated(cls) -> Keyring:
        """A random key of this process only (no ``store.keys`` configured)."""
        return cls([(EPHEMERAL_KEY_ID, AESGCM.generate_key(bit_length=256))], ephemeral=True)

    @classmethod
    def local(cls, path: Path) -> Keyring:
        """The key in ``path`` (32 random bytes), generated there (0600) if missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, AESGCM.generate_key(bit_length=256))
                os.fsync(fd)
            finally:
                os.close(fd)
            # link, not rename: a process that lost the race keeps the winner's key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"the at-rest key file {path} is not 32 bytes")
        return cls([(LOCAL_KEY_ID, key)])

    @classmethod
    def from_audit_key(cls, audit_key: bytes) -> Keyring:
        """A key derived from the audit key (HKDF-SHA256 with its own label: it opens
        nothing of the audit trail, nor the trail's keyed hashes it), id ``audit``; what
        every instance sharing that key — as all of one bus must — can open."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AUDIT_INFO)
        return cls([(AUDIT_KEY_ID, hkdf.derive(audit_key))])

    @classmethod
    def from_texts(cls, keys: Sequence[tuple[str, str]]) -> Keyring:
        """Keys given as (id, key text), the sealing one first."""
        return cls([(key_id, derive_key(text)) for key_id, text in keys])

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, the sealing one first."""
        return tuple(self._keys)

    def seal(self, context: Sequence[str], plain: bytes) -> tuple[str, bytes]:
        """(key id, sealed bytes) of ``plain``, bound to ``context``."""
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self.current].encrypt(nonce, plain, _aad(self.current, context))
        return self.current, nonce + sealed

    def open(self, key_id: str | None, context: Sequence[str], sealed: bytes) -> bytes | None:
        """The plain bytes, or ``None`` (counted and logged, without the value or its
        context) if ``key_id`` is not in the ring or the value does not open here."""
        aes = self._keys.get(key_id) if key_id is not None else None
        if aes is None:
            self._unreadable("unknown_key", key_id)
            return None
        try:
            return aes.decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(key_id or "", context))
        except (InvalidTag, ValueError):
            self._unreadable("bad_tag", key_id)
            return None

    def _unreadable(self, reason: str, key_id: str | None) -> None:
        self.unreadable[reason] += 1
        log.warning("sealing.unreadable", reason=reason, key_id=key_id)


def _aad(key_id: str, context: Sequence[str]) -> bytes:
    # JSON: no separator can be smuggled inside one part to look like two.
    return orjson.dumps([key_id, *context])
