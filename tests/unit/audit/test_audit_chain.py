"""The audit trail's pure core: canonical form, hashes, subject keys, the chain verifier."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import unicodedata

import pytest

from bus.audit.chain import (
    AuditEntry,
    ChainVerifier,
    Pin,
    canonical_bytes,
    canonical_record,
    key_fingerprint,
    nfc,
    record_hash,
    seal,
    subject_key,
)
from bus.store.base import GENESIS_HASH, AuditRecord, ChainHead

GOLDEN = (
    '{"action":null,"actor":null,"chain":"lgsp-1/1","consumer":"portal","correlation_id":"c1",'
    '"detail":{"ghi_chú":"Đã"},"fields":["persons","status"],"key_id":"k","kind":"exchange",'
    '"latency_us":1500,"node":"lgsp-1","officer":"001085000123","operation":"lookup",'
    '"outcome":"OK","prev_hash":"' + GENESIS_HASH + '","purpose":{"legal_basis":"LEGAL_DUTY",'
    '"procedure_code":"1.001234"},"request_id":"req-00000001","seq":1,"service":"civil-status",'
    '"status":200,"subject_key":"' + "ab" * 32 + '","time_us":1767225600000000,"unit":"H01","v":1}'
)


def golden_entry() -> AuditEntry:
    return AuditEntry(
        time_us=1767225600000000,
        kind="exchange",
        request_id="req-00000001",
        correlation_id="c1",
        consumer="portal",
        officer="001085000123",
        unit="H01",
        service="civil-status",
        operation="lookup",
        purpose={"procedure_code": "1.001234", "legal_basis": "LEGAL_DUTY"},
        subject_key="ab" * 32,
        key_id="k",
        fields=("persons", "status"),
        outcome="OK",
        status=200,
        latency_us=1500,
        detail={"ghi_chú": "Đã"},
    )


def test_canonical_form_is_pinned_and_reproducible_without_our_code() -> None:
    rec = seal(golden_entry(), chain="lgsp-1/1", node="lgsp-1", seq=1, prev_hash=GENESIS_HASH)
    assert canonical_record(rec).decode("utf-8") == GOLDEN
    assert rec.hash == hashlib.sha256(GOLDEN.encode("utf-8")).hexdigest()
    assert rec.hash == "7fd6ebdbde33f72d68e98f3b2ad685a96ac27739e8fe8cbb53cedb92ca4264bb"


def test_canonical_form_has_no_floats_and_sorted_keys() -> None:
    assert canonical_bytes({"b": 1, "a": [None, True, "x"]}) == b'{"a":[null,true,"x"],"b":1}'
    with pytest.raises(TypeError):
        canonical_bytes({"latency": 1.5})
    assert nfc({"x": 1.5, "y": ("a",)}) == {"x": "1.5", "y": ["a"]}


def test_entries_are_nfc_so_equal_text_hashes_equal() -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn")
    assert nfc(decomposed) == "Nguyễn"
    assert nfc({decomposed: [decomposed]}) == {"Nguyễn": ["Nguyễn"]}


def test_subject_key_is_plain_hmac_sha256_and_the_key_id_reveals_no_key() -> None:
    key = b"k" * 32
    assert (
        subject_key(key, "001085000123")
        == hmac.new(key, b"001085000123", hashlib.sha256).hexdigest()
    )
    assert subject_key(key, "001085000123") != subject_key(b"j" * 32, "001085000123")
    fingerprint = key_fingerprint(key)
    assert len(fingerprint) == 16
    assert fingerprint not in key.hex()


def chain_of(n: int) -> tuple[ChainHead, list[AuditRecord]]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        entry = dataclasses.replace(golden_entry(), request_id=f"req-{seq:08d}")
        rec = seal(entry, chain="lgsp-1/1", node="lgsp-1", seq=seq, prev_hash=prev)
        records.append(rec)
        prev = rec.hash
    head = ChainHead("lgsp-1/1", "lgsp-1", n, prev, 0, GENESIS_HASH, None, 0.0)
    return head, records


def verify(head: ChainHead, records: list[AuditRecord], pins: list[Pin] | None = None) -> str:
    verifier = ChainVerifier(head, pins or [])
    for rec in records:
        verifier.feed(rec)
    problem = verifier.finish()
    return "ok" if problem is None else f"{problem.kind}@{problem.seq}"


def test_an_intact_chain_verifies() -> None:
    head, records = chain_of(6)
    assert verify(head, records) == "ok"
    assert verify(head, records, [Pin("lgsp-1/1", 3, records[2].hash)]) == "ok"


def test_each_kind_of_tampering_names_the_first_bad_record() -> None:
    head, recs = chain_of(6)
    altered = dataclasses.replace(recs[2], outcome="NOT_FOUND")
    assert verify(head, [*recs[:2], altered, *recs[3:]]) == "altered@3"
    assert verify(head, [*recs[:3], *recs[4:]]) == "missing@4"
    swapped = [dataclasses.replace(recs[3], seq=3), dataclasses.replace(recs[2], seq=4)]
    assert verify(head, [*recs[:2], *swapped, *recs[4:]]) == "altered@3"
    assert verify(head, recs[:4]) == "truncated@5"
    assert verify(head, []) == "truncated@1"
    forged = seal(golden_entry(), chain="lgsp-1/1", node="lgsp-1", seq=7, prev_hash=recs[-1].hash)
    assert verify(head, [*recs, forged]) == "inserted@7"
    # Replaced with its hash recomputed: the next record no longer links to it.
    rehashed = seal(
        dataclasses.replace(golden_entry(), outcome="X"),
        chain="lgsp-1/1",
        node="lgsp-1",
        seq=2,
        prev_hash=recs[0].hash,
    )
    assert verify(head, [recs[0], rehashed, *recs[2:]]) == "unlinked@2"
    last = seal(golden_entry(), chain="lgsp-1/1", node="lgsp-1", seq=6, prev_hash=recs[4].hash)
    assert verify(head, [*recs[:5], last]) == "head@6"
    assert verify(head, recs, [Pin("lgsp-1/1", 2, "0" * 64)]) == "altered@2"


def test_a_pruned_chain_verifies_from_its_anchor() -> None:
    head, recs = chain_of(6)
    pruned = dataclasses.replace(head, anchor_seq=3, anchor_hash=recs[2].hash)
    assert verify(pruned, recs[3:]) == "ok"
    assert verify(pruned, recs[4:]) == "missing@4"
    wrong_anchor = dataclasses.replace(head, anchor_seq=3, anchor_hash=recs[1].hash)
    assert verify(wrong_anchor, recs[3:]) == "unlinked@4"


def test_a_record_that_cannot_be_canonical_fails_its_hash() -> None:
    head, recs = chain_of(2)
    broken = dataclasses.replace(recs[0], detail={"x": 1.5})
    assert record_hash(broken) != recs[0].hash
    assert verify(head, [broken, recs[1]]) == "altered@1"
