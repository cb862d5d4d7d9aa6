"""The audit trail as the reports read it: every chain verified, the wanted records kept.

Every report walks the whole trail once through :func:`bus.audit.verify_store` (so its
figures come from records whose hashes and links were just checked) and keeps the exchange
records its filter wants. Over a broken chain the report still shows what it could read,
but :class:`Verification` says it is not certified, names each problem, and the CLI exits 1.
A broken chain is read only up to its first problem. The walk is O(trail): a report over
one day of a year-long trail reads the year (limit: the store has no time index per chain).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from bus.audit.accesses import accesses
from bus.audit.chain import Pin
from bus.audit.evidence import VN
from bus.audit.observer import verify_store
from bus.store.base import AuditRecord, Store

__all__ = ["VN", "Trail", "Verification", "parse_time", "read_trail", "show_time"]


def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """``YYYY-MM-DD`` or an ISO date-time → µs since the epoch; no offset means +07:00. With
    ``end_of_day`` a bare date means the end of that day (an inclusive ``to``).
    ``ValueError`` for anything else."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if end_of_day else 0)
            moment = datetime(day.year, day.month, day.day, tzinfo=VN)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=VN)
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD) or ISO date-time: {text!r}") from None
    return int(moment.timestamp() * 1_000_000)


def show_time(time_us: int | None) -> str | None:
    """An audit time (µs since the epoch) as ISO 8601 in Vietnam time."""
    if time_us is None:
        return None
    return datetime.fromtimestamp(time_us / 1_000_000, VN).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Verification:
    """What the chain check found before the report was computed."""

    certified: bool
    chains: int
    records_checked: int
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "certified": self.certified,
            "chains": self.chains,
            "records_checked": self.records_checked,
            "problems": list(self.problems),
        }


@dataclass
class Trail:
    """The exchange records a report asked for, and the verdict on the chains."""

    records: list[AuditRecord] = field(default_factory=list)
    verification: Verification = field(default_factory=lambda: Verification(True, 0, 0))


async def read_trail(
    store: Store,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    keep: Callable[[AuditRecord], bool] | None = None,
    pins: Iterable[Pin] = (),
) -> Trail:
    """Verify every chain; keep the exchange records with ``since_us <= time_us <
    until_us`` that ``keep`` accepts, sorted by time, one per exchange
    (:func:`bus.audit.accesses.accesses`: a started record alone is outcome ``UNKNOWN``)."""
    kept: list[AuditRecord] = []

    def visit(rec: AuditRecord) -> None:
        if rec.kind != "exchange":
            return
        if since_us is not None and rec.time_us < since_us:
            return
        if until_us is not None and rec.time_us >= until_us:
            return
        if keep is None or keep(rec):
            kept.append(rec)

    reports = await verify_store(store, pins, visit=visit)
    problems = tuple(str(r.problem) for r in reports if r.problem is not None)
    kept.sort(key=lambda r: (r.time_us, r.chain, r.seq))
    kept = accesses(kept)  # an exchange's started + final records: one access
    verdict = Verification(
        certified=not problems,
        chains=len(reports),
        records_checked=sum(r.checked for r in reports),
        problems=problems,
    )
    return Trail(kept, verdict)
