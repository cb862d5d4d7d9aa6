"""Rules about where the bus listens: the admin listener is never plain HTTP on the network.

``admin.port`` moves ``/admin/*`` (keys, console sessions, reports) to a listener of its
own. It serves HTTPS with ``admin.tls``, else with ``gateway.tls``; without either it must
be bound to a loopback address, or ``admin.allow_plain_http: true`` must say that a
TLS-terminating proxy stands in front (``ADMIN_PLAIN_HTTP`` otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bus.config.delivery import is_loopback

if TYPE_CHECKING:
    from bus.config.models import GatewayTls, RoutingConfig

__all__ = ["ADMIN_PLAIN_HTTP", "admin_tls", "listener_problems"]

ADMIN_PLAIN_HTTP = "ADMIN_PLAIN_HTTP"


def admin_tls(config: RoutingConfig) -> GatewayTls | None:
    """The TLS settings of the admin listener: its own, else the gateway's."""
    return config.admin.tls or config.gateway.tls


def listener_problems(config: RoutingConfig) -> list[str]:
    """A plain-HTTP admin listener on a non-loopback address, unless explicitly allowed."""
    admin = config.admin
    if admin.port is None or admin_tls(config) is not None or admin.allow_plain_http:
        return []
    if is_loopback(admin.host or "127.0.0.1"):
        return []
    return [
        f"admin.host {admin.host} would serve /admin/* over plain HTTP ({ADMIN_PLAIN_HTTP}): "
        "set admin.tls or gateway.tls, bind admin.host to a loopback address, or set "
        "admin.allow_plain_http: true behind a TLS-terminating proxy"
    ]
