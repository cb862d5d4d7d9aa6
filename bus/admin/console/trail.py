"""The audit trail in the console (auditor role): search, chain verification, evidence.

A search by citizen takes the ID number in the request *body* (never a URL), hashes it
with the audit key (:meth:`~bus.audit_writer.Auditor.subject_key`) and looks up that
HMAC; the ID itself is neither stored nor logged. Other filters: request id, consumer,
officer, service, time range (``YYYY-MM-DD`` or ISO date-time; no offset = Vietnam time;
``to`` as a date is inclusive). The store is asked for the subject key, request id and
time range; consumer, officer and service are matched among at most :data:`SCAN` records
it returns, oldest first (narrow with a time range on a large trail). Every search is
recorded (``audit.query``, the ID keyed-hashed as the record's subject), as are
verifications (``audit.verify``) and evidence downloads (``audit.export``, the same
bundle as ``lgsp-bus audit export``).
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.admin.access import Principal
from bus.audit.accesses import accesses
from bus.audit.evidence import evidence_bundle, record_json
from bus.audit.observer import verify_store
from bus.errors import InvalidRequest, NotFoundError
from bus.reload.reloader import ConfigReloader

from .letters import trail
from .roles import require

__all__ = ["SCAN", "AuditQuery", "evidence", "search", "verify"]

SCAN = 5000
VN = timezone(timedelta(hours=7), "ICT")
_CODE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
Code = Annotated[str, Field(pattern=_CODE)]


class AuditQuery(BaseModel):
    """The search form (every field optional; at least one given)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    subject_id: Annotated[str, Field(pattern=r"^(\d{12}|\d{9})$")] | None = None
    request_id: Code | None = None
    consumer: Code | None = None
    officer: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    service: Code | None = None
    since: str | None = Field(None, alias="from")
    until: str | None = Field(None, alias="to")
    limit: int = Field(200, ge=1, le=1000)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> AuditQuery:
        """From a form or JSON body (empty strings = not given); ``400`` naming the field."""
        cleaned = {k: v for k, v in data.items() if v not in ("", None)}
        try:
            query = cls.model_validate(cleaned)
        except ValidationError as exc:
            bad = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False)})
            raise InvalidRequest(f"invalid search field(s): {', '.join(bad)}") from None
        if not query.model_dump(exclude={"limit"}, exclude_none=True):
            raise InvalidRequest("give at least one search field")
        return query


def _moment(text: str, field: str, *, end_of_day: bool = False) -> int:
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text) + timedelta(days=1 if end_of_day else 0)
            moment = datetime(day.year, day.month, day.day, tzinfo=VN)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=VN)
    except ValueError:
        raise InvalidRequest(f"{field}: not a date (YYYY-MM-DD) or ISO date-time") from None
    return int(moment.timestamp() * 1_000_000)


async def search(reloader: ConfigReloader, who: Principal, query: AuditQuery) -> dict[str, Any]:
    """Records matching ``query`` (recorded as ``audit.query`` before the answer)."""
    require(who, "audit.search")
    auditor = trail(reloader)
    keys: list[str] = []
    if query.subject_id is not None:
        key = auditor.subject_key(query.subject_id)
        if key is None:
            raise InvalidRequest("routing.yaml has no audit.subject_key: no search by citizen")
        keys = [key]
    since = _moment(query.since, "from") if query.since else None
    until = _moment(query.until, "to", end_of_day=True) if query.until else None
    found = accesses(
        await auditor.store.audit_find(
            subject_keys=keys,
            request_id=query.request_id,
            since_us=since,
            until_us=until,
            limit=SCAN,
        )
    )
    wanted = {"consumer": query.consumer, "officer": query.officer, "service": query.service}
    records = [
        r
        for r in found
        if all(v is None or getattr(r, k) == v for k, v in wanted.items())
        and (not keys or r.kind == "exchange")
    ][: query.limit]
    used = sorted(query.model_dump(exclude={"limit"}, exclude_none=True))
    await auditor.admin_action(
        "audit.query",
        who.name,
        {"filters": used, "found": len(records), "from": since, "to": until},
        subject_id=query.subject_id,
    )
    return {
        "records": [record_json(r) for r in records],
        "truncated": len(found) >= SCAN,
        "key_id": auditor.key_id,
    }


async def verify(reloader: ConfigReloader, who: Principal) -> dict[str, Any]:
    """Verify every chain of the store; the result is kept for the audit page."""
    require(who, "audit.verify")
    auditor = trail(reloader)
    reports = await verify_store(auditor.store)
    chains = [
        {
            "chain": r.head.chain,
            "checked": r.checked,
            "head_seq": r.head.head_seq,
            "ok": r.problem is None,
            "problem": None if r.problem is None else str(r.problem),
        }
        for r in reports
    ]
    ok = all(c["ok"] for c in chains)
    await auditor.admin_action(
        "audit.verify",
        who.name,
        {"chains": len(chains), "ok": ok},
        outcome="OK" if ok else "FAILED",
    )
    return {"ok": ok, "chains": chains, "at": time.time(), "by": who.name}


async def evidence(reloader: ConfigReloader, who: Principal, request_id: str) -> dict[str, Any]:
    """The evidence bundle of one request (``404 NOT_FOUND`` if the trail has none)."""
    require(who, "audit.evidence")
    if not re.fullmatch(_CODE, request_id or ""):
        raise InvalidRequest("request_id: 1-64 of [A-Za-z0-9._:/-]")
    auditor = trail(reloader)
    bundle = await evidence_bundle(auditor.store, request_id)
    if bundle is None:
        raise NotFoundError(f"no audit record of request {request_id}")
    await auditor.admin_action(
        "audit.export", who.name, {"request_id": request_id, "records": len(bundle["evidence"])}
    )
    return bundle
