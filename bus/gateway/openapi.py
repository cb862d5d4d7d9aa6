"""OpenAPI 3.1 document of the gateway, generated from the configured request models (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from bus.config import RoutingConfig
from bus.config.access import XROAD_CLIENT_RE, XROAD_SERVICE_RE
from bus.gateway.events import EVENT_ERROR_CODES
from bus.gateway.responses import (
    ACCEPTED,
    answer_schema,
    ecma_patterns,
    error_headers,
    messages_path,
    plain_paths,
    reply_headers,
)
from bus.xroad import XROAD_ID_RE, XROAD_USER_RE

__all__ = ["ERROR_CODES", "admin_paths", "openapi_document"]

ERROR_CODES: dict[str, str] = {
    "UNAUTHENTICATED": "401: missing, unknown or expired API key",
    "FORBIDDEN_OPERATION": "403: the consumer may not call this operation",
    "UNKNOWN_SERVICE": "404: no such service",
    "UNKNOWN_OPERATION": "404: the service has no such operation",
    "NOT_FOUND": "404: no such endpoint",
    "METHOD_NOT_ALLOWED": "405: wrong HTTP method for this endpoint (Allow lists the right one)",
    "MALFORMED_JSON": "400: the body is not a JSON object",
    "DUPLICATE_HEADER": "400: Authorization, Content-Type, X-Request-Id, X-Lgsp-Timeout-Ms, "
    "Prefer or an X-Road header is sent more than once",
    "JSON_TOO_DEEP": "400: the body nests objects/arrays deeper than 32 levels",
    "MALFORMED_BODY": "400: the body does not decode with its Content-Encoding (gzip/deflate)",
    "DUPLICATE_KEY": "400: the body names a key twice in one object",
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
    "AUDIT_UNAVAILABLE": "503: fail_closed route: the audit store is down, so nothing is "
    "fetched, or the record could not be made durable, so the answer is withheld (retryable)",
    "DEADLINE_EXCEEDED": "504: no answer before the request's deadline (retryable)",
    "INTERNAL_ERROR": "500: a bug in the bus",
    "ADMIN_DISABLED": "404: /admin/* is off (no admin.api_keys in routing.yaml)",
    "CONFIG_REJECTED": "422: POST /admin/reload: the routing file is invalid; nothing changed",
    # The operators' console and management API (bus/console).
    "FORBIDDEN_ROLE": "403: /admin/*: the admin key's role does not allow this action",
    "CSRF_FAILED": "403: a console state change without its CSRF token, or from another origin",
    "CONFIG_CHANGED": "409: the config in force changed since the proposal was checked",
    "CONFIG_NOT_WRITABLE": "422: the routing file cannot be written; nothing changed",
    "DLQ_UNAVAILABLE": "503: this process holds no broker with dead-letter queues",
    "LETTER_NOT_FOUND": "404: no dead letter with that id in that service's DLQ",
    # Access control, personal-data rules and input validation (bus/privacy.py, xroad.py,
    # edge.py, canonical.py, validation.py and the adapters' request models).
    "BAD_REQUEST": "400: the HTTP request could not be understood",
    "BAD_HTTP_REQUEST": "400: malformed HTTP (request line, header syntax)",
    "HEADERS_TOO_LARGE": "431: the request line or a header over 8190 bytes, or over 128 headers",
    "RATE_LIMITED": "429: over the consumer's rate limit; see Retry-After (retryable)",
    "MISMATCH_LIMIT": "429: too many MISMATCH answers on this service (match.mismatches); "
    "see Retry-After (retryable)",
    "FORBIDDEN_FIELD": "403: a sensitive field (ethnicity, religion) asked for without a grant",
    "XROAD_IDENTITY_MISMATCH": "403: an X-Road header disagrees with the caller, the service, "
    "request_id or caller.officer_id",
    "INVALID_XROAD_HEADER": "400: an X-Road header is malformed",
    "PURPOSE_REQUIRED": "400: personal data: purpose.procedure_code, dossier_id and "
    "legal_basis are required",
    "OFFICER_REQUIRED": "400: personal data: caller.officer_id (or X-Road-UserId) is required",
    "CALLER_REQUIRED": "400: personal data: caller.system_id and caller.unit_code are required",
    "CONSENT_REF_REQUIRED": "400: legal_basis CONSENT without purpose.consent_ref",
    "INVALID_OFFICER_ID": "400: caller.officer_id is not a 12-digit personal ID",
    "INVALID_CODE": "400: a caller/purpose code is not 1-64 of [A-Za-z0-9._/-]",
    "INVALID_TEXT": "400: control, invisible or line-separator characters in free text",
    "INVALID_TIMESTAMP": "400: requested_at is not an RFC 3339 date-time with offset",
    "CLOCK_SKEW": "400: requested_at is too far from the gateway's clock (default ±5 min)",
    "INVALID_REQUEST": "400: the request is invalid (see message)",
    "INVALID_ID_NUMBER": "400: not exactly 12 (CCCD) or 9 (CMND) ASCII digits",
    "INVALID_ID_PREFIX": "400: the CCCD's first 3 digits are no province or country code",
    "ID_BIRTH_MISMATCH": "400: the CCCD's century/year digits disagree with birth_date",
    "ID_SEX_MISMATCH": "400: sex disagrees with the CCCD's century/sex digit",
    "BIRTH_DATE_INCOMPLETE": "400: the match policy needs the subject's full birth date "
    "(match.birth_date)",
    "INVALID_DATE": "400: not YYYY, YYYY-MM or YYYY-MM-DD, or no such day",
    "DATE_IN_FUTURE": "400: a date after today (Vietnam time)",
    "DATE_TOO_OLD": "400: a date before 1900",
    "INVALID_NAME": "400: empty, over 100 characters, digits, control characters, emoji, "
    "markup or mixed scripts",
    "NAME_ENCODING": "400: a mis-encoded name (mojibake, TCVN3/VNI legacy text)",
    "INVALID_FIELDS": "400: fields names no field",
    "INVALID_QUERY": "400: civil status: give exactly one of by_registration or by_person",
    "INVALID_RECORD_TYPE": "400: record_type is not BIRTH, MARRIAGE or DEATH",
    "INVALID_REGISTRATION": "400: a registration code is not 1-32 of [A-Za-z0-9._/-]",
    "IDEMPOTENCY_CONFLICT": "409: request_id reused with a different body",
    # Idempotency and async mode (bus/idempotency.py).
    "MESSAGE_NOT_FOUND": "404: GET /v1/messages/{id}: no answer kept for this request_id "
    "(never sent by this consumer, refused before it was accepted, or expired)",
    "ANSWER_FETCHED": "410: the answer to this request_id was already fetched with GET "
    "/v1/messages/{id} and is deleted; send the request again with a new request_id",
    "STORE_UNAVAILABLE": "503: the store of request results is unreachable (retryable)",
    **EVENT_ERROR_CODES,  # POST /v1/events/{type}, GET /v1/events (bus/gateway/events.py)
    "BUS_UNAVAILABLE": "503: the gateway stopped before the answer arrived; send the request "
    "again with the same request_id (retryable)",
    "SHUTTING_DOWN": "503: the gateway is stopping (SIGTERM) and takes no new calls; send the "
    "request again, another instance answers (retryable, Retry-After)",
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


_ERROR_STATUSES = (400, 401, 403, 404, 409, 410, 413, 415, 429, 431, 500, 502, 503, 504)
"""Every status an operation call may answer with an error body."""

_XROAD_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": pattern},
        "description": description,
    }
    for name, pattern, description in (
        (
            "X-Road-Client",
            XROAD_CLIENT_RE.pattern,
            "X-Road client id INSTANCE/CLASS/MEMBER[/SUBSYSTEM]; must be the consumer's",
        ),
        (
            "X-Road-Service",
            XROAD_SERVICE_RE.pattern,
            "X-Road service id …/SERVICE[/VERSION]; SERVICE must be this service",
        ),
        ("X-Road-Id", XROAD_ID_RE.pattern, "X-Road message id; must equal request_id"),
        (
            "X-Road-UserId",
            XROAD_USER_RE.pattern,
            "the officer's 12-digit ID; must equal caller.officer_id if given",
        ),
    )
]
"""The X-Road/NDXP identity headers (:mod:`bus.xroad`); replies carry X-Road-Request-Hash."""


_PREFER_PARAMETER: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "respond-async: answer 202 with Location /v1/messages/{request_id} "
    "unless the outcome is ready at once (RFC 7240)",
}
_REQUIRED_FOR_PERSONAL_DATA = {
    "caller": ["officer_id"],
    "purpose": ["procedure_code", "dossier_id", "legal_basis"],
}
"""What :func:`bus.privacy.check_purpose` demands of a ``personal_data: true`` service."""


def _personal_data_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """The request schema with caller.officer_id and the purpose fields required."""
    props = dict(schema.get("properties", {}))
    required = list(schema.get("required", []))
    for part, fields in _REQUIRED_FOR_PERSONAL_DATA.items():
        if part not in props:
            continue
        base = {k: v for k, v in props[part].items() if k != "default"}
        props[part] = {
            "allOf": [
                base,
                {
                    "required": fields,
                    "properties": {name: {"not": {"type": "null"}} for name in fields},
                },
            ],
            "description": "required for personal data: " + ", ".join(fields),
        }
        if part not in required:
            required.append(part)
    return {**schema, "properties": props, "required": required}


def openapi_document(
    config: RoutingConfig,
    models: Mapping[tuple[str, str], type[BaseModel]],
    replies: Mapping[tuple[str, str], type[BaseModel]] | None = None,
) -> dict[str, Any]:
    """The document for the services in ``config``."""
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for (service, operation), model in sorted(models.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        if config.services[service].personal_data:
            schema = _personal_data_rules(schema)
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
                    },
                    _PREFER_PARAMETER,
                    *_XROAD_PARAMETERS,
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
                        "description": "the upstream's answer in canonical form (a repeat "
                        "of an answered request_id: the stored answer, Idempotent-Replayed)",
                        "headers": reply_headers("200"),
                        "content": {
                            "application/json": {
                                "schema": answer_schema(
                                    (replies or {}).get((service, operation)), schemas
                                )
                            }
                        },
                    },
                    "202": ACCEPTED,
                    **{
                        str(code): {
                            "description": "error",
                            "headers": error_headers(code),
                            "content": error_ref,
                        }
                        for code in (*_ERROR_STATUSES, 405)
                    },
                },
            }
        }
    paths["/v1/messages/{request_id}"] = messages_path(error_ref, _ERROR_STATUSES)
    paths.update(plain_paths())
    security: dict[str, Any] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    if config.admin.api_keys:  # the management API is served only with admin keys
        paths.update(admin_paths())
        security["adminKey"] = {"type": "http", "scheme": "bearer"}
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "lgsp-bus gateway",
            "version": "1",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "this gateway (where the document was read)"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": security,
        },
    }
    return dict(ecma_patterns(document))


_ADMIN_API: tuple[tuple[str, str, str, dict[str, Any] | None], ...] = (
    ("get", "whoami", "viewer: the caller's name, role and the actions it may do", None),
    ("get", "overview", "viewer: traffic per service (last hour), breakers, health, config", None),
    ("get", "services", "viewer: services and operations with what governs them", None),
    ("get", "access", "viewer: grant matrix, consumers' keys (labels, expiry), usage", None),
    ("get", "deadletters", "viewer: dead letters (no bodies); ?service= for one", None),
    ("get", "config", "viewer: the routing.yaml in force, its version, the last reload", None),
    (
        "post",
        "deadletters/show",
        "viewer: one dead letter, personal data masked; reveal: auditor (audited)",
        {"service": "string", "id": "string", "reveal": "boolean"},
    ),
    (
        "post",
        "deadletters/replay",
        "operator: publish again and wait for the answers (audited)",
        {"service": "string", "ids": "array"},
    ),
    (
        "post",
        "deadletters/purge",
        "operator: delete for good (audited)",
        {"service": "string", "ids": "array"},
    ),
    (
        "post",
        "audit/search",
        "auditor: records by citizen ID (hashed with the audit key), request id, consumer, "
        "officer, service, time range (audited)",
        {
            "subject_id": "string",
            "request_id": "string",
            "consumer": "string",
            "officer": "string",
            "service": "string",
            "from": "string",
            "to": "string",
            "limit": "integer",
        },
    ),
    ("post", "audit/verify", "auditor: verify every hash chain (audited)", {}),
    (
        "post",
        "audit/evidence",
        "auditor: the evidence bundle of one request (audited)",
        {"request_id": "string"},
    ),
    (
        "post",
        "config/check",
        "viewer: validate a proposed routing.yaml (errors with line:column) and diff it",
        {"text": "string"},
    ),
    (
        "post",
        "config/apply",
        "operator: write the proposed routing.yaml and reload (base_version from check)",
        {"text": "string", "base_version": "string"},
    ),
)
_ADMIN_STATUSES = ("400", "401", "403", "404", "409", "413", "415", "422", "503")


def admin_paths() -> dict[str, Any]:
    """The ``/admin/api/…`` paths of the management API (:mod:`bus.admin.console.api`)."""
    error = {"application/json": {"schema": _ERROR_SCHEMA}}
    paths: dict[str, Any] = {}
    for method, name, summary, fields in _ADMIN_API:
        op: dict[str, Any] = {
            "operationId": "admin." + name.replace("/", "_"),
            "summary": summary,
            "security": [{"adminKey": []}],
            "responses": {
                "200": {
                    "description": "done",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{code: {"description": "error", "content": error} for code in _ADMIN_STATUSES},
            },
        }
        if fields is not None:
            props = {k: {"type": v} for k, v in fields.items()}
            if "ids" in props:
                props["ids"] = {"type": "array", "items": {"type": "string"}, "maxItems": 1000}
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": props,
                            "additionalProperties": False,
                        }
                    }
                },
            }
        paths[f"/admin/api/{name}"] = {method: op}
    return paths
