"""Console logins: an admin key posted once, exchanged for a server-side session.

The browser holds only a random session id (cookie ``lgsp_console``: HttpOnly,
SameSite=Strict, Secure when the console is served over TLS, path ``/admin/``); the
session (who, role, CSRF token, language) lives in this process's memory. A session ends
on logout, after ``admin.session_s`` (default 8 h) from login, after
``admin.session_idle_s`` (default 30 min) unused, when its key is no longer configured
(a reload removed or re-roled it), and when the process restarts. At most
:data:`MAX_SESSIONS` are kept; the oldest goes first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from bus.admin.access import Principal

__all__ = ["COOKIE", "MAX_SESSIONS", "Session", "Sessions"]

COOKIE = "lgsp_console"
MAX_SESSIONS = 1000
"""Live sessions kept per process (operators are few; a flood of logins evicts oldest)."""


@dataclass
class Session:
    """One logged-in operator."""

    principal: Principal
    key_digest: bytes
    """SHA-256 of the key used, to end the session when that key goes away."""
    started: float
    seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def csrf_ok(self, token: str | None) -> bool:
        """The form's or header's token is this session's (constant-time compare)."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    """The sessions of one process, by the SHA-256 of their id (the id itself is not kept)."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[bytes, Session] = OrderedDict()

    @staticmethod
    def _key(session_id: str) -> bytes:
        return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()

    def open(self, principal: Principal, key: str, now: float | None = None) -> tuple[str, Session]:
        """A new session for ``principal`` (who presented ``key``); returns (id, session)."""
        now = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        session = Session(principal, digest, now, now)
        self._by_id[self._key(session_id)] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session_id, session

    def get(
        self, session_id: str | None, *, max_s: float, idle_s: float, now: float | None = None
    ) -> Session | None:
        """The live session of ``session_id`` (touched), or ``None``."""
        if not session_id or len(session_id) > 128:
            return None
        now = time.time() if now is None else now
        key = self._key(session_id)
        session = self._by_id.get(key)
        if session is None:
            return None
        if now - session.started > max_s or now - session.seen > idle_s:
            del self._by_id[key]
            return None
        session.seen = now
        return session

    def close(self, session_id: str | None) -> None:
        """End a session (logout)."""
        if session_id:
            self._by_id.pop(self._key(session_id), None)

    def __len__(self) -> int:
        return len(self._by_id)
