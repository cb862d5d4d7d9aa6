"""Field minimisation of an event per subscription: a subscriber receives only the fields
its subscription lists (dotted paths), or — without a list — every field the event type
does not mark sensitive. ``event_id``, ``event_type`` and ``schema_version`` always travel
(the dedupe key and what the event is)."""

from __future__ import annotations

from typing import Any

from bus.config.delivery import EventType, Subscription

__all__ = ["ALWAYS", "minimise"]

ALWAYS = ("event_id", "event_type", "schema_version")


def _keep(data: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        deeper = [p[1:] for p in paths if p[0] == key]
        if not deeper:
            continue
        if any(not p for p in deeper) or not isinstance(value, dict):
            out[key] = value
        else:
            out[key] = _keep(value, [p for p in deeper if p])
    return out


def _drop(data: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        deeper = [p[1:] for p in paths if p[0] == key]
        if any(not p for p in deeper):
            continue
        out[key] = _drop(value, deeper) if deeper and isinstance(value, dict) else value
    return out


def minimise(event: dict[str, Any], event_type: EventType, sub: Subscription) -> dict[str, Any]:
    """The part of ``event`` this subscription may receive."""
    if sub.fields is None:
        return _drop(event, [p.split(".") for p in event_type.sensitive_fields])
    return _keep(event, [p.split(".") for p in (*ALWAYS, *sub.fields)])
