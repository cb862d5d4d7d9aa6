"""The HTTP edge (aiohttp): authenticate, authorise, validate, publish, answer.

Request pipeline of ``POST /v1/{service}/{operation}`` (each step may end it with an error
from :mod:`bus.errors`, rendered by :func:`error_middleware` as
``{"error": {"code", "message", "request_id", "retryable"}}``):

1. in-flight bound (``OVERLOADED`` at once when full);
2. authenticate the calling system (``security.Authenticator``: API key or mTLS), then its
   rate limit (``RATE_LIMITED``, :mod:`bus.gateway.ratelimit`);
3. find service and operation (``UNKNOWN_SERVICE``/``UNKNOWN_OPERATION``), authorise (ACL),
   X-Road headers against consumer and service (:mod:`bus.xroad`);
4. content type, size, strict JSON, the operation's request model; then purpose, officer,
   sensitive fields asked for and ``requested_at`` (:mod:`bus.gateway.privacy`);
5. deadline = the operation's timeout, shortened by the caller's ``X-Lgsp-Timeout-Ms``;
6. publish over the broker and await the reply; withhold the fields the consumer may not
   see (:class:`bus.privacy.FieldFilter`); render it with ``X-Road-Request-Hash``.

The routing config lives in one :class:`Runtime` object that is replaced as a whole, so a
request always finishes under the config it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from bus.broker.base import Broker
from bus.config import RoutingConfig
from bus.envelope import Reply, Request
from bus.errors import (
    BusError,
    InternalError,
    InvalidRequest,
    NotFoundError,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
    error_from_code,
)
from bus.exchange import Exchange, ExchangeObserver
from bus.gateway import privacy
from bus.gateway.idempotency import (
    STALE_GRACE_S,
    Background,
    Idempotency,
    Outcome,
    body_hash,
    prefers_async,
    prune_forever,
)
from bus.gateway.openapi import openapi_document
from bus.gateway.ratelimit import RateLimiter
from bus.gateway.security import Authenticator, allowed_operations, authorize
from bus.gateway.server import (
    check_privacy,
    identify,
    read_body,
    with_officer,
    xroad_inbound,
    xroad_reply_headers,
)
from bus.logs import pii_of, remember_pii_here
from bus.store import Store

__all__ = [
    "RUNTIME",
    "RUNTIME_SLOT",
    "Runtime",
    "RuntimeSlot",
    "build_app",
    "current_runtime",
    "error_body",
    "render_reply",
]

log = structlog.get_logger("bus.gateway.app")

_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]+\Z")
_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
TIMEOUT_HEADER = "X-Lgsp-Timeout-Ms"
_MESSAGE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
PRUNE_INTERVAL_S = 600.0
_ENVELOPE_KEYS = frozenset({"request_id", "correlation_id"})
"""How often a gateway deletes expired request results from the store."""
WITHHELD_HEADER = "X-Lgsp-Withheld-Fields"
"""Reply fields the consumer's grants withheld (dotted paths, comma-separated)."""


@dataclass
class Runtime:
    """Everything a request needs, swapped as one object on config reload."""

    config: RoutingConfig
    broker: Broker
    auth: Authenticator
    models: dict[tuple[str, str], type[BaseModel]] = field(default_factory=dict)
    observers: list[ExchangeObserver] = field(default_factory=list)
    store: Store | None = None
    readiness: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    """Extra ``/readyz`` detail providers (e.g. the in-process worker's breakers)."""
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    """Per-consumer token buckets (``consumers.<c>.rate_limit``)."""

    @classmethod
    def build(
        cls,
        config: RoutingConfig,
        broker: Broker,
        observers: Sequence[ExchangeObserver] = (),
        *,
        models: Mapping[tuple[str, str], type[BaseModel]],
    ) -> Runtime:
        """Resolve keys once, at start (not per request); ``models`` are the request models
        of the adapter kinds, built by the composition root (the gateway knows no adapter)."""
        runtime = cls(config, broker, Authenticator(config), dict(models), list(observers))
        runtime.limiter = RateLimiter.from_config(config)
        return runtime


