"""A worker's reply as the caller gets it (pure), and the one error shape.

:func:`render_reply` withholds the fields the consumer may not see and is used by both the
gateway and ``lgsp-bus dlq replay`` (which stores replayed answers); :func:`error_body` is
the one JSON error shape, ``{"error": {"code", "message", "request_id", "retryable"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from bus.config import RoutingConfig
from bus.envelope import Reply, Request
from bus.errors import BusError, error_from_code
from bus.gateway import privacy
from bus.gateway.idempotency import Outcome

__all__ = ["ENVELOPE_KEYS", "WITHHELD_HEADER", "error_body", "render_reply", "replayed_fields"]

WITHHELD_HEADER = "X-Lgsp-Withheld-Fields"
"""Reply fields the consumer's grants withheld (dotted paths, comma-separated)."""
ENVELOPE_KEYS = frozenset({"request_id", "correlation_id"})
"""Keys of a rendered answer that are not the upstream's data."""


def error_body(exc: BusError, request_id: str | None) -> dict[str, Any]:
    """The one JSON error shape."""
    payload = exc.to_dict()
    payload["request_id"] = request_id
    return {"error": payload}


def render_reply(
    config: RoutingConfig, req: Request, reply: Reply, correlation_id: str
) -> tuple[Outcome, list[str]]:
    """A worker's reply as the caller gets it (fields the consumer may not see withheld),
    and the fields returned."""
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


def replayed_fields(config: RoutingConfig, req: Request, stored: bytes) -> list[str]:
    """The fields a stored (replayed) answer returns to ``req``'s consumer."""
    body = {k: v for k, v in orjson.loads(stored).items() if k not in ENVELOPE_KEYS}
    return privacy.FieldFilter.of(config, req.consumer, req.service).apply(body).returned
