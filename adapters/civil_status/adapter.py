"""The ``civil_status`` adapter kind: MOJ civil-status lookups over one shared HTTP session.

One operation, ``lookup``: the canonical :class:`CivilStatusLookup` becomes a ``GET`` on the
record type's MOJ path; the MOJ reply becomes a :class:`CivilStatusLookupResult`. Mapping of
failures into :mod:`bus.errors`:

* HTTP 401/403 → ``UpstreamAuthFailed``; 408/504 and our own timeout → ``UpstreamTimeout``;
  429/502/503 and connection failures → ``UpstreamUnavailable``; other 4xx →
  ``UpstreamRejected`` (via :func:`adapters.http.error_for_status`);
* ``status`` other than ``"1"`` → ``UpstreamRejected`` with the MOJ's reason, scrubbed of
  anything that looks like the query's personal data;
* malformed JSON or unreadable records → ``UpstreamBadResponse``;
* an empty ``data`` list → a normal ``NOT_FOUND`` answer.

The HTTP timeout is the call's remaining time minus ``deadline_margin_s``, so the caller
hears ``UPSTREAM_TIMEOUT`` before the gateway's deadline passes. Retries belong to the
worker. Service options (``routing.yaml``, all optional)::

    options:
      paths: {BIRTH: api/hotich/khaisinh, MARRIAGE: api/hotich/kethon, DEATH: api/hotich/khaitu}
      date_style: dd/MM/yyyy        # or yyyyMMdd, dd.MM.yyyy — how query dates are spelled
      deadline_margin_s: 0.2
      data_source: MOJ_CIVIL_STATUS
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.base import CallContext
from adapters.civil_status.mapping import DEFAULT_PATHS, MojFormatError, lookup_result, query_params
from adapters.civil_status.models import CivilStatusLookup, CivilStatusLookupResult, RecordType
from adapters.common.dates import MojDateStyle
from adapters.common.http import HttpResult, UpstreamHttp, error_for_status
from bus.canonical import validation_error
from bus.config import ServiceConfig, UpstreamConfig
from bus.errors import InvalidRequest, UpstreamBadResponse, UpstreamRejected

__all__ = [
    "KIND",
    "OPERATIONS",
    "CivilStatusAdapter",
    "CivilStatusKind",
    "CivilStatusOptions",
    "scrub_reason",
]

OPERATIONS = frozenset({"lookup"})
_WHAT = "MOJ civil-status DB"
_PATH_RE = re.compile(r"^/?[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*/?\Z")
_LONG_DIGITS_RE = re.compile(r"[0-9][0-9./-]{4,}[0-9]")
_MAX_REASON = 200

log = structlog.get_logger("adapters.civil_status")


class CivilStatusOptions(BaseModel):
    """``services.<name>.options`` of a ``civil_status`` service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: dict[RecordType, str] = Field(
        default_factory=dict, description="MOJ path per record type, relative to the upstream"
    )
    date_style: MojDateStyle = MojDateStyle.SLASH
    deadline_margin_s: float = Field(
        0.2, ge=0, le=5, description="kept back from the deadline for the reply's way home"
    )
    data_source: str = Field("MOJ_CIVIL_STATUS", min_length=1, max_length=64)

    @field_validator("paths")
    @classmethod
    def _relative(cls, paths: dict[RecordType, str]) -> dict[RecordType, str]:
        for record_type, path in paths.items():
            # Relative paths only: the upstream's URL (and its TLS/auth) is config, not options.
            if not _PATH_RE.match(path) or ".." in path.split("/"):
                raise ValueError(
                    f"{record_type}: a path is relative (no scheme, host, query or '..')"
                )
        return paths

    def path_for(self, record_type: RecordType) -> str:
        """The MOJ path of ``record_type``."""
        return self.paths.get(record_type, DEFAULT_PATHS[record_type])


