"""``report breach``: the scope of a suspected leak, and a notification to fill in.

The suspect is a consumer, one of its credentials (the API key's ``label``, else
``key-<n>``, or ``cert-<n>``: what exchange records hold as ``detail.credential``) and/or
an officer; every given selector must match. Over ``since_us <= time < until_us`` the
report gives the records that returned data, the subjects they concern (count, and the
subject keys — HMACs of ID numbers — for the data owner to resolve), the categories of
data returned, the time span, the purposes (procedure and legal basis; dossiers counted,
never listed), and a breach notification (PDP law: to the A05 department within 72
hours of discovery) with what the bus knows pre-filled and what a person must write
marked. Records written before credentials were recorded hold only the consumer: with a
credential selector they cannot be attributed and are counted as such.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bus.audit.chain import record_subject_keys
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

__all__ = ["DEADLINE_US", "BreachReport", "BreachSelector", "breach_report"]

DEADLINE_US = 72 * 3600 * 1_000_000
"""Notification deadline after discovery (72 hours)."""


@dataclass(frozen=True)
class BreachSelector:
    """Whose calls are suspect (every given part must match)."""

    consumer: str | None = None
    credential: str | None = None
    officer: str | None = None

    def __post_init__(self) -> None:
        if self.consumer is None and self.credential is None and self.officer is None:
            raise ValueError("name a consumer, an API key id or an officer")

    def matches(self, rec: AuditRecord) -> bool:
        """Whether ``rec`` is one of the suspect's calls."""
        if self.consumer is not None and rec.consumer != self.consumer:
            return False
        if self.officer is not None and rec.officer != self.officer:
            return False
        return self.credential is None or rec.detail.get("credential") == self.credential

    def to_dict(self) -> dict[str, Any]:
        """JSON form (as the caller supplied it)."""
        return {"consumer": self.consumer, "api_key_id": self.credential, "officer": self.officer}


