"""``report access``: who processed which data, on what legal basis, how much.

One row per consumer × service × operation × legal basis over a time window: calls,
answered calls, distinct subjects (counted by subject key, the HMAC of the ID number),
categories of the fields returned and which of them are sensitive, calls not answered by
error code (denials such as ``FORBIDDEN_OPERATION`` and failures such as
``UPSTREAM_TIMEOUT``) and the number of distinct officers. No officer ID, subject key or
dossier appears: only counts. Unauthenticated calls have consumer ``-``; calls without a
purpose, legal basis ``-``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bus.config import RoutingConfig
from bus.report.categories import (
    category_label,
    field_categories,
    legal_basis_label,
    sensitive_categories,
)
from bus.report.render import Column, Fact, Table
from bus.report.trail import Verification, read_trail, show_time
from bus.store.base import AuditRecord, Store

__all__ = ["AccessReport", "AccessRow", "access_report"]

NONE = "-"


@dataclass
class AccessRow:
    """One consumer × service × operation × legal basis."""

    consumer: str
    service: str
    operation: str
    legal_basis: str
    calls: int = 0
    answered: int = 0
    subjects: int = 0
    categories: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)
    denials: dict[str, int] = field(default_factory=dict)
    officers: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass
class AccessReport:
    """The access statistics of a window."""

    since_us: int
    until_us: int
    consumer: str | None
    service: str | None
    rows: list[AccessRow]
    verification: Verification
    kind: str = "access"

    @property
    def title(self) -> tuple[str, str]:
        """(Vietnamese, English) title."""
        return ("Báo cáo truy cập dữ liệu cá nhân", "Personal-data access report")

    @property
    def totals(self) -> dict[str, int]:
        """Calls and answered calls over every row (subjects are not additive)."""
        return {
            "calls": sum(r.calls for r in self.rows),
            "answered": sum(r.answered for r in self.rows),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "from": show_time(self.since_us),
            "to": show_time(self.until_us),
            "consumer": self.consumer,
            "service": self.service,
            "totals": self.totals,
            "rows": [r.to_dict() for r in self.rows],
        }

    def facts(self) -> list[Fact]:
        """Window, filters and totals."""
        totals = self.totals
        return [
            Fact("Từ", "from", show_time(self.since_us)),
            Fact("Đến (không gồm)", "to (exclusive)", show_time(self.until_us)),
            Fact("Hệ thống khai thác", "consumer filter", self.consumer or "tất cả (all)"),
            Fact("Dịch vụ", "service filter", self.service or "tất cả (all)"),
            Fact("Tổng số lượt gọi", "calls", totals["calls"]),
            Fact("Số lượt đã cung cấp dữ liệu", "answered", totals["answered"]),
        ]

    def tables(self) -> list[Table]:
        """One table of every row."""
        columns = [
            Column("consumer", "Hệ thống khai thác", "consumer"),
            Column("service", "Dịch vụ", "service"),
            Column("operation", "Nghiệp vụ", "operation"),
            Column("legal_basis", "Căn cứ pháp lý", "legal basis"),
            Column("calls", "Lượt gọi", "calls"),
            Column("answered", "Đã cung cấp", "answered"),
            Column("subjects", "Số chủ thể khác nhau", "distinct subjects"),
            Column("categories", "Loại dữ liệu đã cung cấp", "categories returned"),
            Column("sensitive", "Dữ liệu nhạy cảm", "sensitive categories"),
            Column("denials", "Từ chối / lỗi theo mã", "denials and failures by code"),
            Column("officers", "Số cán bộ", "officers"),
        ]
        rows = []
        for r in self.rows:
            row = r.to_dict()
            row["legal_basis"] = legal_basis_label(r.legal_basis)
            row["categories"] = [category_label(c) for c in r.categories]
            row["sensitive"] = [category_label(c) for c in r.sensitive]
            rows.append(row)
        return [
            Table(
                "access", "Truy cập theo hệ thống và dịch vụ", "access by consumer", columns, rows
            )
        ]


def _key(rec: AuditRecord) -> tuple[str, str, str, str]:
    return (
        rec.consumer or NONE,
        rec.service or NONE,
        rec.operation or NONE,
        rec.purpose.get("legal_basis") or NONE,
    )


def summarise(records: list[AuditRecord], config: RoutingConfig) -> list[AccessRow]:
    """The rows of ``records`` (also used by ``report stats``'s independent cousin)."""
    groups: dict[tuple[str, str, str, str], list[AuditRecord]] = {}
    for rec in records:
        groups.setdefault(_key(rec), []).append(rec)
    rows = []
    for key in sorted(groups):
        recs = groups[key]
        svc = config.services.get(key[1])
        names = svc.sensitive_fields if svc is not None else ("ethnicity", "religion")
        cats = field_categories((f for r in recs if r.outcome == "OK" for f in r.fields), names)
        denials = Counter(r.outcome for r in recs if r.outcome != "OK")
        rows.append(
            AccessRow(
                *key,
                calls=len(recs),
                answered=sum(1 for r in recs if r.outcome == "OK"),
                subjects=len({r.subject_key for r in recs if r.subject_key}),
                categories=sorted(cats),
                sensitive=sorted(sensitive_categories(cats, svc)),
                denials=dict(sorted(denials.items())),
                officers=len({r.officer for r in recs if r.officer}),
            )
        )
    return rows


async def access_report(
    store: Store,
    config: RoutingConfig,
    *,
    since_us: int,
    until_us: int,
    consumer: str | None = None,
    service: str | None = None,
) -> AccessReport:
    """The access report of ``since_us <= time < until_us`` (optionally one consumer
    and/or one service)."""

    def keep(rec: AuditRecord) -> bool:
        return (consumer is None or rec.consumer == consumer) and (
            service is None or rec.service == service
        )

    trail = await read_trail(store, since_us=since_us, until_us=until_us, keep=keep)
    rows = summarise(trail.records, config)
    return AccessReport(since_us, until_us, consumer, service, rows, trail.verification)
