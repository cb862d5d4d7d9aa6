"""``report subject``: a citizen's own access report, in plain Vietnamese.

The citizen's ID number is hashed with the audit key (HMAC-SHA256, as the gateway does)
and every exchange record with that subject key is listed: when, which organisation (the
consumer's ``display_name``), which procedure and dossier, which legal basis, which
categories of data, and whether data was provided. Consumers configured with
``transparency: excluded`` never appear; ``delayed(N days)`` ones appear only for
accesses at least N days old. The report names no other person; it shows the ID only
masked (``001*******45``). Transparency is read from the config in force: a consumer
removed from the file is shown by its name, in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.audit.chain import key_fingerprint, record_subject_keys, subject_key
from bus.config import RoutingConfig
from bus.logs import mask_id
from bus.report.categories import category_label, field_categories, legal_basis_label
from bus.report.render import Column, Fact, Table
from bus.report.trail import Verification, read_trail, show_time
from bus.store.base import AuditRecord, Store

__all__ = ["SubjectAccess", "SubjectReport", "subject_report", "visible_to_subject"]

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class SubjectAccess:
    """One access to the citizen's data, as the citizen may see it."""

    time_us: int
    organisation: str
    unit: str | None
    service: str
    procedure_code: str | None
    dossier_id: str | None
    legal_basis: str
    categories: tuple[str, ...]
    provided: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "time": show_time(self.time_us),
            "organisation": self.organisation,
            "unit": self.unit,
            "service": self.service,
            "procedure_code": self.procedure_code,
            "dossier_id": self.dossier_id,
            "legal_basis": self.legal_basis,
            "categories": list(self.categories),
            "provided": self.provided,
        }


@dataclass
class SubjectReport:
    """Every access the citizen may see."""

    masked_id: str
    key_id: str
    since_us: int | None
    until_us: int | None
    verification: Verification
    accesses: list[SubjectAccess] = field(default_factory=list)
    kind: str = "subject"

    @property
    def title(self) -> tuple[str, str]:
        """(Vietnamese, English) title."""
        return ("Thông tin về việc truy cập dữ liệu cá nhân của bạn", "Who accessed your data")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "subject": self.masked_id,
            "audit_key_id": self.key_id,
            "from": show_time(self.since_us),
            "to": show_time(self.until_us),
            "accesses": [a.to_dict() for a in self.accesses],
        }

    def facts(self) -> list[Fact]:
        """A plain-language summary."""
        provided = sum(1 for a in self.accesses if a.provided)
        summary = (
            f"Dữ liệu cá nhân của bạn (số định danh {self.masked_id}) đã được các cơ quan "
            f"đề nghị cung cấp {len(self.accesses)} lần qua nền tảng chia sẻ dữ liệu của "
            f"tỉnh; {provided} lần dữ liệu đã được cung cấp. Mỗi lần đều ghi rõ thủ tục, hồ "
            "sơ và căn cứ pháp lý."
        )
        return [
            Fact("Tóm tắt", "summary", summary),
            Fact("Từ", "from", show_time(self.since_us) or "đầu nhật ký (start of the trail)"),
            Fact("Đến", "to", show_time(self.until_us) or "nay (now)"),
        ]

    def tables(self) -> list[Table]:
        """The accesses, oldest first."""
        columns = [
            Column("time", "Thời gian", "when"),
            Column("organisation", "Cơ quan, tổ chức", "organisation"),
            Column("unit", "Mã đơn vị", "unit"),
            Column("procedure_code", "Thủ tục hành chính", "procedure"),
            Column("dossier_id", "Hồ sơ", "dossier"),
            Column("legal_basis", "Căn cứ pháp lý", "legal basis"),
            Column("categories", "Loại thông tin", "data"),
            Column("provided", "Đã cung cấp", "provided"),
        ]
        rows = []
        for a in self.accesses:
            row = a.to_dict()
            row["legal_basis"] = legal_basis_label(a.legal_basis)
            row["categories"] = [category_label(c) for c in a.categories]
            row["provided"] = "Đã cung cấp" if a.provided else "Không cung cấp"
            rows.append(row)
        return [Table("accesses", "Các lần truy cập", "accesses", columns, rows)]


def visible_to_subject(config: RoutingConfig, rec: AuditRecord, now_us: int) -> bool:
    """Whether the consumer's transparency lets the subject see ``rec`` now."""
    spec = config.consumers.get(rec.consumer or "")
    if spec is None:
        return True
    delay = spec.transparency_delay_days
    return delay is not None and rec.time_us <= now_us - delay * DAY_US


async def subject_report(
    store: Store,
    config: RoutingConfig,
    key: bytes,
    id_numbers: Sequence[str],
    *,
    now_us: int,
    since_us: int | None = None,
    until_us: int | None = None,
) -> SubjectReport:
    """The accesses the citizen may see to any of ``id_numbers`` (e.g. CCCD and old
    CMND; ``key``: the audit key); ``ValueError`` without an ID."""
    ids = [i.strip() for i in id_numbers if i.strip()]
    if not ids:
        raise ValueError("no subject ID given")
    wanted = {subject_key(key, i) for i in ids}

    def keep(rec: AuditRecord) -> bool:
        return bool(wanted & record_subject_keys(rec)) and visible_to_subject(config, rec, now_us)

    trail = await read_trail(store, since_us=since_us, until_us=until_us, keep=keep)
    report = SubjectReport(
        ", ".join(mask_id(i) for i in ids),
        key_fingerprint(key),
        since_us,
        until_us,
        trail.verification,
    )
    for rec in trail.records:
        spec = config.consumers.get(rec.consumer or "")
        svc = config.services.get(rec.service or "")
        names = svc.sensitive_fields if svc is not None else ("ethnicity", "religion")
        provided = rec.outcome == "OK"
        cats = field_categories(rec.fields, names) if provided else set()
        report.accesses.append(
            SubjectAccess(
                time_us=rec.time_us,
                organisation=(spec.display_name if spec else None) or rec.consumer or "-",
                unit=rec.unit,
                service=(svc.description if svc and svc.description else rec.service) or "-",
                procedure_code=rec.purpose.get("procedure_code"),
                dossier_id=rec.purpose.get("dossier_id"),
                legal_basis=rec.purpose.get("legal_basis") or "-",
                categories=tuple(sorted(cats)),
                provided=provided,
            )
        )
    return report
