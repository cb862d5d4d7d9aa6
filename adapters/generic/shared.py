"""What the generic ``soap`` and ``rest`` kinds share, besides the mapping itself (pure).

* :class:`OperationMapping` — operation options common to both: the declared request
  ``fields``, ``accountable``, the ``response`` mapping, ``not_found`` and ``app_status``;
* :class:`NotFoundRule` — which answers mean "no such record": a normal ``NOT_FOUND``
  answer, never an error (an HTTP status, a SOAP fault code, or a shape of the reply);
* :class:`AppStatusRule` — a result code inside an HTTP 200 answer (``{"status": "0"}``);
* the canonical answer: ``{"status": "FOUND"|"NOT_FOUND", "source": …, <mapped fields>}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from adapters.base import config_issues
from adapters.common.dates import VN_TZ
from adapters.generic.mapping import MISSING, Rules, get_path, steps_of
from adapters.generic.reqschema import FieldSpec, request_model
from adapters.generic.transforms import SAFE_CODE, jsonable, scalar_text
from bus.canonical import CanonicalRequest, validation_error
from bus.config import ServiceConfig
from bus.config.secretlike import INLINE_SECRET, is_credential_name
from bus.errors import (
    NotFoundError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)

__all__ = [
    "AppStatusRule",
    "DeclaredModels",
    "NotFoundRule",
    "OperationMapping",
    "ServiceMapping",
    "StaticHeaders",
    "answer",
    "app_status_error",
    "config_issues",
    "context_values",
    "header_problems",
    "is_not_found",
    "operation_model",
    "prepare_call",
]

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
# Credentials come from the upstream's auth (secret references), never from headers written
# into routing.yaml; framing headers belong to the HTTP client.
_FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
    }
)


def header_problems(names: Mapping[str, Any], where: str) -> list[str]:
    """Header names that are malformed or that the bus must set itself."""
    problems = []
    for name in names:
        if not _HEADER_NAME.fullmatch(name):
            problems.append(f"{where}.{name}: not an HTTP header name")
        elif name.lower() in _FORBIDDEN_HEADERS:
            problems.append(
                f"{where}.{name}: set by the bus (credentials come from the upstream's auth)"
            )
        elif is_credential_name(name):
            problems.append(
                f"{where}.{name}: {INLINE_SECRET}: looks like a credential header; "
                "credentials come from the upstream's auth (secret references)"
            )
    return problems


def _static_headers(headers: dict[str, str]) -> dict[str, str]:
    problems = header_problems(headers, "headers")
    problems += [
        f"headers.{k}: a value is one line of text" for k, v in headers.items() if "\n" in v
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return headers


StaticHeaders = Annotated[dict[str, str], AfterValidator(_static_headers)]
"""Fixed headers sent on every call (e.g. X-Road-Client); never credentials."""


class NotFoundRule(BaseModel):
    """Which answers mean "no such record" (a normal ``NOT_FOUND`` answer, not an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(None, description="upstream path looked at (none: the whole reply)")
    when: Literal["missing", "empty", "equals"] = Field(
        "empty", description="missing: absent; empty: absent or without any value; equals: value"
    )
    value: str | int | bool | None = Field(None, description="for when: equals")
    status: list[Annotated[int, Field(ge=200, le=599)]] = Field(
        default_factory=list, description="REST: HTTP statuses meaning not found, e.g. [404]"
    )
    faults: list[str] = Field(
        default_factory=list, description="SOAP: fault codes (faultcode or detail code)"
    )

    @model_validator(mode="after")
    def _valid(self) -> NotFoundRule:
        if self.path is not None:
            steps_of(self.path)  # refuses a malformed path now
        if (self.when == "equals") != (self.value is not None):
            raise ValueError("'value' goes with when: equals, and only with it")
        return self

    def matches(self, reply: Any) -> bool:
        """True if ``reply`` (a parsed answer) means "not found" by the path rule."""
        if self.path is None and not self.model_fields_set & {"path", "when"}:
            return False  # only status/fault codes were given
        value = reply if self.path is None else get_path(reply, steps_of(self.path))
        if self.when == "missing":
            return value is MISSING
        if self.when == "empty":
            return _empty(value)
        return value is not MISSING and scalar_text(value) == scalar_text(self.value)


def _empty(value: Any) -> bool:
    if value is MISSING or value is None or value == "" or value == [] or value == {}:
        return True
    if isinstance(value, Mapping):
        return all(_empty(v) for v in value.values())
    if isinstance(value, list):
        return all(_empty(v) for v in value)
    return False


def is_not_found(rule: NotFoundRule | None, reply: Any) -> bool:
    """:meth:`NotFoundRule.matches`, false without a rule."""
    return rule is not None and rule.matches(reply)


class AppStatusRule(BaseModel):
    """An answer-level result code, for upstreams that say "error" inside an HTTP 200."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="where the code is, e.g. status or /result/code")
    ok: list[str] = Field(min_length=1, description="codes meaning success")
    not_found: list[str] = Field(default_factory=list, description="codes meaning not found")
    transient: list[str] = Field(
        default_factory=list, description="codes meaning retry later (UPSTREAM_UNAVAILABLE)"
    )

    @model_validator(mode="after")
    def _valid(self) -> AppStatusRule:
        steps_of(self.path)  # refuses a malformed path now
        return self


def app_status_error(
    rule: AppStatusRule | None, reply: Any, what: str
) -> UpstreamError | Literal["ok", "not_found"]:
    """``ok``, ``not_found``, or the error an answer's result code amounts to."""
    if rule is None:
        return "ok"
    code = get_path(reply, steps_of(rule.path))
    text = None if code is MISSING else scalar_text(code)
    if text in rule.ok:
        return "ok"
    if text in rule.not_found:
        return "not_found"
    # The code is kept only if it looks like one: the upstream's text may carry personal data.
    shown = f" (code {text})" if text is not None and SAFE_CODE.fullmatch(text) else ""
    detail = {"upstream_code": text} if shown else None
    if text in rule.transient:
        return UpstreamUnavailable(f"{what} is temporarily unavailable{shown}", detail=detail)
    return UpstreamRejected(f"{what} refused the request{shown}", detail=detail)


class ServiceMapping(BaseModel):
    """Service options both generic kinds share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(
        None, min_length=1, max_length=64, description="the answers' source (default: service)"
    )
    headers: StaticHeaders = Field(
        default_factory=dict, description="fixed headers on every call (never credentials)"
    )


class OperationMapping(BaseModel):
    """Operation options both generic kinds share: request schema, answer mapping, not found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, FieldSpec] = Field(
        default_factory=dict, description="the operation's own request fields (canonical)"
    )
    accountable: bool | None = Field(
        None,
        description="require caller.officer_id, purpose.procedure_code and dossier_id "
        "(default: the service's personal_data)",
    )
    response: Rules = Field(default_factory=dict, description="answer field ← upstream path")
    not_found: NotFoundRule | None = None
    app_status: AppStatusRule | None = None


