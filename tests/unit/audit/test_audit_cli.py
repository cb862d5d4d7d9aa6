"""``lgsp-bus audit verify|query|export|prune`` as an operator runs them (a subprocess), on
each store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.audit.chain import AuditEntry
from bus.audit.observer import Auditor
from bus.store import Store
from tests.support.storetools import raw_execute

KEY = "cli-audit-key-0123456789"
DAY_US = 86_400 * 1_000_000
A, B = "001085000111", "079190000222"


@dataclass
class Cli:
    store: Store
    url: str
    config: Path

    async def run(self, *args: str, stdin: str = "", key: bool = True) -> tuple[int, str, str]:
        env = {**os.environ, "LGSP_STORE_URL": self.url, "T_AUDIT_KEY": KEY}
        if not key:  # the audit key unset in this process's environment
            del env["T_AUDIT_KEY"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bus.cli.main",
            "--log-format",
            "json",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def seed(self, *items: tuple[str | None, str, int]) -> None:
        """Exchange records: (subject ID, procedure code, age in days)."""
        async with Auditor(self.store, node="lgsp-1", key=KEY.encode()) as auditor:
            for i, (subject, procedure, age_days) in enumerate(items):
                skey = auditor.subject_key(subject)
                entry = AuditEntry(
                    time_us=int(time.time() * 1_000_000) - age_days * DAY_US,
                    kind="exchange",
                    request_id=f"req-{i:08d}",
                    consumer="portal",
                    officer="001085000123",
                    unit="H01",
                    service="population",
                    operation="lookup",
                    purpose={"procedure_code": procedure, "legal_basis": "LEGAL_DUTY"},
                    subject_key=skey,
                    key_id=auditor.key_id if skey else None,
                    fields=("citizen.full_name",),
                    outcome="OK",
                    status=200,
                )
                await auditor.record(entry, durable=True)


@pytest.fixture
def cli(store: Store, store_url: str, tmp_path: Path) -> Cli:
    config = tmp_path / "routing.yaml"
    config.write_text(
        "version: 1\nnode: lgsp-1\naudit:\n  subject_key: env:T_AUDIT_KEY\n  retention_days: 30\n"
    )
    return Cli(store, store_url, config)


async def test_verify_reports_intact_chains_and_names_the_first_bad_record(cli: Cli) -> None:
    await cli.seed(*[(A, "1.000001", 0)] * 4)
    code, out, _ = await cli.run("audit", "verify")
    assert code == 0, out
    assert "all intact" in out
    pin = next(w for w in out.split() if w.startswith("lgsp-1/1:4:"))
    code, out, _ = await cli.run("audit", "verify", "--pin", pin, "--json")
    assert code == 0
    assert json.loads(out)[0]["ok"] is True
    await raw_execute(cli.url, "DELETE FROM lgsp_audit_records WHERE seq = 2")
    code, out, _ = await cli.run("audit", "verify")
    assert code == 1
    assert "FAILED lgsp-1/1: missing at seq 2" in out


async def test_a_pinned_chain_that_is_gone_fails_verification(cli: Cli) -> None:
    # 21.8: wiping the trail (every record and the chain row) must not pass as "0 chains,
    # all intact" when the operator pinned that chain.
    await cli.seed(*[(A, "1.000001", 0)] * 3)
    code, out, _ = await cli.run("audit", "verify")
    pin = next(w for w in out.split() if w.startswith("lgsp-1/1:3:"))
    await raw_execute(cli.url, "DELETE FROM lgsp_audit_records")
    await raw_execute(cli.url, "DELETE FROM lgsp_audit_chains")
    code, out, _ = await cli.run("audit", "verify", "--pin", pin)
    assert code == 1, out
    assert "FAILED lgsp-1/1: missing at seq 3: a pinned chain is not in the store" in out
    code, out, _ = await cli.run("audit", "verify", "--pin", pin, "--json")
    assert code == 1
    assert [(r["chain"], r["ok"]) for r in json.loads(out)] == [("lgsp-1/1", False)]
    code, out, _ = await cli.run("audit", "verify")  # without a pin nothing is promised
    assert code == 0


async def test_a_query_under_the_wrong_audit_key_is_refused(cli: Cli) -> None:
    # 21.9: a wrong audit.subject_key silently reported "0 accesses".
    await cli.seed((A, "1.000001", 0))
    cfg = str(cli.config)
    code, out, _ = await cli.run("audit", "query", "--config", cfg, "--subject", A)
    assert (code, out.split()[0]) == (0, "1")
    wrong = {**os.environ, "T_AUDIT_KEY": "another-audit-key-0123456789"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bus.cli.main",
        "audit",
        "query",
        "--config",
        cfg,
        "--subject",
        A,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**wrong, "LGSP_STORE_URL": cli.url},
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, out_b
    assert "is not the key this trail was written with" in err_b.decode()


async def test_query_finds_exactly_one_citizens_accesses(cli: Cli) -> None:
    await cli.seed((A, "1.000001", 3), (B, "1.000002", 2), (A, "1.000003", 1), (None, "1.0", 0))
    cfg = str(cli.config)
    code, out, _ = await cli.run(
        "audit", "query", "--config", cfg, "--subject", A, "--actor", "dpo"
    )
    assert code == 0, out
    assert "2 access(es) to 001*******11" in out
    assert "procedure=1.000001" in out
    assert "procedure=1.000003" in out
    assert "1.000002" not in out
    assert A not in out, "the ID itself is never printed"
    code, out, _ = await cli.run(
        "audit", "query", "--config", cfg, "--subject", "-", "--json", stdin=f"{B}\n"
    )
    assert code == 0
    assert [r["request_id"] for r in json.loads(out)] == ["req-00000001"]
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86_400 * 1.5))
    code, out, _ = await cli.run(
        "audit", "query", "--config", cfg, "--subject", A, "--from", since, "--json"
    )
    assert [r["request_id"] for r in json.loads(out)] in (["req-00000002"], [])
    code, out, _ = await cli.run("audit", "query", "--config", cfg, "--subject", "001085999999")
    assert code == 0
    assert out.startswith("0 access(es)")
    # Looking a citizen up is itself recorded, keyed by the same subject key.
    async with Auditor(cli.store, node="check", key=KEY.encode()) as auditor:
        skey = auditor.subject_key(A)
    admin = [r for r in await cli.store.audit_find(subject_keys=[skey or ""]) if r.kind == "admin"]
    assert [(r.action, r.actor) for r in admin][:1] == [("audit.query", "dpo")]


async def test_export_is_a_self_checking_evidence_bundle(cli: Cli, tmp_path: Path) -> None:
    await cli.seed((A, "1.000001", 0), (B, "1.000002", 0), (A, "1.000003", 0))
    target = tmp_path / "evidence.json"
    code, _, err = await cli.run(
        "audit",
        "export",
        "--config",
        str(cli.config),
        "--request-id",
        "req-00000001",
        "--out",
        str(target),
    )
    assert code == 0, err
    bundle = json.loads(target.read_text(encoding="utf-8"))
    (evidence,) = bundle["evidence"]
    record = evidence["record"]
    assert record["request_id"] == "req-00000001"
    assert hashlib.sha256(evidence["canonical"].encode()).hexdigest() == record["hash"]
    assert evidence["hash_matches"] is True
    assert evidence["previous"]["hash"] == record["prev_hash"]
    assert evidence["next"]["prev_hash"] == record["hash"]
    assert evidence["chain_verification"] == {"verified": True, "problem": None}
    assert A not in target.read_text(encoding="utf-8")
    code, _, err = await cli.run(
        "audit", "export", "--config", str(cli.config), "--request-id", "req-unknown-1"
    )
    assert code == 1
    assert "no record" in err
    # An export names a request, not a citizen: it needs no audit key (its own record is
    # written without a subject key).
    code, _, err = await cli.run(
        "audit", "export", "--config", str(cli.config), "--request-id", "req-00000002", key=False
    )
    assert code == 0, err


async def test_prune_keeps_the_chains_verifiable(cli: Cli) -> None:
    await cli.seed((A, "old", 400), (B, "old", 380), (A, "new", 1), (B, "new", 0))
    cfg = str(cli.config)
    code, _, err = await cli.run("audit", "prune", "--config", cfg, "--before", "2999-01-01")
    assert code == 2
    assert "retention" in err
    before = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86_400 * 100))
    code, out, _ = await cli.run("audit", "prune", "--config", cfg, "--before", before, "--dry-run")
    assert code == 0
    assert "lgsp-1/1: records up to seq 2 go" in out
    assert len(await cli.store.audit_records("lgsp-1/1", 0, 100)) == 4
    code, out, err = await cli.run("audit", "prune", "--config", cfg, "--before", before)
    assert code == 0, err
    assert "2 record(s) deleted" in out
    kept = await cli.store.audit_records("lgsp-1/1", 0, 100)
    assert [r.purpose.get("procedure_code") for r in kept] == ["new", "new", None]
    assert kept[-1].action == "audit.prune"
    assert kept[-1].detail["anchors"] == {"lgsp-1/1": [2, kept[0].prev_hash]}
    code, out, _ = await cli.run("audit", "verify")
    assert code == 0, out
    code, out, _ = await cli.run("audit", "prune", "--config", cfg, "--before", before)
    assert (code, out.strip()) == (0, "audit prune: no records to prune")
