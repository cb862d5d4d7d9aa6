"""The gateway's HTTP server: TLS and mTLS, the peer certificate, protocol errors as JSON.

* :func:`server_ssl_context` builds the server's context from ``gateway.tls``:
  ``client_auth: required`` → ``CERT_REQUIRED`` (no certificate, no handshake),
  ``optional`` → ``CERT_OPTIONAL`` (a certificate, if sent, must chain to
  ``client_ca_file``), ``none`` → plain HTTPS.
* :func:`peer_certificate` reads the verified client certificate of a request from the TLS
  layer (never from a header, which anyone could set).
* :func:`json_protocol_errors` makes a request that fails before it reaches the app —
  a header line over ``max_field_size``/``max_line_size`` (8190 bytes), more than
  ``max_headers`` (128) headers, a malformed request line — get the gateway's one JSON
  error shape (``431 HEADERS_TOO_LARGE`` / ``400 BAD_HTTP_REQUEST``) instead of aiohttp's
  plain-text page, and logs only the error's type: aiohttp's own message quotes the
  offending line, which may hold personal data.
* :func:`http_site` serves an app (HTTPS with a context) until its block ends, then stops
  accepting and waits for in-flight requests; :func:`bound_port` tells the port it got. A
  port that cannot be had raises :class:`PortInUse`, naming the setting that chose it.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from bus.config import GatewayTls, resolve_secret
from bus.errors import BusError, InvalidRequest, RequestError
from bus.gateway.security import PeerCertificate

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_READ_TIMEOUT_S",
    "HeadersTooLarge",
    "PortInUse",
    "bound_port",
    "guard_connections",
    "http_site",
    "json_protocol_errors",
    "peer_certificate",
    "server_ssl_context",
    "stop_accepting",
]

log = structlog.get_logger("bus.gateway.server")

DEFAULT_KEEPALIVE_S = 15.0
"""An idle connection is closed after this (``gateway.keepalive_timeout_s``; aiohttp's own
default is an hour)."""
DEFAULT_READ_TIMEOUT_S = 20.0
"""A request's line, headers and body must arrive within this of its first byte
(``gateway.request_read_timeout_s``)."""


class HeadersTooLarge(RequestError):
    """A header line, or the number of headers, is over the server's limit."""

    status = 431
    default_code = "HEADERS_TOO_LARGE"


def server_ssl_context(tls: GatewayTls) -> ssl.SSLContext:
    """The gateway's server-side TLS context (blocking file reads: call at start only)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    password = resolve_secret(tls.key_password) if tls.key_password else None
    ctx.load_cert_chain(tls.cert_file, tls.key_file, password=password)
    if tls.client_auth == "none":
        ctx.verify_mode = ssl.CERT_NONE
    else:
        assert tls.client_ca_file is not None
        ctx.load_verify_locations(cafile=tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "required" else ssl.CERT_OPTIONAL
    return ctx


def peer_certificate(request: web.BaseRequest) -> PeerCertificate | None:
    """The client certificate the TLS handshake verified, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    # getpeercert() is empty unless the certificate was verified (CERT_OPTIONAL/REQUIRED).
    return PeerCertificate.from_ssl(ssl_object.getpeercert(True), ssl_object.getpeercert())


def _protocol_error(exc: BaseException | None) -> BusError:
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and "headers" in str(exc.message).lower()
    ):
        return HeadersTooLarge(
            "the request line or a header is over 8190 bytes, or there are over 128 headers"
        )
    return InvalidRequest("the HTTP request is malformed", code="BAD_HTTP_REQUEST")


