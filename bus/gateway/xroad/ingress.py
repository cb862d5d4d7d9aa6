"""The X-Road ingress handlers: ``POST /xroad`` (SOAP, message protocol 4.0) and
``/r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{serviceCode}`` (REST, PR-REST r1).

Order of checks, before anything is forwarded: the peer is a configured security server
(``XROAD_UNTRUSTED_PEER``); the message is well formed (SOAP 1.1 only, hardened parsing,
``gateway.max_body_bytes``); the X-Road headers are present and well formed; the client
names a consumer (``XROAD_CLIENT_UNKNOWN``); the service names this bus's subsystem and a
published serviceCode/version (``UNKNOWN_SERVICE``); then :func:`~bus.gateway.xroad.call.serve`.
SOAP failures are rendered as Faults by :func:`soap_error`; REST ones in the gateway's JSON
error shape, both with ``X-Road-Request-Hash``/``requestHash`` once the body was read.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from lxml import etree
from pydantic import BaseModel

from bus.config import RoutingConfig
from bus.config.provider import ProviderService, ProviderSettings
from bus.errors import (
    BusError,
    InvalidRequest,
    NotFoundError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from bus.gateway.jsonbody import json_object
from bus.gateway.pipeline import BODY_HASH, CORRELATION_ID, EXCHANGE, XROAD, xroad_reply_headers
from bus.gateway.runtime import GATEWAY
from bus.gateway.xroad import meta, soap
from bus.gateway.xroad.call import serve
from bus.gateway.xroad.trust import caller_of, provider_of, require_trusted_peer
from bus.gateway.xroad.wsdl import ENVELOPE_FIELDS, coerce
from bus.xroad import CLIENT, XRoadIdentity, request_hash

__all__ = [
    "ROUTES",
    "SOAP_HEADERS",
    "add_routes",
    "faults",
    "rest_call",
    "rest_meta",
    "soap_call",
    "soap_error",
]

SOAP_HEADERS = web.RequestKey("xroad_soap_headers", tuple)
"""The X-Road header elements of a parsed SOAP request (echoed on a Fault too)."""


async def _read(request: web.Request) -> bytes:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("request body is too large") from None
    request[BODY_HASH] = request_hash(raw)
    return raw


def _published(
    provider: ProviderSettings, member: str, code: str, version: str | None
) -> ProviderService:
    spec = provider.services.get(code)
    if member != provider.member or spec is None or (version and version != spec.version):
        raise NotFoundError("no such service is published here", code="UNKNOWN_SERVICE")
    return spec


def _identity(message: soap.XRoadMessage) -> XRoadIdentity:
    headers = {"X-Road-Client": message.client, "X-Road-Id": message.message_id}
    if message.user_id is not None:
        headers["X-Road-UserId"] = message.user_id
    return XRoadIdentity.from_headers(headers)


async def soap_call(request: web.Request) -> web.Response:
    """``POST /xroad``: an X-Road SOAP request (a provider service or a metaservice)."""
    gateway = request.app[GATEWAY]
    rt = gateway.runtime
    provider = provider_of(rt.config)
    require_trusted_peer(request, provider)
    if request.content_type == "application/soap+xml":
        raise InvalidRequest(
            "SOAP 1.2 is not accepted: X-Road 4.0 is SOAP 1.1", code="INVALID_SOAP"
        )
    if request.content_type not in ("text/xml", "application/xml"):
        raise UnsupportedMediaType("send the X-Road request as text/xml (SOAP 1.1)")
    raw = await _read(request)
    message = soap.parse_message(raw, max_bytes=rt.config.gateway.max_body_bytes)
    request[SOAP_HEADERS] = message.headers
    xroad = _identity(message)
    request[XROAD] = xroad
    consumer = caller_of(rt.config, message.client)
    exchange = request[EXCHANGE]
    exchange.consumer = consumer
    ns = provider.namespace
    if message.provider == provider.member and message.service_code in meta.SOAP_METASERVICES:
        payload = meta.soap_metaservice(
            rt, consumer, message.service_code, message.body, _address(request)
        )
        exchange.service, exchange.operation = "xroad", message.service_code
    else:
        spec = _published(provider, message.provider, message.service_code, message.service_version)
        if etree.QName(message.body).text != f"{{{ns}}}{message.service_code}":
            raise InvalidRequest(
                "the Body element is not this service's (name or namespace)", code="INVALID_SOAP"
            )
        body = _typed(
            rt.models[(spec.service, spec.operation)], soap.read_element(message.body, ns)
        )
        out = await serve(
            request, gateway, rt, exchange, consumer=consumer, spec=spec, body=body, xroad=xroad
        )
        first = {k: out[k] for k in ENVELOPE_FIELDS if k in out}  # the WSDL's order
        payload = soap.element(f"{{{ns}}}{message.service_code}Response", {**first, **out})
    data = soap.answer(message.headers, request[BODY_HASH], payload)
    return web.Response(body=data, content_type="text/xml", charset="utf-8")


@functools.lru_cache(maxsize=256)
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """A request model's JSON schema, built once per model (a reload brings new models)."""
    return model.model_json_schema()


