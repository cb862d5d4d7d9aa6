"""The gateway's aiohttp application: routes, and the cross-cutting concerns as middlewares.

Middlewares, outermost first (each route passes through them in this order):

1. :func:`error_middleware` — binds the correlation id; renders every failure from
   :mod:`bus.errors` in the one shape ``{"error": {"code", "message", "request_id",
   "retryable"}}``;
2. :func:`in_flight_middleware` — counts ``POST /v1/{service}/{operation}`` on the
   long-lived :class:`~bus.gateway.runtime.Gateway` (the pipeline's first stage refuses
   with ``OVERLOADED`` when it was full); shutdown waits for the count to reach zero;
3. :func:`observe_middleware` — the :class:`~bus.exchange.Exchange` of a call or a
   ``GET /v1/messages/{id}``; when it ends (answer or error) every observer is told
   (audit first, then metrics, access log), and an observer may replace the answer
   (``fail_closed`` audit).

The call itself is :mod:`bus.gateway.pipeline`'s typed stages, then the exchange over the
broker wrapped in idempotency/async mode (:mod:`bus.gateway.idempotency`), then the reply
rendered (:mod:`bus.gateway.reply`). A request reads the :class:`Runtime` (one config's
view) once at its start, so it finishes under the config it started with.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from bus.broker.outbox import send_stream
from bus.canonical import exchange_id, new_id
from bus.config.access import allowed_operations
from bus.envelope import Request
from bus.errors import (
    BusError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFoundError,
    PayloadTooLarge,
    RateLimited,
)
from bus.exchange import Exchange
from bus.gateway import pipeline
from bus.gateway.citizens import count_mismatch
from bus.gateway.events import publish_event, pull_events
from bus.gateway.idempotency import (
    STALE_GRACE_S,
    Background,
    Idempotency,
    Outcome,
    body_hash,
    prefers_async,
    prune_forever,
)
from bus.gateway.journal import journal_of
from bus.gateway.jsonbody import body_request_id
from bus.gateway.oneway import accept_send, status_body
from bus.gateway.openapi import openapi_document
from bus.gateway.pipeline import ADMITTED, CORRELATION_ID, HELD_BY, REQUEST_ID, xroad_reply_headers
from bus.gateway.reply import error_body, render_reply, serve_stored
from bus.gateway.runtime import GATEWAY, Gateway, Runtime
from bus.gateway.xroad import ingress
from bus.observe import tracing
from bus.observe.health import add_metrics_route, guard_observability, public_readiness
from bus.observe.metrics import Metrics

__all__ = [
    "EXCHANGE",
    "GATEWAY",
    "Gateway",
    "Runtime",
    "build_app",
    "error_middleware",
    "instrument_gateway",
]

log = structlog.get_logger("bus.gateway.app")

PRUNE_INTERVAL_S = 600.0  # how often a gateway deletes expired request results

BACKGROUND = web.AppKey("background", Background)
EXCHANGE = pipeline.EXCHANGE
RUNTIME = web.RequestKey("runtime", Runtime)  # a request's, read once by observe_middleware
_CALL, _MESSAGE, _EVENT, _PULL = "call", "message", "event", "pull"  # events.py: observed
_CALLS = frozenset({_CALL, *ingress.ROUTES})  # observed, counted in flight; messages observed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _http_error(exc: web.HTTPException) -> BusError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body is too large")
    if exc.status == 404:
        return NotFoundError("no such endpoint", code="NOT_FOUND")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(f"use {allowed} here", headers={"Allow": allowed})
    return InvalidRequest(exc.reason or "bad request", code="BAD_REQUEST")


def _route_name(request: web.Request) -> str | None:
    return request.match_info.route.name


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the correlation id; render every failure in the one error shape."""
    header_id = request.headers.get("X-Request-Id", "")
    correlation_id = exchange_id(header_id) or new_id()
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
    if request_id is None and isinstance(error, RateLimited):
        request_id = await body_request_id(request)
    headers = {"X-Request-Id": correlation_id, **xroad_reply_headers(request), **error.headers}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return _json(error_body(error, request_id), error.status, headers)


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count calls in flight on the gateway; mark the ones over ``max_in_flight``."""
    if _route_name(request) not in _CALLS:
        return await handler(request)
    gateway = request.app[GATEWAY]
    request[ADMITTED] = gateway.enter()
    try:
        return await handler(request)
    finally:
        gateway.leave(request.get(HELD_BY))


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The exchange of an observed route; every observer is told how it ended."""
    name = _route_name(request)
    if name not in _CALLS and name not in (_MESSAGE, _EVENT, _PULL):
        return await handler(request)
    rt = request[RUNTIME] = request.app[GATEWAY].runtime
    exchange = Exchange(correlation_id=request[CORRELATION_ID])
    if name == _MESSAGE:
        # Bounded names for metrics, and an audit record of what was handed out again.
        exchange.service, exchange.operation = "messages", "get"
    request[EXCHANGE] = exchange
    try:
        response = await handler(request)
    except BusError as exc:
        error: BusError = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _http_error(exc)
    except Exception:  # a bug: still one audit record and one metric (500 INTERNAL_ERROR)
        log.exception("gateway.unhandled_error")
        error = InternalError("the gateway failed unexpectedly")
    else:
        exchange.outcome, exchange.status = "OK", response.status
        await _tell_observers(rt, exchange)
        return response
    exchange.outcome, exchange.status = error.code, error.status
    await _tell_observers(rt, exchange)
    raise error


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


