"""Idempotency and async mode, through a whole bus with a real SQLite store, on both
brokers: repeats answered from the store without calling the upstream again, conflicts,
retryable failures run again, ``Prefer: respond-async`` + ``GET /v1/messages/{id}``, and
answers that outlive the gateway that produced them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from adapters.base import parse_routing, request_models
from bus.config.atrest import request_digest_key
from bus.exchange import Exchange
from bus.gateway.idempotency import body_hash, prefers_async
from bus.gateway.reply import WITHHELD_HEADER
from bus.gateway.runtime import Runtime
from bus.store import Store, open_store
from tests.faults.test_faults import (  # _secrets: the autouse fixture setting key and token
    KEY_ENV,
    Sim,
    _secrets,
    fault,
    fault_config,
    fresh_service,
    good,
    simulator,
)
from tests.support.stack import running_bus
from tests.support.storetools import raw_fetch

__all__ = ["_secrets"]

ASYNC = {"Prefer": "respond-async"}


def test_prefer_header_parsing() -> None:
    assert prefers_async("respond-async")
    assert prefers_async("wait=10, Respond-Async")
    assert prefers_async("return=minimal; foo, respond-async; x=1")
    assert not prefers_async(None)
    assert not prefers_async("")
    assert not prefers_async("respond-asynchronously, wait=5")


def test_body_hash_is_canonical() -> None:
    a = body_hash("s", "op", {"x": 1, "y": {"b": 2, "a": "Nguyễn"}})
    b = body_hash("s", "op", {"y": {"a": "Nguyễn", "b": 2}, "x": 1})
    assert a == b
    assert a != body_hash("s", "other", {"x": 1, "y": {"b": 2, "a": "Nguyễn"}})
    assert a != body_hash("s", "op", {"x": 2, "y": {"b": 2, "a": "Nguyễn"}})


def test_a_stored_digest_cannot_be_tested_against_guessed_ids_without_the_audit_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """21.11: the digest kept beside a claim is an HMAC under a key derived from the audit
    key (every instance shares it), not a SHA-256 anyone holding the database can recompute
    for each candidate ID number."""
    monkeypatch.setenv("T_DIGEST_AUDIT", "an-audit-key-of-the-test-bus-0123456789")
    config = parse_routing({"version": 1, "audit": {"subject_key": "env:T_DIGEST_AUDIT"}})
    key = request_digest_key(config)
    assert key is not None
    assert key == request_digest_key(config)  # another gateway, the dlq replay: the same
    body = {"by_person": {"id_number": "001085000123"}, "request_id": "r-0000000001"}
    keyed = body_hash("civil-status", "lookup", body, key)
    canonical = orjson.dumps(
        {"service": "civil-status", "operation": "lookup", "body": body},
        option=orjson.OPT_SORT_KEYS,
    )
    assert keyed != hashlib.sha256(canonical).hexdigest()
    assert keyed == hmac.new(key, canonical, hashlib.sha256).hexdigest()
    assert request_digest_key(parse_routing({"version": 1})) is None


class Api:
    """HTTP calls with headers and raw bodies (what a procedure system sees)."""

    def __init__(self, url: str, session: aiohttp.ClientSession, service: str) -> None:
        self.url, self.session, self.service = url, session, service

    async def post(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, key: str | None = None
    ) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
        hdrs = {"Authorization": f"Bearer {key or os.environ[KEY_ENV]}", **(headers or {})}
        async with self.session.post(
            f"{self.url}v1/{self.service}/lookup", json=body, headers=hdrs
        ) as r:
            return r.status, await r.json(), CIMultiDict(r.headers)

    async def message(
        self, request_id: str, key: str | None = None
    ) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
        hdrs = {"Authorization": f"Bearer {key or os.environ[KEY_ENV]}"}
        async with self.session.get(f"{self.url}v1/messages/{request_id}", headers=hdrs) as r:
            return r.status, await r.json(), CIMultiDict(r.headers)

    async def answer(self, request_id: str, bound_s: float = 10) -> tuple[int, dict[str, Any]]:
        """Poll ``GET /v1/messages/{id}`` until it is no longer pending."""
        end = time.monotonic() + bound_s
        while True:
            status, body, _ = await self.message(request_id)
            if status != 202:
                return status, body
            assert time.monotonic() < end, "still pending"
            await asyncio.sleep(0.1)


@asynccontextmanager
async def store_at(path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{path}")
    await store.connect()
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def idem_bus(
    sim: Sim, store: Store, broker_url: str | None, service: str, **settings: Any
) -> AsyncIterator[Api]:
    data = fault_config(sim.url, service=service, **settings)
    data["consumers"]["other"] = {
        "api_keys": [{"key": f"env:{KEY_ENV}_OTHER"}],
        "allow": {service: ["lookup"]},
    }
    async with running_bus(
        parse_routing(data), broker_url, os.environ[KEY_ENV], store=store
    ) as stack:
        yield Api(stack.url, stack.session, service)


@pytest.fixture(autouse=True)
def _other_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{KEY_ENV}_OTHER", "other-" + os.urandom(8).hex())


async def test_a_repeat_gets_the_stored_answer_without_a_second_call(
    broker_url: str | None, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(idem_bus(sim, store, broker_url, fresh_service()))
        body = good(3)
        first = await api.post(body)
        again = await api.post(body, {"X-Request-Id": "second-try"})
        assert first[0] == again[0] == 200
        assert again[1] == first[1]  # the answer exactly as first sent
        assert again[2]["Idempotent-Replayed"] == "true"
        assert again[2]["X-Request-Id"] == "second-try"
        assert sim.calls == 1

        # Same request_id, other request: a conflict, and nothing changes.
        other = dict(body, record_type="DEATH")
        status, reply, _ = await api.post(other)
        assert (status, reply["error"]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
        assert reply["error"]["retryable"] is False
        assert sim.calls == 1
        assert (await api.post(body))[1] == first[1]


async def test_simultaneous_repeats_reach_the_upstream_once(
    broker_url: str | None, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=300))
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(idem_bus(sim, store, broker_url, fresh_service()))
        body = good(5)
        results = await asyncio.gather(*(api.post(body) for _ in range(6)))
    assert all(status == 200 for status, _, _ in results)
    assert len({str(reply) for _, reply, _ in results}) == 1
    assert sim.calls == 1


async def test_retryable_failures_run_again_final_ones_do_not(
    broker_url: str | None, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(
            idem_bus(sim, store, broker_url, fresh_service(), retry={"attempts": 1})
        )
        unavailable = fault("FAIL503")
        for expected_calls in (1, 2):
            status, reply, _ = await api.post(unavailable)
            assert (status, reply["error"]["code"]) == (503, "UPSTREAM_UNAVAILABLE")
            assert sim.calls == expected_calls  # a retryable failure is not final
        rejected = fault("REJECT")
        first = await api.post(rejected)
        again = await api.post(rejected)
        assert first[0] == again[0] == 502
        assert first[1] == again[1]
        assert again[1]["error"]["code"] == "UPSTREAM_REJECTED"
        assert sim.calls == 3  # the rejection is the upstream's answer: replayed


async def test_async_mode_202_then_get_the_answer(broker_url: str | None, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=400))
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(idem_bus(sim, store, broker_url, fresh_service()))
        body = good(8)
        started = time.monotonic()
        status, accepted, headers = await api.post(body, ASYNC)
        assert time.monotonic() - started < 0.3
        assert status == 202
        assert accepted == {"request_id": body["request_id"], "state": "pending"}
        assert headers["Location"] == f"/v1/messages/{body['request_id']}"
        assert headers["Preference-Applied"] == "respond-async"

        status, pending, headers = await api.message(body["request_id"])
        assert (status, pending["state"], headers["Retry-After"]) == (202, "pending", "1")
        # Another system cannot see it (results are per consumer).
        status, hidden, _ = await api.message(body["request_id"], os.environ[f"{KEY_ENV}_OTHER"])
        assert (status, hidden["error"]["code"]) == (404, "MESSAGE_NOT_FOUND")

        status, answer = await api.answer(body["request_id"])
        assert status == 200
        assert answer["status"] == "FOUND"
        assert answer["request_id"] == body["request_id"]
        # Handed over: the answer is deleted from the store. Fetching it again, or the same
        # request again (async or not), is 410 ANSWER_FETCHED, and no second call is made.
        status, gone, _ = await api.message(body["request_id"])
        assert (status, gone["error"]["code"]) == (410, "ANSWER_FETCHED")
        for prefer in (ASYNC, None):
            status, again, _ = await api.post(body, prefer)
            assert (status, again["error"]["code"]) == (410, "ANSWER_FETCHED")
        assert sim.calls == 1
        rows = await raw_fetch(
            f"sqlite:///{tmp_path / 's.sqlite3'}",
            "SELECT state, reply FROM lgsp_messages WHERE request_id = $1",
            body["request_id"],
        )
        assert rows == [("fetched", None)]

        status, missing, _ = await api.message("req-never-sent-1234")
        assert (status, missing["error"]["code"]) == (404, "MESSAGE_NOT_FOUND")
        status, bad, _ = await api.message("bad id!")
        assert (status, bad["error"]["code"]) == (400, "INVALID_REQUEST_ID")


async def test_async_failures_are_kept_for_get_too(broker_url: str | None, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(
            idem_bus(sim, store, broker_url, fresh_service(), retry={"attempts": 1})
        )
        body = fault("FAIL503")
        status, reply, _ = await api.post(body, ASYNC)
        if status == 202:  # an answer this fast may come back at once instead
            status, reply = await api.answer(body["request_id"])
        assert (status, reply["error"]["code"]) == (503, "UPSTREAM_UNAVAILABLE")
        status, kept, _ = await api.message(body["request_id"])
        assert (status, kept["error"]["code"]) == (503, "UPSTREAM_UNAVAILABLE")
        assert kept["error"]["retryable"] is True


async def test_answers_survive_a_gateway_restart(broker_url: str | None, tmp_path: Path) -> None:
    service = fresh_service()
    path = tmp_path / "s.sqlite3"
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=600))
        async with store_at(path) as store, idem_bus(sim, store, broker_url, service) as api:
            done, in_flight = good(11), good(12)
            assert (await api.post(done))[0] == 200  # stored, not fetched yet
            assert (await api.post(in_flight, ASYNC))[0] == 202
            # The gateway stops now: it drains in-flight work before it goes.
        async with store_at(path) as store, idem_bus(sim, store, broker_url, service) as api:
            for body in (done, in_flight):
                status, answer = await api.answer(body["request_id"])
                assert status == 200
                assert answer["request_id"] == body["request_id"]
            assert (await api.post(in_flight))[0] == 410  # fetched: handed over, deleted
        assert sim.calls == 2


async def test_a_claim_left_by_a_dead_gateway_is_taken_over(tmp_path: Path) -> None:
    timeout_s = 1.0
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(
            idem_bus(sim, store, None, fresh_service(), timeout_s=timeout_s)
        )
        body = good(21)
        other = os.environ[f"{KEY_ENV}_OTHER"]
        # The request's hash, from the same request sent by another system (results are
        # kept per consumer, the hash is the request's own).
        assert (await api.post(body, key=other))[0] == 200
        kept = await store.message_get("other", body["request_id"])
        assert kept is not None
        # What a gateway killed mid-request leaves behind: a claim never finished.
        assert await store.message_begin("portal", body["request_id"], kept.body_hash, 3600) is None
        assert (await api.message(body["request_id"]))[0] == 202
        await asyncio.sleep(timeout_s + 5.2)  # the operation's timeout + the stale grace
        status, stale, _ = await api.message(body["request_id"])
        assert (status, stale["error"]["code"]) == (504, "DEADLINE_EXCEEDED")
        status, answer, _ = await api.post(body)
        assert status == 200
        assert answer["request_id"] == body["request_id"]
        assert sim.calls == 2


async def test_an_unreachable_store_is_503_and_calls_nobody(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        api = await stack.enter_async_context(idem_bus(sim, store, None, fresh_service()))
        await store.aclose()
        status, reply, _ = await api.post(good(1))
        assert (status, reply["error"]["code"]) == (503, "STORE_UNAVAILABLE")
        assert reply["error"]["retryable"] is True
        assert sim.calls == 0


class FieldsSeen:
    """An exchange observer keeping what each audit record would list as returned."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, int | None, list[str]]] = []

    async def exchange_finished(self, exchange: Exchange) -> None:
        self.seen.append((exchange.operation, exchange.status, list(exchange.fields_returned)))


