"""The request pipeline of ``POST /v1/{service}/{operation}`` as typed stages.

Each stage takes what the previous one returned and returns a new, immutable value; each
may end the request with an error from :mod:`bus.errors`. :func:`run` chains them and is
the one place that records what a stage learnt onto the :class:`~bus.exchange.Exchange`
(what the audit trail and metrics see):

1. :func:`admit` — in-flight bound (``OVERLOADED``), authenticate (API key / mTLS), the
   consumer's rate limit (``RATE_LIMITED``) → :class:`Admitted`;
2. :func:`route` — service and operation (``UNKNOWN_SERVICE``/``UNKNOWN_OPERATION``)
   → :class:`Routed`; then every observer that is an :class:`~bus.exchange.ExchangeGate`
   may refuse the exchange (``AUDIT_UNAVAILABLE``: a ``fail_closed`` route whose audit
   store is down is refused before any personal data is fetched);
3. :func:`allow` — ACL (``FORBIDDEN_OPERATION``), X-Road headers against consumer and
   service → :class:`Allowed`;
4. :func:`read` — content type, body size, strict JSON (one object, no key twice:
   ``DUPLICATE_KEY``, :mod:`bus.gateway.jsonbody`) → :class:`Read`;
5. :func:`validate` — the operation's request model → :class:`Validated`;
6. :func:`check` — officer (``X-Road-UserId``), purpose, sensitive fields asked for,
   ``requested_at`` → :class:`Checked`;
7. :func:`envelope` — the broker :class:`~bus.envelope.Request` with its deadline.

Idempotency and async mode wrap the exchange that follows (:mod:`bus.gateway.idempotency`);
the in-flight count, error shape and observers are middlewares (:mod:`bus.gateway.app`).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from bus.canonical import CanonicalRequest, new_id, validation_error
from bus.config import OperationConfig, RoutingConfig, ServiceConfig
from bus.config.access import authorize
from bus.envelope import Request
from bus.errors import (
    BusUnavailable,
    InvalidRequest,
    NotFoundError,
    Overloaded,
    UnsupportedMediaType,
)
from bus.exchange import Exchange
from bus.gateway import privacy
from bus.gateway.citizens import check_birth_date, match_policy
from bus.gateway.jsonbody import json_object
from bus.gateway.runtime import Gateway, Runtime
from bus.gateway.security import Identity
from bus.gateway.server import peer_certificate
from bus.logs import pii_of, remember_pii_here
from bus.observe import tracing
from bus.xroad import REQUEST_HASH, XRoadIdentity, request_hash

__all__ = [
    "ADMITTED",
    "BODY_HASH",
    "CORRELATION_ID",
    "EXCHANGE",
    "HELD_BY",
    "REQUEST_ID",
    "TIMEOUT_HEADER",
    "XROAD",
    "Admitted",
    "Allowed",
    "Checked",
    "Read",
    "Routed",
    "Validated",
    "admit",
    "allow",
    "check",
    "describe",
    "envelope",
    "identify",
    "read",
    "route",
    "run",
    "validate",
    "xroad_reply_headers",
]

TIMEOUT_HEADER = "X-Lgsp-Timeout-Ms"
XROAD = web.RequestKey("xroad", XRoadIdentity)
BODY_HASH = web.RequestKey("body_hash", str)
CORRELATION_ID = web.RequestKey("correlation_id", str)
REQUEST_ID = web.RequestKey("request_id", str)
EXCHANGE = web.RequestKey("exchange", Exchange)
"""The exchange an observed request records onto (the observe middleware makes it)."""
ADMITTED = web.RequestKey("admitted", bool)
HELD_BY = web.RequestKey("held_by", str)
"""The consumer whose in-flight share this call holds."""
"""Set by the in-flight middleware: ``False`` when the gateway was full."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """An authenticated caller within its limits."""

    consumer: str
    credential: str | None = None
    """Which of its credentials (key label, ``key-<n>``, ``cert-<n>``): for the audit trail."""


@dataclass(frozen=True, slots=True)
class Routed:
    """A caller allowed to call an operation that exists."""

    consumer: str
    service: str
    operation: str
    svc: ServiceConfig
    op: OperationConfig


@dataclass(frozen=True, slots=True)
class Allowed:
    """A routed call the ACL and the X-Road headers allow."""

    routed: Routed
    xroad: XRoadIdentity


@dataclass(frozen=True, slots=True)
class Read:
    """The body, parsed as a JSON object."""

    allowed: Allowed
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Validated:
    """The body, valid for the operation's request model."""

    allowed: Allowed
    model: BaseModel
    request_id: str


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid request that may be sent, with the officer accountable for it."""

    validated: Validated
    officer: str | None


def identify(request: web.Request, rt: Runtime) -> Identity:
    """Authenticate by API key and/or the verified TLS client certificate."""
    return rt.auth.identify(request.headers.get("Authorization"), peer_certificate(request))


async def admit(request: web.Request, gateway: Gateway, rt: Runtime) -> Admitted:
    """Stage 1: room in flight, an authenticated consumer, within its rate limit."""
    for name in SINGLE_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            raise InvalidRequest(f"header {name} is sent more than once", code="DUPLICATE_HEADER")
    if gateway.stopping:
        raise BusUnavailable(
            "the gateway is shutting down; send the request again (another instance answers)",
            code="SHUTTING_DOWN",
            retry_after=1.0,
        )
    if not request.get(ADMITTED, True):
        raise Overloaded("the gateway has too many requests in flight", retry_after=1.0)
    identity = identify(request, rt)
    consumer = identity.consumer
    await gateway.limiter.admit(consumer)
    if not gateway.consumer_enter(consumer):
        raise Overloaded(
            "this consumer has too many requests in flight (its share of the gateway)",
            retry_after=1.0,
        )
    request[HELD_BY] = consumer  # released when the call ends (app.in_flight_middleware)
    return Admitted(consumer, identity.credential)


def route(request: web.Request, rt: Runtime, admitted: Admitted) -> Routed:
    """Stage 2: the service and operation called."""
    service, operation = request.match_info["service"], request.match_info["operation"]
    svc = rt.config.services.get(service)
    if svc is None:
        raise NotFoundError("no such service", code="UNKNOWN_SERVICE")
    op = svc.operations.get(operation)
    if op is None:
        raise NotFoundError(f"service {service} has no such operation", code="UNKNOWN_OPERATION")
    return Routed(admitted.consumer, service, operation, svc, op)


def allow(request: web.Request, rt: Runtime, routed: Routed) -> Allowed:
    """Stage 3: the ACL (deny by default), the X-Road headers against consumer and service
    (403 on a mismatch)."""
    authorize(rt.config, routed.consumer, routed.service, routed.operation)
    xroad = XRoadIdentity.from_headers(request.headers)
    request[XROAD] = xroad
    xroad.check_caller(rt.config, routed.consumer, routed.service)
    return Allowed(routed, xroad)


async def read(request: web.Request, allowed: Allowed) -> Read:
    """Stage 3: JSON only, bounded (``client_max_size``: 413), one object."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the request as application/json")
    try:
        raw = await request.read()
    except web.HTTPException:
        raise  # 413 from client_max_size
    except (ContentEncodingError, RequestPayloadError, zlib.error) as exc:
        # A gzip/deflate body that does not inflate (aiohttp decompresses while reading).
        raise InvalidRequest(
            "the request body does not decode with its Content-Encoding", code="MALFORMED_BODY"
        ) from exc
    request[BODY_HASH] = request_hash(raw)
    body = json_object(raw, "request body")
    remember_pii_here(pii_of(body))
    return Read(allowed, body)