RUNTIME = web.AppKey("runtime", Runtime)
"""The runtime the app started with; after a config reload see :func:`current_runtime`."""


@dataclass
class RuntimeSlot:
    """The runtime new requests get. A reload (``bus/reload.py``) replaces ``current`` whole;
    a request keeps the one it started with (aiohttp freezes the app's own mapping)."""

    current: Runtime


RUNTIME_SLOT = web.AppKey("runtime_slot", RuntimeSlot)


def current_runtime(app: web.Application) -> Runtime:
    """The runtime in force now (the one a new request gets)."""
    return app[RUNTIME_SLOT].current


CORRELATION_ID = web.RequestKey("correlation_id", str)
BACKGROUND = web.AppKey("background", Background)
REQUEST_ID = web.RequestKey("request_id", str)
EXCHANGE = web.RequestKey("exchange", Exchange)


def error_body(exc: BusError, request_id: str | None) -> dict[str, Any]:
    """The one JSON error shape."""
    payload = exc.to_dict()
    payload["request_id"] = request_id
    return {"error": payload}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _http_error(exc: web.HTTPException) -> BusError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body is too large")
    if exc.status == 404:
        return NotFoundError("no such endpoint", code="NOT_FOUND")
    if exc.status == 405:
        return InvalidRequest("method not allowed here", code="METHOD_NOT_ALLOWED")
    return InvalidRequest(exc.reason or "bad request", code="BAD_REQUEST")


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bind the correlation id; render every failure in the one error shape."""
    header_id = request.headers.get("X-Request-Id", "")
    correlation_id = header_id if _CORRELATION_RE.match(header_id) else uuid.uuid4().hex
    request[CORRELATION_ID] = correlation_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    try:
        return await handler(request)
    except BusError as exc:
        error = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _http_error(exc)
    except Exception:
        log.exception("gateway.unhandled_error")
        error = InternalError("the gateway failed unexpectedly")
    request_id = request.get(REQUEST_ID)
    headers = {"X-Request-Id": correlation_id, **xroad_reply_headers(request)}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return _json(error_body(error, request_id), error.status, headers)


def _validation_error(exc: ValidationError) -> InvalidRequest:
    """Map pydantic errors to one coded error; the values themselves are never echoed."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if _CODE_RE.match(kind):
            code = kind
        elif kind == "extra_forbidden":
            code = "UNKNOWN_FIELD"
        elif kind == "missing":
            code = "MISSING_FIELD"
        else:
            code = "INVALID_FIELD"
        errors.append({"path": loc, "code": code, "message": err["msg"]})
    first = errors[0]
    message = f"{first['path'] or 'body'}: {first['message']}"
    return InvalidRequest(message, code=first["code"], detail={"errors": errors})


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="MALFORMED_JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="MALFORMED_JSON")
    return body


def _deadline(request: web.Request, timeout_s: float) -> float:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= 600_000:
            raise InvalidRequest(
                f"{TIMEOUT_HEADER} must be whole milliseconds, 1..600000", code="INVALID_TIMEOUT"
            )
        timeout_s = min(timeout_s, int(raw) / 1000)
    return time.time() + timeout_s


async def call_operation(request: web.Request) -> web.Response:
    """``POST /v1/{service}/{operation}``: the pipeline, then every observer is told."""
    rt = current_runtime(request.app)
    exchange = Exchange(correlation_id=request[CORRELATION_ID])
    request[EXCHANGE] = exchange
    overloaded = rt.in_flight >= rt.config.gateway.max_in_flight
    rt.in_flight += 1
    rt.idle.clear()
    try:
        if overloaded:
            exc = Overloaded("the gateway has too many requests in flight", retry_after=1.0)
            exchange.outcome, exchange.status = exc.code, exc.status
            await _tell_observers(rt, exchange)
            raise exc
        return await _observed(rt, exchange, _call(request, rt, exchange))
    finally:
        rt.in_flight -= 1
        if not rt.in_flight:
            rt.idle.set()


