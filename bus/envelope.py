"""Canonical request/reply envelopes and their AMQP codec (pure: no I/O).

A request crosses the broker as the canonical JSON body plus headers carrying the routing
facts (service, operation, consumer, deadline, attempt, trace id) and, with tracing on,
the W3C ``traceparent`` header of the gateway's span. Replies carry either a
body or an error. The same codec serves the in-memory broker, so both brokers exercise the
same decode paths (and the same poison-message handling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "REPLY_MARGIN_S",
    "DecodeError",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

REPLY_MARGIN_S = 0.25
"""Time a worker keeps back from the deadline for its reply to travel back to the gateway."""

HeaderValue = str | int | float | bool
_H = "x-lgsp-"


class DecodeError(ValueError):
    """A message that is not a valid envelope (a poison message)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request on its way to a worker."""

    request_id: str
    service: str
    operation: str
    consumer: str
    correlation_id: str
    deadline: float
    """Wall-clock epoch seconds; nobody waits for an answer after it."""
    body: dict[str, Any]
    attempt: int = 1
    officer: str | None = None
    trace_id: str | None = None
    """The gateway's correlation id (``X-Request-Id``), for logs across processes."""
    traceparent: str | None = None
    """W3C trace context of the gateway's span (tracing on), header ``traceparent``."""
    short_deadline: bool = False
    """The caller shortened the deadline below the operation's ``timeout_s``
    (``X-Lgsp-Timeout-Ms``): a timeout at that deadline is the caller's doing, and the
    upstream's circuit breaker does not count it."""

    @property
    def routing_key(self) -> str:
        """``<service>.<operation>`` on the requests exchange."""
        return f"{self.service}.{self.operation}"

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the deadline."""
        return self.deadline - (time.time() if now is None else now)


@dataclass(frozen=True, slots=True)
class Reply:
    """A worker's answer: ``body`` on success, ``error`` (code, message, retryable) otherwise."""

    request_id: str
    correlation_id: str
    body: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the reply carries a body."""
        return self.error is None


def encode_request(req: Request) -> tuple[bytes, dict[str, HeaderValue]]:
    """Body bytes and headers for ``req``."""
    headers: dict[str, HeaderValue] = {
        _H + "request-id": req.request_id,
        _H + "service": req.service,
        _H + "operation": req.operation,
        _H + "consumer": req.consumer,
        # Integer milliseconds: AMQP's float header type is 32-bit and would lose seconds.
        _H + "deadline-ms": round(req.deadline * 1000),
        _H + "attempt": req.attempt,
    }
    if req.officer is not None:
        headers[_H + "officer"] = req.officer
    if req.trace_id is not None:
        headers[_H + "trace-id"] = req.trace_id
    if req.traceparent is not None:
        headers["traceparent"] = req.traceparent
    if req.short_deadline:
        headers[_H + "short-deadline"] = 1
    return orjson.dumps(req.body), headers


def _header(headers: dict[str, Any], name: str, kind: type) -> Any:
    value = headers.get(_H + name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"header {_H}{name} is missing or not a {kind.__name__}")
    return value


def decode_request(body: bytes, headers: dict[str, Any], correlation_id: str | None) -> Request:
    """Rebuild a :class:`Request`; raises :class:`DecodeError` for a poison message."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("body is not JSON") from exc
    if not isinstance(payload, dict):
        raise DecodeError("body is not a JSON object")
    if not correlation_id:
        raise DecodeError("no correlation id")
    officer = headers.get(_H + "officer")
    trace_id = headers.get(_H + "trace-id")
    traceparent = headers.get("traceparent")
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("ascii", "replace")
    return Request(
        request_id=_header(headers, "request-id", str),
        service=_header(headers, "service", str),
        operation=_header(headers, "operation", str),
        consumer=_header(headers, "consumer", str),
        correlation_id=correlation_id,
        deadline=_header(headers, "deadline-ms", int) / 1000,
        attempt=_header(headers, "attempt", int),
        officer=officer if isinstance(officer, str) else None,
        trace_id=trace_id if isinstance(trace_id, str) else None,
        traceparent=traceparent if isinstance(traceparent, str) else None,
        short_deadline=headers.get(_H + "short-deadline") == 1,
        body=payload,
    )


def encode_reply(reply: Reply) -> bytes:
    """Reply bytes (the correlation id travels as a message property)."""
    return orjson.dumps(
        {
            "request_id": reply.request_id,
            "body": reply.body,
            "error": reply.error,
            "meta": reply.meta,
        }
    )


def decode_reply(data: bytes, correlation_id: str) -> Reply:
    """Rebuild a :class:`Reply`; raises :class:`DecodeError` if it is not one."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("reply is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("request_id"), str):
        raise DecodeError("reply is not an envelope")
    body, error, meta = payload.get("body"), payload.get("error"), payload.get("meta")
    if not (
        (isinstance(body, dict) and error is None) or (body is None and isinstance(error, dict))
    ):
        raise DecodeError("reply must carry exactly one of body or error, each an object")
    return Reply(
        request_id=payload["request_id"],
        correlation_id=correlation_id,
        body=body,
        error=error,
        meta=meta if isinstance(meta, dict) else {},
    )
