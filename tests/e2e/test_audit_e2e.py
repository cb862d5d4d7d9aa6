"""The audit trail through a whole bus (gateway → broker → worker → MOJ simulator), on each
store: one record per exchange, whatever its outcome; answers withheld when a fail_closed
record cannot be written; subject queries; no raw personal data in the trail."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.civil_status.data import sample_person, sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import STATS, SimStats, build_app
from bus.audit.accesses import STARTED, accesses
from bus.audit.observer import Auditor, verify_store
from bus.config import AuditSettings, RoutingConfig
from bus.store import Store, open_store
from bus.store.base import AuditRecord
from tests.support.stack import BusStack, new_secret, running_bus, serve_app, stack_config
from tests.support.storetools import raw_fetch
from tests.unit.audit.test_audit_writer import write_lock

KEY = b"e2e-audit-key-0123456789"
OFFICER = "001085000123"
PURPOSE = {"procedure_code": "1.001234", "dossier_id": "HS-2026-0001", "legal_basis": "LEGAL_DUTY"}


@dataclass
class AuditedBus:
    bus: BusStack
    auditor: Auditor
    store: Store
    url: str
    upstream: SimStats

    async def call(
        self, body: Any, *, key: str | None = None, path: str = "/v1/civil-status/lookup"
    ) -> tuple[str, int, dict[str, Any]]:
        """POST with a fresh X-Request-Id (the record's correlation id)."""
        cid = uuid.uuid4().hex
        status, reply = await self.bus.post(path, body, key=key, headers={"X-Request-Id": cid})
        return cid, status, reply

    async def raw(self) -> list[AuditRecord]:
        """Every exchange record as stored, once the backlog is written."""
        deadline = time.monotonic() + 10
        while self.auditor.backlog:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        return [
            rec
            for head in await self.store.audit_chains()
            for rec in await self.store.audit_records(head.chain, 0, 10_000)
            if rec.kind == "exchange"
        ]

    async def records(self) -> dict[str, AuditRecord]:
        """Every exchange as a reader counts it (its STARTED record and its final one are
        one access), by correlation id."""
        out: dict[str, AuditRecord] = {}
        for rec in accesses(await self.raw()):
            assert rec.correlation_id not in out, "one access per exchange"
            out[rec.correlation_id or ""] = rec
        return out


def lookup(**query: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{uuid.uuid4().hex[:16]}",
        "record_type": "BIRTH",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": OFFICER},
        "purpose": PURPOSE,
        **query,
    }


def with_policy(config: RoutingConfig, policy: str) -> RoutingConfig:
    svc = config.services["civil-status"].model_copy(update={"audit": policy})
    return config.model_copy(update={"services": {**config.services, "civil-status": svc}})


@pytest.fixture(params=["fail_closed", "fail_open"])
async def audited(
    request: pytest.FixtureRequest, store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AuditedBus]:
    token, key = new_secret(), new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    # SQLite waits only briefly for a write lock held elsewhere (the store-fault tests).
    url = store_url + "?busy_timeout_ms=200" if store_url.startswith("sqlite") else store_url
    audit_store = open_store(url)
    await audit_store.connect()
    sim = build_app(token=token, hang_s=30)
    async with serve_app(sim) as sim_url:
        config = stack_config(
            civil_url=sim_url, token_env="T_MOJ_TOKEN", key_env="T_PORTAL_KEY", timeout_s=1.0
        )
        config = with_policy(config, request.param)
        settings = AuditSettings(commit_timeout_s=0.5)
        auditor = Auditor(audit_store, node="lgsp-1", key=KEY, settings=settings)
        async with auditor, running_bus(config, None, key, auditor=auditor) as bus:
            yield AuditedBus(bus, auditor, audit_store, url, sim[STATS])
    await audit_store.aclose()


async def test_every_outcome_leaves_exactly_one_record(audited: AuditedBus) -> None:
    person = sample_person(0, RecordType.BIRTH, 7)
    reg = sample_registration(0, RecordType.BIRTH, 3)
    calls = {
        "found": lookup(by_person={"id_number": person["id_number"]}),
        "not_found": lookup(by_registration={"authority_code": "00001", "number": "999"}),
        "invalid": lookup(by_registration={**reg, "colour": "red"}),
        "upstream_down": lookup(by_registration={"authority_code": "00001", "number": "FAIL503"}),
        "upstream_timeout": lookup(by_registration={"authority_code": "00001", "number": "HANG"}),
    }
    seen: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for name, body in calls.items():
        seen[name] = await audited.call(body)
    seen["unauthenticated"] = await audited.call(lookup(by_registration=reg), key="nope")
    seen["forbidden"] = await audited.call(
        lookup(by_registration=reg), key=os.environ["T_PORTAL_KEY_OUTSIDER"]
    )
    seen["unknown_service"] = await audited.call(
        lookup(by_registration=reg), path="/v1/land/lookup"
    )
    records = await audited.records()
    assert set(records) == {cid for cid, _, _ in seen.values()}
    expected = {
        "found": ("OK", 200, "portal", "civil-status"),
        "not_found": ("OK", 200, "portal", "civil-status"),
        "invalid": ("UNKNOWN_FIELD", 400, "portal", "civil-status"),
        "upstream_down": ("UPSTREAM_UNAVAILABLE", 503, "portal", "civil-status"),
        "upstream_timeout": ("UPSTREAM_TIMEOUT", 504, "portal", "civil-status"),
        "unauthenticated": ("UNAUTHENTICATED", 401, None, None),
        "forbidden": ("FORBIDDEN_OPERATION", 403, "outsider", "civil-status"),
        "unknown_service": ("UNKNOWN_SERVICE", 404, "portal", None),
    }
    for name, (cid, status, _) in seen.items():
        rec = records[cid]
        assert (rec.outcome, rec.status, rec.consumer, rec.service) == expected[name], name
        assert status == rec.status, name
    found = records[seen["found"][0]]
    assert found.request_id == calls["found"]["request_id"]
    assert (found.operation, found.officer, found.unit) == ("lookup", OFFICER, "H01")
    assert dict(found.purpose) == PURPOSE
    assert found.subject_key == audited.auditor.subject_key(person["id_number"])
    assert found.key_id == audited.auditor.key_id
    # Leaf paths of what the consumer got (data minimisation is auditable), never values.
    assert "status" in found.fields
    assert any(f.startswith("persons") for f in found.fields)
    assert 0 < found.latency_us < 10_000_000
    assert abs(found.time_us / 1e6 - time.time()) < 60
    assert records[seen["invalid"][0]].request_id == calls["invalid"]["request_id"]
    assert records[seen["not_found"][0]].subject_key is None
    # Each exchange that got past validation left a STARTED record before its upstream call
    # (same subject key and purpose), tied to its final record by detail.exchange.
    started = {r.correlation_id: r for r in await audited.raw() if r.outcome == STARTED}
    sent = {"found", "not_found", "upstream_down", "upstream_timeout"}
    assert set(started) == {seen[name][0] for name in sent}
    for name in sent:
        first, final = started[seen[name][0]], records[seen[name][0]]
        assert first.detail["exchange"] == final.detail["exchange"]
        assert (first.subject_key, first.purpose) == (final.subject_key, final.purpose)
        assert (first.seq < final.seq) if first.chain == final.chain else True
    assert all(r.problem is None for r in await verify_store(audited.store))


async def test_subject_lookup_finds_exactly_that_citizens_accesses(audited: AuditedBus) -> None:
    a = sample_person(0, RecordType.BIRTH, 11)["id_number"]
    b = sample_person(0, RecordType.BIRTH, 12)["id_number"]
    a_calls = [await audited.call(lookup(by_person={"id_number": a})) for _ in range(2)]
    await audited.call(lookup(by_person={"id_number": b}))
    # a's own registration, looked up by its number: it returns a, so it is an access to a
    by_reg = await audited.call(
        lookup(by_registration=sample_registration(0, RecordType.BIRTH, 11))
    )
    await audited.records()
    key_a = audited.auditor.subject_key(a)
    assert key_a is not None
    found = accesses(await audited.store.audit_find(subject_keys=[key_a]))
    expected = [c for c, _, _ in a_calls] + [by_reg[0]]
    assert sorted(r.correlation_id or "" for r in found) == sorted(expected)
    never = audited.auditor.subject_key("001085999999")
    assert never is not None
    assert await audited.store.audit_find(subject_keys=[never]) == []


async def test_no_raw_id_or_name_reaches_the_audit_tables(audited: AuditedBus) -> None:
    people = [sample_person(0, RecordType.BIRTH, i) for i in range(20, 25)]
    for p in people:
        _, status, reply = await audited.call(lookup(by_person=p))
        assert status == 200, reply
        assert reply["status"] == "FOUND"
    await audited.records()
    rows: list[str] = []
    for sql in ("SELECT * FROM lgsp_audit_records", "SELECT * FROM lgsp_audit_chains"):
        rows += [repr(r) for r in await raw_fetch(audited.url, sql)]
    dump = "\n".join(rows)
    assert len(rows) >= 5
    for p in people:
        for secret in (p["id_number"], p["full_name"], p["full_name"].upper(), p["birth_date"]):
            assert secret not in dump


async def test_a_store_that_refuses_writes_withholds_fail_closed_answers(
    audited: AuditedBus,
) -> None:
    policy = audited.bus.gateway.config.services["civil-status"].audit
    body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 5))
    async with write_lock(audited.url):
        cid, status, reply = await audited.call(body)
        async with audited.bus.session.get(audited.bus.url + "readyz") as r:
            ready = await r.json()
        if policy == "fail_closed":
            # The writer now knows its store fails: the next fail_closed request is refused
            # before anything is fetched that could not be audited.
            before = audited.upstream.requests
            second = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 7))
            refused_cid, refused_status, refused = await audited.call(second)
            assert (refused_status, refused["error"]["code"]) == (503, "AUDIT_UNAVAILABLE")
            assert audited.upstream.requests == before, "the national DB was not called"
    code = reply["error"]["code"] if status != 200 else "OK"
    if policy == "fail_closed":
        assert (status, code) == (503, "AUDIT_UNAVAILABLE"), "no answer without its record"
        assert reply["error"]["retryable"] is True
        assert ready["audit"]["state"] == "failing"
        assert (await audited.records())[refused_cid].outcome == "AUDIT_UNAVAILABLE"
    else:
        # Answered first — unless the request-result store (idempotency) shares the lock:
        # SQLite locks the whole file, the PostgreSQL fault here locks the audit tables only.
        assert status == 200 or code == "STORE_UNAVAILABLE", reply
        assert ready["audit"]["backlog"] >= 1
    assert ready["store"]["backend"] in {"sqlite", "postgres"}
    rec = (await audited.records())[cid]
    assert (rec.outcome, rec.status) == (code, status), "the record says what the caller got"
    cid, status, _ = await audited.call(
        lookup(by_registration=sample_registration(0, RecordType.BIRTH, 6))
    )
    assert status == 200
    assert (await audited.records())[cid].outcome == "OK"
    assert all(r.problem is None for r in await verify_store(audited.store))


