"""The queue policies (``broker.*``), applied through RabbitMQ's management HTTP API.

The AMQP protocol cannot set a policy, so the bus uses the management API the
``rabbitmq_management`` plugin serves (on the first node of a cluster's URL list that
answers): ``LGSP_AMQP_MANAGEMENT_URL`` (default ``http://<AMQP host>:15672``), with the
AMQP URL's user and password (which needs the ``policymaker`` or ``administrator`` tag)
and the AMQP URL's vhost. ``PUT /api/policies/<vhost>/<name>`` is idempotent: applying
the same policy again changes nothing, a changed ``broker.*`` setting changes the
running queues in place.

Where the API is off, unreachable or refuses the user, the bus says so once (a warning
naming the reason) and goes on: the policies must then come from elsewhere —
``deploy/rabbitmq/definitions.json`` carries them under the same names, or ``rabbitmqctl
set_policy``. The worker's own delivery limit (``x-delivery-count``) holds either way.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import structlog

from bus.broker.base import QueuePolicy

__all__ = ["MANAGEMENT_ENV", "apply_policies", "management_url"]

log = structlog.get_logger("bus.broker.amqp.policies")

MANAGEMENT_ENV = "LGSP_AMQP_MANAGEMENT_URL"
TIMEOUT_S = 5.0


def management_url(amqp_url: str) -> str | None:
    """The management API's base URL: ``$LGSP_AMQP_MANAGEMENT_URL`` (``none``: do not use
    it), else port 15672 on the AMQP host (https for ``amqps``)."""
    configured = os.environ.get(MANAGEMENT_ENV, "").strip()
    if configured.lower() in ("none", "off"):
        return None
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    return f"{scheme}://{parts.hostname or '127.0.0.1'}:15672"


async def apply_policies(amqp_urls: Sequence[str], policies: Sequence[QueuePolicy]) -> bool:
    """PUT each policy into the AMQP URL's vhost, through the first cluster node whose
    management API takes them; ``False`` (logged once) if none did."""
    reasons: list[str] = []
    for amqp_url in amqp_urls:
        base = management_url(amqp_url)
        if base is None:
            log.info("broker.policies_external", reason=f"{MANAGEMENT_ENV}=none")
            return False
        reason = await _put(base, amqp_url, policies)
        if reason is None:
            return True
        reasons.append(f"{base}: {reason}")
    return _not_applied("; ".join(reasons))


async def _put(base: str, amqp_url: str, policies: Sequence[QueuePolicy]) -> str | None:
    """``None`` once every policy is in; else why not."""
    parts = urlsplit(amqp_url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            for policy in policies:
                url = f"{base}/api/policies/{quote(vhost, safe='')}/{quote(policy.name, safe='')}"
                body = {
                    "pattern": policy.pattern,
                    "definition": policy.definition,
                    "priority": policy.priority,
                    "apply-to": policy.apply_to,
                }
                async with session.put(url, json=body) as response:
                    if response.status not in (200, 201, 204):
                        return f"HTTP {response.status} for {policy.name}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return type(exc).__name__
    log.info("broker.policies_applied", vhost=vhost, policies=[p.name for p in policies])
    return None


def _not_applied(reason: str) -> bool:
    log.warning(
        "broker.policies_not_applied",
        reason=reason,
        hint="the queue limits (broker.*) must come from deploy/rabbitmq/definitions.json or "
        f"rabbitmqctl set_policy; or enable rabbitmq_management and give the bus's user the "
        f"policymaker tag; {MANAGEMENT_ENV}=none silences this",
    )
    return False
