"""Credentials written where a reference belongs: in a URL, or as a header's literal value.

A secret in routing.yaml is always a reference (``env:NAME``/``file:PATH``). These checks
catch the places a secret slips in anyway, each refused with the code ``INLINE_SECRET``:

* an upstream URL with a user-info part (``https://user:pass@host/``) or a query parameter
  whose name reads as a credential (``?token=``, ``?apikey=``, ``?sig=`` …);
* a header whose name reads as a credential (``Authorization``, ``Cookie``, ``X-Api-Key``,
  ``X-Auth-Token`` …) given a literal value instead of a reference.

A name reads as a credential when one of its words (split at ``-``, ``_``, ``.`` and
camel case) is in :data:`CREDENTIAL_WORDS`, it is one of :data:`CREDENTIAL_NAMES`, or its
word ``key`` stands first or after one of :data:`_KEY_KINDS`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "CREDENTIAL_NAMES",
    "CREDENTIAL_WORDS",
    "INLINE_SECRET",
    "header_secret_problem",
    "is_credential_name",
    "is_secret_ref",
    "url_secret_problem",
]

INLINE_SECRET = "INLINE_SECRET"  # noqa: S105 (a code, not a password)
"""The code of every finding here (README, "Changing routing.yaml safely")."""

CREDENTIAL_WORDS = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "jwt",
        "pass",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "sessionid",
        "sig",
        "signature",
        "token",
    }
)
CREDENTIAL_NAMES = frozenset(
    {"accesstoken", "apikey", "clientsecret", "sessionid", "setcookie", "xapikey", "authtoken"}
)
_KEY_KINDS = ("api", "access", "secret", "private", "client", "subscription", "auth", "x")
"""``key`` reads as a credential alone (``?key=``) or after one of these (``X-Api-Key``,
``accessKey``, ``Ocp-Apim-Subscription-Key``), not after other words (``Idempotency-Key``,
``Partition-Key``: ids, not secrets)."""
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


def is_secret_ref(value: str) -> bool:
    """``env:NAME`` or ``file:PATH``."""
    return bool(_REF.fullmatch(value))


def is_credential_name(name: str) -> bool:
    """Whether a query parameter or header name reads as a credential."""
    split = [w.lower() for w in _WORD.findall(name)]
    compact = re.sub(r"[^a-z0-9]", "", name.lower())
    if set(split) & CREDENTIAL_WORDS or compact in CREDENTIAL_NAMES:
        return True
    keyed = [i for i, w in enumerate(split) if w == "key"]
    return any(i == 0 or split[i - 1] in _KEY_KINDS for i in keyed)


def url_secret_problem(url: str) -> str | None:
    """Why ``url`` carries a credential, or ``None``."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return (
            f"{INLINE_SECRET}: the URL carries credentials (user:password@): drop them and "
            "set the upstream's auth (its secrets as env:NAME or file:PATH)"
        )
    names = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
    secret = [n for n in names if is_credential_name(n)]
    if secret:
        return (
            f"{INLINE_SECRET}: the URL's query parameter {secret[0]!r} looks like a "
            "credential: drop it and set the upstream's auth (its secrets as env:NAME or "
            "file:PATH)"
        )
    return None


def header_secret_problem(name: str, value: str) -> str | None:
    """Why header ``name: value`` is an inline credential, or ``None``."""
    if is_credential_name(name) and not is_secret_ref(value):
        return (
            f"{INLINE_SECRET}: header {name!r} looks like a credential: give its value as "
            "a reference, env:NAME or file:PATH"
        )
    return None