def scrub_reason(reason: Any, lookup: CivilStatusLookup) -> str:
    """An upstream's refusal text, safe to show and log: no IDs, dates or the query's names."""
    text = reason if isinstance(reason, str) else ""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _LONG_DIGITS_RE.sub("***", text)
    words: set[str] = set()
    if lookup.by_person is not None and lookup.by_person.full_name:
        # Mask each part of the name: the upstream may echo it in any order or case.
        words.update(w for w in lookup.by_person.full_name.split() if len(w) > 1)
    for word in sorted(words, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", "***", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 1] + "…"
    return text or "no reason given"


class CivilStatusAdapter:
    """Calls the MOJ civil-status DB for one service."""

    def __init__(self, service_name: str, http: UpstreamHttp, options: CivilStatusOptions) -> None:
        self.service_name = service_name
        self._http = http
        self._options = options

    async def call(
        self, operation: str, request: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """Perform ``lookup``; the answer is a :class:`CivilStatusLookupResult` as JSON."""
        if operation not in OPERATIONS:
            raise InvalidRequest(
                f"civil_status has no operation {operation!r}", code="UNKNOWN_OPERATION"
            )
        try:
            lookup = CivilStatusLookup.model_validate(request)
        except ValidationError as exc:
            raise validation_error(exc) from None
        started = time.perf_counter()
        result = await self._http.request(
            "GET",
            self._http.url(self._options.path_for(lookup.record_type)),
            timeout=ctx.remaining() - self._options.deadline_margin_s,
            params=query_params(lookup, self._options.date_style),
            headers={"Accept": "application/json", "X-Request-ID": ctx.request_id},
        )
        answer = self._answer(lookup, result)
        log.debug(
            "civil_status.lookup",
            record_type=lookup.record_type.value,
            query="by_person" if lookup.by_person else "by_registration",
            status=answer.status.value,
            match_count=answer.match_count,
            upstream_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return answer.model_dump(mode="json")

    def _answer(self, lookup: CivilStatusLookup, result: HttpResult) -> CivilStatusLookupResult:
        if result.status != 200:
            error = error_for_status(result.status, _WHAT)
            if isinstance(error, UpstreamRejected):
                reason = _reason_of(result)
                if reason is not None:
                    reason = scrub_reason(reason, lookup)
                    raise UpstreamRejected(f"{_WHAT} rejected the request: {reason}")
            raise error
        body = result.json()
        if not isinstance(body, dict) or "status" not in body:
            raise UpstreamBadResponse(f"{_WHAT} answered without a status")
        if str(body["status"]) != "1":
            reason = scrub_reason(body.get("errorDescription"), lookup)
            raise UpstreamRejected(f"{_WHAT} refused the lookup: {reason}")
        data = body.get("data")
        if data is None:
            data = []
        if not isinstance(data, list) or not all(isinstance(rec, dict) for rec in data):
            raise UpstreamBadResponse(f"{_WHAT} answered with data that is not a list of records")
        try:
            return lookup_result(lookup.record_type, data, self._options.data_source)
        except MojFormatError as exc:
            # The message names the field only; the record itself is personal data.
            raise UpstreamBadResponse(f"{_WHAT} sent an unreadable record: {exc}") from None
        except ValidationError:
            raise UpstreamBadResponse(f"{_WHAT} sent an unreadable record") from None

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._http.aclose()


def _reason_of(result: HttpResult) -> Any:
    try:
        body = result.json()
    except UpstreamBadResponse:
        return None
    return body.get("errorDescription") if isinstance(body, dict) else None


class CivilStatusKind:
    """The ``civil_status`` adapter kind (registered as ``adapters.civil_status:KIND``)."""

    name: str = "civil_status"

    def check(self, service_name: str, service: ServiceConfig) -> list[str]:
        """Problems with a ``civil_status`` service's config, for an operator."""
        problems: list[str] = []
        margin = CivilStatusOptions().deadline_margin_s
        try:
            margin = CivilStatusOptions.model_validate(service.options).deadline_margin_s
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                where = ".".join(str(part) for part in err["loc"])
                problems.append(f"options.{where}: {err['msg']}")
        for op_name, op in service.operations.items():
            if op_name not in OPERATIONS:
                known = ", ".join(sorted(OPERATIONS))
                problems.append(
                    f"operations.{op_name}: civil_status has no such operation ({known})"
                )
                continue
            if op.options:
                problems.append(f"operations.{op_name}.options: civil_status takes none here")
            if op.timeout_s <= margin:
                problems.append(
                    f"operations.{op_name}.timeout_s must exceed options.deadline_margin_s"
                )
        return problems

    def request_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """:class:`CivilStatusLookup` for ``lookup``."""
        if operation not in OPERATIONS:
            raise InvalidRequest(
                f"civil_status has no operation {operation!r}", code="UNKNOWN_OPERATION"
            )
        return CivilStatusLookup

    def reply_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """:class:`CivilStatusLookupResult` for ``lookup``."""
        self.request_model(service, operation)  # the same unknown-operation error
        return CivilStatusLookupResult

    async def create(
        self, service_name: str, service: ServiceConfig, upstream: UpstreamConfig
    ) -> CivilStatusAdapter:
        """Open the upstream session and build the adapter."""
        options = CivilStatusOptions.model_validate(service.options)
        http = await UpstreamHttp.open(upstream)
        return CivilStatusAdapter(service_name, http, options)


KIND = CivilStatusKind()
"""The kind object the registry loads."""
