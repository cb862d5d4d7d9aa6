"""OpenAPI 3.1 document of the gateway, generated from the configured request models (pure)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bus.config import RoutingConfig

__all__ = ["ERROR_CODES", "openapi_document"]

ERROR_CODES: dict[str, str] = {
    "UNAUTHENTICATED": "401: missing, unknown or expired API key",
    "FORBIDDEN_OPERATION": "403: the consumer may not call this operation",
    "UNKNOWN_SERVICE": "404: no such service",
    "UNKNOWN_OPERATION": "404: the service has no such operation",
    "NOT_FOUND": "404: no such endpoint",
    "METHOD_NOT_ALLOWED": "400: wrong HTTP method for this endpoint",
    "MALFORMED_JSON": "400: the body is not a JSON object",
    "UNKNOWN_FIELD": "400: a field the operation does not define (path in detail)",
    "MISSING_FIELD": "400: a required field is absent (path in detail)",
    "INVALID_FIELD": "400: a field has the wrong type or is out of range",
    "INVALID_REQUEST_ID": "400: request_id is not 8-64 of [A-Za-z0-9._:-]",
    "INVALID_TIMEOUT": "400: X-Lgsp-Timeout-Ms is not 1..600000",
    "PAYLOAD_TOO_LARGE": "413: body over the gateway's limit",
    "UNSUPPORTED_MEDIA_TYPE": "415: body is not application/json",
    "UPSTREAM_TIMEOUT": "504: the national DB did not answer in time (retryable)",
    "UPSTREAM_UNAVAILABLE": "503: the national DB is unreachable or overloaded (retryable)",
    "UPSTREAM_REJECTED": "502: the national DB refused the request",
    "UPSTREAM_AUTH_FAILED": "502: the national DB refused the bus's credentials",
    "UPSTREAM_BAD_RESPONSE": "502: the national DB's answer was unreadable or unsafe",
    "UPSTREAM_ERROR": "502: the national DB failed (HTTP 500)",
    "CIRCUIT_OPEN": "503: the national DB is failing; calls fail fast for a while (retryable)",
    "BROKER_UNAVAILABLE": "503: the message broker is unreachable (retryable)",
    "NO_ROUTE": "503: no queue is bound for the service (operator error)",
    "OVERLOADED": "503: too many requests in flight; see Retry-After (retryable)",
    "DEADLINE_EXCEEDED": "504: no answer before the request's deadline (retryable)",
    "INTERNAL_ERROR": "500: a bug in the bus",
}

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id", "retryable"],
            "properties": {
                "code": {"type": "string", "enum": sorted(ERROR_CODES)},
                "message": {"type": "string"},
                "request_id": {"type": ["string", "null"]},
                "retryable": {"type": "boolean"},
                "detail": {"type": "object"},
            },
        }
    },
}


def openapi_document(
    config: RoutingConfig, models: dict[tuple[str, str], type[BaseModel]]
) -> dict[str, Any]:
    """The document for the services in ``config``."""
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for (service, operation), model in sorted(models.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        op = config.services[service].operations[operation]
        paths[f"/v1/{service}/{operation}"] = {
            "post": {
                "operationId": f"{service}.{operation}".replace("-", "_"),
                "summary": op.description or f"{operation} on {service}",
                "security": [{"apiKey": []}],
                "parameters": [
                    {
                        "name": "X-Lgsp-Timeout-Ms",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 600000},
                        "description": f"caller's deadline; at most {op.timeout_s}s applies",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the upstream's answer in canonical form",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **{
                        str(code): {"description": "error", "content": error_ref}
                        for code in (400, 401, 403, 404, 413, 415, 500, 502, 503, 504)
                    },
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "lgsp-bus gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