class _GuardedHandler(RequestHandler):
    """aiohttp's connection handler, with a deadline on reading each request: from its first
    byte, the request line, headers and body must all arrive within the server's
    ``read_timeout_s``, or the connection is closed (a client sending a byte at a time
    cannot hold a connection). Idle connections are closed by aiohttp's keep-alive timer."""

    __slots__ = ("_body", "_read_timer")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and data and not (self._force_close or self._close):
            timeout = float(getattr(self._manager, "read_timeout_s", DEFAULT_READ_TIMEOUT_S))
            self._read_timer = self._loop.call_later(timeout, self._read_timed_out)
        seen = self._request_count
        super().data_received(data)
        if self._request_count > seen and self._messages:
            payload = self._messages[-1][1]  # the newest request whose headers are complete
            self._body = payload if isinstance(payload, StreamReader) else None
            if self._body is not None and self._body.is_eof():
                self._body = None
            if self._body is None:
                self._read_done()
        elif self._body is not None and self._body.is_eof():
            self._body = None
            self._read_done()

    def _read_done(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        log.info("server.read_timeout", phase="body" if self._body is not None else "headers")
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._read_done()
        super().connection_lost(exc)


class _JsonErrorHandler(_GuardedHandler):
    """The guarded handler, with parse errors rendered in the gateway's shape."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        error = _protocol_error(exc)
        log.info("gateway.bad_http_request", code=error.code, error_type=type(exc).__name__)
        body = {"error": {**error.to_dict(), "request_id": None}}
        resp = web.Response(
            body=orjson.dumps(body), status=error.status, content_type="application/json"
        )
        resp.force_close()
        return resp


class _GuardedServer(web.Server):
    read_timeout_s = DEFAULT_READ_TIMEOUT_S

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _GuardedHandler(self, loop=self._loop, **kwargs)


class _JsonErrorServer(_GuardedServer):
    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _JsonErrorHandler(self, loop=self._loop, **kwargs)


def guard_connections(
    runner: web.BaseRunner, *, read_timeout_s: float, json_errors: bool = False
) -> None:
    """After ``runner.setup()``: new connections must send each request whole within
    ``read_timeout_s`` of its first byte; ``json_errors``: HTTP parse errors in JSON."""
    server = runner.server
    if server is None:
        raise RuntimeError("call guard_connections after runner.setup()")
    # aiohttp has no hook for parse errors or read deadlines (they never reach the app or
    # its middlewares); the server only builds connection handlers, so swapping its class
    # is contained. tests/test_hardening.py and tests/unit/gateway/test_timeouts.py pin this
    # against aiohttp upgrades.
    server.__class__ = _JsonErrorServer if json_errors else _GuardedServer
    server.read_timeout_s = read_timeout_s  # type: ignore[attr-defined]


def json_protocol_errors(runner: web.BaseRunner) -> None:
    """After ``runner.setup()``: new connections answer HTTP parse errors in JSON."""
    guard_connections(runner, read_timeout_s=DEFAULT_READ_TIMEOUT_S, json_errors=True)


@asynccontextmanager
async def http_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 15.0,
    ssl_context: ssl.SSLContext | None = None,
    json_errors: bool = False,
    setting: str = "",
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on host:port (HTTPS with ``ssl_context``); on exit stop accepting and
    wait for in-flight requests. ``json_errors``: HTTP parse errors in the gateway's shape.
    ``setting``: what chose host:port (``--port``, ``admin.port`` …), named if it is taken.
    ``keepalive_s``: an idle connection (none sent yet, or since the last answer) is closed
    after it; ``read_timeout_s``: a request must arrive whole within it of its first byte."""
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, keepalive_timeout=keepalive_s
    )
    await runner.setup()
    guard_connections(runner, read_timeout_s=read_timeout_s, json_errors=json_errors)
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise PortInUse(host, port, setting, exc.strerror or str(exc)) from None
        raise
    try:
        yield runner
    finally:
        await runner.cleanup()


async def stop_accepting(runner: web.AppRunner) -> None:
    """Close the listening sockets now (new connections are refused); connections already
    open stay until the runner's cleanup, so requests in flight can finish."""
    for site in list(runner.sites):
        await site.stop()


class PortInUse(Exception):
    """A server could not listen on its address (taken, or not this host's)."""

    def __init__(self, host: str, port: int, setting: str, reason: str) -> None:
        chosen = f" (set by {setting})" if setting else ""
        super().__init__(
            f"cannot listen on {host}:{port}{chosen}: {reason}; stop what uses it or choose "
            "another port"
        )
        self.host, self.port, self.setting = host, port, setting


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's first site listens on (for port 0)."""
    return int(runner.addresses[0][1])
