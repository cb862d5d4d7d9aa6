"""``report dpia``: a data-protection impact-assessment skeleton from routing.yaml (pure).

Per service: whether it carries personal data, the categories of personal data each
recipient (consumer) may receive (from its field grant, ``consumers.<c>.fields.<s>``; a
consumer without one receives every non-sensitive field the upstream returns, shown as
``all non-sensitive fields``), the sensitive fields and who holds grants for them, the
legal bases a call may state, the audit policy; for the bus: retention (audit records,
idempotent answers, dead letters) and the security measures in force (gateway TLS and
mutual TLS, each consumer's credentials and their expiry, upstream TLS, pseudonymised
subject keys, admin keys). What the config cannot know — the purpose of processing,
necessity, risks, encryption at rest of the store — is marked for a person to write.

``diff`` against a previous routing.yaml compares the two assessments line by line
(``added``/``removed``/``changed`` at a dotted path), so a reviewer sees what changed in
the assessment, not in the file's spelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.canonical import LegalBasis
from bus.config import ConsumerConfig, RoutingConfig, ServiceConfig
from bus.config.access import parse_expiry
from bus.report.categories import category_label, field_categories
from bus.report.render import Column, Fact, Table
from bus.report.trail import Verification

__all__ = ["ALL_FIELDS", "DpiaReport", "assessment", "dpia_report"]

ALL_FIELDS = "all non-sensitive fields"


def _recipient(name: str, spec: ConsumerConfig, sname: str, svc: ServiceConfig) -> dict[str, Any]:
    ops = spec.allow.get(sname, [])
    grant = spec.fields.get(sname)
    sensitive = sorted(set(spec.sensitive.get(sname, ())))
    cats = sorted(field_categories(grant or (), svc.sensitive_fields)) if grant else [ALL_FIELDS]
    return {
        "consumer": name,
        "display_name": spec.display_name or name,
        "operations": sorted(svc.operations) if "*" in ops else sorted(ops),
        "fields": sorted(grant) if grant is not None else ALL_FIELDS,
        "categories": cats,
        "sensitive_granted": sensitive,
        "transparency": spec.transparency,
    }


def _service(config: RoutingConfig, name: str, svc: ServiceConfig) -> dict[str, Any]:
    recipients = [
        _recipient(cname, spec, name, svc)
        for cname, spec in sorted(config.consumers.items())
        if spec.allow.get(name)
    ]
    holders = {
        f: sorted(r["consumer"] for r in recipients if f in r["sensitive_granted"])
        for f in svc.sensitive_fields
    }
    upstream = config.upstreams[svc.upstream]
    policy = svc.audit or ("fail_closed" if svc.personal_data else config.audit.default_policy)
    return {
        "description": svc.description,
        "adapter": svc.adapter,
        "upstream": svc.upstream,
        "personal_data": svc.personal_data,
        "operations": sorted(svc.operations),
        "recipients": {r["consumer"]: r for r in recipients},
        "sensitive_fields": list(svc.sensitive_fields),
        "sensitive_holders": holders,
        "legal_bases": [b.value for b in LegalBasis] if svc.personal_data else [],
        "purpose_required": svc.personal_data,
        "audit_policy": policy,
        "upstream_tls": {
            "https": upstream.url.startswith("https://"),
            "verify_tls": upstream.verify_tls,
            "client_certificate": upstream.client_cert is not None,
        },
    }


def _credentials(spec: ConsumerConfig, now: datetime) -> dict[str, Any]:
    expiries = [parse_expiry(k.expires) for k in spec.api_keys if k.expires]
    return {
        "api_keys": len(spec.api_keys),
        "keys_without_expiry": sum(1 for k in spec.api_keys if not k.expires),
        "next_expiry": min(expiries).date().isoformat() if expiries else None,
        "expired": sum(1 for e in expiries if e <= now),
        "client_certificates": len(spec.client_certs),
    }


def assessment(config: RoutingConfig, *, now: datetime | None = None) -> dict[str, Any]:
    """The assessment of ``config`` as data (what :class:`DpiaReport` shows and diffs)."""
    now = now or datetime.now(UTC)
    tls = config.gateway.tls
    return {
        "services": {n: _service(config, n, s) for n, s in sorted(config.services.items())},
        "retention": {
            "audit_retention_days": config.audit.retention_days,
            "idempotency_ttl_s": config.gateway.idempotency_ttl_s,
            "dead_letter_ttl_s": config.broker.dlq_ttl_s,
        },
        "security": {
            "gateway_tls": tls is not None,
            "tls_min_version": tls.min_version if tls else None,
            "mutual_tls": tls.client_auth if tls else "none",
            "subject_keys_pseudonymised": config.audit.subject_key is not None,
            "audit_default_policy": config.audit.default_policy,
            "admin_keys": len(config.admin.api_keys),
            "credentials": {n: _credentials(c, now) for n, c in sorted(config.consumers.items())},
        },
    }


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{path}.{key}" if path else str(key)))
        return out
    return {path: value}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    a, b = _flatten(old), _flatten(new)
    out = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            out.append({"change": "added", "path": path, "old": None, "new": b[path]})
        elif path not in b:
            out.append({"change": "removed", "path": path, "old": a[path], "new": None})
        elif a[path] != b[path]:
            out.append({"change": "changed", "path": path, "old": a[path], "new": b[path]})
    return out


_TO_WRITE = [
    ("Mục đích xử lý", "purpose of processing"),
    ("Tính cần thiết, tương xứng", "necessity and proportionality"),
    ("Rủi ro đối với chủ thể dữ liệu", "risks to the data subjects"),
    ("Mã hóa dữ liệu lưu trữ (CSDL nhật ký)", "encryption at rest of the store"),
    ("Biện pháp giảm thiểu khác", "further mitigations"),
    ("Người lập, ngày lập", "assessed by, on"),
]


@dataclass
class DpiaReport:
    """The assessment skeleton, and its diff against a previous config."""

    data: dict[str, Any]
    diff: list[dict[str, Any]] | None = None
    verification: Verification = field(default_factory=lambda: Verification(True, 0, 0))
    kind: str = "dpia"

    @property
    def title(self) -> tuple[str, str]:
        """(Vietnamese, English) title."""
        return ("Đánh giá tác động xử lý dữ liệu cá nhân", "Data-protection impact assessment")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {**self.data, "to_write": [en for _, en in _TO_WRITE], "diff": self.diff}

    def facts(self) -> list[Fact]:
        """Retention and security, then what a person writes."""
        r, s = self.data["retention"], self.data["security"]
        facts = [
            Fact(
                "Lưu nhật ký kiểm toán (ngày)", "audit retention (days)", r["audit_retention_days"]
            ),
            Fact(
                "Lưu kết quả trả lời (giây)", "idempotent answers kept (s)", r["idempotency_ttl_s"]
            ),
            Fact("Lưu thư lỗi (giây)", "dead letters kept (s)", r["dead_letter_ttl_s"]),
            Fact("TLS tại cổng", "gateway TLS", s["gateway_tls"]),
            Fact("Phiên bản TLS tối thiểu", "minimum TLS version", s["tls_min_version"]),
            Fact("Xác thực hai chiều (mTLS)", "mutual TLS", s["mutual_tls"]),
            Fact(
                "Bút danh hóa số định danh (HMAC)",
                "ID numbers pseudonymised",
                s["subject_keys_pseudonymised"],
            ),
            Fact("Số khóa quản trị", "admin keys", s["admin_keys"]),
        ]
        return facts + [Fact(vi, en, None, needs_person=True) for vi, en in _TO_WRITE]

    def tables(self) -> list[Table]:
        """Services, recipients, credentials and the diff."""
        services = Table(
            "services",
            "Dịch vụ",
            "services",
            [
                Column("service", "Dịch vụ", "service"),
                Column("description", "Mô tả", "description"),
                Column("personal_data", "Dữ liệu cá nhân", "personal data"),
                Column(
                    "sensitive_holders", "Dữ liệu nhạy cảm: được cấp cho", "sensitive: granted to"
                ),
                Column("legal_bases", "Căn cứ pháp lý cho phép", "legal bases allowed"),
                Column("audit_policy", "Chính sách kiểm toán", "audit policy"),
                Column("upstream_tls", "TLS tới nguồn", "upstream TLS"),
            ],
            [{"service": n, **s} for n, s in self.data["services"].items()],
        )
        recipients = Table(
            "recipients",
            "Bên nhận dữ liệu",
            "recipients",
            [
                Column("service", "Dịch vụ", "service"),
                Column("consumer", "Hệ thống khai thác", "consumer"),
                Column("display_name", "Tên hiển thị", "display name"),
                Column("operations", "Nghiệp vụ", "operations"),
                Column("categories", "Loại dữ liệu", "categories"),
                Column("sensitive_granted", "Nhạy cảm được cấp", "sensitive granted"),
                Column("transparency", "Minh bạch với chủ thể", "transparency"),
            ],
            [
                {
                    "service": n,
                    **r,
                    "categories": [
                        c if c == ALL_FIELDS else category_label(c) for c in r["categories"]
                    ],
                }
                for n, s in self.data["services"].items()
                for r in s["recipients"].values()
            ],
        )
        creds = Table(
            "credentials",
            "Thông tin xác thực của các hệ thống",
            "consumers' credentials",
            [
                Column("consumer", "Hệ thống khai thác", "consumer"),
                Column("api_keys", "Số khóa API", "API keys"),
                Column("keys_without_expiry", "Khóa không hạn", "keys without expiry"),
                Column("next_expiry", "Hết hạn sớm nhất", "next expiry"),
                Column("expired", "Đã hết hạn", "expired"),
                Column("client_certificates", "Chứng thư số", "client certificates"),
            ],
            [{"consumer": n, **c} for n, c in self.data["security"]["credentials"].items()],
        )
        tables = [services, recipients, creds]
        if self.diff is not None:
            tables.append(
                Table(
                    "diff",
                    "Thay đổi so với lần đánh giá trước",
                    "changes since the previous assessment",
                    [
                        Column("change", "Thay đổi", "change"),
                        Column("path", "Mục", "item"),
                        Column("old", "Trước", "before"),
                        Column("new", "Sau", "after"),
                    ],
                    list(self.diff),
                )
            )
        return tables


def dpia_report(
    config: RoutingConfig, previous: RoutingConfig | None = None, *, now: datetime | None = None
) -> DpiaReport:
    """The assessment of ``config``; with ``previous``, its diff against that one's."""
    data = assessment(config, now=now)
    diff = _diff(assessment(previous, now=now), data) if previous is not None else None
    return DpiaReport(data, diff)
