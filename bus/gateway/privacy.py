"""Personal-data rules of one call (pure): purpose, officer, sensitive fields, minimisation.

For a service with ``personal_data: true`` (the default) every request names why and for
whom it asks (PDP law: a legal basis for every access; X-Road: an end user on every call):

* ``purpose.procedure_code``, ``purpose.dossier_id`` and ``purpose.legal_basis`` →
  else ``400 PURPOSE_REQUIRED``; ``CONSENT`` without ``consent_ref`` is already
  ``400 CONSENT_REF_REQUIRED`` from the request model;
* ``caller.officer_id`` (or the ``X-Road-UserId`` header) → else ``400 OFFICER_REQUIRED``.

Sensitive fields (``services.<s>.sensitive_fields``, by default ethnicity and religion,
each also covering reply keys like ``ethnicity_code``) need an explicit grant,
``consumers.<c>.sensitive.<s>``: asking for one in ``fields`` without it is
``403 FORBIDDEN_FIELD``, and a reply never carries one to a consumer without it, at any
depth. Data minimisation: ``consumers.<c>.fields.<s>`` lists the reply's dotted
paths the consumer gets (lists are transparent: ``persons.full_name``); everything else is
withheld except :data:`ALWAYS_RETURNED`. ``requested_at``, when given, is an RFC 3339
time with offset within ``gateway.max_clock_skew_s`` of now (``INVALID_TIMESTAMP``,
``CLOCK_SKEW``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bus.config import ConsumerConfig, RoutingConfig, ServiceConfig
from bus.config.access import sensitive_name
from bus.errors import Forbidden, InvalidRequest

__all__ = [
    "ALWAYS_RETURNED",
    "FieldFilter",
    "Filtered",
    "check_purpose",
    "check_requested_at",
    "check_requested_fields",
    "officer_of",
]

ALWAYS_RETURNED = frozenset(
    {"status", "record_type", "match_count", "data_source", "source", "data_as_of", "verified"}
)
"""Top-level reply keys about the answer itself, kept whatever the field grant says."""


def officer_of(validated: BaseModel) -> str | None:
    """``caller.officer_id`` of a canonical request, if any."""
    caller = getattr(validated, "caller", None)
    officer = getattr(caller, "officer_id", None)
    return officer if isinstance(officer, str) else None


def check_purpose(service: ServiceConfig, validated: BaseModel, officer: str | None) -> None:
    """Raise ``PURPOSE_REQUIRED``/``OFFICER_REQUIRED``/``CALLER_REQUIRED`` (``caller.system_id``
    and ``caller.unit_code``) for a personal-data call without them."""
    if not service.personal_data:
        return
    purpose = getattr(validated, "purpose", None)
    missing = [
        name
        for name in ("procedure_code", "dossier_id", "legal_basis")
        if getattr(purpose, name, None) is None
    ]
    if missing:
        paths = ", ".join(f"purpose.{name}" for name in missing)
        raise InvalidRequest(
            f"this service holds personal data: {paths} required",
            code="PURPOSE_REQUIRED",
            detail={"errors": [_missing(f"purpose.{n}", "PURPOSE_REQUIRED") for n in missing]},
        )
    if getattr(purpose, "legal_basis", None) == "CONSENT" and not purpose_consent(purpose):
        raise InvalidRequest(
            "legal_basis CONSENT needs purpose.consent_ref", code="CONSENT_REF_REQUIRED"
        )
    if officer is None:
        raise InvalidRequest(
            "this service holds personal data: caller.officer_id (or X-Road-UserId), the "
            "officer on whose behalf the system asks, is required",
            code="OFFICER_REQUIRED",
            detail={"errors": [_missing("caller.officer_id", "OFFICER_REQUIRED")]},
        )
    caller = getattr(validated, "caller", None)
    absent = [name for name in CALLER_FIELDS if getattr(caller, name, None) is None]
    if absent:
        paths = ", ".join(f"caller.{name}" for name in absent)
        raise InvalidRequest(
            f"this service holds personal data: {paths} (the calling system and the "
            "officer's unit, recorded in the audit trail) required",
            code="CALLER_REQUIRED",
            detail={"errors": [_missing(f"caller.{n}", "CALLER_REQUIRED") for n in absent]},
        )


CALLER_FIELDS = ("system_id", "unit_code")
"""What a personal-data request must say about its caller besides the officer."""


def purpose_consent(purpose: Any) -> bool:
    """True when the purpose carries a consent reference."""
    return bool(getattr(purpose, "consent_ref", None))


def _missing(path: str, code: str) -> dict[str, str]:
    return {"path": path, "code": code, "message": "required for personal data"}


def check_requested_fields(
    config: RoutingConfig, consumer: str, service: str, validated: BaseModel
) -> None:
    """``403 FORBIDDEN_FIELD`` if the request asks for a sensitive field not granted."""
    asked = getattr(validated, "fields", None)
    if not isinstance(asked, list):
        return
    svc = config.services[service]
    spec = config.consumers.get(consumer)
    granted = set(spec.sensitive.get(service, ())) if spec else set()
    refused = sorted(
        {
            str(f)
            for f in asked
            if sensitive_name(str(f), svc.sensitive_fields) not in (None, *granted)
        }
    )
    if refused:
        raise Forbidden(
            f"sensitive field(s) {', '.join(refused)} need an explicit grant for this consumer",
            code="FORBIDDEN_FIELD",
            detail={"fields": refused},
        )


def check_requested_at(validated: BaseModel, now: datetime, max_skew_s: float) -> None:
    """``requested_at`` (if given) must carry an offset and be within ``max_skew_s`` of now."""
    raw = getattr(validated, "requested_at", None)
    if raw is None:
        return
    try:
        # RFC 3339 needs date and time; fromisoformat alone would take a bare date.
        if "T" not in raw.upper():
            raise ValueError
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            "requested_at is an RFC 3339 date-time with offset, e.g. 2026-05-01T09:30:00+07:00",
            code="INVALID_TIMESTAMP",
        ) from None
    if stamp.tzinfo is None:
        raise InvalidRequest("requested_at needs an offset (+07:00 or Z)", code="INVALID_TIMESTAMP")
    skew = abs((stamp - now).total_seconds())
    if skew > max_skew_s:
        raise InvalidRequest(
            f"requested_at is more than {max_skew_s:g}s from the gateway's clock",
            code="CLOCK_SKEW",
        )


@dataclass
class Filtered:
    """A reply body after the consumer's field policy, and what was kept or withheld."""

    body: dict[str, Any]
    returned: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)


