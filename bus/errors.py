"""One exception tree for the bus; each error knows its stable code, HTTP status and retryability.

    BusError
    ├── RequestError (4xx: the caller's request is wrong; retrying the same request never helps)
    │   ├── InvalidRequest          400 INVALID_REQUEST / MALFORMED_JSON / DUPLICATE_KEY /
    │   │                           UNKNOWN_FIELD / CALLER_REQUIRED / OFFICER_REQUIRED …
    │   ├── Unauthenticated         401 UNAUTHENTICATED (with WWW-Authenticate: Bearer)
    │   ├── Forbidden               403 FORBIDDEN_OPERATION
    │   ├── NotFoundError           404 UNKNOWN_SERVICE / UNKNOWN_OPERATION / MESSAGE_NOT_FOUND
    │   ├── MethodNotAllowed        405 METHOD_NOT_ALLOWED (with Allow)
    │   ├── Conflict                409 IDEMPOTENCY_CONFLICT
    │   ├── Gone                    410 ANSWER_FETCHED (GET /v1/messages handed it over)
    │   ├── PayloadTooLarge         413 PAYLOAD_TOO_LARGE
    │   ├── UnsupportedMediaType    415 UNSUPPORTED_MEDIA_TYPE
    │   └── RateLimited             429 RATE_LIMITED (Retry-After, RateLimit-*) / MISMATCH_LIMIT
    ├── UpstreamError (the national DB failed us: 502/503/504)
    │   ├── UpstreamTimeout         504 UPSTREAM_TIMEOUT (retryable)
    │   ├── UpstreamUnavailable     503 UPSTREAM_UNAVAILABLE (retryable)
    │   ├── UpstreamRejected        502 UPSTREAM_REJECTED (the upstream refused the request)
    │   ├── UpstreamAuthFailed      502 UPSTREAM_AUTH_FAILED
    │   ├── UpstreamBadResponse     502 UPSTREAM_BAD_RESPONSE
    │   └── CircuitOpen             503 CIRCUIT_OPEN (retryable)
    └── BusUnavailable (the bus itself cannot serve now)
        ├── BrokerUnavailable       503 BROKER_UNAVAILABLE (retryable)
        ├── Overloaded              503 OVERLOADED (retryable)
        ├── DeadlineExceeded        504 DEADLINE_EXCEEDED (retryable)
        ├── AuditUnavailable        503 AUDIT_UNAVAILABLE (retryable: a fail_closed route's
        │                           record cannot be written, so nothing is fetched or answered)
        └── InternalError           500 INTERNAL_ERROR

Library errors (aiohttp, aio-pika, zeep) are mapped into this tree at the boundary with
``raise … from exc``; one gateway middleware maps the tree to HTTP.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

__all__ = [
    "UPSTREAM_MESSAGES",
    "AuditUnavailable",
    "BrokerUnavailable",
    "BusError",
    "BusUnavailable",
    "CircuitOpen",
    "Conflict",
    "DeadlineExceeded",
    "Forbidden",
    "Gone",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFoundError",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RequestError",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UpstreamAuthFailed",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_from_code",
    "for_caller",
]


class BusError(Exception):
    """Base of every error the bus reports to a caller."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: ClassVar[bool] = False
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: dict[str, Any] | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.detail = detail or {}
        self.retry_after = retry_after
        self.headers: dict[str, str] = {**self.default_headers, **(headers or {})}
        """Response headers this error's answer carries (``Allow``, ``RateLimit-*`` …)."""

    def to_dict(self) -> dict[str, Any]:
        """The wire form of the error (``{"code", "message", "retryable"}`` plus detail)."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


class RequestError(BusError):
    """The caller's request is wrong; the same request will fail again."""

    status = 400
    default_code = "INVALID_REQUEST"


class InvalidRequest(RequestError):
    """Malformed, unknown or invalid input."""


class Unauthenticated(RequestError):
    """No valid credential."""

    status = 401
    default_code = "UNAUTHENTICATED"
    default_headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="lgsp-bus"'}


class Forbidden(RequestError):
    """Authenticated, but not allowed to do this."""

    status = 403
    default_code = "FORBIDDEN_OPERATION"


class NotFoundError(RequestError):
    """No such service, operation or message."""

    status = 404
    default_code = "NOT_FOUND"


class MethodNotAllowed(RequestError):
    """The endpoint exists, but not for this method (the ``Allow`` header lists those it has)."""

    status = 405
    default_code = "METHOD_NOT_ALLOWED"


class Conflict(RequestError):
    """The request clashes with an earlier one (e.g. a reused request id)."""

    status = 409
    default_code = "IDEMPOTENCY_CONFLICT"


class Gone(RequestError):
    """The answer existed and was handed over (``GET /v1/messages/{id}``); it is deleted."""

    status = 410
    default_code = "ANSWER_FETCHED"


