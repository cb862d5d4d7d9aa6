"""Semantic diff of two routing configs (pure): what a reviewer must see, grants first.

Both files are compared as validated models, so spelling, order, comments and values
written out equal to their defaults make no difference. ACL grants are expanded
(``"*"`` → every operation the service has in that file), so a new operation under a
wildcard grant shows as a new grant. Named collections (every top-level field that maps
names to models: services, upstreams, consumers …) are found by walking the model, as are
their fields, so settings added to ``routing.yaml`` later are diffed without changes here.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel

from bus.config import RoutingConfig

__all__ = ["RESTART_ONLY", "Change", "diff_configs", "grants", "needs_restart", "summary"]

Kind = Literal["revoked", "granted", "added", "removed", "changed"]

RESTART_ONLY: tuple[str, ...] = (
    "node",
    "broker",
    "gateway.max_body_bytes",
    "gateway.shutdown_grace_s",
    "gateway.keepalive_timeout_s",
    "gateway.request_read_timeout_s",
    "gateway.tls",
    "gateway.rate_limit_backend",
    "admin.host",
    "admin.port",
    "admin.tls",
    "tracing",
    "store",
    "observe",
)
"""Settings read once when a process starts: a reload records them, a restart applies them
(existing RabbitMQ queues keep the arguments they were declared with)."""

_NESTED = {"services": "operations"}
"""Collections whose members hold a collection that is diffed member by member."""
_COVERED = {"consumers": ("allow",)}
"""Fields whose change is reported elsewhere (the ACL grants section)."""


@dataclass(frozen=True)
class Change:
    """One difference: ``section`` (``acl``, ``services``, ``operations``, ``gateway`` …)."""

    section: str
    kind: Kind
    name: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"{self.kind:<8} {self.section}: {self.name}"
        return "\n".join([head, *(f"           {line}" for line in self.details)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def grants(config: RoutingConfig) -> set[tuple[str, str, str]]:
    """Every (consumer, service, operation) the ACL allows, ``*`` expanded."""
    out: set[tuple[str, str, str]] = set()
    for cname, consumer in config.consumers.items():
        for sname, ops in consumer.allow.items():
            svc = config.services.get(sname)
            if svc is None:
                continue
            names = svc.operations if "*" in ops else [op for op in ops if op in svc.operations]
            out.update((cname, sname, op) for op in names)
    return out


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _flatten(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Leaf values of a dumped model by path (lists are leaves: their order matters)."""
    if isinstance(value, dict) and value:
        out: dict[tuple[str, ...], Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, (*path, str(key))))
        return out
    return {path: value}


def field_changes(old: Any, new: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """``path: old → new`` lines between two dumped values."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(a.keys() | b.keys()):
        if path[:1] and path[0] in skip:
            continue
        where = _dotted(path) or "value"
        if path not in a:
            lines.append(f"{where}: (none) → {_show(b[path])}")
        elif path not in b:
            lines.append(f"{where}: {_show(a[path])} → (none)")
        elif a[path] != b[path]:
            lines.append(f"{where}: {_show(a[path])} → {_show(b[path])}")
    return lines


def _collections(model: type[BaseModel]) -> list[str]:
    """Top-level fields that map names to models."""
    found = []
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation)
        is_map = typing.get_origin(info.annotation) is dict and len(args) == 2
        if is_map and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            found.append(name)
    return found


def _diff_collection(
    section: str, old: dict[str, Any], new: dict[str, Any], nested: str | None
) -> list[Change]:
    changes: list[Change] = []
    skip = _COVERED.get(section, ()) + ((nested,) if nested else ())
    for name in sorted(new.keys() - old.keys()):
        changes.append(Change(section, "added", name, tuple(_summary_of(new[name], skip))))
    for name in sorted(old.keys() - new.keys()):
        changes.append(Change(section, "removed", name))
    for name in sorted(old.keys() & new.keys()):
        lines = field_changes(old[name], new[name], skip)
        if lines:
            changes.append(Change(section, "changed", name, tuple(lines)))
        if nested:
            inner_old, inner_new = old[name].get(nested, {}), new[name].get(nested, {})
            for inner in _diff_collection(nested, inner_old, inner_new, None):
                changes.append(Change(nested, inner.kind, f"{name}/{inner.name}", inner.details))
    if nested:
        for name in sorted(new.keys() - old.keys()):
            for op in new[name].get(nested, {}):
                changes.append(Change(nested, "added", f"{name}/{op}"))
    return changes


def _summary_of(value: dict[str, Any], skip: tuple[str, ...]) -> list[str]:
    """A few identifying fields of a new entry (its URL, adapter, upstream …)."""
    keys = ("adapter", "upstream", "url", "description")
    return [f"{k}: {_show(value[k])}" for k in keys if k not in skip and value.get(k)]


def diff_configs(old: RoutingConfig, new: RoutingConfig) -> list[Change]:
    """Every semantic difference: ACL grants revoked, then granted, then each section."""
    before, after = grants(old), grants(new)
    changes = [Change("acl", "revoked", f"{c} → {s}/{o}") for c, s, o in sorted(before - after)] + [
        Change("acl", "granted", f"{c} → {s}/{o}") for c, s, o in sorted(after - before)
    ]
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    collections = _collections(RoutingConfig)
    for section in collections:
        changes += _diff_collection(section, a[section], b[section], _NESTED.get(section))
    for section in RoutingConfig.model_fields:
        if section in collections:
            continue
        lines = field_changes(a[section], b[section])
        if lines:
            changes.append(Change(section, "changed", section, tuple(lines)))
    return changes


def needs_restart(old: RoutingConfig, new: RoutingConfig) -> list[str]:
    """Restart-only settings (:data:`RESTART_ONLY`) that differ between the two."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    found = []
    for path in sorted(a.keys() | b.keys()):
        dotted = _dotted(path)
        if a.get(path) != b.get(path) and any(
            dotted == p or dotted.startswith(p + ".") for p in RESTART_ONLY
        ):
            found.append(dotted)
    return found


def summary(changes: list[Change]) -> list[str]:
    """One short line per section and kind (for logs and the reload result)."""
    counts: dict[tuple[str, str], list[str]] = {}
    for change in changes:
        counts.setdefault((change.section, change.kind), []).append(change.name)
    return [
        f"{section} {kind}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
        for (section, kind), names in counts.items()
    ]