async def test_handing_out_a_stored_answer_is_audited_too(audited: AuditedBus) -> None:
    person = sample_person(0, RecordType.BIRTH, 9)
    body = lookup(by_person={"id_number": person["id_number"]})
    _, status, _ = await audited.call(body)
    assert status == 200
    hdrs = {"Authorization": f"Bearer {audited.bus.key}"}
    got: dict[str, int] = {}
    for request_id in (body["request_id"], "req-never-sent-0001"):
        cid = uuid.uuid4().hex
        async with audited.bus.session.get(
            f"{audited.bus.url}v1/messages/{request_id}", headers={**hdrs, "X-Request-Id": cid}
        ) as r:
            got[cid] = r.status
    records = await audited.records()
    fetched = [records[cid] for cid in got]
    assert [(r.service, r.operation, r.consumer) for r in fetched] == [
        ("messages", "get", "portal")
    ] * 2
    assert (fetched[0].outcome, fetched[0].status) == ("OK", 200)
    assert fetched[0].request_id == body["request_id"]
    assert any(f.startswith("persons") for f in fetched[0].fields)
    assert (fetched[1].outcome, fetched[1].status) == ("MESSAGE_NOT_FOUND", 404)


@pytest.mark.postgres
async def test_a_fail_closed_route_is_refused_before_the_upstream_when_the_store_is_gone(
    pg_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store unreachable (its connections cut, new ones refused) while idle: the writer
    has nothing to write, so the gateway asks the store before fetching anything."""
    from bus.audit.observer import STORE_FRESH_S
    from tests.support.tcpproxy import TcpProxy

    token, key = new_secret(), new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    audit_store = open_store(pg_database.url(port=proxy.port))
    await audit_store.connect()
    sim = build_app(token=token, hang_s=30)
    try:
        async with serve_app(sim) as sim_url:
            config = stack_config(
                civil_url=sim_url, token_env="T_MOJ_TOKEN", key_env="T_PORTAL_KEY", timeout_s=1.0
            )
            settings = AuditSettings(commit_timeout_s=0.5)
            auditor = Auditor(audit_store, node="lgsp-gone", key=KEY, settings=settings)
            async with auditor, running_bus(config, None, key, auditor=auditor) as bus:
                audited = AuditedBus(bus, auditor, audit_store, "", sim[STATS])
                body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 8))
                assert (await audited.call(body))[1] == 200
                proxy.accepting = False
                proxy.cut()
                await asyncio.sleep(STORE_FRESH_S + 0.1)  # the last answer no longer vouches
                before = sim[STATS].requests
                body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 9))
                _, status, reply = await audited.call(body)
                assert (status, reply["error"]["code"]) == (503, "AUDIT_UNAVAILABLE")
                assert sim[STATS].requests == before, "the national DB was not called"
                proxy.accepting = True  # back: served again, the refusal on record
                body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 10))
                await asyncio.sleep(STORE_FRESH_S + 0.1)
                assert (await audited.call(body))[1] == 200
    finally:
        await audit_store.aclose()
        await proxy.aclose()


async def test_a_request_costs_two_store_commits_claim_with_started_answer_with_final(
    audited: AuditedBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14: claim, answer and audit record were three sequential commits per request;
    # now the STARTED record rides with the claim and the final record with the answer.
    commits: list[str] = []
    for name in ("message_begin", "message_finish", "message_release", "audit_append"):
        method = getattr(audited.store, name)

        async def counted(*args: Any, _name: str = name, _method: Any = method) -> Any:
            commits.append(_name)
            return await _method(*args)

        monkeypatch.setattr(audited.store, name, counted)
    joint = getattr(audited.store, "audit_append_with", None)  # (absent before issue 14)

    async def counted_with(*args: Any, lasting: bool = True) -> Any:
        # Which commit must reach the disk: only the answer's (MessageWrite.lasting).
        commits.append("audit_append_with" if lasting else "audit_append_with (relaxed)")
        assert joint is not None
        return await joint(*args, lasting=lasting)

    if joint is not None:
        monkeypatch.setattr(audited.store, "audit_append_with", counted_with)
    for i in range(3):
        person = sample_person(0, RecordType.BIRTH, 30 + i)
        commits.clear()
        _, status, _ = await audited.call(lookup(by_person={"id_number": person["id_number"]}))
        assert status == 200
        await audited.raw()  # the backlog is written
        assert commits == ["audit_append_with (relaxed)", "audit_append_with"], commits
    assert all(r.problem is None for r in await verify_store(audited.store))


async def test_a_fail_closed_request_is_not_published_before_its_started_record_is_durable(
    audited: AuditedBus,
) -> None:
    policy = audited.bus.gateway.config.services["civil-status"].audit
    before = audited.upstream.requests
    body = lookup(by_person={"id_number": sample_person(0, RecordType.BIRTH, 40)["id_number"]})
    async with write_lock(audited.url):
        cid, status, reply = await audited.call(body)
    code = reply["error"]["code"] if status != 200 else "OK"
    if policy == "fail_closed":
        assert (status, code) == (503, "AUDIT_UNAVAILABLE")
        assert audited.upstream.requests == before, "nothing fetched that is not on record"
    else:  # fail_open: answered (or the shared SQLite file refused the claim itself)
        assert code in {"OK", "STORE_UNAVAILABLE"}, reply
    rec = (await audited.records())[cid]
    assert (rec.outcome, rec.status) == (code, status), "one access, saying what was given"


async def test_every_citizen_an_answer_returns_is_keyed(audited: AuditedBus) -> None:
    # 21.9: a lookup by registration names nobody up front, yet returns the registrant and
    # the parents; each is keyed in the record, and a re-read of the stored answer too.
    body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 14))
    cid, status, reply = await audited.call(body)
    assert (status, reply["status"]) == (200, "FOUND"), reply
    ids = [p["personal_id"] for p in reply["persons"] if p.get("personal_id")]
    assert len(ids) >= 2, reply  # registrant and at least one parent
    replayed, status, _ = await audited.call(body)  # the same request_id: the stored answer
    assert status == 200
    hdrs = {"Authorization": f"Bearer {audited.bus.key}", "X-Request-Id": "reread-" + cid}
    async with audited.bus.session.get(  # (then handed over: deleted once fetched)
        f"{audited.bus.url}v1/messages/{body['request_id']}", headers=hdrs
    ) as r:
        assert r.status == 200, await r.text()
    records = await audited.records()
    keys = sorted({audited.auditor.subject_key(i) or "" for i in ids})
    for rec in (records[cid], records["reread-" + cid], records[replayed]):
        assert rec.subject_key is None
        assert rec.detail["subject_keys"] == keys
        assert rec.key_id == audited.auditor.key_id
    for key in keys:
        found = await audited.store.audit_find(subject_keys=[key])
        assert {r.correlation_id for r in found} == {cid, "reread-" + cid, replayed}
    assert all(r.problem is None for r in await verify_store(audited.store))
    dump = str(await raw_fetch(audited.url, "SELECT * FROM lgsp_audit_records"))
    assert not any(i in dump for i in ids)