class PayloadTooLarge(RequestError):
    """The body is over the gateway's size limit."""

    status = 413
    default_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(RequestError):
    """The body is not JSON."""

    status = 415
    default_code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(RequestError):
    """The caller is over its rate limit."""

    status = 429
    default_code = "RATE_LIMITED"
    retryable = True


class UpstreamError(BusError):
    """The national database (or the path to it) failed."""

    status = 502
    default_code = "UPSTREAM_ERROR"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    status = 504
    default_code = "UPSTREAM_TIMEOUT"
    retryable = True


class UpstreamUnavailable(UpstreamError):
    """Connection refused/reset, or a 502/503/504 from the upstream."""

    status = 503
    default_code = "UPSTREAM_UNAVAILABLE"
    retryable = True


class UpstreamRejected(UpstreamError):
    """The upstream refused the request as invalid (4xx, validation fault)."""

    default_code = "UPSTREAM_REJECTED"


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused the bus's credentials; an operator must fix the secret."""

    default_code = "UPSTREAM_AUTH_FAILED"


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer could not be understood (bad JSON/XML, hostile XML, too big)."""

    default_code = "UPSTREAM_BAD_RESPONSE"


UPSTREAM_MESSAGES: dict[str, str] = {
    "UPSTREAM_ERROR": "the national database failed",
    "UPSTREAM_TIMEOUT": "the national database did not answer in time",
    "UPSTREAM_UNAVAILABLE": "the national database is unavailable",
    "UPSTREAM_REJECTED": "the national database refused the request",
    "UPSTREAM_AUTH_FAILED": "the national database refused the bus's credentials",
    "UPSTREAM_BAD_RESPONSE": "the national database sent an answer the bus cannot use",
}
"""What a caller is told for each upstream error code: fixed texts, so no byte of an
upstream's answer (IDs, names, tokens, markup in a fault or a broken response) reaches a
caller or the stored answers. The adapter's own message goes to the (masked) log."""
_SAFE_DETAIL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def for_caller(exc: BusError) -> dict[str, Any]:
    """``exc``'s wire form as a caller may see it: an upstream error gets its fixed text
    and only code-shaped detail values (``upstream_code``, ``fault_code``)."""
    wire = exc.to_dict()
    if isinstance(exc, UpstreamError) and exc.code in UPSTREAM_MESSAGES:
        wire["message"] = UPSTREAM_MESSAGES[exc.code]
        detail = {
            k: v
            for k, v in (exc.detail or {}).items()
            if k in ("upstream_code", "fault_code")
            and isinstance(v, str)
            and _SAFE_DETAIL.fullmatch(v)
        }
        if detail:
            wire["detail"] = detail
        else:
            wire.pop("detail", None)
    return wire


class CircuitOpen(UpstreamError):
    """The upstream's circuit breaker is open; failing fast."""

    status = 503
    default_code = "CIRCUIT_OPEN"
    retryable = True


class BusUnavailable(BusError):
    """The bus itself cannot serve right now."""

    status = 503
    default_code = "BUS_UNAVAILABLE"
    retryable = True


class BrokerUnavailable(BusUnavailable):
    """The message broker is unreachable or refused the message."""

    default_code = "BROKER_UNAVAILABLE"


class Overloaded(BusUnavailable):
    """Too much in flight; try again after ``Retry-After``."""

    default_code = "OVERLOADED"


class DeadlineExceeded(BusUnavailable):
    """The request's deadline passed before an answer arrived."""

    status = 504
    default_code = "DEADLINE_EXCEEDED"


class AuditUnavailable(BusUnavailable):
    """A ``fail_closed`` route's audit record cannot be made durable: the request is refused
    before any personal data is fetched (the store is known to be down), or its answer is
    withheld (the record failed to commit)."""

    status = 503
    default_code = "AUDIT_UNAVAILABLE"
    retryable = True


class InternalError(BusUnavailable):
    """A bug: the bus failed in a way it did not foresee."""

    status = 500
    default_code = "INTERNAL_ERROR"
    retryable = False


# code → class, for rebuilding an error that crossed the broker as a reply.
_BY_CODE: dict[str, type[BusError]] = {
    "UPSTREAM_TIMEOUT": UpstreamTimeout,
    "UPSTREAM_UNAVAILABLE": UpstreamUnavailable,
    "UPSTREAM_REJECTED": UpstreamRejected,
    "UPSTREAM_AUTH_FAILED": UpstreamAuthFailed,
    "UPSTREAM_BAD_RESPONSE": UpstreamBadResponse,
    "UPSTREAM_ERROR": UpstreamError,
    "CIRCUIT_OPEN": CircuitOpen,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "OVERLOADED": Overloaded,
    "BROKER_UNAVAILABLE": BrokerUnavailable,
    "INTERNAL_ERROR": InternalError,
}


def error_from_code(code: str, message: str, detail: dict[str, Any] | None = None) -> BusError:
    """Rebuild an error from its wire code; unknown 4xx-ish codes become ``InvalidRequest``."""
    cls = _BY_CODE.get(code, InvalidRequest)
    return cls(message, code=code, detail=detail)
