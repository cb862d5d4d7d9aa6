"""Events at the gateway: ``POST /v1/events/{event_type}`` and ``GET /v1/events``.

Publishing (a consumer granted ``publish: [types]``), each refusal a coded error and nothing
published:

* ``UNKNOWN_EVENT_TYPE`` (404) — not declared in ``events:``;
* ``FORBIDDEN_EVENT_TYPE`` (403) — the consumer may not publish it;
* ``UNSUPPORTED_MEDIA_TYPE`` (415), ``PAYLOAD_TOO_LARGE`` (413, over the type's
  ``max_bytes``), ``MALFORMED_JSON`` (400);
* ``INVALID_EVENT`` (400) — fails the type's JSON Schema, or its ``event_type`` is not the
  one in the path; ``detail.errors`` lists the failing paths and rules, never the values;
* ``RAW_PERSONAL_ID`` (400) — a value looks like a citizen ID (9 or 12 digits): events
  name citizens by ``subject.personal_id_hmac`` only.

Accepted events get ``published_at`` (the gateway's clock) and are published to
``lgsp.events`` with routing key ``<type>.<p>``; ``202`` only after the broker's confirm.
The same ``event_id`` published twice is delivered twice: subscribers dedupe by
``event_id`` (at-least-once end to end).

Pulling (a consumer with a ``kind: pull`` subscription): ``GET /v1/events?subscription=S
&after=N&limit=L`` returns the events of the subscription's log with seq > N (oldest
first) and acknowledges N (the durable cursor moves to N, never back); without ``after``
it resumes from the acknowledged cursor. ``INVALID_CURSOR``/``INVALID_LIMIT``/
``UNKNOWN_SUBSCRIPTION`` (400/400/404).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from jsonschema import Draft202012Validator

from bus.broker.outbox import (
    EVENT_TYPE,
    EVENTS_EXCHANGE,
    PUBLISHED_AT,
    PUBLISHER,
    partition,
    subscription_stream,
)
from bus.config import RoutingConfig
from bus.config.delivery import EventType, dotted_get
from bus.errors import (
    BusUnavailable,
    Forbidden,
    InvalidRequest,
    NotFoundError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from bus.exchange import Exchange
from bus.gateway import pipeline
from bus.gateway.jsonbody import json_object
from bus.gateway.runtime import Gateway, Runtime

__all__ = ["EVENT_ERROR_CODES", "publish_event", "pull_events"]

EVENT_ERROR_CODES: dict[str, str] = {
    "UNKNOWN_EVENT_TYPE": "404: POST /v1/events/{type}: no such event type",
    "FORBIDDEN_EVENT_TYPE": "403: the consumer may not publish this event type",
    "INVALID_EVENT": "400: the event fails its type's JSON Schema (detail.errors: paths, rules)",
    "RAW_PERSONAL_ID": "400: a value looks like a citizen ID; events carry its HMAC only",
    "UNKNOWN_SUBSCRIPTION": "404: GET /v1/events: not one of the caller's pull subscriptions",
    "INVALID_CURSOR": "400: GET /v1/events: after is not a position of the log",
    "INVALID_LIMIT": "400: GET /v1/events: limit is 1..1000",
}
"""The codes of the event endpoints (part of ``bus.gateway.openapi.ERROR_CODES``)."""

_RAW_ID = re.compile(r"^\d{9}$|^\d{12}$")
_MAX_ERRORS = 20
MAX_PULL = 1000
_validators: dict[int, Draft202012Validator] = {}


def _validator(event_type: EventType) -> Draft202012Validator:
    # One compiled validator per declared type object (a reload builds new ones).
    key = id(event_type)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = Draft202012Validator(event_type.schema_)
        if len(_validators) > 256:
            _validators.clear()
    return validator


def _raw_ids(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_RAW_ID.match(value))
    if isinstance(value, dict):
        return any(_raw_ids(v) for v in value.values())
    if isinstance(value, list):
        return any(_raw_ids(v) for v in value)
    return False


def check_event(config: RoutingConfig, event_type: str, event: Any) -> EventType:
    """The declared type, if ``event`` is a valid event of it (else the coded error)."""
    declared = config.events[event_type]
    if not isinstance(event, dict):
        raise InvalidRequest("the event must be a JSON object", code="MALFORMED_JSON")
    if event.get("event_type", event_type) != event_type:
        raise InvalidRequest("event_type does not match the URL", code="INVALID_EVENT")
    event["event_type"] = event_type
    errors = sorted(_validator(declared).iter_errors(event), key=lambda e: list(e.path))
    if errors:
        detail = [
            {"path": ".".join(str(p) for p in e.path) or "(event)", "rule": str(e.validator)}
            for e in errors[:_MAX_ERRORS]
        ]
        raise InvalidRequest(
            f"the event does not match the {event_type} schema",
            code="INVALID_EVENT",
            detail={"errors": detail},
        )
    if _raw_ids(event):
        raise InvalidRequest(
            "a value looks like a citizen ID number: name citizens by "
            "subject.personal_id_hmac only",
            code="RAW_PERSONAL_ID",
        )
    return declared


async def publish_event(
    request: web.Request, gateway: Gateway, rt: Runtime, exchange: Exchange
) -> web.Response:
    """``POST /v1/events/{event_type}``."""
    consumer = pipeline.identify(request, rt).consumer
    exchange.consumer = consumer
    gateway.limiter.check(consumer)
    event_type = request.match_info["event_type"]
    exchange.service, exchange.operation = "events", "publish"
    declared = rt.config.events.get(event_type)
    if declared is None:
        raise NotFoundError("no such event type", code="UNKNOWN_EVENT_TYPE")
    exchange.operation = event_type
    if event_type not in rt.config.consumers[consumer].publish:
        raise Forbidden("this system may not publish this event type", code="FORBIDDEN_EVENT_TYPE")
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the event as application/json")
    raw = await request.read()
    if len(raw) > declared.max_bytes:
        raise PayloadTooLarge(f"events of this type are at most {declared.max_bytes} bytes")
    event = json_object(raw, "the event")
    if isinstance(event, dict) and isinstance(event.get("event_id"), str):
        exchange.request_id = event["event_id"][:64]
    check_event(rt.config, event_type, event)
    now = time.time()
    event["published_at"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    order = dotted_get(event, declared.order_by) if declared.order_by else None
    p = partition(order if order is not None else event["event_id"], rt.config.delivery.partitions)
    headers = {EVENT_TYPE: event_type, PUBLISHER: consumer, PUBLISHED_AT: round(now * 1000)}
    await gateway.broker.publish(
        EVENTS_EXCHANGE,
        f"{event_type}.{p}",
        orjson.dumps(event),
        headers,
        message_id=str(event["event_id"]),
        mandatory=False,
    )
    exchange.fields_returned = []
    body = {"event_id": event["event_id"], "event_type": event_type, "state": "PUBLISHED"}
    return web.Response(body=orjson.dumps(body), status=202, content_type="application/json")


def _int_param(
    request: web.Request, name: str, default: int, low: int, high: int, code: str
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be a whole number {low}..{high}", code=code)
    return int(raw)


async def pull_events(
    request: web.Request, gateway: Gateway, rt: Runtime, exchange: Exchange
) -> web.Response:
    """``GET /v1/events``: a page of the caller's pull subscription log."""
    consumer = pipeline.identify(request, rt).consumer
    exchange.consumer = consumer
    exchange.service, exchange.operation = "events", "pull"
    gateway.limiter.check(consumer)
    pulls = [n for n, s in rt.config.consumers[consumer].subscriptions.items() if s.kind == "pull"]
    name = request.query.get("subscription") or (pulls[0] if len(pulls) == 1 else "")
    if name not in pulls:
        raise NotFoundError(
            "name one of this system's pull subscriptions (?subscription=…)",
            code="UNKNOWN_SUBSCRIPTION",
        )
    store = gateway.store
    if store is None:
        raise BusUnavailable("pull subscriptions need the store", code="STORE_UNAVAILABLE")
    stream = subscription_stream(consumer, name)
    limit = _int_param(request, "limit", 100, 1, MAX_PULL, "INVALID_LIMIT")
    after = _int_param(request, "after", -1, 0, 2**62, "INVALID_CURSOR")
    if after < 0:
        after = await store.cursor_get(stream)
    elif after > 0:
        # Acknowledging a position the log has not reached would skip events to come.
        if not await store.events_after(stream, after - 1, 1):
            raise InvalidRequest("after names a position beyond the log", code="INVALID_CURSOR")
        await store.cursor_set(stream, after)
    page = await store.events_after(stream, after, limit)
    events = [orjson.loads(e.body) for e in page]
    exchange.fields_returned = sorted({k for e in events for k in e})
    body = {"subscription": name, "after": after, "next": page[-1].seq if page else after}
    body["events"] = [{"seq": e.seq, "event": ev} for e, ev in zip(page, events, strict=True)]
    return web.Response(body=orjson.dumps(body), content_type="application/json")
