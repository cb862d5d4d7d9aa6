"""The ``population_db`` adapter kind: C06 citizen lookup/verify over SOAP 1.1.

Per call: validate the canonical request again (it crossed the broker), map it to C06
(:mod:`.mapping`), build the envelope with zeep (:mod:`.codec`), POST it through the shared
:class:`~adapters.http.UpstreamHttp` within the call's deadline, read the reply through the
hardened parser, and map it back. zeep's WSDL is parsed once, off the loop, at start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from adapters.base import Adapter, CallContext, config_issues
from adapters.common.auth import SoapSecurity
from adapters.common.http import UpstreamHttp
from adapters.population_db.codec import C06Codec
from adapters.population_db.mapping import lookup_reply, to_c06, verify_reply
from adapters.population_db.models import (
    OperationOptions,
    PopulationLookup,
    PopulationVerify,
    ServiceOptions,
    model_for,
    reply_for,
)
from bus.canonical import validation_error
from bus.config import ServiceConfig, UpstreamConfig, resolve_secret
from bus.config.secretlike import is_credential_name
from bus.errors import NotFoundError

__all__ = ["KIND", "PopulationDbAdapter", "PopulationDbKind"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Route:
    c06_operation: str
    options: OperationOptions
    model: type[PopulationLookup] | type[PopulationVerify]


def _routes(service: ServiceConfig) -> dict[str, _Route]:
    out = {}
    for name, op in service.operations.items():
        options = OperationOptions.model_validate(op.options)
        c06 = options.resolve(name)
        out[name] = _Route(c06, options, model_for(c06))
    return out


class PopulationDbAdapter:
    """Calls C06 for one service; safe for concurrent calls."""

    def __init__(
        self,
        service_name: str,
        options: ServiceOptions,
        routes: dict[str, _Route],
        codec: C06Codec,
        http: UpstreamHttp,
    ) -> None:
        self._service = service_name
        self._options = options
        self._routes = routes
        self._codec = codec
        self._http = http
        self._url = http.url("")
        auth = http.auth
        self._security = auth if isinstance(auth, SoapSecurity) else None
        self._headers = {
            **{
                name: resolve_secret(value) if is_credential_name(name) else value
                for name, value in options.extra_headers.items()
            },
            "Content-Type": options.content_type,
            "SOAPAction": options.soap_action,
            "Accept": "text/xml, application/xml",
        }

    async def call(
        self, operation: str, request: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """Run ``operation`` (``lookup``/``verify`` or as configured) against C06."""
        route = self._routes.get(operation)
        if route is None:
            raise NotFoundError(
                f"{self._service} has no operation {operation!r}", code="UNKNOWN_OPERATION"
            )
        try:
            model = route.model.model_validate(request)
        except ValidationError as exc:
            raise validation_error(exc) from None
        payload = self._codec.build(
            route.c06_operation, to_c06(model, self._options, route.options), self._security
        )
        started = time.perf_counter()
        result = await self._http.request(
            "POST", self._url, timeout=ctx.remaining(), data=payload, headers=self._headers
        )
        reply = self._codec.parse(route.c06_operation, result.status, result.body)
        if isinstance(model, PopulationLookup):
            accent_insensitive = self._options.name_match == "accent_insensitive"
            out = lookup_reply(
                model,
                reply,
                accent_insensitive=accent_insensitive,
                reveal_mismatch=self._options.reveal_mismatch,
            )
        else:
            out = verify_reply(model, reply)
        out["correlation_id"] = ctx.correlation_id
        log.debug(
            "population.upstream_call",
            service=self._service,
            c06_operation=route.c06_operation,
            http_status=result.status,
            outcome=out["status"],
            upstream_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return out

    async def aclose(self) -> None:
        """Close the upstream session."""
        await self._http.aclose()


class PopulationDbKind:
    """Adapter kind ``population_db`` (registered as ``adapters.population_db:KIND``)."""

    name = "population_db"

    def check(self, service_name: str, service: ServiceConfig) -> list[str]:
        """Problems with the service's ``options`` and operations' ``options``."""
        problems: list[str] = []
        try:
            ServiceOptions.model_validate(service.options)
        except ValidationError as exc:
            problems += config_issues("options.", exc)
        for name, op in service.operations.items():
            try:
                OperationOptions.model_validate(op.options).resolve(name)
            except ValidationError as exc:
                problems += config_issues(f"operations.{name}.options.", exc)
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def request_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """:class:`PopulationLookup` or :class:`PopulationVerify`, by the C06 operation."""
        return _routes(service)[operation].model

    def reply_model(self, service: ServiceConfig, operation: str) -> type[BaseModel]:
        """The answer's model, by the C06 operation."""
        return reply_for(_routes(service)[operation].c06_operation)

    async def create(
        self, service_name: str, service: ServiceConfig, upstream: UpstreamConfig
    ) -> Adapter:
        """Parse the WSDL off the loop, open the upstream session, return the adapter."""
        options = ServiceOptions.model_validate(service.options)
        routes = _routes(service)
        codec = await asyncio.to_thread(C06Codec.load)
        http = await UpstreamHttp.open(upstream)
        return PopulationDbAdapter(service_name, options, routes, codec, http)


KIND = PopulationDbKind()
"""The registered kind."""