def validate(request: web.Request, rt: Runtime, got: Read) -> Validated:
    """Stage 4: the operation's request model (errors coded, values never echoed)."""
    r = got.allowed.routed
    try:
        model = rt.models[(r.service, r.operation)].model_validate(got.body)
    except ValidationError as exc:
        if isinstance(got.body.get("request_id"), str):
            request[REQUEST_ID] = got.body["request_id"][:64]
        raise validation_error(exc) from None
    request_id: str = getattr(model, "request_id", None) or request[CORRELATION_ID]
    request[REQUEST_ID] = request_id
    return Validated(got.allowed, model, request_id)


def check(rt: Runtime, valid: Validated, officer: str | None) -> Checked:
    """Stage 5: the officer (``X-Road-UserId`` must agree with the body), purpose,
    sensitive fields asked for, ``requested_at`` freshness, the birth date's precision
    (``match.birth_date``)."""
    r = valid.allowed.routed
    officer = valid.allowed.xroad.check_request(valid.request_id, officer)
    config: RoutingConfig = rt.config
    privacy.check_purpose(r.svc, valid.model, officer)
    privacy.check_requested_fields(config, r.consumer, r.service, valid.model)
    privacy.check_requested_at(valid.model, datetime.now(UTC), config.gateway.max_clock_skew_s)
    check_birth_date(match_policy(r.svc, r.op), valid.model)
    return Checked(valid, officer)


