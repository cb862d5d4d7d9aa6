"""The gateway's HTTP edge: TLS and mTLS, protocol errors as JSON, the access-control steps.

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
* The access-control steps of the gateway's pipeline, each one call there:
  :func:`identify`, :func:`xroad_inbound`, :func:`read_body` (keeps the body's hash for
  ``X-Road-Request-Hash``), :func:`check_privacy`, :func:`with_officer`,
  :func:`xroad_reply_headers`.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from pydantic import BaseModel

from bus.config import GatewayTls, RoutingConfig, resolve_secret
from bus.errors import BusError, InvalidRequest, RequestError
from bus.gateway import privacy
from bus.gateway.security import Authenticator, Identity, PeerCertificate
from bus.xroad import REQUEST_HASH, XRoadIdentity, request_hash

__all__ = [
    "BODY_HASH",
    "XROAD",
    "HeadersTooLarge",
    "check_privacy",
    "identify",
    "json_protocol_errors",
    "peer_certificate",
    "read_body",
    "server_ssl_context",
    "with_officer",
    "xroad_inbound",
    "xroad_reply_headers",
]

log = structlog.get_logger("bus.gateway.server")

XROAD = web.RequestKey("xroad", XRoadIdentity)
BODY_HASH = web.RequestKey("body_hash", str)


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


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, with parse errors rendered in the gateway's shape."""

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


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _JsonErrorHandler(self, loop=self._loop, **kwargs)


def json_protocol_errors(runner: web.BaseRunner) -> None:
    """After ``runner.setup()``: new connections answer HTTP parse errors in JSON."""
    server = runner.server
    if server is None:
        raise RuntimeError("call json_protocol_errors after runner.setup()")
    # aiohttp has no hook for parse errors (they never reach the app or its middlewares);
    # the server only builds connection handlers, so swapping its class is contained.
    # tests/test_hardening.py pins this against aiohttp upgrades.
    server.__class__ = _JsonErrorServer


def identify(request: web.Request, auth: Authenticator) -> Identity:
    """Authenticate by API key and/or the verified TLS client certificate."""
    return auth.identify(request.headers.get("Authorization"), peer_certificate(request))


def xroad_inbound(
    request: web.Request, config: RoutingConfig, consumer: str, service: str
) -> XRoadIdentity:
    """X-Road headers, checked against the consumer and the service (403 on mismatch)."""
    ident = XRoadIdentity.from_headers(request.headers)
    request[XROAD] = ident
    ident.check_caller(config, consumer, service)
    return ident


async def read_body(request: web.Request) -> bytes:
    """The whole body (``client_max_size`` bounds it: 413); its hash kept for the reply."""
    raw = await request.read()
    request[BODY_HASH] = request_hash(raw)
    return raw


def xroad_reply_headers(request: web.Request) -> dict[str, str]:
    """``X-Road-Request-Hash`` once the body was read, and the X-Road headers echoed."""
    headers = request[XROAD].echo() if XROAD in request else {}
    if BODY_HASH in request:
        headers[REQUEST_HASH] = request[BODY_HASH]
    return headers


def check_privacy(
    config: RoutingConfig, consumer: str, service: str, validated: BaseModel, officer: str | None
) -> None:
    """Purpose and officer (personal data), sensitive fields asked for, requested_at."""
    privacy.check_purpose(config.services[service], validated, officer)
    privacy.check_requested_fields(config, consumer, service, validated)
    privacy.check_requested_at(validated, datetime.now(UTC), config.gateway.max_clock_skew_s)


def with_officer(body: dict[str, Any], officer: str | None) -> dict[str, Any]:
    """The officer from ``X-Road-UserId`` written into ``caller`` when the body had none."""
    caller = body.get("caller")
    if officer is None or not isinstance(caller, dict) or caller.get("officer_id") == officer:
        return body
    return {**body, "caller": {**caller, "officer_id": officer}}
