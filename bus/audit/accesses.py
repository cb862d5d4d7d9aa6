"""Accesses as a reader counts them: one per exchange, whether it left one record or two.

Since the ``STARTED`` record (written before a request is published, so a process killed
mid-request still leaves a trace), an exchange that reached an upstream has two records
sharing ``detail.exchange``: the started one and its final one. Records written before
that have one record and no ``detail.exchange``. :func:`accesses` folds each pair into its
final record; a started record alone — the process died before the exchange ended — is
an access with outcome ``UNKNOWN``. Pure: the records come from the store, verified or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from bus.store.base import AuditRecord

__all__ = ["EXCHANGE_REF", "STARTED", "UNKNOWN", "accesses"]

STARTED = "STARTED"
"""The outcome of a record written before the request was sent (its final one follows)."""
UNKNOWN = "UNKNOWN"
"""The outcome a reader shows for a started record that has no final one."""
EXCHANGE_REF = "exchange"
"""The ``detail`` key tying an exchange's started and final records."""


def _ref(record: AuditRecord) -> str | None:
    ref = record.detail.get(EXCHANGE_REF) if record.kind == "exchange" else None
    return ref if isinstance(ref, str) else None


def accesses(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    """``records`` with each exchange once, in order: of the records sharing a
    ``detail.exchange``, the last one that is not ``STARTED`` stands for them all (a
    started record refused with AUDIT_UNAVAILABLE is one too); a started record alone is
    kept with outcome ``UNKNOWN`` (the copy's hash no longer matches: show it, don't
    verify it). Records without ``detail.exchange`` (older ones, admin ones) stay as they are."""
    records = list(records)
    chosen: dict[str, int] = {}
    for i, r in enumerate(records):
        ref = _ref(r)
        if ref is None:
            continue
        j = chosen.get(ref)
        if j is None or r.outcome != STARTED or records[j].outcome == STARTED:
            chosen[ref] = i
    out: list[AuditRecord] = []
    for i, r in enumerate(records):
        ref = _ref(r)
        if ref is not None and chosen[ref] != i:
            continue
        lone = r.kind == "exchange" and r.outcome == STARTED
        out.append(dataclasses.replace(r, outcome=UNKNOWN) if lone else r)
    return out
