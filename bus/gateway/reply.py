"""A worker's reply as the caller gets it (pure), and the one error shape.

:func:`render_reply` withholds the fields the consumer may not see and is used by both the
gateway and ``lgsp-bus dlq replay`` (which stores replayed answers); :func:`error_body` is
the one JSON error shape, ``{"error": {"code", "message", "request_id", "retryable"}}``.

A stored answer is kept with the service and operation it answered (:data:`STORED_META`)
and served through :func:`serve_stored`, which applies the consumer's grants *as they are
now*: a revoked operation is ``403 FORBIDDEN_OPERATION``, a narrowed field grant withholds
the fields again, and the fields listed for the audit record are those actually sent.

Both also say which citizens the answer returns (:class:`Rendered` ``citizens``: the ID
numbers at the operation's citizen paths, :mod:`bus.gateway.citizens`), read from the
upstream's answer *before* the consumer's grants withhold anything — a father whose ID
field is withheld but whose name is sent was still returned — and kept with a stored answer
(:data:`STORED_META` ``citizens``), so a re-read is keyed to the same citizens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from bus.config import RoutingConfig
from bus.config.access import authorize
from bus.envelope import Reply, Request
from bus.errors import BusError, NotFoundError, error_from_code
from bus.gateway import privacy
from bus.gateway.citizens import citizens_in
from bus.gateway.idempotency import Outcome

__all__ = [
    "ENVELOPE_KEYS",
    "STORED_META",
    "WITHHELD_HEADER",
    "Rendered",
    "error_body",
    "render_reply",
    "serve_stored",
]

WITHHELD_HEADER = "X-Lgsp-Withheld-Fields"
"""Reply fields the consumer's grants withheld (dotted paths, comma-separated)."""
ENVELOPE_KEYS = frozenset({"request_id", "correlation_id"})
"""Keys of a rendered answer that are not the upstream's data."""
STORED_META = "x-lgsp-stored"
"""Key of a stored answer naming its service and operation (never sent to a caller)."""


class Rendered(NamedTuple):
    """An answer as sent, with what the audit record says about it."""

    outcome: Outcome
    fields: list[str]
    """Leaf paths of the answer sent (``fields`` of the record)."""
    citizens: list[str]
    """ID numbers of the citizens it returns (keyed, never logged)."""


def error_body(exc: BusError, request_id: str | None) -> dict[str, Any]:
    """The one JSON error shape."""
    payload = exc.to_dict()
    payload["request_id"] = request_id
    return {"error": payload}


def render_reply(
    config: RoutingConfig,
    req: Request,
    reply: Reply,
    correlation_id: str,
    citizens: tuple[str, ...] = (),
) -> Rendered:
    """A worker's reply as the caller gets it (fields the consumer may not see withheld),
    the fields returned and the ID numbers at the ``citizens`` paths."""
    if reply.error is not None:
        error = error_from_code(
            str(reply.error.get("code", "INTERNAL_ERROR")),
            str(reply.error.get("message", "")),
            reply.error.get("detail"),
        )
        retry_after = reply.error.get("retry_after_s")
        if isinstance(retry_after, int | float) and retry_after > 0:
            error.retry_after = float(retry_after)  # e.g. CIRCUIT_OPEN: time left open
        return Rendered(Outcome.failure(error, req.request_id), [], [])
    assert reply.body is not None
    ids = citizens_in(reply.body, citizens)
    filtered = privacy.FieldFilter.of(config, req.consumer, req.service).apply(reply.body)
    out = {**filtered.body, "request_id": req.request_id, "correlation_id": correlation_id}
    headers = {}
    if filtered.withheld:
        headers[WITHHELD_HEADER] = ",".join(filtered.withheld)[:2048]
    meta: dict[str, Any] = {"service": req.service, "operation": req.operation}
    if ids:
        meta["citizens"] = ids
    stored = orjson.dumps({**out, STORED_META: meta})
    return Rendered(Outcome(200, orjson.dumps(out), headers, stored=stored), filtered.returned, ids)


def serve_stored(
    config: RoutingConfig,
    consumer: str,
    outcome: Outcome,
    citizens: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
) -> Rendered:
    """A stored outcome as ``consumer`` may get it now: the operation still granted (else
    ``Forbidden``), the current field filter applied; with the fields sent and the citizens
    it returns (those kept with it, else read at ``citizens``' paths). Failures are served as
    they were."""
    if outcome.error is not None or outcome.status != 200:
        return Rendered(outcome, [], [])
    stored = orjson.loads(outcome.body)
    meta = stored.pop(STORED_META, None) if isinstance(stored, dict) else None
    if not (
        isinstance(meta, dict)
        and isinstance(meta.get("service"), str)
        and isinstance(meta.get("operation"), str)
    ):
        # Kept before answers named their operation: it cannot be re-checked, so it is not
        # served (the request may be sent again, with a new request_id).
        raise NotFoundError(
            "this stored answer cannot be checked against current grants; send the request "
            "again with a new request_id",
            code="MESSAGE_NOT_FOUND",
        )
    service, operation = meta["service"], meta["operation"]
    authorize(config, consumer, service, operation)
    envelope = {k: v for k, v in stored.items() if k in ENVELOPE_KEYS}
    data = {k: v for k, v in stored.items() if k not in ENVELOPE_KEYS}
    kept = meta.get("citizens")
    if isinstance(kept, list):
        ids = [i for i in kept if isinstance(i, str)]
    else:  # kept before answers listed their citizens
        ids = citizens_in(data, (citizens or {}).get((service, operation), ()))
    filtered = privacy.FieldFilter.of(config, consumer, service).apply(data)
    headers = {k: v for k, v in outcome.headers.items() if k != WITHHELD_HEADER}
    if filtered.withheld:
        headers[WITHHELD_HEADER] = ",".join(filtered.withheld)[:2048]
    body = orjson.dumps({**filtered.body, **envelope})
    return Rendered(Outcome(200, body, headers, final=outcome.final), filtered.returned, ids)
