"""Evidence of one request from the audit trail: its records as stored, their canonical
form and hash, the chain neighbours and a verification of the whole chain (pure reads).

Shared by ``lgsp-bus audit export`` and the console's evidence download, so both give the
same bundle (format ``lgsp-bus audit evidence v1``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bus.audit.accesses import accesses
from bus.audit.chain import ChainVerifier, canonical_record, record_hash
from bus.store.base import AuditRecord, Store

__all__ = ["EVIDENCE_FORMAT", "HASH_RULE", "evidence_bundle", "record_json", "show_time"]

VN = timezone(timedelta(hours=7), "ICT")
EVIDENCE_FORMAT = "lgsp-bus audit evidence v1"
HASH_RULE = (
    "hash = sha256(canonical).hexdigest(); canonical = JSON of every "
    'field but hash plus "v": 1, keys sorted, no spaces, UTF-8 (RFC 8785 subset); '
    "each record's prev_hash is the hash of the record before it in its chain"
)
_PAGE = 1000


def show_time(time_us: int) -> str:
    """µs since the epoch as a Vietnam-time ISO date-time (milliseconds)."""
    return datetime.fromtimestamp(time_us / 1_000_000, VN).isoformat(timespec="milliseconds")


def record_json(rec: AuditRecord) -> dict[str, Any]:
    """A record as JSON: every stored field, time also as a readable date-time."""
    out = {name: getattr(rec, name) for name in AuditRecord.__dataclass_fields__}
    out["purpose"], out["detail"] = dict(rec.purpose), dict(rec.detail)
    out["fields"] = list(rec.fields)
    out["time"] = show_time(rec.time_us)
    return out


async def _evidence(store: Store, rec: AuditRecord) -> dict[str, Any]:
    neighbours = await store.audit_records(rec.chain, max(rec.seq - 2, 0), 3)
    head = await store.audit_head(rec.chain)
    verdict: dict[str, Any] = {"verified": False, "problem": "chain head missing"}
    if head is not None:
        verifier, after = ChainVerifier(head), head.anchor_seq
        while verifier.problem is None:
            page = await store.audit_records(rec.chain, after, _PAGE)
            for item in page:
                verifier.feed(item)
            if len(page) < _PAGE:
                break
            after = page[-1].seq
        problem = verifier.finish()
        verdict = {"verified": problem is None, "problem": str(problem) if problem else None}
    return {
        "record": record_json(rec),
        "canonical": canonical_record(rec).decode("utf-8"),
        "hash_matches": record_hash(rec) == rec.hash,
        "previous": next((record_json(n) for n in neighbours if n.seq == rec.seq - 1), None),
        "next": next((record_json(n) for n in neighbours if n.seq == rec.seq + 1), None),
        "chain_head": None
        if head is None
        else {"seq": head.head_seq, "hash": head.head_hash, "anchor_seq": head.anchor_seq},
        "chain_verification": verdict,
    }


async def evidence_bundle(store: Store, request_id: str) -> dict[str, Any] | None:
    """The bundle for ``request_id`` (``None`` if the trail has no record of it)."""
    records = await store.audit_find(request_id=request_id, limit=100)
    if not records:
        return None
    return {
        "format": EVIDENCE_FORMAT,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hash_rule": HASH_RULE,
        "request_id": request_id,
        # One per exchange: a STARTED record and its final one are one access (the final
        # record named); a STARTED record alone is outcome UNKNOWN (the process died).
        "accesses": [
            {"chain": a.chain, "seq": a.seq, "time": show_time(a.time_us), "outcome": a.outcome}
            for a in accesses(r for r in records if r.kind == "exchange")
        ],
        "evidence": [await _evidence(store, r) for r in records],
    }
