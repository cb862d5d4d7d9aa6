"""Which durability policy a route gets, the audit key's checks, and what an exchange's
record holds (pure: no store)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import parse_routing
from bus.audit.chain import AuditEntry
from bus.audit.observer import (
    AuditKeyError,
    AuditObserver,
    Auditor,
    Sampler,
    audit_policy,
    exchange_entry,
    load_subject_key,
)
from bus.config import ConfigError, RoutingConfig
from bus.exchange import Exchange
from bus.store import open_store
from bus.store.base import MessageWrite


def config(audit: dict[str, Any] | None = None, **services: dict[str, Any]) -> RoutingConfig:
    data: dict[str, Any] = {
        "version": 1,
        "upstreams": {"moj": {"url": "https://moj.example/"}},
        "services": {
            name: {
                "adapter": "civil_status",
                "upstream": "moj",
                "operations": {"lookup": {}},
                **extra,
            }
            for name, extra in services.items()
        },
    }
    if audit is not None:
        data["audit"] = audit
    return parse_routing(data)


def test_personal_data_is_fail_closed_unless_the_route_says_otherwise() -> None:
    cfg = config(
        personal={},
        public={"personal_data": False},
        relaxed={"audit": "fail_open"},
        strict_public={"personal_data": False, "audit": "fail_closed"},
    )
    assert audit_policy(cfg, "personal") == "fail_closed"
    assert audit_policy(cfg, "public") == "fail_open"
    assert audit_policy(cfg, "relaxed") == "fail_open"
    assert audit_policy(cfg, "strict_public") == "fail_closed"
    assert audit_policy(cfg, None) == "fail_open", "rejected before routing: the default"
    assert audit_policy(cfg, "no-such-service") == "fail_open"
    closed = config({"default_policy": "fail_closed"}, public={"personal_data": False})
    assert audit_policy(closed, "public") == "fail_closed"
    assert audit_policy(closed, None) == "fail_closed"


def test_the_audit_section_is_validated() -> None:
    for bad in (
        {"subject_key": "an-inline-secret-value"},
        {"default_policy": "sometimes"},
        {"retention_days": 0},
        {"colour": "red"},
    ):
        with pytest.raises(ConfigError):
            config(bad, s={})
    with pytest.raises(ConfigError):
        config(None, s={"audit": "never"})


def test_the_audit_key_must_resolve_and_be_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config({"subject_key": "env:T_AUDIT_KEY_X"}, s={})
    monkeypatch.delenv("T_AUDIT_KEY_X", raising=False)
    with pytest.raises(AuditKeyError, match="T_AUDIT_KEY_X is not set"):
        load_subject_key(cfg)
    monkeypatch.setenv("T_AUDIT_KEY_X", "short")
    with pytest.raises(AuditKeyError, match="at least 16"):
        load_subject_key(cfg)
    monkeypatch.setenv("T_AUDIT_KEY_X", "a-long-enough-audit-key")
    assert load_subject_key(cfg) == b"a-long-enough-audit-key"
    assert load_subject_key(config(None, s={})) is None


def auditor(key: bytes | None) -> Auditor:
    # Never started (its store never connected): exchange_entry only needs the key.
    return Auditor(open_store("sqlite:///unused.sqlite3"), node="lgsp-1", key=key)


def test_an_exchange_record_keys_the_subject_and_drops_free_text() -> None:
    exchange = Exchange(
        correlation_id="c1",
        request_id="req-00000001",
        consumer="portal",
        service="civil-status",
        operation="lookup",
        officer="001085000123",
        unit="H01",
        purpose={"procedure_code": "1.001234", "legal_basis": "LEGAL_DUTY"},
        subject_id="001090000001",
        fields_returned=["persons.full_name", "status"],
        outcome="OK",
        status=200,
    )
    keyed = auditor(b"k" * 20)
    entry = exchange_entry(keyed, exchange)
    assert entry.subject_key == keyed.subject_key("001090000001")
    assert entry.subject_key is not None
    assert "001090000001" not in repr(entry)
    assert (entry.request_id, entry.unit, entry.fields) == (
        "req-00000001",
        "H01",
        ("persons.full_name", "status"),
    )
    exchange.request_id = "Nguyễn Văn A"  # what a rejected body may carry
    assert exchange_entry(keyed, exchange).request_id is None
    unkeyed = exchange_entry(auditor(None), exchange)
    assert (unkeyed.subject_key, unkeyed.key_id) == (None, None)


class Recording(Auditor):
    """An auditor that keeps what it is asked to record (never started)."""

    def __init__(self) -> None:
        super().__init__(open_store("sqlite:///unused.sqlite3"), node="lgsp-1", key=b"k" * 20)
        self.kept: list[tuple[AuditEntry, bool]] = []

    async def record(
        self, entry: AuditEntry, *, durable: bool = True, write: MessageWrite | None = None
    ) -> None:
        self.kept.append((entry, durable))


async def test_unauthenticated_records_are_sampled_one_a_second() -> None:
    # 21.7: each unauthenticated request wrote a durable record (~2k/s into a trail kept
    # 365 days). Now: one a second, not durable, carrying how many were left out.
    now = [100.2]
    recording = Recording()
    observer = AuditObserver(recording, config(cs={}), sampler=Sampler(clock=lambda: now[0]))

    def unauthenticated() -> Exchange:
        return Exchange(correlation_id="c", outcome="UNAUTHENTICATED", status=401)

    for _ in range(5):
        await observer.exchange_finished(unauthenticated())
    assert len(recording.kept) == 1
    now[0] = 101.0
    reloaded = observer.with_config(config(cs={}))  # a reload keeps the count
    await reloaded.exchange_finished(unauthenticated())
    await reloaded.exchange_finished(
        Exchange(correlation_id="d", consumer="portal", service="cs", outcome="OK", status=200)
    )
    assert [(e.outcome, dict(e.detail), d) for e, d in recording.kept] == [
        ("UNAUTHENTICATED", {}, False),
        ("UNAUTHENTICATED", {"suppressed_before": 4}, False),
        ("OK", {}, True),
    ]
