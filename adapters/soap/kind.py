"""The generic ``soap`` adapter kind: a SOAP 1.1 upstream configured in ``routing.yaml`` alone.

Per call: validate the canonical request (it crossed the broker), map it to the WSDL
operation's input (:mod:`adapters.generic.mapping`), build the envelope with zeep
(:mod:`adapters.common.soap`, WS-Security from the upstream's auth if it is ``wsse``), POST it
through :class:`~adapters.http.UpstreamHttp` within the call's deadline, read the reply
through the hardened XML parser, and map it back. The WSDL is a local file, parsed off
the loop when the worker starts; it is never fetched from the network. Config::

    services:
      business-registry:
        adapter: soap
        upstream: dkkd
        options:
          wsdl: /etc/lgsp-bus/wsdl/dkkd/BusinessRegistry.wsdl   # absolute path
          service: BusinessRegistryService       # optional if the WSDL has one
          port: EnterpriseSoap11Port             # optional if it has one SOAP 1.1 port
          faults: {detail_code: Code, transient: [SYSTEM_BUSY], auth: [AUTH_DENIED]}
        operations:
          lookup:
            options:
              operation: GetEnterpriseInfo
              fields: {enterprise_code: {required: true, pattern: '^[0-9]{10}$'}}
              request: {Caller.RequestId: request_id, EnterpriseCode: enterprise_code}
              response: {enterprise.name: Enterprise.NameVi}
              not_found: {path: Enterprise, when: missing}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from adapters.base import Adapter, CallContext
from adapters.common.auth import SoapSecurity
from adapters.common.http import UpstreamHttp
from adapters.common.soap import SoapCodec, SoapFault, WsdlError
from adapters.generic.mapping import apply_rules
from adapters.generic.shared import (
    DeclaredModels,
    answer,
    app_status_error,
    config_issues,
    is_not_found,
    operation_model,
    prepare_call,
)
from adapters.generic.transforms import MappingError
from adapters.soap.check import operation_problems
from adapters.soap.options import SoapOperationOptions, SoapServiceOptions
from bus.canonical import CanonicalRequest
from bus.config import ServiceConfig, UpstreamConfig
from bus.errors import InvalidRequest, UpstreamBadResponse

__all__ = ["KIND", "SoapAdapter", "SoapKind", "SoapOperationOptions", "SoapServiceOptions"]

log = structlog.get_logger("adapters.soap.kind")


@dataclass(frozen=True, slots=True)
class _Route:
    options: SoapOperationOptions
    model: type[CanonicalRequest]
    headers: Mapping[str, str]


class SoapAdapter:
    """Calls one SOAP upstream for one service; safe for concurrent calls."""

    def __init__(
        self,
        service_name: str,
        options: SoapServiceOptions,
        routes: Mapping[str, _Route],
        codec: SoapCodec,
        http: UpstreamHttp,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._service = service_name
        self._source = options.source or service_name
        self._routes = routes
        self._codec = codec
        self._http = http
        self._url = http.url("")
        self._clock = clock
        auth = http.auth
        self._security = auth if isinstance(auth, SoapSecurity) else None

    async def call(
        self, operation: str, request: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """Run ``operation`` against the upstream; the canonical answer or a bus error."""
        route, canonical, context = prepare_call(
            self._service, self._routes, operation, request, ctx.correlation_id, self._clock()
        )
        opts = route.options
        try:
            body = apply_rules(opts.request, canonical, context)
        except MappingError as exc:
            raise InvalidRequest(f"cannot send this request: {exc}", code="INVALID_FIELD") from None
        payload = self._codec.build(opts.operation, body, self._security)
        started = time.perf_counter()
        result = await self._http.request(
            "POST", self._url, timeout=ctx.remaining(), data=payload, headers=route.headers
        )
        out = self._answer(
            opts, self._codec.read(opts.operation, result.status, result.body), context
        )
        log.debug(
            "soap.upstream_call",
            service=self._service,
            upstream_operation=opts.operation,
            http_status=result.status,
            outcome=out["status"],
            upstream_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return out

    def _answer(
        self, opts: SoapOperationOptions, reply: dict[str, Any] | SoapFault, context: Any
    ) -> dict[str, Any]:
        if isinstance(reply, SoapFault):
            if opts.not_found is not None and reply.matches(opts.not_found.faults):
                return answer(False, self._source)
            raise self._codec.faults.error(reply)
        status = app_status_error(opts.app_status, reply, self._source)
        if status == "not_found" or (status == "ok" and is_not_found(opts.not_found, reply)):
            return answer(False, self._source)
        if status != "ok":
            raise status
        try:
            return answer(True, self._source, apply_rules(opts.response, reply, context))
        except MappingError as exc:
            raise UpstreamBadResponse(f"{self._source} sent an unusable reply: {exc}") from None

    async def aclose(self) -> None:
        """Close the upstream session."""
        await self._http.aclose()


class SoapKind(DeclaredModels):
    """Adapter kind ``soap`` (registered as ``adapters.soap.kind:KIND``)."""

    operation_options = SoapOperationOptions

    name = "soap"

    def __init__(self) -> None:
        # Parsed WSDLs by file identity: config checks and worker start share one parse,
        # and a config reload that leaves the file alone does not parse it again.
        self._codecs: dict[tuple[Any, ...], SoapCodec] = {}

    def _codec(self, options: SoapServiceOptions, what: str) -> SoapCodec:
        """The parsed WSDL (blocking on a cache miss: workers call it off the loop)."""
        path = Path(options.wsdl)
        try:
            stat = path.stat()
        except OSError:
            raise WsdlError(f"WSDL file {path} does not exist or cannot be read") from None
        faults = options.fault_policy(what)
        key = (str(path), stat.st_mtime_ns, stat.st_size, options.service, options.port, faults)
        codec = self._codecs.get(key)
        if codec is None:
            codec = SoapCodec.from_wsdl(path, faults, service=options.service, port=options.port)
            if len(self._codecs) >= 32:
                self._codecs.pop(next(iter(self._codecs)))
            self._codecs[key] = codec
        return codec

    def check(self, service_name: str, service: ServiceConfig) -> list[str]:
        """Options, the WSDL (file, service/port, operations) and every mapping against it."""
        problems: list[str] = []
        options: SoapServiceOptions | None = None
        try:
            options = SoapServiceOptions.model_validate(service.options)
        except ValidationError as exc:
            problems += config_issues("options.", exc)
        ops: dict[str, SoapOperationOptions] = {}
        for name, op in service.operations.items():
            try:
                ops[name] = SoapOperationOptions.model_validate(op.options)
            except ValidationError as exc:
                problems += config_issues(f"operations.{name}.options.", exc)
        if options is None:
            return problems
        try:
            codec = self._codec(options, options.source or service_name)
        except WsdlError as exc:
            return [*problems, f"options.wsdl: {exc}"]
        for name, opts in ops.items():
            problems += operation_problems(service_name, service, name, opts, codec)
        return problems

    async def create(
        self, service_name: str, service: ServiceConfig, upstream: UpstreamConfig
    ) -> Adapter:
        """Parse the WSDL off the loop, open the upstream session, return the adapter."""
        options = SoapServiceOptions.model_validate(service.options)
        codec = await asyncio.to_thread(self._codec, options, options.source or service_name)
        headers = {**options.headers, "Content-Type": options.content_type}
        headers["Accept"] = "text/xml, application/xml"
        routes = {}
        for name, op in service.operations.items():
            opts = SoapOperationOptions.model_validate(op.options)
            action = opts.soap_action
            if action is None:
                action = codec.soap_action(opts.operation)
            if not action.startswith('"'):
                action = f'"{action}"'  # SOAP 1.1 §6.1.1: the header is a quoted URI
            model = operation_model(service, name, opts)
            routes[name] = _Route(opts, model, {**headers, "SOAPAction": action})
        http = await UpstreamHttp.open(upstream)
        return SoapAdapter(service_name, options, routes, codec, http)


KIND = SoapKind()
"""The registered kind."""
