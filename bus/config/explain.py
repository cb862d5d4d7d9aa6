"""The dry run of one call: what the bus would do for consumer × service × operation (pure).

:func:`explain` follows the gateway's own order — authenticate, find the service and the
operation, authorise — using the same ACL code (:func:`bus.security.authorize`), so its
answer is the gateway's answer; then it gathers what governs the call: adapter, upstream,
queue, timeout, retry policy, breaker, audit policy, rate limit, and the consumer's other
per-service settings (field grants …). Policies are found by walking the models from the
most specific level (operation → service → upstream → consumer → whole file), so settings
added to ``routing.yaml`` later show up without changes here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from bus.config import RoutingConfig
from bus.config.access import authorize, parse_expiry
from bus.config.rules import retry_waits
from bus.envelope import REPLY_MARGIN_S
from bus.errors import BusError

__all__ = ["POLICIES", "Explanation", "explain", "render_table"]

POLICIES: dict[str, tuple[str, ...]] = {
    "breaker": ("breaker", "circuit"),
    "audit": ("audit",),
    "rate_limit": ("rate_limit", "ratelimit"),
}
"""Policy name → words a field name holds when it configures that policy."""

RESOLVERS: dict[str, str] = {"audit": "bus.audit.observer:audit_policy"}
"""Policies whose unset value has a computed default: ``module:function(config, service)``."""


@dataclass
class Explanation:
    """What the gateway and worker would do with one call (``allowed`` or the error)."""

    consumer: str
    service: str
    operation: str
    allowed: bool
    status: int
    """The HTTP status before the body is looked at: 200 if allowed, else 401/403/404."""
    code: str | None
    reason: str
    grant: str | None = None
    adapter: str | None = None
    upstream: dict[str, Any] | None = None
    queue: str | None = None
    routing_key: str | None = None
    timeout_s: float | None = None
    deadline_cap_s: float | None = None
    worker_budget_s: float | None = None
    retry: dict[str, Any] | None = None
    idempotent: bool | None = None
    personal_data: bool | None = None
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """breaker / audit / rate_limit → ``{"source": yaml path, "value": …}`` or not set."""
    consumer_settings: dict[str, Any] = field(default_factory=dict)
    """The consumer's other settings for this service (e.g. ``fields``, ``sensitive``)."""
    xroad: list[dict[str, Any]] = field(default_factory=list)
    """The X-Road serviceCodes (``provider.services``) that call this operation, the
    consumer's X-Road client id and whether that client may call them."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``config explain --json``)."""
        return asdict(self)


def _denied(base: dict[str, Any], status: int, code: str, reason: str) -> Explanation:
    return Explanation(**base, allowed=False, status=status, code=code, reason=reason)


def _can_authenticate(config: RoutingConfig, consumer: str) -> str | None:
    """Why no credential can authenticate as ``consumer`` (``None``: some can)."""
    spec = config.consumers.get(consumer)
    if spec is None:
        return f"no consumer {consumer!r} in this file: no key can authenticate as it"
    if getattr(spec, "client_certs", None):
        return None
    if spec.xroad_client is not None and config.provider is not None:
        return None  # an X-Road caller: its security server vouches for it
    if not spec.api_keys:
        return f"consumer {consumer!r} has no api_keys: it cannot authenticate"
    now = datetime.now(UTC)
    if all(k.expires is not None and parse_expiry(k.expires) <= now for k in spec.api_keys):
        return f"every api key of consumer {consumer!r} has expired"
    return None


def explain(config: RoutingConfig, consumer: str, service: str, operation: str) -> Explanation:
    """The decision and the policies for one call, in the gateway's order of checks."""
    base: dict[str, Any] = {"consumer": consumer, "service": service, "operation": operation}
    why_not = _can_authenticate(config, consumer)
    if why_not is not None:
        return _denied(base, 401, "UNAUTHENTICATED", why_not)
    svc = config.services.get(service)
    if svc is None:
        return _denied(base, 404, "UNKNOWN_SERVICE", f"no service {service!r} in this file")
    op = svc.operations.get(operation)
    if op is None:
        known = ", ".join(svc.operations)
        return _denied(
            base, 404, "UNKNOWN_OPERATION", f"{service} has no operation {operation!r} ({known})"
        )
    granted = config.consumers[consumer].allow.get(service)
    grant = f"consumers.{consumer}.allow.{service}: [{', '.join(granted)}]" if granted else None
    try:
        authorize(config, consumer, service, operation)
    except BusError as exc:
        reason = (
            f"consumer {consumer} has no grant for {service}"
            if not granted
            else f"{grant} does not include {operation!r}"
        )
        result = _denied(base, exc.status, exc.code, reason)
        result.grant = grant
    else:
        result = Explanation(**base, allowed=True, status=200, code=None, reason="granted")
        result.grant = grant
    _describe(result, config)
    _describe_xroad(result, config)
    return result


def _describe_xroad(result: Explanation, config: RoutingConfig) -> None:
    """The provider services (X-Road serviceCodes) this call is published under."""
    if config.provider is None:
        return
    client = config.consumers[result.consumer].xroad_client
    for code, spec in config.provider.services.items():
        if (spec.service, spec.operation) == (result.service, result.operation):
            result.xroad.append(
                {
                    "service_code": code,
                    "version": spec.version,
                    "service_id": f"{config.provider.member}/{code}/{spec.version}",
                    "client": client,
                    "allowed": result.allowed and client is not None,
                }
            )