async def _observed(rt: Runtime, exchange: Exchange, work: Awaitable[web.Response]) -> web.Response:
    """Await ``work``, record its outcome on ``exchange`` and tell every observer."""
    try:
        response = await work
    except BusError as exc:
        exchange.outcome, exchange.status = exc.code, exc.status
        await _tell_observers(rt, exchange)
        raise
    exchange.outcome, exchange.status = "OK", response.status
    await _tell_observers(rt, exchange)
    return response


async def _tell_observers(rt: Runtime, exchange: Exchange) -> None:
    # An observer may replace the answer (the audit trail, fail_closed, when its record
    # cannot be written): the observers after it are still told, with the new outcome.
    replaced: BusError | None = None
    for observer in rt.observers:
        try:
            await observer.exchange_finished(exchange)
        except BusError as exc:
            if replaced is None:
                replaced = exc
                exchange.outcome, exchange.status = exc.code, exc.status
    if replaced is not None:
        raise replaced


async def _call(request: web.Request, rt: Runtime, exchange: Exchange) -> web.Response:
    identity = identify(request, rt.auth)
    consumer = identity.consumer
    exchange.consumer, exchange.credential = consumer, identity.credential
    rt.limiter.check(consumer)
    service, operation = request.match_info["service"], request.match_info["operation"]
    svc = rt.config.services.get(service)
    if svc is None:
        raise NotFoundError("no such service", code="UNKNOWN_SERVICE")
    op = svc.operations.get(operation)
    if op is None:
        raise NotFoundError(f"service {service} has no such operation", code="UNKNOWN_OPERATION")
    exchange.service, exchange.operation = service, operation
    authorize(rt.config, consumer, service, operation)
    xroad = xroad_inbound(request, rt.config, consumer, service)
    structlog.contextvars.bind_contextvars(service=service, operation=operation, consumer=consumer)
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the request as application/json")
    body = _parse_body(await read_body(request))
    remember_pii_here(pii_of(body))
    try:
        validated = rt.models[(service, operation)].model_validate(body)
    except ValidationError as exc:
        if isinstance(body.get("request_id"), str):
            request[REQUEST_ID] = body["request_id"][:64]
            exchange.request_id = request[REQUEST_ID]  # the audit record names it too
        raise _validation_error(exc) from None
    request_id: str = getattr(validated, "request_id", None) or request[CORRELATION_ID]
    request[REQUEST_ID] = request_id
    exchange.request_id = request_id
    _describe(exchange, validated)
    officer = xroad.check_request(request_id, exchange.officer)
    exchange.officer = officer
    check_privacy(rt.config, consumer, service, validated, officer)
    req = Request(
        request_id=request_id,
        service=service,
        operation=operation,
        consumer=consumer,
        correlation_id=uuid.uuid4().hex,
        trace_id=request[CORRELATION_ID],
        deadline=_deadline(request, op.timeout_s),
        body=with_officer(validated.model_dump(mode="json", exclude_none=True), officer),
        officer=officer,
    )
    exchanged = functools.partial(_exchange, rt, exchange, req, request[CORRELATION_ID])
    if rt.store is None:  # no store: no idempotency, and async mode is not offered
        return _respond(request, await exchanged())
    # Idempotency and async mode (bus/idempotency.py): the same request_id answers once.
    step = Idempotency(
        rt.store, ttl_s=rt.config.gateway.idempotency_ttl_s, background=request.app[BACKGROUND]
    )
    outcome = await step.answer(
        consumer=consumer,
        request_id=request_id,
        digest=body_hash(service, operation, req.body),
        deadline=req.deadline,
        stale_after_s=op.timeout_s + STALE_GRACE_S,
        asynchronous=prefers_async(request.headers.get("Prefer")),
        execute=exchanged,
        hold=functools.partial(_hold, rt),
    )
    if "Idempotent-Replayed" in outcome.headers:  # the audit trail: what it got this time
        exchange.fields_returned = _replayed_fields(rt, req, outcome.body)
    return _respond(request, outcome)


