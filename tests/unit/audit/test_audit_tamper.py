"""Tampering with the audit trail behind the bus's back, on each store: ``verify`` names the
first bad record every time (and an intact trail verifies)."""

from __future__ import annotations

import time

import pytest

from bus.audit.chain import AuditEntry
from bus.audit.observer import Auditor, verify_store
from bus.store import Store
from tests.support.storetools import allow_updates, raw_execute

KEY = b"tamper-audit-key-0123456789"

# kind → (statements, expected "kind@seq" on chain lgsp-1/1 of 10 records)
TAMPERING: dict[str, tuple[list[str], str]] = {
    "change a field": (
        ["UPDATE lgsp_audit_records SET outcome = 'NOT_FOUND' WHERE seq = 4"],
        "altered@4",
    ),
    "change the subject key": (
        ["UPDATE lgsp_audit_records SET subject_key = '" + "0" * 64 + "' WHERE seq = 6"],
        "altered@6",
    ),
    "delete a row": (["DELETE FROM lgsp_audit_records WHERE seq = 5"], "missing@5"),
    "swap two rows": (
        [
            "UPDATE lgsp_audit_records SET seq = -1 WHERE seq = 3",
            "UPDATE lgsp_audit_records SET seq = 3 WHERE seq = 6",
            "UPDATE lgsp_audit_records SET seq = 6 WHERE seq = -1",
        ],
        "altered@3",
    ),
    "reorder contents": (
        [
            "UPDATE lgsp_audit_records SET request_id = 'x' WHERE seq = 2",
            "UPDATE lgsp_audit_records SET request_id = 'req-00000002' WHERE seq = 3",
            "UPDATE lgsp_audit_records SET request_id = 'req-00000003' WHERE seq = 2",
        ],
        "altered@2",
    ),
    "truncate the tail": (["DELETE FROM lgsp_audit_records WHERE seq >= 8"], "truncated@8"),
    "truncate the table": (["DELETE FROM lgsp_audit_records"], "truncated@1"),
    "move the head back too": (
        [
            "DELETE FROM lgsp_audit_records WHERE seq >= 8",
            "UPDATE lgsp_audit_chains SET head_seq = 7",
        ],
        "head@7",
    ),
    "prune outside 'audit prune' (anchor moved properly)": (
        [
            "UPDATE lgsp_audit_chains SET anchor_seq = 3, anchor_hash = "
            "(SELECT hash FROM lgsp_audit_records WHERE seq = 3)",
            "DELETE FROM lgsp_audit_records WHERE seq <= 3",
        ],
        "anchor@3",
    ),
    "pretend a prune": (
        [
            "DELETE FROM lgsp_audit_records WHERE seq <= 3",
            "UPDATE lgsp_audit_chains SET anchor_seq = 3",
        ],
        "unlinked@4",
    ),
}


async def seed(store: Store) -> None:
    async with Auditor(store, node="lgsp-1", key=KEY) as auditor:
        for i in range(1, 11):
            entry = AuditEntry(
                time_us=int(time.time() * 1_000_000),
                kind="exchange",
                request_id=f"req-{i:08d}",
                consumer="portal",
                service="civil-status",
                operation="lookup",
                subject_key=auditor.subject_key(f"00108500{i:04d}"),
                key_id=auditor.key_id,
                outcome="OK",
                status=200,
            )
            await auditor.record(entry, durable=True)


async def first_problem(store: Store) -> str:
    reports = await verify_store(store)
    chain = next(r for r in reports if r.head.chain == "lgsp-1/1")
    return "ok" if chain.problem is None else f"{chain.problem.kind}@{chain.problem.seq}"


async def test_an_untouched_trail_verifies(store: Store) -> None:
    await seed(store)
    assert await first_problem(store) == "ok"


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_tampering_is_named_at_the_first_bad_record(
    store: Store, store_url: str, kind: str
) -> None:
    await seed(store)
    statements, expected = TAMPERING[kind]
    await raw_execute(store_url, *allow_updates(store_url), *statements)
    assert await first_problem(store) == expected