class FieldFilter:
    """The field policy of one consumer × service, applied to reply bodies."""

    def __init__(self, consumer: ConsumerConfig | None, service_name: str, service: ServiceConfig):
        grants = consumer.fields.get(service_name) if consumer else None
        self._grants = frozenset(grants) if grants is not None else None
        # Every proper prefix of a grant: the objects on the way down to a granted field.
        self._ancestors = frozenset(
            g[:i] for g in self._grants or () for i, ch in enumerate(g) if ch == "."
        )
        granted = set(consumer.sensitive.get(service_name, ())) if consumer else set()
        self._blocked = frozenset(set(service.sensitive_fields) - granted)
        self._is_blocked = _blocked_matcher(self._blocked)

    @classmethod
    def of(cls, config: RoutingConfig, consumer: str, service: str) -> FieldFilter:
        """The policy of ``consumer`` on ``service``."""
        return cls(config.consumers.get(consumer), service, config.services[service])

    def apply(self, body: dict[str, Any]) -> Filtered:
        """Withhold what the consumer may not see; list leaf paths returned and withheld."""
        returned: set[str] = set()
        withheld: set[str] = set()
        if self._grants is not None:
            out = self._object(body, "", returned, withheld)
        elif self._blocked:
            out = self._ungranted(body, "", returned, withheld)
        else:  # nothing to withhold: only the leaf paths, for the audit trail
            out = dict(body)
            for key, value in body.items():
                _leaves(value, key, returned)
        return Filtered(out, sorted(returned), sorted(withheld))

    def _ungranted(
        self, obj: dict[str, Any], path: str, returned: set[str], withheld: set[str]
    ) -> dict[str, Any]:
        # _object without field grants (the common case): everything but sensitive keys,
        # same paths, one pass; tests/test_field_filter_paths.py pins the two together.
        out: dict[str, Any] = {}
        is_blocked = self._is_blocked
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if is_blocked(key):
                withheld.add(here)
            elif isinstance(value, dict):
                out[key] = self._ungranted(value, here, returned, withheld)
            elif isinstance(value, list):
                out[key] = self._ungranted_list(value, here, returned, withheld)
            else:
                returned.add(here)
                out[key] = value
        return out

    def _ungranted_list(
        self, items: list[Any], path: str, returned: set[str], withheld: set[str]
    ) -> list[Any]:
        if not items:
            returned.add(path)
        out: list[Any] = []
        for item in items:
            if isinstance(item, dict):
                out.append(self._ungranted(item, path, returned, withheld))
            elif isinstance(item, list):
                out.append(self._ungranted_list(item, path, returned, withheld))
            else:
                returned.add(path)
                out.append(item)
        return out

    def _covered(self, path: str) -> bool:
        if self._grants is None or path in self._grants:
            return True
        return any(path[:i] in self._grants for i, ch in enumerate(path) if ch == ".")

    def _above_grant(self, path: str) -> bool:
        return path in self._ancestors

    def _object(
        self, obj: dict[str, Any], path: str, returned: set[str], withheld: set[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if self._blocked and self._is_blocked(key):
                withheld.add(here)
                continue
            if (not path and key in ALWAYS_RETURNED) or self._covered(here):
                out[key] = self._value(value, here, returned, withheld, whole=True)
            elif self._above_grant(here) and isinstance(value, dict | list):
                out[key] = self._value(value, here, returned, withheld, whole=False)
            elif self._above_grant(here) and value is None:
                out[key] = None
                returned.add(here)
            else:
                withheld.add(here)
        return out

    def _value(
        self, value: Any, path: str, returned: set[str], withheld: set[str], *, whole: bool
    ) -> Any:
        if isinstance(value, dict):
            if whole and not self._blocked:
                _leaves(value, path, returned)
                return value
            return self._object(value, path, returned, withheld)
        if isinstance(value, list):
            if not value:
                returned.add(path)
            return [self._value(item, path, returned, withheld, whole=whole) for item in value]
        returned.add(path)
        return value


@functools.lru_cache(maxsize=256)
def _blocked_matcher(blocked: frozenset[str]) -> Callable[[str], object]:
    """``sensitive_name(key, blocked) is not None`` as one regex (≈3× faster per key),
    compiled once per set of names: a filter is built for every reply."""
    if not blocked:
        return lambda key: None
    alternatives = "|".join(re.escape(name) for name in sorted(blocked))
    return re.compile(f"(?:{alternatives})(?:_|\\Z)").match


def _leaves(value: Any, path: str, into: set[str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _leaves(item, f"{path}.{key}", into)
    elif isinstance(value, list) and value:
        for item in value:
            _leaves(item, path, into)
    else:
        into.add(path)