def _replayed_fields(rt: Runtime, req: Request, stored: bytes) -> list[str]:
    body = {k: v for k, v in orjson.loads(stored).items() if k not in _ENVELOPE_KEYS}
    return privacy.FieldFilter.of(rt.config, req.consumer, req.service).apply(body).returned


async def _exchange(rt: Runtime, exchange: Exchange, req: Request, correlation_id: str) -> Outcome:
    """Publish, await the reply, render it; errors become outcomes too (they are stored)."""
    try:
        reply = await rt.broker.request(req)
    except BusError as exc:
        return Outcome.failure(exc, req.request_id)
    outcome, exchange.fields_returned = render_reply(rt.config, req, reply, correlation_id)
    return outcome


def render_reply(
    config: RoutingConfig, req: Request, reply: Reply, correlation_id: str
) -> tuple[Outcome, list[str]]:
    """A worker's reply as the caller gets it (fields the consumer may not see withheld),
    and the fields returned; also used by ``lgsp-bus dlq replay`` to store replayed answers."""
    if reply.error is not None:
        error = error_from_code(
            str(reply.error.get("code", "INTERNAL_ERROR")),
            str(reply.error.get("message", "")),
            reply.error.get("detail"),
        )
        retry_after = reply.error.get("retry_after_s")
        if isinstance(retry_after, int | float) and retry_after > 0:
            error.retry_after = float(retry_after)  # e.g. CIRCUIT_OPEN: time left open
        return Outcome.failure(error, req.request_id), []
    assert reply.body is not None
    filtered = privacy.FieldFilter.of(config, req.consumer, req.service).apply(reply.body)
    out = {**filtered.body, "request_id": req.request_id, "correlation_id": correlation_id}
    headers = {}
    if filtered.withheld:
        headers[WITHHELD_HEADER] = ",".join(filtered.withheld)[:2048]
    return Outcome(200, orjson.dumps(out), headers), filtered.returned


def _respond(request: web.Request, outcome: Outcome) -> web.Response:
    """The HTTP answer of an outcome (an error is raised for the middleware to render)."""
    if outcome.error is not None:
        raise outcome.error
    headers = {
        "X-Request-Id": request[CORRELATION_ID],
        **xroad_reply_headers(request),
        **outcome.headers,
    }
    return web.Response(
        body=outcome.body, status=outcome.status, content_type="application/json", headers=headers
    )


def _hold(rt: Runtime) -> Callable[[], None]:
    """Count a background (async-mode) request in flight; returns its release."""
    rt.in_flight += 1
    rt.idle.clear()

    def release() -> None:
        rt.in_flight -= 1
        if not rt.in_flight:
            rt.idle.set()

    return release


async def get_message(request: web.Request) -> web.Response:
    """``GET /v1/messages/{request_id}``: a request's stored answer (async mode).

    Handing out a stored answer is an exchange of personal data in its own right, so it is
    observed (audited) like a call, keyed by the same request_id as the original request.
    """
    rt = current_runtime(request.app)
    # Recorded as service "messages", operation "get": bounded names for metrics, and an
    # audit record that says what was handed out again.
    exchange = Exchange(correlation_id=request[CORRELATION_ID], service="messages", operation="get")
    request[EXCHANGE] = exchange
    return await _observed(rt, exchange, _get_message(request, rt, exchange))