async def call_operation(request: web.Request) -> web.Response:
    """``POST /v1/{service}/{operation}``: the pipeline, then the exchange over the broker;
    in a ``gateway.request`` span when tracing is on (:mod:`bus.observe.tracing`)."""
    if not tracing.enabled():
        return await _call_operation(request)
    attributes = {
        "lgsp.service": request.match_info["service"],
        "lgsp.operation": request.match_info["operation"],
        "lgsp.correlation_id": request[CORRELATION_ID],
    }
    parent = request.headers.get("traceparent")
    with tracing.span("gateway.request", "server", attributes, parent) as span:
        try:
            response = await _call_operation(request)
        except BusError as exc:
            tracing.set_attributes(span, {"lgsp.consumer": request[EXCHANGE].consumer})
            tracing.outcome(span, exc.code, exc.status)
            raise
        tracing.set_attributes(span, {"lgsp.consumer": request[EXCHANGE].consumer})
        tracing.outcome(span, "OK", response.status)
        return response


async def _call_operation(request: web.Request) -> web.Response:
    gateway, rt, exchange = request.app[GATEWAY], request[RUNTIME], request[EXCHANGE]
    req = await pipeline.run(request, gateway, rt, exchange)
    if rt.config.services[req.service].operations[req.operation].mode == "send":
        response = await accept_send(gateway, rt, req)  # one-way (bus/gateway/oneway.py)
        response.headers.update(
            {"X-Request-Id": request[CORRELATION_ID], **xroad_reply_headers(request)}
        )
        return response
    exchanged = functools.partial(_exchange, gateway, rt, exchange, req, request[CORRELATION_ID])
    if gateway.store is None:  # no store: no idempotency, and async mode is not offered
        return _respond(request, await exchanged())
    op = rt.config.services[req.service].operations[req.operation]
    # Idempotency and async mode (bus/gateway/idempotency.py): one request_id answers once.
    step = Idempotency(
        gateway.store,
        ttl_s=rt.config.gateway.idempotency_ttl_s,
        background=request.app[BACKGROUND],
        journal=journal_of(rt.observers, exchange, gateway.store),
    )
    outcome = await step.answer(
        consumer=req.consumer,
        request_id=req.request_id,
        digest=body_hash(req.service, req.operation, req.body, rt.digest_key),
        deadline=req.deadline,
        stale_after_s=op.timeout_s + STALE_GRACE_S,
        asynchronous=prefers_async(request.headers.get("Prefer")),
        execute=exchanged,
        hold=functools.partial(gateway.hold, req.consumer),
    )
    if "Idempotent-Replayed" in outcome.headers:  # under today's grants; audit what is sent
        sent = serve_stored(rt.config, req.consumer, outcome, rt.citizens)
        outcome, exchange.fields_returned, exchange.citizen_ids = sent[:3]
    return _respond(request, outcome)


async def _exchange(
    gateway: Gateway, rt: Runtime, exchange: Exchange, req: Request, correlation_id: str
) -> Outcome:
    """Publish (once the audit trail has its STARTED record), await the reply, render it;
    errors become outcomes too (they are stored)."""
    try:
        for herald in rt.heralds:  # a no-op if the idempotency claim wrote it already
            await herald.exchange_sending(exchange)
        reply = await gateway.broker.request(req)
    except BusError as exc:
        return Outcome.failure(exc, req.request_id)
    paths = rt.citizens.get((req.service, req.operation), ())
    sent = render_reply(rt.config, req, reply, correlation_id, paths)
    outcome, exchange.fields_returned, exchange.citizen_ids = sent[:3]
    count_mismatch(gateway.mismatches, rt.config, req, reply.body)
    return outcome


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


