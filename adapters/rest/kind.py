"""The generic ``rest`` adapter kind: a JSON-over-HTTP upstream set up in ``routing.yaml`` alone.

Per call: validate the canonical request (it crossed the broker), fill the path template
(each placeholder URL-escaped as one segment), build the query, headers and JSON body with
the declarative mapping (:mod:`adapters.generic.mapping`), send it through
:class:`~adapters.http.UpstreamHttp` (the upstream's auth, TLS, size limit and timeouts)
within the call's deadline, then map the JSON answer back. Non-2xx statuses map through
:func:`~adapters.http.error_for_status` unless ``not_found.status`` lists them; the
upstream's error texts are never copied (they may repeat personal data). Config::

    services:
      social-insurance:
        adapter: rest
        upstream: vss
        operations:
          lookup:
            options:
              method: GET
              path: api/v2/participants/{subject.id_number}
              fields: {subject: {type: object, required: true, fields: {
                         id_number: {type: personal_id, required: true}}}}
              query: {ngayHieuLuc: {from: as_of, transform: "format_date:dd/MM/yyyy"}}
              app_status: {path: code, ok: ["00"], transient: ["99"]}
              not_found: {status: [404], path: data, when: empty}
              response: {participant.full_name: data[0].hoTen}
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import structlog
from pydantic import Field, ValidationError, field_validator, model_validator

from adapters.base import Adapter, CallContext
from adapters.common.http import HttpResult, UpstreamHttp, error_for_status
from adapters.generic.mapping import (
    MISSING,
    Rule,
    Rules,
    apply_rules,
    canonical_paths,
    get_path,
    parse_path,
    required_paths,
    source_problems,
    target_problems,
)
from adapters.generic.shared import (
    DeclaredModels,
    OperationMapping,
    ServiceMapping,
    answer,
    app_status_error,
    config_issues,
    header_problems,
    is_not_found,
    operation_model,
    prepare_call,
)
from adapters.generic.transforms import MappingError, scalar_text
from bus.canonical import CanonicalRequest
from bus.config import ServiceConfig, UpstreamConfig
from bus.config.secretlike import INLINE_SECRET, is_credential_name
from bus.errors import InvalidRequest, UpstreamBadResponse

__all__ = ["KIND", "RestAdapter", "RestKind", "RestOperationOptions", "RestServiceOptions"]

log = structlog.get_logger("adapters.rest.kind")

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~:@!$&'()*+,;=/-]*")
_WITH_BODY = ("POST", "PUT", "PATCH")


class RestServiceOptions(ServiceMapping):
    """``services.<name>.options`` of a ``rest`` service (``source``, ``headers``)."""


class RestOperationOptions(OperationMapping):
    """``services.<name>.operations.<op>.options`` of a ``rest`` service."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field("", description="relative to the upstream URL; {placeholders} escaped")
    path_params: Rules = Field(
        default_factory=dict, description="placeholder ← rule, for values that need one"
    )
    query: Rules = Field(default_factory=dict, description="query parameter ← request path")
    headers: Rules = Field(default_factory=dict, description="header ← request path")
    body: Rules | None = Field(None, description="JSON body field ← request path")

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        literal = _PLACEHOLDER.sub("x", path)
        segments = literal.strip("/").split("/")
        # ":" in the first segment would read as a URL scheme ("mailto:x" → another target).
        if (
            not _LITERAL.fullmatch(literal)
            or "//" in literal
            or ".." in segments
            or ":" in segments[0]
        ):
            raise ValueError(
                "a relative path template (letters, digits, - . _ ~ / and {name}; "
                "no scheme, host, query, '//' or '..')"
            )
        return path

    @model_validator(mode="after")
    def _body(self) -> RestOperationOptions:
        if self.body is not None and self.method not in _WITH_BODY:
            raise ValueError(f"a {self.method} request has no body: remove body")
        return self

    def placeholders(self) -> list[str]:
        """The names in the path template, in order."""
        return _PLACEHOLDER.findall(self.path)


@dataclass(frozen=True, slots=True)
class _Route:
    options: RestOperationOptions
    model: type[CanonicalRequest]
    parts: tuple[tuple[str, str | None], ...]
    """The template as (literal, placeholder-or-None) pairs."""


