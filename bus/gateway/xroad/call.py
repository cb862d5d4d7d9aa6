"""One X-Road call through the bus: the consumer pipeline's stages, then the broker.

Both ingresses (SOAP and REST ``r1``) end here with a trusted caller, a provider service
and a JSON-like body. The stages are :mod:`bus.gateway.pipeline`'s own — rate limit,
ACL, request model, officer/purpose/sensitive fields/``requested_at``, the envelope and
its deadline — and the answer is rendered by :func:`bus.gateway.reply.render_reply`
(field minimisation), so an X-Road caller gets exactly what the same consumer would get
on ``/v1``. Findings are recorded onto the exchange the observe middleware audits.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from aiohttp import web

from bus.config.access import authorize
from bus.config.provider import ProviderService
from bus.errors import NotFoundError, Overloaded
from bus.exchange import Exchange
from bus.gateway import pipeline
from bus.gateway.citizens import count_mismatch, match_policy
from bus.gateway.pipeline import ADMITTED, CORRELATION_ID, REQUEST_ID, XROAD
from bus.gateway.reply import render_reply
from bus.gateway.runtime import Gateway, Runtime
from bus.xroad import XRoadIdentity

__all__ = ["serve"]


async def serve(
    request: web.Request,
    gateway: Gateway,
    rt: Runtime,
    exchange: Exchange,
    *,
    consumer: str,
    spec: ProviderService,
    body: dict[str, Any],
    xroad: XRoadIdentity,
) -> dict[str, Any]:
    """The answer of one provider service call (an error is raised as a bus error)."""
    if not request.get(ADMITTED, True):
        raise Overloaded("the gateway has too many requests in flight", retry_after=1.0)
    exchange.consumer = consumer
    await gateway.limiter.admit(consumer)
    svc = rt.config.services.get(spec.service)
    op = svc.operations.get(spec.operation) if svc is not None else None
    if svc is None or op is None:  # config validation forbids it; a reload race at most
        raise NotFoundError("no such service", code="UNKNOWN_SERVICE")
    exchange.service, exchange.operation = spec.service, spec.operation
    structlog.contextvars.bind_contextvars(
        service=spec.service, operation=spec.operation, consumer=consumer
    )
    authorize(rt.config, consumer, spec.service, spec.operation)
    request[XROAD] = xroad
    routed = pipeline.Routed(consumer, spec.service, spec.operation, svc, op)
    allowed = pipeline.Allowed(routed, xroad)
    if "request_id" not in body and xroad.message_id is not None:
        body = {**body, "request_id": xroad.message_id}
    try:
        valid = pipeline.validate(request, rt, pipeline.Read(allowed, body))
    finally:
        exchange.request_id = request.get(REQUEST_ID)
    pipeline.describe(exchange, valid.model)
    checked = pipeline.check(rt, valid, exchange.officer)
    exchange.officer = checked.officer
    gateway.mismatches.check(consumer, spec.service, match_policy(svc, op))
    req = pipeline.envelope(request, checked)
    for herald in rt.heralds:  # the audit trail's STARTED record, before the publish
        await herald.exchange_sending(exchange)
    reply = await gateway.broker.request(req)
    paths = rt.citizens.get((req.service, req.operation), ())
    sent = render_reply(rt.config, req, reply, request[CORRELATION_ID], paths)
    outcome, exchange.fields_returned, exchange.citizen_ids = sent[:3]
    count_mismatch(gateway.mismatches, rt.config, req, reply.body)
    if outcome.error is not None:
        raise outcome.error
    answer: dict[str, Any] = orjson.loads(outcome.body)
    return answer