async def _get_message(request: web.Request, rt: Runtime, exchange: Exchange) -> web.Response:
    identity = identify(request, rt.auth)
    consumer = identity.consumer
    exchange.consumer, exchange.credential = consumer, identity.credential
    rt.limiter.check(consumer)
    request_id = request.match_info["request_id"]
    if not _MESSAGE_ID_RE.match(request_id):
        raise InvalidRequest("not a request_id", code="INVALID_REQUEST_ID")
    request[REQUEST_ID] = request_id
    exchange.request_id = request_id
    if rt.store is None:
        raise NotFoundError("this gateway keeps no answers", code="MESSAGE_NOT_FOUND")
    longest = max(
        (op.timeout_s for svc in rt.config.services.values() for op in svc.operations.values()),
        default=0.0,
    )
    step = Idempotency(
        rt.store, ttl_s=rt.config.gateway.idempotency_ttl_s, background=request.app[BACKGROUND]
    )
    outcome = await step.lookup(consumer, request_id, longest + STALE_GRACE_S)
    if outcome is None:
        raise NotFoundError("no message with this request_id", code="MESSAGE_NOT_FOUND")
    if outcome.error is None and outcome.status == 200:
        stored = orjson.loads(outcome.body)
        if isinstance(stored, dict):
            exchange.fields_returned = sorted(stored)
    return _respond(request, outcome)


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Owns the async-mode tasks and the pruning of expired answers."""
    background = app[BACKGROUND]
    store = app[RUNTIME].store
    stop = asyncio.Event()
    pruner = (
        asyncio.create_task(prune_forever(store, PRUNE_INTERVAL_S, stop))
        if store is not None
        else None
    )
    yield
    stop.set()
    await background.aclose(bound_s=app[RUNTIME].config.gateway.shutdown_grace_s)
    if pruner is not None:
        await pruner


def _describe(exchange: Exchange, validated: BaseModel) -> None:
    """Copy purpose, officer and subject from the canonical request onto the exchange."""
    caller = getattr(validated, "caller", None)
    exchange.officer = getattr(caller, "officer_id", None)
    exchange.unit = getattr(caller, "unit_code", None)
    purpose = getattr(validated, "purpose", None)
    if isinstance(purpose, BaseModel):
        exchange.purpose = purpose.model_dump(mode="json", exclude_none=True)
    for holder in ("subject", "by_person"):
        subject = getattr(validated, holder, None)
        if subject is not None and getattr(subject, "id_number", None):
            exchange.subject_id = subject.id_number
            break


async def list_services(request: web.Request) -> web.Response:
    """``GET /v1/services``: what this caller may call."""
    rt = current_runtime(request.app)
    consumer = identify(request, rt.auth).consumer
    allowed = allowed_operations(rt.config, consumer)
    services = [
        {
            "service": name,
            "description": rt.config.services[name].description,
            "operations": [
                {"operation": op, "timeout_s": rt.config.services[name].operations[op].timeout_s}
                for op in ops
            ],
        }
        for name, ops in allowed.items()
    ]
    return _json({"consumer": consumer, "services": services})


async def healthz(request: web.Request) -> web.Response:
    """Process alive."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: broker connected and config loaded."""
    rt = current_runtime(request.app)
    checks = {"broker": rt.broker.ready, "config": bool(rt.config.services)}
    ready = all(checks.values())
    detail: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "in_flight": rt.in_flight,
        "services": sorted(rt.config.services),
    }
    for provider in rt.readiness:
        detail.update(provider())
    return _json(detail, 200 if ready else 503)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document, generated from the request models."""
    rt = current_runtime(request.app)
    return _json(openapi_document(rt.config, rt.models))


def build_app(runtime: Runtime) -> web.Application:
    """The gateway application (the caller owns the broker's lifecycle)."""
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=runtime.config.gateway.max_body_bytes,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    app[RUNTIME] = runtime
    app[RUNTIME_SLOT] = RuntimeSlot(runtime)
    app.router.add_post("/v1/{service}/{operation}", call_operation)
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/messages/{request_id}", get_message)
    app[BACKGROUND] = Background()
    app.cleanup_ctx.append(_background_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    return app


async def wait_idle(runtime: Runtime, bound_s: float) -> None:
    """Wait until no request is in flight, at most ``bound_s`` seconds."""
    if runtime.in_flight:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.idle.wait(), bound_s)