def _typed(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    schema = _schema(model)
    typed = coerce(body, schema, schema.get("$defs", {}))
    assert isinstance(typed, dict)
    return typed


def _address(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/xroad"


def soap_error(request: web.Request, error: BusError) -> web.Response:
    """A bus error as the SOAP Fault an X-Road caller gets (HTTP 500, as SOAP 1.1 says)."""
    body = soap.fault(error, request.get(SOAP_HEADERS, ()), request.get(BODY_HASH))
    return web.Response(body=body, status=500, content_type="text/xml", charset="utf-8")


def _rest_identity(request: web.Request, config: RoutingConfig) -> tuple[str, XRoadIdentity]:
    provider = provider_of(config)
    require_trusted_peer(request, provider)
    xroad = XRoadIdentity.from_headers(request.headers)
    request[XROAD] = xroad
    if xroad.client is None:
        raise InvalidRequest(f"{CLIENT} is required", code="MISSING_XROAD_HEADER")
    return caller_of(config, xroad.client), xroad


def _member(request: web.Request) -> str:
    m = request.match_info
    return "/".join((m["instance"], m["mclass"], m["member"], m["subsystem"]))


async def rest_call(request: web.Request) -> web.Response:
    """``POST /r1/{provider subsystem}/{serviceCode}``: the canonical JSON request."""
    gateway = request.app[GATEWAY]
    rt = gateway.runtime
    consumer, xroad = _rest_identity(request, rt.config)
    exchange = request[EXCHANGE]
    exchange.consumer = consumer
    assert rt.config.provider is not None
    spec = _published(rt.config.provider, _member(request), request.match_info["code"], None)
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the request as application/json")
    body = json_object(await _read(request), "request body")
    out = await serve(
        request, gateway, rt, exchange, consumer=consumer, spec=spec, body=body, xroad=xroad
    )
    headers = {"X-Request-Id": request[CORRELATION_ID], **xroad_reply_headers(request)}
    return web.Response(body=orjson.dumps(out), content_type="application/json", headers=headers)


async def rest_meta(request: web.Request) -> web.Response:
    """``GET /r1/{provider subsystem}/listMethods|allowedMethods|getOpenAPI``."""
    rt = request.app[GATEWAY].runtime
    consumer, _ = _rest_identity(request, rt.config)
    provider = provider_of(rt.config)
    if _member(request) != provider.member:
        raise NotFoundError("no such service is published here", code="UNKNOWN_SERVICE")
    data = meta.rest_metaservice(
        rt,
        consumer,
        request.match_info["code"],
        request.query.get("serviceCode"),
        str(request.url.origin()),
    )
    return web.json_response(data, dumps=lambda v: orjson.dumps(v).decode())


SOAP_ROUTE, REST_ROUTE = "xroad-soap", "xroad-rest"
ROUTES = (SOAP_ROUTE, REST_ROUTE)
"""Route names of the X-Road calls (observed and counted in flight like ``call``)."""


@web.middleware
async def faults(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Between the error and in-flight middlewares: SOAP call failures become Faults."""
    if request.match_info.route.name != SOAP_ROUTE:
        return await handler(request)
    try:
        return await handler(request)
    except BusError as exc:
        return soap_error(request, exc)
    except web.HTTPRequestEntityTooLarge:
        return soap_error(request, PayloadTooLarge("request body is too large"))


def add_routes(app: web.Application) -> None:
    """The X-Road routes, named as the app's middlewares know them (observed calls)."""
    app.router.add_post("/xroad", soap_call, name=SOAP_ROUTE)
    r1 = "/r1/{instance}/{mclass}/{member}/{subsystem}/{code}"
    app.router.add_post(r1, rest_call, name=REST_ROUTE)
    app.router.add_get(r1, rest_meta)