def _describe(result: Explanation, config: RoutingConfig) -> None:
    """Fill in how the call would be carried (also for a denied call: what it would do)."""
    svc = config.services[result.service]
    op = svc.operations[result.operation]
    upstream = config.upstreams.get(svc.upstream)
    result.adapter = svc.adapter
    if upstream is not None:
        result.upstream = {
            "name": svc.upstream,
            "url": upstream.url,
            "auth": upstream.auth.kind,
            "verify_tls": upstream.verify_tls,
            "connect_timeout_s": upstream.connect_timeout_s,
        }
    result.queue = f"lgsp.svc.{result.service}"
    result.routing_key = f"{result.service}.{result.operation}"
    result.timeout_s = op.timeout_s
    result.deadline_cap_s = config.gateway.max_deadline_s
    result.worker_budget_s = round(op.timeout_s - REPLY_MARGIN_S, 3)
    result.retry = {
        **op.retry.model_dump(mode="json"),
        "waits_s": round(retry_waits(op.retry), 3),
        "waits_with_jitter_s": round(retry_waits(op.retry, with_jitter=True), 3),
    }
    result.idempotent = op.idempotent
    result.personal_data = svc.personal_data
    levels = list(_levels(config, result))
    for policy, words in POLICIES.items():
        found = _find(levels, words, result)
        if found["value"] is None and policy in RESOLVERS:
            found = _resolved(RESOLVERS[policy], config, result.service, found)
        result.policies[policy] = found
    consumer = config.consumers.get(result.consumer)
    if consumer is not None:
        for name in type(consumer).model_fields:
            value = getattr(consumer, name)
            if name != "allow" and isinstance(value, Mapping) and result.service in value:
                result.consumer_settings[name] = _plain(value[result.service])


def _levels(config: RoutingConfig, result: Explanation) -> Iterator[tuple[str, BaseModel]]:
    svc = config.services[result.service]
    yield (
        f"services.{result.service}.operations.{result.operation}",
        svc.operations[result.operation],
    )
    yield f"services.{result.service}", svc
    if svc.upstream in config.upstreams:
        yield f"upstreams.{svc.upstream}", config.upstreams[svc.upstream]
    if result.consumer in config.consumers:
        yield f"consumers.{result.consumer}", config.consumers[result.consumer]
    yield "", config


def _find(
    levels: list[tuple[str, BaseModel]], words: tuple[str, ...], result: Explanation
) -> dict[str, Any]:
    """The most specific setting whose field name holds one of ``words``."""
    names = {result.service, result.operation, result.consumer}
    for where, model in levels:
        for name in type(model).model_fields:
            if not any(word in name for word in words):
                continue
            value = getattr(model, name)
            source = f"{where}.{name}" if where else name
            if not where and isinstance(value, Mapping):
                # A file-wide table keyed by name: take this call's entry, else its default.
                hits = [k for k in value if k in names] or [k for k in value if k == "default"]
                if not hits:
                    continue
                source, value = f"{source}.{hits[0]}", value[hits[0]]
            return {"source": source, "value": _plain(value)}
    return {"source": None, "value": None}


def _resolved(
    target: str, config: RoutingConfig, service: str, found: dict[str, Any]
) -> dict[str, Any]:
    """The computed default of an unset policy (the same function the bus uses)."""
    module_name, _, name = target.partition(":")
    try:
        resolve = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return found
    unset = f"{found['source']} not set" if found["source"] else "not set"
    return {"source": f"default; {unset}", "value": _plain(resolve(config, service))}


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_inline(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_table(e: Explanation) -> str:
    """The explanation as an operator reads it."""
    verdict = "ALLOWED" if e.allowed else f"DENIED — {e.status} {e.code}"
    rows: list[tuple[str, str]] = [("decision", f"{verdict}: {e.reason}")]
    if e.grant is not None:
        rows.append(("grant", e.grant))
    if e.adapter is not None:
        rows.append(("adapter", e.adapter))
        if e.upstream is not None:
            up = e.upstream
            tls = "" if str(up["url"]).startswith("http:") else f", verify_tls {up['verify_tls']}"
            rows.append(("upstream", f"{up['name']} → {up['url']} (auth {up['auth']}{tls})"))
        rows.append(("queue", f"{e.queue}, routing key {e.routing_key}"))
        rows.append(
            (
                "timeout",
                f"{e.timeout_s:g} s (cap {e.deadline_cap_s:g} s; a caller's X-Lgsp-Timeout-Ms "
                f"may shorten it; the worker gives the upstream {e.worker_budget_s:g} s)",
            )
        )
        retry = e.retry or {}
        rows.append(
            (
                "retry",
                f"{retry.get('attempts')} attempts, backoff {retry.get('backoff_initial_s'):g} s "
                f"doubling to {retry.get('backoff_max_s'):g} s, jitter ≤ "
                f"{retry.get('jitter_s'):g} s; waits {retry.get('waits_s'):g}–"
                f"{retry.get('waits_with_jitter_s'):g} s in all; "
                f"{'idempotent' if e.idempotent else 'not idempotent'}",
            )
        )
        for policy, found in e.policies.items():
            label = policy.replace("_", " ")
            if found["source"] is None:
                rows.append((label, "not configured"))
            else:
                rows.append((label, f"{_inline(found['value'])}  ({found['source']})"))
        rows.append(("personal data", "yes" if e.personal_data else "no"))
        for name, value in e.consumer_settings.items():
            rows.append((name, _inline(value)))
        for x in e.xroad:
            who = f"client {x['client']}" if x["client"] else "no xroad_client"
            verdict = "may call" if x["allowed"] else "may not call"
            rows.append(("x-road", f"{x['service_id']} ({who} {verdict} it)"))
    width = max(len(label) for label, _ in rows)
    head = f"consumer {e.consumer} → {e.service}/{e.operation}"
    return "\n".join([head, *(f"  {label:<{width}}  {text}" for label, text in rows)])