async def test_stored_answers_are_served_under_the_grants_in_force(tmp_path: Path) -> None:
    # 21.5: a field grant narrowed or an operation revoked after an answer was stored
    # applies to that answer too (replay and GET), and the audit lists what was sent.
    service = fresh_service()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        data = fault_config(sim.url, service=service)
        bus = await stack.enter_async_context(
            running_bus(parse_routing(data), None, os.environ[KEY_ENV], store=store)
        )
        api = Api(bus.url, bus.session, service)
        seen = FieldsSeen()
        bus.gateway.add_observer(seen)
        body = good(3)
        status, first, _ = await api.post(body)
        assert status == 200
        assert first["persons"][0]["personal_id"]

        def swap(consumer: dict[str, Any]) -> None:
            data["consumers"]["portal"].update(consumer)
            config = parse_routing(data)
            rt = Runtime.build(config, bus.gateway.runtime.observers, models=request_models(config))
            bus.gateway.swap(rt)

        swap({"fields": {service: ["record_type", "status"]}})
        status, replay, headers = await api.post(body)
        assert status == 200
        assert headers["Idempotent-Replayed"] == "true"
        assert {"persons", "registration"}.isdisjoint(replay)
        assert {"record_type", "status", "request_id"} <= set(replay)
        assert "persons" in headers[WITHHELD_HEADER]
        status, got, headers = await api.message(body["request_id"])
        assert status == 200
        assert set(got) == set(replay)
        assert "x-lgsp-stored" not in got
        # The audit records of the replay and of the GET list what was actually sent.
        sent = sorted(k for k in replay if k not in ("request_id", "correlation_id"))
        assert seen.seen[-2][2] == seen.seen[-1][2] == sent

        kept = good(77)  # answered, never fetched
        assert (await api.post(kept))[0] == 200

        swap({"allow": {}})  # the grant is revoked: the stored answer is not handed out
        status, refused, _ = await api.message(kept["request_id"])
        assert (status, refused["error"]["code"]) == (403, "FORBIDDEN_OPERATION")
        assert "persons" not in refused
        status, gone, _ = await api.message(body["request_id"])  # handed over above
        assert (status, gone["error"]["code"]) == (410, "ANSWER_FETCHED")
        assert sim.calls == 2


async def test_one_consumers_async_burst_cannot_take_every_slot(tmp_path: Path) -> None:
    # 21.7: async calls hold in-flight slots; one consumer filled the gateway's bound and
    # another got OVERLOADED. Each consumer now has a share.
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=1500))
        store = await stack.enter_async_context(store_at(tmp_path / "s.sqlite3"))
        gateway = {"max_in_flight": 8, "max_in_flight_per_consumer": 2}
        api = await stack.enter_async_context(
            idem_bus(sim, store, None, fresh_service(), gateway=gateway)
        )
        burst = [await api.post(good(i), ASYNC) for i in range(3)]
        assert [s for s, _, _ in burst] == [202, 202, 503]
        assert burst[2][1]["error"]["code"] == "OVERLOADED"
        assert burst[2][2]["Retry-After"] == "1"
        other = os.environ[f"{KEY_ENV}_OTHER"]
        status, _, _ = await api.post(good(10), key=other)
        assert status == 200  # the other consumer is still served
        for _, body, _ in burst[:2]:
            status, _ = await api.answer(body["request_id"])
            assert status == 200
        # The share is free again once the answers are in.
        assert (await api.post(good(20), ASYNC))[0] in (200, 202)
