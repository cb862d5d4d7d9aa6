"""Which citizens an answer returns, and the subject match policy (``match:``).

Citizens: every (service, operation) has the answer paths that hold ID numbers — those its
adapter kind's reply model declares (a ``citizen_ids`` class attribute: the population
record's person, old ID, father and mother; every person of a civil-status registration)
plus ``operations.<op>.citizen_ids`` of routing.yaml (how a generic ``rest``/``soap``
service says it). :func:`citizens_in` reads them from an answer; the audit record keys each
one (``detail.subject_keys``), so "who accessed citizen X" finds an exchange by any citizen
it returned, not only by the one asked about. The IDs are never logged.

Match policy (:mod:`bus.config.matching`): :func:`check_birth_date` refuses a partial birth
date before anything is sent; :class:`MismatchLimiter` counts MISMATCH answers per consumer
and service in this process and refuses with ``429 MISMATCH_LIMIT`` past the limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from bus.config import OperationConfig, RoutingConfig, ServiceConfig
from bus.config.matching import MatchPolicy
from bus.envelope import Request
from bus.errors import InvalidRequest, RateLimited

__all__ = [
    "MISMATCH",
    "MismatchLimiter",
    "check_birth_date",
    "citizen_paths",
    "citizens_in",
    "count_mismatch",
    "match_policy",
]

MISMATCH = "MISMATCH"
"""The canonical ``status`` of an answer whose record disagrees with what was asked."""
_MAX_IDS = 1000
"""At most this many IDs are taken from one answer (a list answer keys its first 1000)."""


def citizen_paths(
    config: RoutingConfig, replies: Mapping[tuple[str, str], type[BaseModel]]
) -> dict[tuple[str, str], tuple[str, ...]]:
    """(service, operation) → the answer paths holding ID numbers (model's, then config's)."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for name, svc in config.services.items():
        for op, spec in svc.operations.items():
            declared = getattr(replies.get((name, op)), "citizen_ids", ())
            paths = tuple(dict.fromkeys([*declared, *spec.citizen_ids]))
            if paths:
                out[(name, op)] = paths
    return out


def _walk(value: Any, parts: list[str]) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, parts)
    elif not parts:
        yield value
    elif isinstance(value, Mapping):
        yield from _walk(value.get(parts[0]), parts[1:])


def citizens_in(body: Any, paths: tuple[str, ...]) -> list[str]:
    """The distinct ID numbers at ``paths`` of ``body`` (lists walked at any level)."""
    found: dict[str, None] = {}
    for path in paths:
        for value in _walk(body, path.split(".")):
            if isinstance(value, str) and value.strip() and len(found) < _MAX_IDS:
                found[value.strip()] = None
    return list(found)


def match_policy(svc: ServiceConfig, op: OperationConfig) -> MatchPolicy:
    """The operation's own policy, else its service's."""
    return op.match if op.match is not None else svc.match


def check_birth_date(policy: MatchPolicy, model: Any) -> None:
    """Refuse a partial birth date the policy does not accept (``BIRTH_DATE_INCOMPLETE``)."""
    if policy.birth_date == "partial":
        return
    date_of = getattr(model, "subject_birth_date", None)
    id_of = getattr(model, "subject_id", None)
    date = date_of() if callable(date_of) else None
    if not isinstance(date, str) or len(date) == len("YYYY-MM-DD"):
        return
    subject = id_of() if callable(id_of) else None
    if policy.birth_date == "full_for_cccd" and (subject is None or len(subject) != 12):
        return
    raise InvalidRequest(
        "this lookup needs the subject's full birth date (YYYY-MM-DD): a CCCD already "
        "carries the year",
        code="BIRTH_DATE_INCOMPLETE",
    )


class MismatchLimiter:
    """MISMATCH answers per (consumer, service) in a sliding window, in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], window_s: float) -> deque[float]:
        stamps = self._seen.get(key)
        if stamps is None:
            return deque()
        horizon = self._clock() - window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if not stamps:
            del self._seen[key]
        return stamps

    def check(self, consumer: str, service: str, policy: MatchPolicy) -> None:
        """Raise ``429 MISMATCH_LIMIT`` while the consumer is at its limit on the service."""
        stamps = self._recent((consumer, service), policy.window_s)
        if len(stamps) < policy.mismatches:
            return
        wait = max(1, math.ceil(stamps[0] + policy.window_s - self._clock()))
        raise RateLimited(
            f"too many MISMATCH answers on this service: try again in {wait} s",
            code="MISMATCH_LIMIT",
            retry_after=float(wait),
        )

    def note(self, consumer: str, service: str, policy: MatchPolicy) -> None:
        """Count one MISMATCH answer (at most the limit is kept per key)."""
        stamps = self._recent((consumer, service), policy.window_s)
        stamps.append(self._clock())
        while len(stamps) > policy.mismatches:
            stamps.popleft()
        self._seen[(consumer, service)] = stamps


def count_mismatch(
    limiter: MismatchLimiter, config: RoutingConfig, req: Request, body: Mapping[str, Any] | None
) -> None:
    """Count the answer if its canonical ``status`` is ``MISMATCH``."""
    if body is None or body.get("status") != MISMATCH:
        return
    svc = config.services.get(req.service)
    op = svc.operations.get(req.operation) if svc is not None else None
    if svc is not None and op is not None:
        limiter.note(req.consumer, req.service, match_policy(svc, op))
