"""Upstream authentication kinds: each turns a request into the headers the upstream expects.

Selected per upstream by ``auth.kind`` in ``routing.yaml``. Secrets are resolved from their
``env:``/``file:`` references when the provider is built, never logged.

Kinds: ``none``, ``bearer``, ``basic``, ``c06`` (signed ``Timestamp`` + Basic, per request),
``oauth2`` (client-credentials token, cached, single-flight refresh) and ``wsse``
(WS-Security UsernameToken). WS-Security lives in the SOAP envelope, not in HTTP headers:
a provider that also implements :class:`SoapSecurity` is handed each outgoing envelope by
the SOAP adapters before it is serialised.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
import orjson

from bus.config import (
    AuthBasic,
    AuthBearer,
    AuthC06,
    AuthNone,
    AuthOAuth2,
    AuthWsse,
    UpstreamConfig,
    resolve_secret,
)
from bus.errors import UpstreamAuthFailed, UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable

__all__ = [
    "AuthProvider",
    "BasicAuth",
    "BearerAuth",
    "C06Auth",
    "NoAuth",
    "OAuth2Auth",
    "SoapSecurity",
    "WsseAuth",
    "auth_provider",
    "c06_signature",
]


class AuthProvider(Protocol):
    """Adds credentials to one upstream request."""

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """Headers to send with this request."""
        ...

    def invalidate(self) -> None:
        """Forget cached credentials (the upstream said 401); the next call fetches anew."""
        ...


class NoAuth:
    """No credentials."""

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """No headers."""
        return {}

    def invalidate(self) -> None:
        """Nothing cached."""


class BearerAuth:
    """A static bearer token."""

    def __init__(self, token: str) -> None:
        self._header = {"Authorization": f"Bearer {token}"}

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """The Authorization header."""
        return self._header

    def invalidate(self) -> None:
        """A static token cannot be refreshed."""


class BasicAuth:
    """HTTP Basic."""

    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._header = {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """The Authorization header."""
        return self._header

    def invalidate(self) -> None:
        """Static credentials cannot be refreshed."""


@runtime_checkable
class SoapSecurity(Protocol):
    """A provider whose credentials go into the SOAP envelope (WS-Security)."""

    def secure_envelope(self, envelope: Any) -> None:
        """Add the security header to ``envelope`` (an lxml SOAP Envelope) in place."""
        ...


def c06_signature(url: str, username: str, timestamp: str, secret: str) -> str:
    """C06's request signature: ``sha256_hex(url + username + timestamp + secret)``."""
    return hashlib.sha256((url + username + timestamp + secret).encode("utf-8")).hexdigest()


