"""``report stats``: monthly counts per service and consumer, fit for publication.

For one calendar month (Vietnam time) and each service × consumer: calls, answered calls
and distinct subjects. Left out: unauthenticated calls, and consumers whose
``transparency`` is ``delayed(…)`` or ``excluded`` (covert consumers; read from the config
in force). Small counts are suppressed (k-anonymity, ``reports.k_anonymity``, default 10):
a cell whose calls, or whose non-zero distinct subjects, are fewer than k is published as
suppressed, its figures withheld; the totals sum the published cells only (so no
suppressed figure can be recovered by subtraction) and say how many cells were
suppressed. A month may be published ``delay_days`` after it ends (late, fail_open
records are in by then); before that the report says it is not yet publishable.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bus.config import RoutingConfig
from bus.report.render import Column, Fact, Table
from bus.report.trail import VN, Verification, read_trail, show_time
from bus.store.base import AuditRecord, Store

__all__ = ["StatsCell", "StatsReport", "month_bounds", "stats_report"]

_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])\Z")


def month_bounds(month: str) -> tuple[int, int]:
    """``YYYY-MM`` → (first µs of the month, first µs of the next), Vietnam time;
    ``ValueError`` for anything else."""
    match = _MONTH_RE.match(month)
    if match is None:
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    year, mon = int(match.group(1)), int(match.group(2))
    start = datetime(year, mon, 1, tzinfo=VN)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=VN)
    return int(start.timestamp() * 1_000_000), int(end.timestamp() * 1_000_000)


@dataclass
class StatsCell:
    """One service × consumer of the month (``None`` figures: suppressed)."""

    service: str
    consumer: str
    organisation: str
    """The consumer's ``display_name`` (else its name)."""
    calls: int | None
    answered: int | None
    subjects: int | None
    suppressed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass
class StatsReport:
    """Publishable statistics of one month."""

    month: str
    k: int
    delay_days: int
    publishable_from_us: int
    now_us: int
    verification: Verification
    cells: list[StatsCell] = field(default_factory=list)
    kind: str = "stats"

    @property
    def title(self) -> tuple[str, str]:
        """(Vietnamese, English) title."""
        return ("Thống kê khai thác dữ liệu hằng tháng", "Monthly data-exchange statistics")

    @property
    def publishable(self) -> bool:
        """The month ended at least ``delay_days`` ago."""
        return self.now_us >= self.publishable_from_us

    def totals(self) -> dict[str, dict[str, int]]:
        """Per service: the sums over published cells, and the suppressed cells."""
        out: dict[str, dict[str, int]] = {}
        for c in self.cells:
            t = out.setdefault(
                c.service, {"calls": 0, "answered": 0, "cells": 0, "suppressed_cells": 0}
            )
            if c.suppressed:
                t["suppressed_cells"] += 1
            else:
                t["calls"] += c.calls or 0
                t["answered"] += c.answered or 0
                t["cells"] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "month": self.month,
            "k_anonymity": self.k,
            "delay_days": self.delay_days,
            "publishable": self.publishable,
            "publishable_from": show_time(self.publishable_from_us),
            "cells": [c.to_dict() for c in self.cells],
            "totals": self.totals(),
        }

    def facts(self) -> list[Fact]:
        """Month, threshold, publication date."""
        return [
            Fact("Tháng", "month", self.month),
            Fact("Ngưỡng ẩn số liệu nhỏ (k)", "small-count threshold (k)", self.k),
            Fact("Được công bố từ", "publishable from", show_time(self.publishable_from_us)),
            Fact("Có thể công bố", "publishable", self.publishable),
        ]

    def tables(self) -> list[Table]:
        """Cells and per-service totals."""
        cells = Table(
            "cells",
            "Theo dịch vụ và hệ thống khai thác",
            "by service and consumer",
            [
                Column("service", "Dịch vụ", "service"),
                Column("consumer", "Hệ thống khai thác", "consumer"),
                Column("organisation", "Cơ quan, tổ chức", "organisation"),
                Column("calls", "Lượt gọi", "calls"),
                Column("answered", "Đã cung cấp", "answered"),
                Column("subjects", "Số chủ thể", "distinct subjects"),
                Column("suppressed", "Ẩn (số nhỏ)", f"suppressed (< {self.k})"),
            ],
            [c.to_dict() for c in self.cells],
        )
        totals = Table(
            "totals",
            "Tổng theo dịch vụ (các ô công bố)",
            "totals per service (published cells)",
            [
                Column("service", "Dịch vụ", "service"),
                Column("calls", "Lượt gọi", "calls"),
                Column("answered", "Đã cung cấp", "answered"),
                Column("suppressed_cells", "Số ô bị ẩn", "suppressed cells"),
            ],
            [{"service": s, **t} for s, t in self.totals().items()],
        )
        return [cells, totals]


def _published(config: RoutingConfig, rec: AuditRecord) -> bool:
    if rec.consumer is None:
        return False
    spec = config.consumers.get(rec.consumer)
    return spec is None or not spec.covert


async def stats_report(
    store: Store, config: RoutingConfig, month: str, *, delay_days: int, now_us: int
) -> StatsReport:
    """The statistics of ``month`` (``YYYY-MM``); ``ValueError`` for a bad month."""
    start, end = month_bounds(month)
    trail = await read_trail(
        store, since_us=start, until_us=end, keep=lambda rec: _published(config, rec)
    )
    k = config.reports.k_anonymity
    groups: dict[tuple[str, str], list[AuditRecord]] = defaultdict(list)
    for rec in trail.records:
        groups[(rec.service or "-", rec.consumer or "-")].append(rec)
    report = StatsReport(
        month, k, delay_days, end + delay_days * 86_400 * 1_000_000, now_us, trail.verification
    )
    for (service, consumer), recs in sorted(groups.items()):
        spec = config.consumers.get(consumer)
        org = (spec.display_name if spec else None) or consumer
        calls = len(recs)
        answered = sum(1 for r in recs if r.outcome == "OK")
        subjects = len({r.subject_key for r in recs if r.subject_key})
        if calls < k or 0 < subjects < k:
            report.cells.append(
                StatsCell(service, consumer, org, None, None, None, suppressed=True)
            )
        else:
            report.cells.append(StatsCell(service, consumer, org, calls, answered, subjects))
    return report