async def get_message(request: web.Request) -> web.Response:
    """``GET /v1/messages/{request_id}``: a request's stored answer (async mode).

    Handing out a stored answer is an exchange of personal data in its own right, so it is
    observed (audited) like a call, keyed by the same request_id as the original request.
    """
    gateway, rt, exchange = request.app[GATEWAY], request[RUNTIME], request[EXCHANGE]
    identity = pipeline.identify(request, rt)
    consumer = identity.consumer
    exchange.consumer, exchange.credential = consumer, identity.credential
    await gateway.limiter.admit(consumer)
    request_id = request.match_info["request_id"]
    if exchange_id(request_id) is None:
        raise InvalidRequest("not a request_id", code="INVALID_REQUEST_ID")
    request[REQUEST_ID] = request_id
    exchange.request_id = request_id
    if gateway.store is None:
        raise NotFoundError("this gateway keeps no answers", code="MESSAGE_NOT_FOUND")
    send = await gateway.store.delivery_get(send_stream(consumer), request_id)
    if send is not None:  # a one-way send: where its delivery stands
        return _json(status_body(send), headers={"X-Request-Id": request[CORRELATION_ID]})
    longest = max(
        (op.timeout_s for svc in rt.config.services.values() for op in svc.operations.values()),
        default=0.0,
    )
    step = Idempotency(
        gateway.store, ttl_s=rt.config.gateway.idempotency_ttl_s, background=request.app[BACKGROUND]
    )
    outcome = await step.lookup(consumer, request_id, longest + STALE_GRACE_S)
    if outcome is None:
        raise NotFoundError("no message with this request_id", code="MESSAGE_NOT_FOUND")
    sent = serve_stored(rt.config, consumer, outcome, rt.citizens)
    outcome, exchange.fields_returned, exchange.citizen_ids = sent[:3]
    await step.hand_over(consumer, request_id, outcome)  # a final answer is deleted once served
    return _respond(request, outcome)


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Owns the async-mode tasks and the pruning of expired answers."""
    background = app[BACKGROUND]
    gateway = app[GATEWAY]
    store = gateway.store
    stop = asyncio.Event()
    pruner = (
        asyncio.create_task(prune_forever(store, PRUNE_INTERVAL_S, stop))
        if store is not None
        else None
    )
    yield
    stop.set()
    await background.aclose(bound_s=gateway.config.gateway.shutdown_grace_s)
    if pruner is not None:
        await pruner
    await gateway.limiter.aclose()


async def list_services(request: web.Request) -> web.Response:
    """``GET /v1/services``: what this caller may call."""
    rt = request.app[GATEWAY].runtime
    consumer = pipeline.identify(request, rt).consumer
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


async def _publish_event(request: web.Request) -> web.Response:
    """``POST /v1/events/{event_type}`` (bus/gateway/events.py)."""
    return await publish_event(request, request.app[GATEWAY], request[RUNTIME], request[EXCHANGE])


async def _pull_events(request: web.Request) -> web.Response:
    """``GET /v1/events`` (bus/gateway/events.py)."""
    return await pull_events(request, request.app[GATEWAY], request[RUNTIME], request[EXCHANGE])


async def healthz(request: web.Request) -> web.Response:
    """Process alive."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: broker connected and config loaded."""
    gateway = request.app[GATEWAY]
    config = gateway.config
    checks = {"broker": gateway.broker.ready, "config": bool(config.services)}
    checks["accepting"] = not gateway.stopping
    ready = all(checks.values())
    detail: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "in_flight": gateway.in_flight,
        "services": sorted(config.services),
    }
    for provider in gateway.readiness:
        detail.update(provider())
    return public_readiness(request, detail, 200 if ready else 503)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document, generated from the request models."""
    rt = request.app[GATEWAY].runtime
    return _json(openapi_document(rt.config, rt.models, rt.replies))


def build_app(gateway: Gateway) -> web.Application:
    """The gateway application (the caller owns the broker's lifecycle)."""
    app = web.Application(
        middlewares=[error_middleware, ingress.faults, in_flight_middleware, observe_middleware],
        client_max_size=gateway.config.gateway.max_body_bytes,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    app[GATEWAY] = gateway
    guard_observability(app, gateway.config)
    app[BACKGROUND] = Background()
    app.cleanup_ctx.append(_background_ctx)
    # Before the call route, which would take /v1/events/<type> for a service "events".
    app.router.add_post("/v1/events/{event_type}", _publish_event, name=_EVENT)
    app.router.add_get("/v1/events", _pull_events, name=_PULL)
    app.router.add_post("/v1/{service}/{operation}", call_operation, name=_CALL)
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/messages/{request_id}", get_message, name=_MESSAGE)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    ingress.add_routes(app)
    return app


def instrument_gateway(app: web.Application, metrics: Metrics) -> None:
    """``/metrics`` on the gateway app; the in-flight gauge reads the long-lived gateway (so
    it stays true across reloads), the config version its runtime."""
    gateway = app[GATEWAY]
    add_metrics_route(app, metrics)
    metrics.watch_gateway_in_flight(lambda: gateway.in_flight)
    metrics.config_applied(gateway.config, time.time())
