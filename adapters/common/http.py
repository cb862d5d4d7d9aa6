"""One shared aiohttp session per upstream: TLS, connection limits, auth, size limit, error mapping.

Every adapter speaks to its upstream through :class:`UpstreamHttp`, so timeouts, oversize
answers and connection failures map into :mod:`bus.errors` the same way for REST and SOAP.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from adapters.common.auth import AuthProvider, auth_provider
from bus.config import UpstreamConfig, resolve_secret
from bus.errors import (
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["SAFE_CODE", "HttpResult", "UpstreamHttp", "error_for_status", "forwarding"]

SAFE_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""Upstream codes matching this are echoed in errors; anything else may be text with PII."""

_FORWARD: ContextVar[Mapping[str, str]] = ContextVar(
    "lgsp_forward_headers", default=MappingProxyType({})
)


@contextlib.contextmanager
def forwarding(headers: Mapping[str, str]) -> Iterator[None]:
    """Within the block, requests to upstreams marked ``xroad: true`` carry ``headers``
    (the worker sets the call's X-Road identity here, so every adapter forwards it)."""
    token = _FORWARD.set(headers)
    try:
        yield
    finally:
        _FORWARD.reset(token)


@dataclass(frozen=True, slots=True)
class HttpResult:
    """A fully read upstream response."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; malformed JSON is an :class:`UpstreamBadResponse`."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamBadResponse("upstream sent malformed JSON") from exc


def error_for_status(status: int, what: str = "upstream") -> UpstreamError:
    """The bus error for a non-success HTTP status (retryable only for 408/429/502/503/504)."""
    if status in (401, 403):
        return UpstreamAuthFailed(f"{what} refused the bus's credentials (HTTP {status})")
    if status in (408, 504):
        return UpstreamTimeout(f"{what} timed out (HTTP {status})")
    if status in (429, 502, 503):
        return UpstreamUnavailable(f"{what} is unavailable (HTTP {status})")
    if 400 <= status < 500:
        return UpstreamRejected(f"{what} rejected the request (HTTP {status})")
    return UpstreamError(f"{what} failed (HTTP {status})")


def _ssl_context(upstream: UpstreamConfig) -> ssl.SSLContext | bool:
    if not upstream.url.startswith("https:"):
        return False
    ctx = ssl.create_default_context(cafile=upstream.ca_file)
    if not upstream.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if upstream.client_cert:
        password = resolve_secret(upstream.client_key) if upstream.client_key else None
        ctx.load_cert_chain(upstream.client_cert, password=password)
    return ctx


URL_MEMO = 64
"""Resolved upstream URLs one :class:`UpstreamHttp` remembers (per-operation paths)."""


class UpstreamHttp:
    """HTTP access to one upstream with its auth and limits."""

    def __init__(
        self, upstream: UpstreamConfig, session: aiohttp.ClientSession, auth: AuthProvider
    ) -> None:
        self.upstream = upstream
        self.base_url = upstream.url
        self._session = session
        self._auth = auth
        self._urls: dict[str, str] = {}

    @classmethod
    async def open(cls, upstream: UpstreamConfig) -> UpstreamHttp:
        """Open the session (call from a running loop)."""
        connector = aiohttp.TCPConnector(
            limit=upstream.max_connections, ssl=_ssl_context(upstream), ttl_dns_cache=300
        )
        session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            raise_for_status=False,
        )
        try:
            auth = auth_provider(upstream, session)
        except BaseException:
            await session.close()
            raise
        return cls(upstream, session, auth)

    @property
    def auth(self) -> AuthProvider:
        """The upstream's auth provider (SOAP adapters apply :class:`SoapSecurity` from it)."""
        return self._auth

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared client session (for auth providers that fetch tokens)."""
        return self._session

    def url(self, path: str) -> str:
        """``path`` resolved against the upstream's base URL (remembered: ``urljoin`` costs
        ≈ 5 µs a call; at most :data:`URL_MEMO` paths, as a path may carry a request's value)."""
        known = self._urls.get(path)
        if known is not None:
            return known
        if not path:
            return self.base_url
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        resolved = urljoin(base, path.lstrip("/"))
        if len(self._urls) >= URL_MEMO:
            self._urls.clear()
        self._urls[path] = resolved
        return resolved

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,  # noqa: ASYNC109 - a budget passed down from the call's deadline
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResult:
        """Send one request and read the whole answer within ``timeout`` seconds."""
        if timeout <= 0:
            raise UpstreamTimeout("no time left for the upstream call")
        merged = dict(_FORWARD.get()) if self.upstream.xroad else {}
        merged.update(headers or {})
        # Auth may itself call out (an OAuth2 token fetch): it spends the same budget.
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(timeout):
                merged.update(await self._auth.headers(method, url))
        except TimeoutError as exc:
            raise UpstreamTimeout("no time left after fetching upstream credentials") from exc
        timeout -= loop.time() - started
        if timeout <= 0:
            raise UpstreamTimeout("no time left after fetching upstream credentials")
        client_timeout = aiohttp.ClientTimeout(
            total=timeout, connect=min(self.upstream.connect_timeout_s, timeout)
        )
        limit = self.upstream.max_response_bytes
        try:
            async with self._session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                headers=merged,
                timeout=client_timeout,
                allow_redirects=False,
            ) as resp:
                declared = resp.content_length
                if declared is not None and declared > limit:
                    raise UpstreamBadResponse(f"upstream response is over {limit} bytes")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise UpstreamBadResponse(f"upstream response is over {limit} bytes")
                    chunks.append(chunk)
                result = HttpResult(resp.status, resp.headers, b"".join(chunks))
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream did not answer within {timeout:.1f}s") from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamUnavailable("upstream connection broke mid-response") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise UpstreamUnavailable(f"cannot reach upstream: {type(exc).__name__}") from exc
        except aiohttp.ClientResponseError as exc:
            raise UpstreamBadResponse(f"malformed HTTP response: {exc.message}") from exc
        if result.status in (401, 403):
            self._auth.invalidate()
        return result

    async def aclose(self) -> None:
        """Close the session and its connections."""
        await self._session.close()
        # Let the connector's transports finish closing (aiohttp's documented grace period).
        await asyncio.sleep(0)
