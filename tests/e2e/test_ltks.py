"""The interlinked-procedure (LTKS) flow end to end against the civil-status simulator: a
birth registered at the MOJ is pulled on a schedule (``sources:``), becomes one
``citizen.record.changed`` event (the shipped schema) and reaches a webhook subscriber
exactly once as it sees it — across a restart of the whole bus; the dossier is pushed back
(``NhanDKHT``) idempotently with ``mode: send``."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from adapters.base import parse_routing
from adapters.civil_status.ltks import LTKS
from adapters.civil_status.simulator import STATS
from adapters.civil_status.simulator import build_app as build_civil
from bus.audit.chain import subject_key
from bus.audit.observer import open_auditor
from bus.store import open_store
from tests.support.paths import REPO
from tests.support.polling import until
from tests.support.stack import running_bus, serve_app
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.timeout(90)

TOKEN, KEY, SECRET, AUDIT_KEY = (uuid.uuid4().hex for _ in range(4))
TYPE = "citizen.record.changed"
BASE = "api/lienthongdvclt"


def config(sim_url: str, hook: str) -> dict[str, Any]:
    shipped = yaml.safe_load((REPO / "routing.yaml").read_text(encoding="utf-8"))
    return {
        "version": 1,
        "audit": {"subject_key": "env:LGSP_TEST_LTKS_AUDIT_KEY"},
        "delivery": {"partitions": 2},
        "events": {TYPE: shipped["events"][TYPE]},  # the shipped schema
        "consumers": {
            "portal": {"api_keys": [{"key": "env:LGSP_TEST_LTKS_KEY"}],
                       "allow": {"ltks": ["push"]}},
            "bus-ltks": {"allow": {"ltks": ["list", "get"]}},
            "health": {"subscriptions": {"births": {
                "kind": "webhook", "events": [TYPE], "url": hook,
                "secret": "env:LGSP_TEST_LTKS_SECRET", "allow_plain_http": True,
                "redelivery": {"initial_s": 0.2, "max_s": 0.5}}}},
        },
        "upstreams": {"moj": {"url": sim_url, "allow_plain_http": True,
                              "auth": {"kind": "bearer", "token": "env:LGSP_TEST_LTKS_TOKEN"}}},
        "services": {"ltks": {"adapter": "rest", "upstream": "moj", "personal_data": False,
            "operations": {
                "list": {"options": {"method": "GET", "path": f"{BASE}/hosolienthong",
                                     "app_status": {"path": "status", "ok": ["1"]},
                                     "response": {"items": "data"}}},
                "get": {"options": {"method": "GET", "path": f"{BASE}/hosolienthong/{{id}}",
                                    "fields": {"id": {"type": "string", "required": True}},
                                    "app_status": {"path": "status", "ok": ["1"]},
                                    "response": {"dossier": "data"}}},
                "push": {"mode": "send", "order_by": "ma_ho_so",
                         "redelivery": {"initial_s": 0.2, "max_s": 0.5},
                         "options": {"method": "POST", "path": f"{BASE}/NhanDKHT",
                                     "fields": {"ma_ho_so": {"type": "string", "required": True}},
                                     "body": {"maHoSo": "ma_ho_so"},
                                     "app_status": {"path": "status", "ok": ["1"]}}},
            }}},
        "sources": {"ltks-births": {
            "service": "ltks", "list_operation": "list", "get_operation": "get",
            "consumer": "bus-ltks", "every_s": 1, "items": "items", "item_id": "id",
            "event": TYPE, "mapping": "ltks_dossier"}},
    }  # fmt: skip


async def test_a_birth_registered_at_the_moj_reaches_a_subscriber_exactly_once(
    tmp_path: Path,
) -> None:
    os.environ.update(
        LGSP_TEST_LTKS_TOKEN=TOKEN,
        LGSP_TEST_LTKS_KEY=KEY,
        LGSP_TEST_LTKS_SECRET=SECRET,
        LGSP_TEST_LTKS_AUDIT_KEY=AUDIT_KEY,
    )
    sim = build_civil(token=TOKEN)
    subscriber = Subscriber(SECRET.encode())
    await subscriber.start()
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await store.connect()
    async with serve_app(sim) as sim_url, aiohttp.ClientSession() as session:
        cfg = parse_routing(config(sim_url, subscriber.url))
        auth = {"Authorization": f"Bearer {TOKEN}"}

        async def register(personal_id: str) -> str:
            body = {
                "personal_id": personal_id,
                "full_name": "NGUYEN VAN AN",
                "birth_date": "20260101",
            }
            async with session.post(f"{sim_url}_sim/ltks/births", json=body, headers=auth) as r:
                assert r.status == 201
                code: str = (await r.json())["maHoSo"]
                return code

        first = await register("001226000123")
        async with (
            open_auditor(cfg, store) as auditor,
            running_bus(cfg, None, KEY, auditor=auditor) as stack,
        ):
            await subscriber.wait_for(1)
            await register("001226000456")
            await subscriber.wait_for(2)
            # The pushed-back dossier: twice (a repeat by the caller) → received, then
            # "already received" — both DELIVERED.
            for rid in ("push-1-" + uuid.uuid4().hex[:8], "push-2-" + uuid.uuid4().hex[:8]):
                status, _ = await stack.post(
                    "/v1/ltks/push", {"request_id": rid, "ma_ho_so": first}
                )
                assert status == 202

            async def pushed() -> bool:
                return sim[LTKS].received.get(first, 0) == 2

            await until(pushed)
        # The whole bus restarts on the same store: the dossiers are listed again, not re-sent.
        lists_before = sim[STATS].by_path[f"/{BASE}/hosolienthong"]
        async with (
            open_auditor(cfg, store) as auditor,
            running_bus(cfg, None, KEY, auditor=auditor),
        ):
            await until(lambda: _more(sim, lists_before + 2))  # two more rounds at least
            await register("001226000789")
            await subscriber.wait_for(3)
        await store.aclose()
    await subscriber.stop()
    assert len(subscriber.received) == 3  # none twice, even across the restart
    expected = {
        subject_key(AUDIT_KEY.encode(), i) for i in ("001226000123", "001226000456", "001226000789")
    }
    assert {e["subject"]["personal_id_hmac"] for e in subscriber.received} == expected
    assert {e["change_type"] for e in subscriber.received} == {"BIRTH_REGISTERED"}
    raw = orjson.dumps(subscriber.received)
    assert b"001226000" not in raw
    assert b"NGUYEN" not in raw
    assert "cause_ref" not in subscriber.received[0]  # sensitive in the shipped type


async def _more(sim: Any, count: int) -> bool:
    await asyncio.sleep(0)
    return bool(sim[STATS].by_path[f"/{BASE}/hosolienthong"] >= count)