def _split(template: str) -> tuple[tuple[str, str | None], ...]:
    parts: list[tuple[str, str | None]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append((template[last : match.start()], match.group(1)))
        last = match.end()
    parts.append((template[last:], None))
    return tuple(parts)


def _one_line(value: Any, where: str) -> str:
    if isinstance(value, dict):
        raise InvalidRequest(f"{where}: an object cannot be sent here", code="INVALID_FIELD")
    text = ",".join(map(scalar_text, value)) if isinstance(value, list) else scalar_text(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidRequest(f"{where}: control characters cannot be sent", code="INVALID_FIELD")
    return text


class RestAdapter:
    """Calls one REST upstream for one service; safe for concurrent calls."""

    def __init__(
        self,
        service_name: str,
        options: RestServiceOptions,
        routes: Mapping[str, _Route],
        http: UpstreamHttp,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._service = service_name
        self._what = options.source or service_name
        self._headers = {"Accept": "application/json", **options.headers}
        self._routes = routes
        self._http = http
        self._clock = clock

    def _path(self, route: _Route, canonical: Any, params: Mapping[str, Any]) -> str:
        out = []
        for literal, name in route.parts:
            out.append(literal)
            if name is None:
                continue
            value = params.get(name, MISSING)
            if name not in route.options.path_params:
                value = get_path(canonical, parse_path(name))
            if value is MISSING:
                raise InvalidRequest(f"{name} is needed for this call", code="MISSING_FIELD")
            text = _one_line(value, name)
            if text in ("", ".", ".."):
                raise InvalidRequest(f"{name}: not usable in a URL path", code="INVALID_FIELD")
            out.append(quote(text, safe=""))  # one segment: "/" and "?" are escaped too
        return "".join(out)

    async def call(
        self, operation: str, request: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """Run ``operation`` against the upstream; the canonical answer or a bus error."""
        route, canonical, context = prepare_call(
            self._service, self._routes, operation, request, ctx.correlation_id, self._clock()
        )
        opts = route.options
        try:
            params = apply_rules(opts.path_params, canonical, context, flat=True)
            query = apply_rules(opts.query, canonical, context, flat=True)
            extra = apply_rules(opts.headers, canonical, context, flat=True)
            body = None if opts.body is None else apply_rules(opts.body, canonical, context)
        except MappingError as exc:
            raise InvalidRequest(f"cannot send this request: {exc}", code="INVALID_FIELD") from None
        headers = {**self._headers, **{k: _one_line(v, k) for k, v in extra.items()}}
        started = time.perf_counter()
        result = await self._http.request(
            opts.method,
            self._http.url(self._path(route, canonical, params)),
            timeout=ctx.remaining(),
            json=body,
            params={k: _one_line(v, k) for k, v in query.items()},
            headers=headers,
        )
        out = self._answer(opts, result, context)
        log.debug(
            "rest.upstream_call",
            service=self._service,
            method=opts.method,
            http_status=result.status,
            outcome=out["status"],
            upstream_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return out

    def _answer(
        self, opts: RestOperationOptions, result: HttpResult, context: Any
    ) -> dict[str, Any]:
        if opts.not_found is not None and result.status in opts.not_found.status:
            return answer(False, self._what)
        if not 200 <= result.status < 300:
            raise error_for_status(result.status, self._what)
        reply = result.json() if result.body.strip() else None
        status = app_status_error(opts.app_status, reply, self._what)
        if status == "not_found" or (status == "ok" and is_not_found(opts.not_found, reply)):
            return answer(False, self._what)
        if status != "ok":
            raise status
        try:
            return answer(True, self._what, apply_rules(opts.response, reply, context))
        except MappingError as exc:
            raise UpstreamBadResponse(f"{self._what} sent an unusable answer: {exc}") from None

    async def aclose(self) -> None:
        """Close the upstream session."""
        await self._http.aclose()


def _operation_problems(service: ServiceConfig, name: str, opts: RestOperationOptions) -> list[str]:
    where = f"operations.{name}.options"
    problems: list[str] = []
    try:
        operation_model(service, name, opts)
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}.fields: {exc}")
    known = canonical_paths(opts.fields)
    accountable = service.personal_data if opts.accountable is None else opts.accountable
    required = required_paths(opts.fields, accountable=accountable)
    sections: dict[str, Mapping[str, Rule]] = {
        "path_params": opts.path_params,
        "query": opts.query,
        "headers": opts.headers,
        "body": opts.body or {},
    }
    for section, rules in sections.items():
        problems += source_problems(rules, known, f"{where}.{section}")
    problems += header_problems(opts.headers, f"{where}.headers")
    problems += [
        f"{where}.query.{name}: {INLINE_SECRET}: a fixed value for a credential-looking "
        "parameter; credentials come from the upstream's auth (secret references)"
        for name, rule in opts.query.items()
        if rule.from_ is None and is_credential_name(name)
    ]
    problems += target_problems(opts.body or {}, f"{where}.body", reserved=False)
    problems += target_problems(opts.response, f"{where}.response", reserved=True)
    for placeholder in opts.placeholders():
        rule = opts.path_params.get(placeholder)
        source = rule.from_ if rule is not None else placeholder
        always = rule is not None and (rule.from_ is None or rule.default is not None)
        if always or (source or "").startswith("$"):
            continue
        try:
            names = ".".join(s for s in parse_path(source or "") if isinstance(s, str))
        except ValueError as exc:
            problems.append(f"{where}.path: {{{placeholder}}}: {exc}")
            continue
        if names not in known:
            problems.append(
                f"{where}.path: {{{placeholder}}} is neither a request field nor in path_params"
            )
        elif names not in required:
            problems.append(
                f"{where}.path: {{{placeholder}}} names an optional field: make it required"
            )
    if opts.not_found is not None and opts.not_found.faults:
        problems.append(f"{where}.not_found.faults: SOAP fault codes are for soap; use status")
    return problems


class RestKind(DeclaredModels):
    """Adapter kind ``rest`` (registered as ``adapters.rest.kind:KIND``)."""

    operation_options = RestOperationOptions

    name = "rest"

    def check(self, service_name: str, service: ServiceConfig) -> list[str]:
        """Options, templates and mappings (answers are not checked: REST has no schema)."""
        problems: list[str] = []
        try:
            RestServiceOptions.model_validate(service.options)
        except ValidationError as exc:
            problems += config_issues("options.", exc)
        for name, op in service.operations.items():
            try:
                opts = RestOperationOptions.model_validate(op.options)
            except ValidationError as exc:
                problems += config_issues(f"operations.{name}.options.", exc)
                continue
            problems += _operation_problems(service, name, opts)
        return problems

    async def create(
        self, service_name: str, service: ServiceConfig, upstream: UpstreamConfig
    ) -> Adapter:
        """Open the upstream session and build the adapter."""
        options = RestServiceOptions.model_validate(service.options)
        routes = {}
        for name, op in service.operations.items():
            opts = RestOperationOptions.model_validate(op.options)
            model = operation_model(service, name, opts)
            routes[name] = _Route(opts, model, _split(opts.path))
        http = await UpstreamHttp.open(upstream)
        return RestAdapter(service_name, options, routes, http)


KIND = RestKind()
"""The registered kind."""
