"""STARTED records as readers see them (issue 21.2): an exchange's started record and its
final one are one access; a started record alone (its process died mid-request) is one
access with outcome UNKNOWN; records written before started records existed count as
before. Checked on the pure fold, on ``audit query`` and ``audit verify`` (subprocesses),
on the access report and on the evidence bundle, on each store."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from adapters.base import parse_routing
from bus.audit.accesses import STARTED, UNKNOWN, accesses
from bus.audit.chain import AuditEntry, seal
from bus.audit.evidence import evidence_bundle
from bus.audit.observer import Auditor, verify_store
from bus.errors import AuditUnavailable
from bus.report import access_report
from bus.store import open_store
from bus.store.base import GENESIS_HASH, AuditRecord, MessageWrite
from tests.unit.audit.test_audit_cli import KEY, A, Cli, cli
from tests.unit.audit.test_audit_writer import FAST, all_records, fast_url, until, write_lock

__all__ = ["cli", "fast_url"]  # the fixtures


def entry(request_id: str, outcome: str, ref: str | None, **more: object) -> AuditEntry:
    detail = {"credential": "key-1", **({"exchange": ref} if ref else {})}
    return AuditEntry(
        time_us=int(time.time() * 1_000_000) - 60_000_000,
        kind="exchange",
        request_id=request_id,
        consumer="portal",
        officer="001085000123",
        unit="H01",
        service="population",
        operation="lookup",
        purpose={"procedure_code": "1.000001", "legal_basis": "LEGAL_DUTY"},
        fields=() if outcome == STARTED else ("citizen.full_name",),
        outcome=outcome,
        status={"OK": 200, STARTED: 0}.get(outcome, 503),
        detail=detail,
        **more,  # type: ignore[arg-type]
    )


def sealed(*entries: AuditEntry) -> list[AuditRecord]:
    out, prev = [], GENESIS_HASH
    for seq, e in enumerate(entries, 1):
        out.append(seal(e, chain="lgsp-1/1", node="lgsp-1", seq=seq, prev_hash=prev))
        prev = out[-1].hash
    return out


def test_each_exchange_is_counted_once() -> None:
    old = entry("req-old", "OK", None)
    lone = entry("req-lone", STARTED, "ref-lone")
    started, final = entry("req-pair", STARTED, "ref-pair"), entry("req-pair", "OK", "ref-pair")
    # A fail_closed exchange whose store failed: both records say AUDIT_UNAVAILABLE.
    refused = [entry("req-refused", "AUDIT_UNAVAILABLE", "ref-r") for _ in range(2)]
    records = sealed(old, lone, started, final, *refused)
    seen = accesses(records)
    assert [(r.request_id, r.outcome) for r in seen] == [
        ("req-old", "OK"),
        ("req-lone", UNKNOWN),
        ("req-pair", "OK"),
        ("req-refused", "AUDIT_UNAVAILABLE"),
    ]
    assert seen[2] == records[3]  # the final record itself stands for the pair
    assert seen[3] == records[5]  # the last of the refused pair
    # Order does not matter (chains are read one after another).
    assert {r.request_id for r in accesses(reversed(records))} == {
        "req-old",
        "req-lone",
        "req-pair",
        "req-refused",
    }
    admin = dataclasses.replace(records[0], kind="admin", outcome=STARTED)
    assert accesses([admin]) == [admin]  # only exchange records are folded


async def seed(cli: Cli) -> None:
    async with Auditor(cli.store, node="lgsp-1", key=KEY.encode()) as auditor:
        skey = auditor.subject_key(A)
        keyed = {"subject_key": skey, "key_id": auditor.key_id}
        for e in (
            entry("req-old", "OK", None, **keyed),
            entry("req-lone", STARTED, "ref-lone", **keyed),
            entry("req-pair", STARTED, "ref-pair", **keyed),
            entry("req-pair", "OK", "ref-pair", **keyed),
        ):
            await auditor.record(e, durable=True)


async def test_query_verify_report_and_evidence_count_a_started_record_once(cli: Cli) -> None:
    await seed(cli)
    cfg = str(cli.config)
    code, out, _ = await cli.run("audit", "query", "--config", cfg, "--subject", A)
    assert code == 0, out
    assert out.startswith("3 access(es)")
    assert out.count("outcome=UNKNOWN") == 1
    assert out.count("request_id=req-pair") == 1
    code, out, _ = await cli.run("audit", "query", "--config", cfg, "--subject", A, "--json")
    assert sorted(r["outcome"] for r in json.loads(out)) == ["OK", "OK", UNKNOWN]
    code, out, _ = await cli.run("audit", "verify")
    assert code == 0, out  # started records are ordinary links of the chain

    config = parse_routing({"version": 1, "node": "lgsp-1"})
    now = int(time.time() * 1_000_000)
    report = await access_report(cli.store, config, since_us=now - 3_600_000_000, until_us=now)
    (row,) = report.rows
    assert (row.calls, row.answered, row.denials) == (3, 2, {UNKNOWN: 1})
    assert report.verification.records_checked == 4 + 2  # + the two audit.query records

    bundle = await evidence_bundle(cli.store, "req-pair")
    assert bundle is not None
    assert len(bundle["evidence"]) == 2  # both records, as stored, each verifiable
    assert [a["outcome"] for a in bundle["accesses"]] == ["OK"]
    lone = await evidence_bundle(cli.store, "req-lone")
    assert lone is not None
    assert [a["outcome"] for a in lone["accesses"]] == [UNKNOWN]


async def test_a_write_with_a_record_lands_with_it_or_not_at_all(fast_url: str) -> None:
    """The claim rides in the record's commit: its result comes back once committed; with
    the store refusing, fail_closed gets AUDIT_UNAVAILABLE and fail_open a ConnectionError
    (the gateway's STORE_UNAVAILABLE), the records stay queued and are written later, and
    the claims are dropped (never written behind the caller's back)."""
    store = open_store(fast_url)
    await store.connect()
    try:
        async with Auditor(store, node="lgsp-1", key=KEY.encode(), settings=FAST) as auditor:

            def claim(request_id: str) -> MessageWrite:
                return MessageWrite("claim", "portal", request_id, body_hash="h", ttl_s=60)

            started = entry("req-a", STARTED, "ref-a")
            assert await auditor.record(started, durable=True, write=claim("req-a")) is None
            again = await auditor.record(started, durable=False, write=claim("req-a"))
            assert again is not None  # claimed by the first
            assert again.state == "pending"
            async with write_lock(fast_url):
                with pytest.raises(AuditUnavailable):
                    await auditor.record(
                        entry("req-b", STARTED, "ref-b"), durable=True, write=claim("req-b")
                    )
                with pytest.raises(ConnectionError):
                    await auditor.record(
                        entry("req-c", STARTED, "ref-c"), durable=False, write=claim("req-c")
                    )
            await until(lambda: auditor.backlog == 0)
        assert await store.message_get("portal", "req-b") is None
        assert await store.message_get("portal", "req-c") is None
        outcomes = sorted((r.request_id, r.outcome) for r in await all_records(store))
        assert outcomes == [
            ("req-a", STARTED),
            ("req-a", STARTED),
            ("req-b", "AUDIT_UNAVAILABLE"),  # the caller was refused: the record says so
            ("req-c", STARTED),
        ]
        assert all(r.problem is None for r in await verify_store(store))
    finally:
        await store.aclose()
