"""The routing.yaml the bus runs on in the benchmark: the shipped one, pointed at the run.

Pure functions over the YAML mapping (no processes): :func:`bench_config` keeps every
feature the shipped file turns on — API keys, ACL, validation, audit, retries, breakers,
metrics — and changes only what a loopback run must:

* the civil-status and population upstreams point at the run's simulators;
* services of other adapter kinds are dropped (the run has no upstream for them), and so
  are consumers other than the one the load uses;
* every secret becomes an ``env:`` reference the harness fills with a random value (the
  simulators get the same values);
* a consumer ``rate_limit`` is raised far above any load the run can offer, so the limiter
  still runs but never answers 429; gateway TLS is removed (the load speaks plain HTTP).

Each change is listed in :attr:`BenchConfig.adjustments`, which goes into the report.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "API_KEY_ENV",
    "CIVIL_TOKEN_ENV",
    "POPULATION_SECRET_ENV",
    "BenchConfig",
    "BenchConfigError",
    "bench_config",
    "features",
    "set_path",
]

API_KEY_ENV = "LGSP_BENCH_API_KEY"
CIVIL_TOKEN_ENV = "LGSP_SIM_CIVIL_STATUS_TOKEN"  # noqa: S105 - a variable name
"""The variable ``lgsp-bus sim civil-status`` reads its bearer token from."""
POPULATION_SECRET_ENV = "LGSP_SIM_POPULATION_SECRET"  # noqa: S105 - a variable name
"""The variable ``lgsp-bus sim population`` reads its C06 secret from."""
CIVIL_ADAPTER, POPULATION_ADAPTER = "civil_status", "population_db"
UNLIMITED_RATE = {"rate_per_s": 100_000, "burst": 1_000_000}


class BenchConfigError(ValueError):
    """The shipped routing.yaml lacks something the benchmark needs."""


@dataclass
class BenchConfig:
    """The config to write, where the load goes, and what was changed."""

    data: dict[str, Any]
    consumer: str
    civil_service: str
    population_service: str | None
    population_username: str
    env: dict[str, str] = field(default_factory=dict)
    """Every ``env:`` secret the config refers to, with a value for this run."""
    adjustments: list[str] = field(default_factory=list)


def _allows(consumer: Mapping[str, Any], service: str, operation: str) -> bool:
    ops = (consumer.get("allow") or {}).get(service) or []
    return operation in ops or "*" in ops


def _env_refs(node: Any) -> Iterator[str]:
    if isinstance(node, str) and node.startswith("env:"):
        yield node[4:]
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _env_refs(value)


def bench_config(  # noqa: C901 (ARCHITECTURE.md)
    shipped: Mapping[str, Any],
    *,
    civil_url: str,
    population_url: str | None,
) -> BenchConfig:
    """The shipped config with upstreams at the simulators and secrets from the run."""
    data: dict[str, Any] = copy.deepcopy(dict(shipped))
    services: dict[str, Any] = data.get("services") or {}
    upstreams: dict[str, Any] = data.get("upstreams") or {}
    notes: list[str] = []
    by_kind: dict[str, str] = {}
    for name, svc in list(services.items()):
        kind = svc.get("adapter")
        if kind in (CIVIL_ADAPTER, POPULATION_ADAPTER) and kind not in by_kind:
            by_kind[kind] = name
        else:
            del services[name]
            notes.append(f"service {name} ({kind}) dropped: no simulator for it in the run")
    if CIVIL_ADAPTER not in by_kind:
        raise BenchConfigError("the shipped routing.yaml has no civil_status service")
    civil = by_kind[CIVIL_ADAPTER]
    population = by_kind.get(POPULATION_ADAPTER) if population_url else None
    if population is None and POPULATION_ADAPTER in by_kind:
        del services[by_kind[POPULATION_ADAPTER]]
        notes.append(f"service {by_kind[POPULATION_ADAPTER]} dropped: no SOAP target in the run")

    username = "lgsp-demo"
    for name, svc in services.items():
        up = upstreams.get(svc["upstream"])
        if up is None:
            raise BenchConfigError(f"service {name} names an unknown upstream")
        auth = up.get("auth") or {}
        if name == civil:
            up["url"] = civil_url
            if auth.get("kind") != "bearer":
                raise BenchConfigError("the civil-status upstream must use bearer auth")
            auth["token"] = f"env:{CIVIL_TOKEN_ENV}"
        else:
            assert population_url is not None
            up["url"] = population_url
            if auth.get("kind") != "c06":
                raise BenchConfigError("the population upstream must use c06 auth")
            auth["secret"] = f"env:{POPULATION_SECRET_ENV}"
            username = str(auth.get("username", username))
        up["allow_plain_http"] = True
    used = {svc["upstream"] for svc in services.values()}
    for name in [n for n in upstreams if n not in used]:
        del upstreams[name]

    consumers: dict[str, Any] = data.get("consumers") or {}
    wanted = [(civil, "lookup")] + ([(population, "lookup")] if population else [])
    chosen = next(
        (n for n, c in consumers.items() if all(_allows(c, s, o) for s, o in wanted)), None
    )
    if chosen is None:
        raise BenchConfigError("no consumer of the shipped routing.yaml may call every target")
    for name in [n for n in consumers if n != chosen]:
        del consumers[name]
        notes.append(f"consumer {name} dropped (the load calls as {chosen})")
    consumer = consumers[chosen]
    consumer["api_keys"] = [{"key": f"env:{API_KEY_ENV}"}]
    for kind in ("allow", "fields", "sensitive"):
        grants = consumer.get(kind)
        if isinstance(grants, dict):
            for service in [s for s in grants if s not in services]:
                del grants[service]
    if consumer.get("rate_limit"):
        consumer["rate_limit"] = dict(UNLIMITED_RATE)
        notes.append(f"consumers.{chosen}.rate_limit raised to {UNLIMITED_RATE} (still runs)")
    gateway = data.get("gateway") or {}
    if gateway.get("tls"):
        del gateway["tls"]
        notes.append("gateway.tls removed: the load generator speaks plain HTTP on loopback")

    env = {name: secrets.token_urlsafe(18) for name in sorted(set(_env_refs(data)))}
    return BenchConfig(
        data=data,
        consumer=chosen,
        civil_service=civil,
        population_service=population,
        population_username=username,
        env=env,
        adjustments=notes,
    )


def features(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the config turns on, for the report (read from the YAML, not the code)."""
    consumers = data.get("consumers") or {}
    services = data.get("services") or {}
    retries = {
        f"{s}.{o}": op.get("retry")
        for s, svc in services.items()
        for o, op in (svc.get("operations") or {}).items()
        if op.get("retry") is not None
    }
    breakers = {n: up.get("breaker") for n, up in (data.get("upstreams") or {}).items()}
    default_policy = (data.get("audit") or {}).get("default_policy", "fail_open")
    # As the bus derives it: the service's own policy, else fail_closed for personal data.
    audit_policy = {
        s: svc.get("audit") or ("fail_closed" if svc.get("personal_data", True) else default_policy)
        for s, svc in services.items()
    }
    return {
        "api_key_auth": any(c.get("api_keys") for c in consumers.values()),
        "acl": any(c.get("allow") for c in consumers.values()),
        "audit": data.get("audit"),
        "audit_policy": audit_policy,
        "metrics": data.get("metrics"),
        "retries": retries or "defaults of the code",
        "breakers": {k: v for k, v in breakers.items() if v is not None} or "defaults",
        "rate_limit": {n: c.get("rate_limit") for n, c in consumers.items()},
        "prefetch": (data.get("broker") or {}).get("prefetch"),
    }


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested mapping (creating mappings on the way); ``None`` deletes."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BenchConfigError(f"{dotted}: {part} is not a mapping")
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