class _Routed(Protocol):
    @property
    def model(self) -> type[BaseModel]:
        """The operation's request model."""
        ...


RouteT = TypeVar("RouteT", bound=_Routed)


def prepare_call(
    service: str,
    routes: Mapping[str, RouteT],
    operation: str,
    request: Mapping[str, Any],
    correlation_id: str,
    now: datetime,
) -> tuple[RouteT, dict[str, Any], dict[str, str]]:
    """The operation's route, the request re-validated by its model, and the ``$…`` sources.

    Shared by the generic kinds: the body crossed the broker, so it is validated again here.
    """
    route = routes.get(operation)
    if route is None:
        raise NotFoundError(f"{service} has no operation {operation!r}", code="UNKNOWN_OPERATION")
    try:
        canonical = route.model.model_validate(request).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return route, canonical, context_values(correlation_id, now)


def context_values(correlation_id: str, now: datetime) -> dict[str, str]:
    """The ``$…`` sources of one call (``now`` in Vietnam time)."""
    local = now.astimezone(VN_TZ)
    return {
        "$now": local.isoformat(timespec="seconds"),
        "$today": local.date().isoformat(),
        "$correlation_id": correlation_id,
    }


def answer(found: bool, source: str, mapped: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The canonical answer: ``status`` FOUND/NOT_FOUND, ``source``, the mapped fields."""
    out: dict[str, Any] = {"status": "FOUND" if found else "NOT_FOUND", "source": source}
    if found and mapped:
        out.update(jsonable(dict(mapped)))
    return out


def answer_model(
    service: ServiceConfig, operation: str, options: OperationMapping
) -> type[BaseModel]:
    """The answer's model (:func:`answer`): ``status``, ``source`` and each top-level target
    of the declared ``response`` rules (their types are the upstream's, so left open)."""
    targets = sorted({re.split(r"[.\[]", target, maxsplit=1)[0] for target in options.response})
    fields: dict[str, Any] = {
        "status": (Literal["FOUND", "NOT_FOUND"], ...),
        "source": (str, ...),
        **{name: (Any, None) for name in targets if name not in ("status", "source")},
    }
    name = "".join(
        p[:1].upper() + p[1:] for p in re.split(r"[-_]", f"{service.upstream}-{operation}")
    )
    return create_model(f"{name}Answer", **fields)


def operation_model(
    service: ServiceConfig, operation: str, options: OperationMapping
) -> type[CanonicalRequest]:
    """The request model of one operation (accountable by default for personal data)."""
    accountable = service.personal_data if options.accountable is None else options.accountable
    return request_model(f"{service.upstream}-{operation}", options.fields, accountable=accountable)


class DeclaredModels:
    """``request_model``/``reply_model`` of a generic kind: both come from the operation's
    declared options, parsed with the kind's own :attr:`operation_options` class."""

    operation_options: ClassVar[type[OperationMapping]]

    def request_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """The strict model of the operation's declared ``fields``."""
        opts = self.operation_options.model_validate(service.operations[operation].options)
        return operation_model(service, operation, opts)

    def reply_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """The answer's model: ``status``, ``source`` and the declared ``response`` targets."""
        opts = self.operation_options.model_validate(service.operations[operation].options)
        return answer_model(service, operation, opts)