def envelope(request: web.Request, checked: Checked) -> Request:
    """Stage 6: the message for the broker; deadline = the operation's timeout, shortened
    by the caller's ``X-Lgsp-Timeout-Ms``."""
    v = checked.validated
    r = v.allowed.routed
    deadline, short = _deadline(request, r.op.timeout_s)
    return Request(
        request_id=v.request_id,
        service=r.service,
        operation=r.operation,
        consumer=r.consumer,
        correlation_id=new_id(),
        trace_id=request[CORRELATION_ID],
        traceparent=tracing.traceparent() if tracing.enabled() else None,
        deadline=deadline,
        short_deadline=short,
        body=_with_officer(v.model.model_dump(mode="json", exclude_none=True), checked.officer),
        officer=checked.officer,
    )


async def run(request: web.Request, gateway: Gateway, rt: Runtime, exchange: Exchange) -> Request:
    """Every stage in order, each one's findings recorded onto ``exchange`` here."""
    admitted = await admit(request, gateway, rt)
    exchange.consumer, exchange.credential = admitted.consumer, admitted.credential
    routed = route(request, rt, admitted)
    exchange.service, exchange.operation = routed.service, routed.operation
    for gate in rt.gates:  # e.g. the audit trail of a fail_closed route, its store down
        await gate.exchange_starting(exchange)
    structlog.contextvars.bind_contextvars(
        service=routed.service, operation=routed.operation, consumer=routed.consumer
    )
    got = await read(request, allow(request, rt, routed))
    try:
        valid = validate(request, rt, got)
    finally:
        exchange.request_id = request.get(REQUEST_ID)  # the audit record names it too
    describe(exchange, valid.model)
    checked = check(rt, valid, exchange.officer)
    exchange.officer = checked.officer
    gateway.mismatches.check(routed.consumer, routed.service, match_policy(routed.svc, routed.op))
    return envelope(request, checked)


def xroad_reply_headers(request: web.Request) -> dict[str, str]:
    """``X-Road-Request-Hash`` once the body was read, and the X-Road headers echoed."""
    headers = request[XROAD].echo() if XROAD in request else {}
    if BODY_HASH in request:
        headers[REQUEST_HASH] = request[BODY_HASH]
    return headers


def describe(exchange: Exchange, validated: BaseModel) -> None:
    """Purpose, officer, unit and subject of the canonical request, onto the exchange (the
    request model says which citizen it names: :meth:`CanonicalRequest.subject_id`)."""
    caller = getattr(validated, "caller", None)
    exchange.officer = getattr(caller, "officer_id", None)
    exchange.unit = getattr(caller, "unit_code", None)
    purpose = getattr(validated, "purpose", None)
    if isinstance(purpose, BaseModel):
        exchange.purpose = purpose.model_dump(mode="json", exclude_none=True)
    if isinstance(validated, CanonicalRequest):
        exchange.subject_id = validated.subject_id()


SINGLE_HEADERS = (
    "Authorization",
    "Content-Type",
    "Content-Encoding",
    "X-Request-Id",
    TIMEOUT_HEADER,
    "Prefer",
    "X-Road-Client",
    "X-Road-Service",
    "X-Road-Id",
    "X-Road-UserId",
)
"""Headers a call may carry once: two ``Authorization`` (or deadline, X-Road …) headers
could be read differently by a proxy in front and by the gateway."""


def _deadline(request: web.Request, timeout_s: float) -> tuple[float, bool]:
    """The deadline, and whether the caller's header made it shorter than ``timeout_s``."""
    raw = request.headers.get(TIMEOUT_HEADER)
    short = False
    if raw is not None:
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 600_000:
            raise InvalidRequest(
                f"{TIMEOUT_HEADER} must be whole milliseconds, 1..600000", code="INVALID_TIMEOUT"
            )
        short = int(raw) / 1000 < timeout_s
        timeout_s = min(timeout_s, int(raw) / 1000)
    return time.time() + timeout_s, short


def _with_officer(body: dict[str, Any], officer: str | None) -> dict[str, Any]:
    """The officer from ``X-Road-UserId`` written into ``caller`` when the body had none."""
    caller = body.get("caller")
    if officer is None or not isinstance(caller, dict) or caller.get("officer_id") == officer:
        return body
    return {**body, "caller": {**caller, "officer_id": officer}}
