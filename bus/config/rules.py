"""Operator rules over a whole routing config, beyond what each model checks by itself.

The schema (``bus/config/models.py``) says what a field may hold; these rules say what a province's
operators get wrong across fields: an operation timeout over the gateway's deadline cap, a
retry policy whose waits alone outlast the timeout, one key shared by two consumers or by a
consumer and an admin. :func:`config_errors` runs on every load (start and reload),
:func:`config_warnings` in ``config validate`` and on reload (logged, never fatal), and
:func:`with_reference_errors` adds the cross-reference errors the schema could not reach
when it failed, so one run of ``config validate`` shows every error at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from bus.config.access import parse_expiry
from bus.config.atrest import atrest_warnings
from bus.config.keys import key_problems
from bus.config.kinds import KindCatalog
from bus.config.models import (
    ApiKey,
    GatewaySettings,
    OperationConfig,
    RetryPolicy,
    RoutingConfig,
    check_secret_ref,
    resolve_secret,
)
from bus.config.source import ConfigIssue, PathKey, YamlDocument

__all__ = [
    "config_errors",
    "config_warnings",
    "retry_waits",
    "secret_errors",
    "secret_references",
    "with_reference_errors",
]

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def retry_waits(policy: RetryPolicy, *, with_jitter: bool = False) -> float:
    """Seconds a policy waits between its attempts, as ``bus.worker.resilience`` waits (tenacity's
    ``wait_exponential_jitter``): ``backoff_initial_s · 2ⁿ``, plus the worst-case jitter
    when asked, each wait capped at ``backoff_max_s``."""
    jitter = policy.jitter_s if with_jitter else 0.0
    return sum(
        min(policy.backoff_initial_s * 2.0**k + jitter, policy.backoff_max_s)
        for k in range(policy.attempts - 1)
    )


def _available_s(op: OperationConfig) -> tuple[float, str]:
    """The time a retry plan may use, and the setting that limits it."""
    budget = getattr(op.retry, "budget_s", None)
    if isinstance(budget, int | float) and budget < op.timeout_s:
        return float(budget), "retry.budget_s"
    return op.timeout_s, "timeout_s"


def _operations(config: RoutingConfig) -> Iterator[tuple[PathKey, OperationConfig]]:
    for sname, svc in config.services.items():
        for oname, op in svc.operations.items():
            yield ("services", sname, "operations", oname), op


def _fmt(seconds: float) -> str:
    return f"{seconds:g} s"


def config_errors(config: RoutingConfig, doc: YamlDocument | None) -> list[ConfigIssue]:
    """Cross-field mistakes that make a config unusable; each located in the file."""
    issues: list[ConfigIssue] = []
    cap = config.gateway.max_deadline_s
    for path, op in _operations(config):
        if op.timeout_s > cap:
            issues.append(
                ConfigIssue.at(
                    doc,
                    (*path, "timeout_s"),
                    f"timeout_s {_fmt(op.timeout_s)} is longer than the gateway's deadline cap "
                    f"(gateway.max_deadline_s = {_fmt(cap)}): shorten it or raise the cap",
                )
            )
        available, limit = _available_s(op)
        waits = retry_waits(op.retry)
        if op.retry.attempts > 1 and waits >= available:
            issues.append(
                ConfigIssue.at(
                    doc,
                    (*path, "retry", "attempts"),
                    f"retry waits {_fmt(round(waits, 3))} between its {op.retry.attempts} "
                    f"attempts, but {limit} is {_fmt(available)}: the last attempts could never "
                    "run; use fewer attempts, shorter backoff, or a longer timeout",
                )
            )
    issues += _shared_key_errors(config, doc)
    admin = config.admin
    if admin.host is not None and admin.port is None:
        issues.append(ConfigIssue.at(doc, ("admin", "host"), "admin.host needs admin.port as well"))
    return issues


def _key_id(key: ApiKey) -> str:
    return f"key {key.key}" if key.key is not None else f"sha256 {str(key.sha256)[:12]}…"


def _shared_key_errors(config: RoutingConfig, doc: YamlDocument | None) -> list[ConfigIssue]:
    """A key names exactly one consumer, and an admin key is never a consumer's key.

    (Digests shared by two consumers are reported by ``bus/accessconfig.py``.)"""
    issues: list[ConfigIssue] = []
    owners: dict[str, str] = {}
    for cname, consumer in config.consumers.items():
        seen: set[str] = set()
        for index, key in enumerate(consumer.api_keys):
            if key.key is None:
                ident = f"sha256:{key.sha256}"
                owners.setdefault(ident, cname)
                continue
            ident = key.key
            path = ("consumers", cname, "api_keys", index, "key")
            other = owners.setdefault(ident, cname)
            if other != cname and ident not in seen:
                issues.append(
                    ConfigIssue.at(
                        doc,
                        path,
                        f"the key reference {key.key} is also consumer {other}'s: a key must "
                        "identify exactly one consumer",
                    )
                )
            seen.add(ident)
    for index, admin_key in enumerate(config.admin.api_keys):
        ident = admin_key.key or f"sha256:{admin_key.sha256}"
        if ident in owners:
            issues.append(
                ConfigIssue.at(
                    doc,
                    ("admin", "api_keys", index),
                    f"admin key {admin_key.name!r} ({_key_id(admin_key)}) is also consumer "
                    f"{owners[ident]}'s key: admin credentials must be separate",
                )
            )
    return issues


def config_warnings(config: RoutingConfig, doc: YamlDocument | None) -> list[ConfigIssue]:  # noqa: C901 (ARCHITECTURE.md)
    """Legal but probably unintended settings (the bus still runs with them)."""
    issues: list[ConfigIssue] = []
    used = {svc.upstream for svc in config.services.values()}
    callable_services = {s for c in config.consumers.values() for s, ops in c.allow.items() if ops}
    now = datetime.now(UTC)
    for uname, upstream in config.upstreams.items():
        where: PathKey = ("upstreams", uname)
        if uname not in used:
            issues.append(ConfigIssue.at(doc, where, "no service uses this upstream"))
        host = urlsplit(upstream.url).hostname
        if not upstream.verify_tls and host not in _LOOPBACK:
            issues.append(
                ConfigIssue.at(
                    doc,
                    (*where, "verify_tls"),
                    "TLS verification is off: anyone on the network path can pose as this "
                    "national database",
                )
            )
    for sname, svc in config.services.items():
        if sname not in callable_services:
            issues.append(
                ConfigIssue.at(doc, ("services", sname), "no consumer is allowed to call it")
            )
        target = config.upstreams.get(svc.upstream)
        for oname, op in svc.operations.items():
            path = ("services", sname, "operations", oname)
            if target is not None and target.connect_timeout_s >= op.timeout_s:
                issues.append(
                    ConfigIssue.at(
                        doc,
                        (*path, "timeout_s"),
                        f"the upstream's connect_timeout_s ({_fmt(target.connect_timeout_s)}) "
                        "is not shorter than this timeout: a dead upstream shows as a timeout",
                    )
                )
            issues += _retry_warnings(path, op, doc)
    for cname, consumer in config.consumers.items():
        where = ("consumers", cname)
        if not consumer.api_keys and not getattr(consumer, "client_certs", None):
            issues.append(
                ConfigIssue.at(doc, where, "this consumer has no api_keys: it cannot call")
            )
        for index, key in enumerate(consumer.api_keys):
            if _expired(key, now):
                issues.append(
                    ConfigIssue.at(
                        doc,
                        (*where, "api_keys", index, "expires"),
                        "this key has expired; remove it",
                    )
                )
        for sname, ops in consumer.allow.items():
            if "*" in ops and len(ops) > 1:
                issues.append(
                    ConfigIssue.at(
                        doc,
                        (*where, "allow", sname),
                        "'*' already grants every operation; the names beside it add nothing",
                    )
                )
    admin = config.admin
    if admin.port is not None and not admin.api_keys:
        issues.append(
            ConfigIssue.at(doc, ("admin", "port"), "no admin.api_keys: /admin/* stays off")
        )
    return issues + atrest_warnings(config, doc)


def _retry_warnings(
    path: PathKey, op: OperationConfig, doc: YamlDocument | None
) -> list[ConfigIssue]:
    retry = op.retry
    if retry.attempts < 2:
        return []
    available, limit = _available_s(op)
    waits = retry_waits(retry)
    if waits >= available:
        return []  # an error already
    per_attempt = getattr(retry, "attempt_timeout_s", None)
    worst = retry_waits(retry, with_jitter=True)
    if isinstance(per_attempt, int | float):
        worst += retry.attempts * per_attempt
    if worst <= available:
        return []
    return [
        ConfigIssue.at(
            doc,
            (*path, "retry"),
            f"at worst the retry plan needs {_fmt(round(worst, 3))} but {limit} is "
            f"{_fmt(available)}: the later attempts may be cut short",
        )
    ]


def _expired(key: ApiKey, now: datetime) -> bool:
    if key.expires is None:
        return False
    try:
        return parse_expiry(key.expires) <= now
    except ValueError:
        return False


def secret_references(model: BaseModel, path: PathKey = ()) -> Iterator[tuple[PathKey, str]]:
    """Every ``env:``/``file:`` reference in a config, with its path (walks the models, so
    fields added later are covered)."""
    for name in type(model).model_fields:
        yield from _refs(getattr(model, name), (*path, name), _is_secret_field(model, name))


def _refs(value: Any, path: PathKey, secret: bool) -> Iterator[tuple[PathKey, str]]:
    if isinstance(value, BaseModel):
        yield from secret_references(value, path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _refs(item, (*path, str(key)), secret)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _refs(item, (*path, index), secret)
    elif secret and isinstance(value, str):
        yield path, value


def _is_secret_field(model: BaseModel, name: str) -> bool:
    info = type(model).model_fields[name]
    found = [m for m in info.metadata if getattr(m, "func", None) is check_secret_ref]
    return bool(found) or "check_secret_ref" in repr(info.annotation)


def secret_errors(config: RoutingConfig, doc: YamlDocument | None) -> list[ConfigIssue]:
    """References that do not resolve here (``config validate --secrets`` on the bus's host),
    and key values used both as an admin key and a consumer key."""
    issues = [ConfigIssue.at(doc, p, m) for p, m in key_problems(config)]
    for path, ref in secret_references(config):
        try:
            resolve_secret(ref)
        except (KeyError, OSError, ValueError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            if isinstance(exc, OSError):
                reason = f"cannot read {ref.removeprefix('file:')}: {exc.strerror}"
            issues.append(ConfigIssue.at(doc, path, f"secret {ref} does not resolve: {reason}"))
    return issues


# -- when the schema failed --------------------------------------------------------------


def with_reference_errors(
    data: Any, doc: YamlDocument | None, known: list[ConfigIssue], kinds: KindCatalog
) -> list[ConfigIssue]:
    """``known`` (the schema's errors) plus the reference and cap errors found on the raw
    mapping, which the models could not check because they did not build."""
    if not isinstance(data, Mapping):
        return known
    found: list[ConfigIssue] = []
    services = _mapping(data.get("services"))
    upstreams = _mapping(data.get("upstreams"))
    for sname, svc in services.items():
        svc = _mapping(svc)
        upstream = svc.get("upstream")
        if isinstance(upstream, str) and upstream not in upstreams:
            found.append(
                ConfigIssue.at(
                    doc,
                    ("services", sname, "upstream"),
                    f"services.{sname}.upstream names unknown upstream {upstream!r}",
                )
            )
        found += _raw_kind(sname, svc.get("adapter"), doc, kinds)
        found += _raw_timeouts(data, sname, svc, doc)
    for cname, consumer in _mapping(data.get("consumers")).items():
        allow = _mapping(_mapping(consumer).get("allow"))
        for sname, ops in allow.items():
            if sname not in services:
                found.append(
                    ConfigIssue.at(
                        doc,
                        ("consumers", cname, "allow", sname),
                        f"consumers.{cname}.allow names unknown service {sname!r}",
                    )
                )
                continue
            operations = _mapping(_mapping(services[sname]).get("operations"))
            for op in ops if isinstance(ops, list) else []:
                if isinstance(op, str) and op != "*" and op not in operations:
                    found.append(
                        ConfigIssue.at(
                            doc,
                            ("consumers", cname, "allow", sname),
                            f"consumers.{cname}.allow.{sname} names unknown operation {op!r}",
                        )
                    )
    # The same finding: keep ours (located more precisely). The same place: the schema's
    # own error there wins (e.g. timeout_s over its hard limit).
    ours = {i.message for i in found}
    merged = [i for i in known if i.message not in ours]
    taken = {i.path for i in merged}
    return merged + [i for i in found if i.path not in taken]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _raw_kind(
    sname: str, kind: Any, doc: YamlDocument | None, kinds: KindCatalog
) -> list[ConfigIssue]:
    if not isinstance(kind, str) or kinds.get(kind) is not None:
        return []
    known = ", ".join(sorted(kinds.kinds()))
    return [
        ConfigIssue.at(
            doc,
            ("services", sname, "adapter"),
            f"unknown adapter kind {kind!r} (known: {known})",
        )
    ]


def _raw_timeouts(
    data: Mapping[str, Any], sname: str, svc: Mapping[str, Any], doc: YamlDocument | None
) -> list[ConfigIssue]:
    default = GatewaySettings.model_fields["max_deadline_s"].default
    cap = _mapping(data.get("gateway")).get("max_deadline_s", default)
    if not isinstance(cap, int | float) or isinstance(cap, bool):
        return []
    found = []
    for oname, op in _mapping(svc.get("operations")).items():
        timeout = _mapping(op).get("timeout_s")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > cap:
            found.append(
                ConfigIssue.at(
                    doc,
                    ("services", sname, "operations", oname, "timeout_s"),
                    f"timeout_s {_fmt(timeout)} is longer than the gateway's deadline cap "
                    f"(gateway.max_deadline_s = {_fmt(cap)}): shorten it or raise the cap",
                )
            )
    return found