class C06Auth:
    """C06 scheme: ``Timestamp`` (epoch ms) + ``Authorization: Basic user:sha256(...)``.

    The signature covers the full request URL as sent, so it is computed per request.
    """

    def __init__(
        self, username: str, secret: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._username = username
        self._secret = secret
        self._clock = clock

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """``Timestamp`` and the signed ``Authorization`` header for ``url``."""
        timestamp = str(int(self._clock() * 1000))
        signature = c06_signature(url, self._username, timestamp, self._secret)
        token = base64.b64encode(f"{self._username}:{signature}".encode()).decode("ascii")
        return {"Timestamp": timestamp, "Authorization": "Basic " + token}

    def invalidate(self) -> None:
        """Nothing cached: every request is signed afresh."""


class OAuth2Auth:
    """OAuth2 client credentials (RFC 6749 §4.4), as LGSP gateways (WSO2-style) issue them.

    The token is cached and refreshed ``refresh_margin_s`` before it expires; concurrent
    callers share one fetch (an :class:`asyncio.Lock`, checked again once held). A 401 from
    the upstream invalidates it. Client credentials go in HTTP Basic, as RFC 6749 prefers;
    ``lgspaccesstoken`` (if configured) rides on the token request and on every call.
    """

    DEFAULT_EXPIRES_S = 300.0
    """Lifetime assumed when the token endpoint omits ``expires_in``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        refresh_margin_s: float = 30.0,
        lgsp_access_token: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._token_url = token_url
        creds = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        self._basic = "Basic " + creds
        self._scope = scope
        self._margin = refresh_margin_s
        self._lgsp = lgsp_access_token
        self._timeout = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self.fetches = 0
        """How many tokens were fetched (for tests and metrics)."""

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """``Authorization: Bearer`` with a valid token (fetched if needed)."""
        out = {"Authorization": "Bearer " + await self._valid_token()}
        if self._lgsp is not None:
            out["lgspaccesstoken"] = self._lgsp
        return out

    def invalidate(self) -> None:
        """Drop the cached token; the next call fetches a new one."""
        self._token = None

    def _cached(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def _valid_token(self) -> str:
        token = self._cached()
        if token is not None:
            return token
        async with self._lock:
            token = self._cached()  # another caller may have refreshed while we waited
            if token is None:
                token = await self._fetch()
            return token

    async def _fetch(self) -> str:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        headers = {"Authorization": self._basic, "Accept": "application/json"}
        if self._lgsp is not None:
            headers["lgspaccesstoken"] = self._lgsp
        self.fetches += 1
        started = self._clock()
        try:
            async with self._session.post(
                self._token_url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                body = await resp.content.read(64 * 1024)
        except TimeoutError as exc:
            raise UpstreamTimeout("token endpoint did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"cannot reach token endpoint: {type(exc).__name__}") from exc
        if status in (400, 401, 403):
            raise UpstreamAuthFailed(
                f"token endpoint refused the client credentials (HTTP {status})"
            )
        if status != 200:
            raise UpstreamUnavailable(f"token endpoint failed (HTTP {status})")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamBadResponse("token endpoint sent malformed JSON") from exc
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamAuthFailed("token endpoint answered without an access_token")
        token_type = payload.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise UpstreamBadResponse("token endpoint issued a non-bearer token")
        try:
            lifetime = float(payload.get("expires_in", self.DEFAULT_EXPIRES_S))
        except (TypeError, ValueError) as exc:
            raise UpstreamBadResponse("token endpoint sent a malformed expires_in") from exc
        # A margin longer than the lifetime would refetch on every call: cap it at half.
        self._refresh_at = started + lifetime - min(self._margin, lifetime / 2)
        self._token = token
        return token


class WsseAuth:
    """WS-Security UsernameToken (PasswordText, or PasswordDigest with nonce + created)."""

    def __init__(self, username: str, password: str, *, digest: bool = False) -> None:
        from zeep.wsse.username import UsernameToken  # only SOAP upstreams need zeep

        # zeep makes a fresh nonce and timestamp on every apply() when none is fixed.
        self._token = UsernameToken(username, password, use_digest=digest)  # type: ignore[no-untyped-call]

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """No HTTP headers: the credentials travel in the envelope."""
        return {}

    def invalidate(self) -> None:
        """Static credentials cannot be refreshed."""

    def secure_envelope(self, envelope: Any) -> None:
        """Add ``wsse:Security/UsernameToken`` to the envelope's SOAP header."""
        self._token.apply(envelope, {})  # type: ignore[no-untyped-call]


def auth_provider(upstream: UpstreamConfig, session: aiohttp.ClientSession) -> AuthProvider:
    """The provider for ``upstream.auth`` (secrets resolved now)."""
    auth = upstream.auth
    if isinstance(auth, AuthNone):
        return NoAuth()
    if isinstance(auth, AuthBearer):
        return BearerAuth(resolve_secret(auth.token))
    if isinstance(auth, AuthBasic):
        return BasicAuth(auth.username, resolve_secret(auth.password))
    if isinstance(auth, AuthC06):
        return C06Auth(auth.username, resolve_secret(auth.secret))
    if isinstance(auth, AuthOAuth2):
        token_url = urlsplit(auth.token_url)
        if token_url.scheme != "https" and not (
            token_url.scheme == "http" and upstream.allow_plain_http
        ):
            raise ValueError("oauth2 token_url must be https:// (client secret on the wire)")
        lgsp = resolve_secret(auth.lgsp_access_token) if auth.lgsp_access_token else None
        return OAuth2Auth(
            session,
            token_url=auth.token_url,
            client_id=auth.client_id,
            client_secret=resolve_secret(auth.client_secret),
            scope=auth.scope,
            refresh_margin_s=auth.refresh_margin_s,
            lgsp_access_token=lgsp,
            timeout_s=upstream.connect_timeout_s * 3,
        )
    if isinstance(auth, AuthWsse):
        return WsseAuth(auth.username, resolve_secret(auth.password), digest=auth.digest)
    raise NotImplementedError(f"upstream auth kind {auth.kind!r} is not implemented yet")