@dataclass
class BreachReport:
    """Scope of a suspected breach."""

    selector: BreachSelector
    since_us: int
    until_us: int | None
    discovered_us: int
    verification: Verification
    calls: int = 0
    records_with_data: int = 0
    subject_keys: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)
    first_us: int | None = None
    last_us: int | None = None
    services: dict[str, int] = field(default_factory=dict)
    purposes: list[dict[str, Any]] = field(default_factory=list)
    dossiers: int = 0
    officers: int = 0
    unattributable: int = 0
    """With a credential selector: records of the window without ``detail.credential``
    (written before credentials were recorded) of the same consumer, if given."""
    kind: str = "breach"

    @property
    def title(self) -> tuple[str, str]:
        """(Vietnamese, English) title."""
        return ("Phạm vi sự cố lộ lọt dữ liệu cá nhân", "Scope of a personal-data breach")

    @property
    def deadline_us(self) -> int:
        """72 hours after discovery."""
        return self.discovered_us + DEADLINE_US

    def notification(self) -> list[Fact]:
        """The fields of a breach notification: pre-filled, or marked for a person."""
        cats = ", ".join(category_label(c) for c in self.categories) or None
        return [
            Fact("Thời điểm phát hiện", "discovered at", show_time(self.discovered_us)),
            Fact(
                "Hạn thông báo (72 giờ)",
                "notification deadline (72 h)",
                show_time(self.deadline_us),
            ),
            Fact("Mô tả tính chất vi phạm", "nature of the breach", None, needs_person=True),
            Fact(
                "Thời gian xảy ra (theo nhật ký)",
                "when it happened (per the audit trail)",
                f"{show_time(self.first_us)} – {show_time(self.last_us)}"
                if self.first_us is not None
                else None,
            ),
            Fact("Loại dữ liệu cá nhân liên quan", "categories of personal data", cats),
            Fact(
                "Loại chủ thể dữ liệu",
                "categories of data subjects",
                "Công dân có dữ liệu được cung cấp qua các dịch vụ: "
                + ", ".join(self.services)
                + " (citizens whose data these services returned)"
                if self.services
                else None,
            ),
            Fact(
                "Số chủ thể dữ liệu (ước tính)",
                "approximate number of subjects",
                len(self.subject_keys),
            ),
            Fact("Số bản ghi (ước tính)", "approximate number of records", self.records_with_data),
            Fact("Hậu quả có thể xảy ra", "likely consequences", None, needs_person=True),
            Fact("Biện pháp đã thực hiện", "measures taken", None, needs_person=True),
            Fact("Biện pháp đề xuất", "measures proposed", None, needs_person=True),
            Fact("Người liên hệ, đơn vị", "contact person, organisation", None, needs_person=True),
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the notification fields under ``notification``)."""
        return {
            "selector": self.selector.to_dict(),
            "from": show_time(self.since_us),
            "to": show_time(self.until_us),
            "calls": self.calls,
            "records_with_data": self.records_with_data,
            "subjects": len(self.subject_keys),
            "subject_keys": self.subject_keys,
            "categories": self.categories,
            "sensitive": self.sensitive,
            "first": show_time(self.first_us),
            "last": show_time(self.last_us),
            "services": self.services,
            "purposes": self.purposes,
            "dossiers": self.dossiers,
            "officers": self.officers,
            "unattributable": self.unattributable,
            "discovered_at": show_time(self.discovered_us),
            "deadline": show_time(self.deadline_us),
            "notification": [
                {"vi": f.vi, "en": f.en, "value": f.value, "needs_person": f.needs_person}
                for f in self.notification()
            ],
        }

    def facts(self) -> list[Fact]:
        """Suspect, window, and the notification."""
        sel = self.selector
        head = [
            Fact("Hệ thống khai thác", "consumer", sel.consumer),
            Fact("Mã khóa API", "API key id", sel.credential),
            Fact("Cán bộ", "officer", sel.officer),
            Fact("Từ", "from", show_time(self.since_us)),
            Fact("Đến", "to", show_time(self.until_us) or "nay (now)"),
            Fact("Số lượt gọi", "calls", self.calls),
            Fact("Số cán bộ liên quan", "officers involved", self.officers),
            Fact("Số hồ sơ liên quan", "dossiers", self.dossiers),
        ]
        if self.selector.credential is not None:
            head.append(
                Fact(
                    "Bản ghi không ghi mã khóa (không quy được)",
                    "records without a credential (cannot be attributed)",
                    self.unattributable,
                )
            )
        return [f for f in head if f.value is not None] + self.notification()

    def tables(self) -> list[Table]:
        """Purposes, services, and the subject keys."""
        purposes = Table(
            "purposes",
            "Mục đích các lượt gọi",
            "purposes of the calls",
            [
                Column("procedure_code", "Mã thủ tục", "procedure"),
                Column("legal_basis", "Căn cứ pháp lý", "legal basis"),
                Column("calls", "Lượt gọi", "calls"),
            ],
            [{**p, "legal_basis": legal_basis_label(p["legal_basis"])} for p in self.purposes],
        )
        services = Table(
            "services",
            "Dịch vụ",
            "services",
            [Column("service", "Dịch vụ", "service"), Column("calls", "Lượt gọi", "calls")],
            [{"service": s, "calls": n} for s, n in self.services.items()],
        )
        subjects = Table(
            "subjects",
            "Khóa chủ thể (HMAC) cho chủ quản dữ liệu",
            "subject keys (HMAC) for the data owner",
            [Column("subject_key", "Khóa chủ thể", "subject key")],
            [{"subject_key": k} for k in self.subject_keys],
        )
        return [purposes, services, subjects]


async def breach_report(
    store: Store,
    config: RoutingConfig,
    selector: BreachSelector,
    *,
    since_us: int,
    until_us: int | None,
    discovered_us: int,
) -> BreachReport:
    """The scope of the suspect's calls in the window."""
    unattributable = 0

    def keep(rec: AuditRecord) -> bool:
        nonlocal unattributable
        if (
            selector.credential is not None
            and "credential" not in rec.detail
            and rec.consumer is not None
            and selector.consumer in (None, rec.consumer)
        ):
            unattributable += 1
        return selector.matches(rec)

    trail = await read_trail(store, since_us=since_us, until_us=until_us, keep=keep)
    records = trail.records
    report = BreachReport(selector, since_us, until_us, discovered_us, trail.verification)
    report.unattributable = unattributable
    report.calls = len(records)
    data = [r for r in records if r.outcome == "OK" and r.fields]
    report.records_with_data = len(data)
    report.subject_keys = sorted({k for r in data for k in record_subject_keys(r)})
    cats: set[str] = set()
    sensitive: set[str] = set()
    for r in data:
        svc = config.services.get(r.service or "")
        names = svc.sensitive_fields if svc is not None else ("ethnicity", "religion")
        found = field_categories(r.fields, names)
        cats |= found
        sensitive |= sensitive_categories(found, svc)
    report.categories, report.sensitive = sorted(cats), sorted(sensitive)
    if data:
        report.first_us, report.last_us = data[0].time_us, data[-1].time_us
    report.services = dict(sorted(Counter(f"{r.service}.{r.operation}" for r in data).items()))
    purposes = Counter(
        (r.purpose.get("procedure_code") or "-", r.purpose.get("legal_basis") or "-") for r in data
    )
    report.purposes = [
        {"procedure_code": p, "legal_basis": b, "calls": n}
        for (p, b), n in sorted(purposes.items())
    ]
    report.dossiers = len({r.purpose["dossier_id"] for r in data if r.purpose.get("dossier_id")})
    report.officers = len({r.officer for r in data if r.officer})
    return report
