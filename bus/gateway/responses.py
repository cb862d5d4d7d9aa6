"""The OpenAPI document's answers: reply schemas, response headers, the plain endpoints.

:mod:`bus.gateway.openapi` builds the operations; this module says what they answer —
each operation's ``200`` schema from its adapter kind's answer model (handed in by the
composition root, as the request models are), the headers every answer carries, and the
endpoints besides the operations (``/v1/services``, health, ``/metrics``, the document
itself). Patterns are made ECMA-262 (JSON Schema's dialect): Python's ``\\Z`` becomes ``$``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = [
    "ACCEPTED",
    "ENVELOPE",
    "HEADERS",
    "answer_schema",
    "ecma_patterns",
    "error_headers",
    "messages_path",
    "plain_paths",
    "reply_headers",
]

ENVELOPE = {
    "request_id": {"type": "string", "description": "the request's request_id"},
    "correlation_id": {"type": "string", "description": "the id in every log line"},
}
"""What the gateway adds to every answer of a worker."""

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "the correlation id (yours if you sent a well-formed one)",
        "schema": {"type": "string"},
    },
    "X-Road-Request-Hash": {
        "description": "base64 SHA-512 of the request body (once it was read)",
        "schema": {"type": "string"},
    },
    "X-Lgsp-Withheld-Fields": {
        "description": "comma-separated paths this consumer may not see, withheld",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "true: the stored answer of an earlier identical request",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Location": {
        "description": "where the answer will be: /v1/messages/{request_id}",
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}},
    "Allow": {"description": "the methods this endpoint has", "schema": {"type": "string"}},
    "RateLimit-Limit": {"description": "the burst", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "0", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "seconds until admitted", "schema": {"type": "integer"}},
}


def _headers(*names: str) -> dict[str, Any]:
    return {name: HEADERS[name] for name in names}


def reply_headers(status: str) -> dict[str, Any]:
    """The headers of an operation's ``200`` or ``202``."""
    if status == "202":
        return _headers("X-Request-Id", "X-Road-Request-Hash", "Location", "Retry-After")
    return _headers(
        "X-Request-Id", "X-Road-Request-Hash", "X-Lgsp-Withheld-Fields", "Idempotent-Replayed"
    )


def error_headers(status: int) -> dict[str, Any]:
    """The headers of an error answer with ``status``."""
    names = ["X-Request-Id", "X-Road-Request-Hash"]
    names += {
        401: ["WWW-Authenticate"],
        405: ["Allow"],
        429: ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"],
        503: ["Retry-After"],
    }.get(status, [])
    return _headers(*names)


def answer_schema(model: type[BaseModel] | None, schemas: dict[str, Any]) -> dict[str, Any]:
    """The ``200`` schema of an operation: its answer model's (definitions moved into
    ``schemas``) plus the envelope; only ``status`` is required, since a consumer's field
    grants may withhold any other part."""
    if model is None:
        return {"type": "object"}
    schema = model.model_json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    schemas.update(schema.pop("$defs", {}))
    properties = {**schema.get("properties", {}), **ENVELOPE}
    required = [name for name in ("status",) if name in properties]
    schema = {**schema, "properties": properties, "required": [*required, "request_id"]}
    schemas[f"{model.__name__}Reply"] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}Reply"}


ACCEPTED: dict[str, Any] = {
    "description": "accepted (Prefer: respond-async); GET the Location for the answer",
    "headers": reply_headers("202"),
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def messages_path(error_ref: dict[str, Any], statuses: tuple[int, ...]) -> dict[str, Any]:
    """``GET /v1/messages/{request_id}``."""
    return {
        "get": {
            "operationId": "messages.get",
            "summary": "the stored answer of a request (async mode), by request_id",
            "security": [{"apiKey": []}],
            "parameters": [
                {
                    "name": "request_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
                }
            ],
            "responses": {
                "200": {
                    "description": "the answer, exactly as the POST would have given it",
                    "headers": reply_headers("200"),
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "202": ACCEPTED,
                **{
                    str(code): {
                        "description": "error (or the request's stored error)",
                        "headers": error_headers(code),
                        "content": error_ref,
                    }
                    for code in statuses
                },
            },
        }
    }


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def plain_paths() -> dict[str, Any]:
    """``/v1/services``, ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``."""
    services = {
        "type": "object",
        "required": ["services"],
        "properties": {
            "services": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "service": {"type": "string"},
                        "operations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"operation": {"type": "string"}},
                            },
                        },
                    },
                },
            }
        },
    }
    health = {"type": "object"}
    return {
        "/v1/services": {
            "get": {
                "operationId": "services.list",
                "summary": "the services and operations this caller may call",
                "security": [{"apiKey": []}],
                "responses": {
                    "200": _json_response("what this caller may call", services),
                    "401": {"description": "no valid credential", "headers": error_headers(401)},
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health.live",
                "summary": "the process is alive",
                "responses": {"200": _json_response("alive", health)},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "health.ready",
                "summary": "ready to serve: broker, store, audit, breakers, config",
                "responses": {
                    "200": _json_response("ready (detail per part)", health),
                    "503": _json_response("not ready (detail says which part)", health),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (lgsp_*)",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _json_response(
                        "this process serves no metrics here",
                        {"$ref": "#/components/schemas/Error"},
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document",
                "responses": {"200": _json_response("OpenAPI 3.1", {"type": "object"})},
            }
        },
    }


def ecma_patterns(value: Any) -> Any:
    """``value`` with every ``pattern`` made ECMA-262: ``\\Z`` (Python) → ``$``."""
    if isinstance(value, dict):
        return {
            k: v.replace("\\Z", "$") if k == "pattern" and isinstance(v, str) else ecma_patterns(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [ecma_patterns(v) for v in value]
    return value
