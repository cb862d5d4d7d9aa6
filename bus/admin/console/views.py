"""What the read-only pages show, as plain data (the JSON API returns exactly this).

:func:`overview` — per service the last hour's traffic and 5xx (:mod:`bus.admin.console.traffic`),
its upstream's breaker and its queue/DLQ depth; broker, store and audit-writer health;
the config version and the last reload. :func:`services` — every service and operation
with upstream, timeout, retry, breaker and audit policy. :func:`access` — the grant
matrix (consumer × service × operation, field and sensitive grants) and each consumer's
credentials (label and expiry, never the key), rate limit and usage since start.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from bus.audit.observer import audit_policy
from bus.broker.base import Broker
from bus.config import RoutingConfig
from bus.config.access import parse_expiry
from bus.errors import BusError
from bus.gateway.security import EXPIRY_WARNING, allowed_operations
from bus.observe.metrics import Metrics
from bus.reload.reloader import ConfigReloader

from .traffic import TrafficHistory, chart

__all__ = ["access", "merged_readiness", "overview", "queue_depths", "services"]

_DEPTH_TIMEOUT_S = 2.0


def merged_readiness(reloader: ConfigReloader) -> dict[str, Any]:
    """Every ``/readyz`` detail provider of this process, merged."""
    out: dict[str, Any] = {}
    for provider in list(reloader.handles.readiness):
        try:
            out.update(provider())
        except Exception as exc:  # one broken provider must not take the page down
            out.setdefault("problems", []).append(type(exc).__name__)
    return out


async def queue_depths(broker: Broker | None, names: list[str]) -> dict[str, dict[str, int]]:
    """Service → ``{"queued": n, "dead": n}`` (services the broker cannot count are left out)."""
    if broker is None:
        return {}

    async def one(name: str) -> tuple[str, tuple[int, int] | None]:
        try:
            async with asyncio.timeout(_DEPTH_TIMEOUT_S):
                return name, await broker.message_counts(name)
        except (BusError, TimeoutError):
            return name, None

    found = await asyncio.gather(*(one(n) for n in names))
    return {n: {"queued": c[0], "dead": c[1]} for n, c in found if c is not None}


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


async def overview(reloader: ConfigReloader, traffic: TrafficHistory) -> dict[str, Any]:
    """The overview page's data."""
    config = reloader.config
    ready = merged_readiness(reloader)
    breakers: dict[str, Any] = ready.get("breakers", {})
    broker = reloader.handles.broker
    depths = await queue_depths(broker, sorted(config.services))
    rows = []
    for name, svc in sorted(config.services.items()):
        requests, errors = traffic.series(name)
        drawn = chart(requests, errors)
        rows.append(
            {
                "service": name,
                "upstream": svc.upstream,
                "breaker": breakers.get(svc.upstream, {}).get("state", "unknown"),
                "traffic": drawn.to_dict(),
                "chart": drawn,
                "queue": depths.get(name),
            }
        )
    audit = ready.get("audit")
    return {
        "services": rows,
        "broker": {"connected": bool(broker is not None and broker.ready)},
        "store": ready.get("store"),
        "audit": audit,
        "rate_limit": ready.get("rate_limit"),
        "config": reloader.readiness()["config"],
        "generated_at": _when(datetime.now(UTC).timestamp()),
    }


def _retry(policy: Any) -> dict[str, Any]:
    return {
        "attempts": policy.attempts,
        "backoff_initial_s": policy.backoff_initial_s,
        "backoff_max_s": policy.backoff_max_s,
        "budget_s": policy.budget_s,
    }


def services(config: RoutingConfig) -> list[dict[str, Any]]:
    """Every service and operation with what governs it."""
    out = []
    for name, svc in sorted(config.services.items()):
        upstream = config.upstreams[svc.upstream]
        breaker = upstream.breaker
        out.append(
            {
                "service": name,
                "adapter": svc.adapter,
                "upstream": svc.upstream,
                "url": upstream.url,
                "personal_data": svc.personal_data,
                "audit": audit_policy(config, name),
                "breaker": {
                    "enabled": breaker.enabled,
                    "window_s": breaker.window_s,
                    "failure_ratio": breaker.failure_ratio,
                    "open_s": breaker.open_s,
                },
                "operations": [
                    {
                        "operation": op_name,
                        "timeout_s": op.timeout_s,
                        "idempotent": op.idempotent,
                        "retry": _retry(op.retry),
                    }
                    for op_name, op in sorted(svc.operations.items())
                ],
            }
        )
    return out


def _usage(metrics: Metrics | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    if metrics is None:
        return counts
    for family in metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                who = sample.labels.get("consumer", "-")
                counts[who] = counts.get(who, 0) + int(sample.value)
    return counts


def _key_rows(consumer: Any, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for i, key in enumerate(consumer.api_keys):
        expires = parse_expiry(key.expires) if key.expires else None
        state = "valid"
        if expires is not None and expires <= now:
            state = "expired"
        elif expires is not None and expires - now < EXPIRY_WARNING:
            state = "expiring"
        rows.append(
            {
                "label": key.label or f"key-{i}",
                "kind": "reference" if key.key is not None else "sha256",
                "expires": expires.isoformat(timespec="seconds") if expires else None,
                "state": state,
            }
        )
    rows += [
        {"label": f"cert-{i}", "kind": "client_cert", "expires": None, "state": "valid"}
        for i, _ in enumerate(consumer.client_certs)
    ]
    return rows


def access(config: RoutingConfig, metrics: Metrics | None) -> dict[str, Any]:
    """The grant matrix and each consumer's credentials, limits and usage."""
    now = datetime.now(UTC)
    usage = _usage(metrics)
    columns = [
        {"service": s, "operation": op}
        for s, svc in sorted(config.services.items())
        for op in sorted(svc.operations)
    ]
    consumers = []
    for name, consumer in sorted(config.consumers.items()):
        allowed = allowed_operations(config, name)
        limit = consumer.rate_limit
        consumers.append(
            {
                "consumer": name,
                "description": consumer.description,
                "grants": [c["operation"] in allowed.get(c["service"], []) for c in columns],
                "fields": {s: list(f) for s, f in sorted(consumer.fields.items())},
                "sensitive": {s: list(f) for s, f in sorted(consumer.sensitive.items())},
                "credentials": _key_rows(consumer, now),
                "rate_limit": None
                if limit is None
                else {"rate_per_s": limit.rate_per_s, "burst": limit.burst},
                "requests_since_start": usage.get(name, 0),
            }
        )
    return {"columns": columns, "consumers": consumers}
