"""Who is calling through X-Road: a trusted security server, and the client it names (pure).

``X-Road-Client`` (REST) and the SOAP ``client`` header are assertions of the security
server that relayed the message; the bus believes them only from a peer listed under
``provider.security_servers`` (its verified mTLS certificate by subject or fingerprint, or,
in a sandbox, its address). The client id then names a consumer by ``xroad_client``, and
that consumer's rights apply.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from bus.config import RoutingConfig
from bus.config.access import parse_subject
from bus.config.provider import ProviderSettings
from bus.errors import Forbidden, NotFoundError
from bus.gateway.server import peer_certificate

__all__ = ["caller_of", "provider_of", "require_trusted_peer"]


def provider_of(config: RoutingConfig) -> ProviderSettings:
    """The provider settings; ``404 NOT_FOUND`` when the bus serves no X-Road callers."""
    if config.provider is None:
        raise NotFoundError("this bus serves no X-Road callers", code="NOT_FOUND")
    return config.provider


def require_trusted_peer(request: web.BaseRequest, provider: ProviderSettings) -> None:
    """``403 XROAD_UNTRUSTED_PEER`` unless the peer is a configured security server."""
    cert = peer_certificate(request)
    remote = request.remote
    address = None
    if remote:
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            address = None
    for server in provider.security_servers:
        if server.address is not None:
            if address is not None and address in ipaddress.ip_network(server.address, False):
                return
        elif cert is not None:
            if server.sha256 is not None and cert.sha256 == server.sha256:
                return
            if server.subject is not None and cert.subject == parse_subject(server.subject):
                return
    raise Forbidden(
        "X-Road identities are accepted only from a configured security server",
        code="XROAD_UNTRUSTED_PEER",
    )


def caller_of(config: RoutingConfig, client: str) -> str:
    """The consumer whose ``xroad_client`` is ``client``; ``403 XROAD_CLIENT_UNKNOWN`` if none."""
    for name, consumer in config.consumers.items():
        if consumer.xroad_client == client:
            return name
    raise Forbidden("this X-Road client is not known here", code="XROAD_CLIENT_UNKNOWN")
