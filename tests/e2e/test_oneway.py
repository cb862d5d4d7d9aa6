"""One-way sends and events end to end on the real RabbitMQ (and the memory broker where
noted): gateway, worker, delivery, webhook subscribers and a send receiver on loopback."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aio_pika
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapters.base import parse_routing
from bus.admin.outbox import OutboxBroker, replay_outbox
from bus.audit.observer import open_auditor
from bus.broker.outbox import EVENTS_EXCHANGE, partition, subscription_key
from bus.config import RoutingConfig
from bus.observe.metrics import Metrics
from bus.store import open_store
from tests.support.polling import until
from tests.support.stack import BusStack, running_bus, serve_app
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.timeout(120)

KEY = "k-" + uuid.uuid4().hex
SECRET = "whsec-" + uuid.uuid4().hex
TYPE = "citizen.record.changed"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "event_id",
        "event_type",
        "schema_version",
        "subject",
        "change_type",
        "record_version",
    ],
    "properties": {
        "event_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
        "event_type": {"const": TYPE},
        "schema_version": {"type": "string"},
        "published_at": {"type": "string"},
        "source": {"enum": ["C06", "MOJ_CIVIL_STATUS"]},
        "subject": {
            "type": "object",
            "additionalProperties": False,
            "required": ["personal_id_hmac"],
            "properties": {"personal_id_hmac": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        },
        "change_type": {"enum": ["BIRTH_REGISTERED", "RESIDENCE_CHANGED", "DEATH_REGISTERED"]},
        "changed_fields": {"type": "array", "items": {"type": "string"}},
        "record_version": {"type": "integer", "minimum": 1},
        "cause_ref": {"type": "string"},
    },
}
FAST = {"initial_s": 0.2, "max_s": 0.5}


def hook(sub: Subscriber, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "webhook",
        "events": [TYPE],
        "url": sub.url,
        "secret": "env:LGSP_TEST_WEBHOOK_SECRET",
        "allow_plain_http": True,
        "redelivery": FAST,
        **extra,
    }


def config(subs: dict[str, dict[str, Any]], receiver_url: str) -> RoutingConfig:
    return parse_routing(config_data(subs, receiver_url))


def config_data(subs: dict[str, dict[str, Any]], receiver_url: str) -> dict[str, Any]:
    """The routing.yaml of these tests: one send route, one event type, ``subs``."""
    consumers: dict[str, Any] = {
        "portal": {
            "api_keys": [{"key": "env:LGSP_TEST_ONEWAY_KEY"}],
            "publish": [TYPE],
            "allow": {"dossier-status": ["push"]},
        },
        "outsider": {"api_keys": [{"key": "env:LGSP_TEST_ONEWAY_KEY_2"}]},
    }
    for name, sub in subs.items():
        os.environ[f"LGSP_TEST_SUB_KEY_{name.upper()}"] = f"{KEY}-{name}"
        consumers[name] = {
            "api_keys": [{"key": f"env:LGSP_TEST_SUB_KEY_{name.upper()}"}],
            "subscriptions": {"main": sub},
        }
    return {
        "version": 1,
        "gateway": {"shutdown_grace_s": 2},
        "delivery": {"partitions": 3},
        "events": {
            TYPE: {
                "schema": SCHEMA,
                "order_by": "subject.personal_id_hmac",
                "sensitive_fields": ["cause_ref"],
                "max_bytes": 2048,
            }
        },
        "consumers": consumers,
        "upstreams": {"receiver": {"url": receiver_url, "allow_plain_http": True}},
        "services": {
            "dossier-status": {
                "adapter": "rest",
                "upstream": "receiver",
                "personal_data": False,
                "operations": {
                    "push": {
                        "mode": "send",
                        "order_by": "dossier_id",
                        "deliver_within_s": 60,
                        "redelivery": FAST,
                        "timeout_s": 3,
                        "retry": {"attempts": 1},
                        "options": {
                            "method": "POST",
                            "path": "status",
                            "fields": {
                                "dossier_id": {"type": "string", "required": True},
                                "seq": {"type": "integer", "required": True},
                            },
                            "headers": {"Idempotency-Key": "request_id"},
                            "body": {"dossier_id": "dossier_id", "seq": "seq"},
                            "app_status": {"path": "status", "ok": ["1", "ALREADY"]},
                        },
                    }
                },
            }
        },
    }


class Receiver:
    """The upstream of the send route: NhanDKHT-style, idempotent by Idempotency-Key."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.order: list[tuple[str, int]] = []
        self.fail_first: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.pause_s = 0.0
        self.metrics: Metrics | None = None
        """The worker's metrics in this test's bus."""

    async def status(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        body = await request.json()
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.pause_s:
            await asyncio.sleep(self.pause_s)
        if body["dossier_id"] == "REFUSE":
            return web.json_response({"status": "0"}, status=400)
        if key in self.fail_first and self.attempts[key] == 1:
            return web.json_response({"status": "0"}, status=503)
        if key in self.seen:
            return web.json_response({"status": "ALREADY"})
        self.seen[key] = body
        self.order.append((body["dossier_id"], body["seq"]))
        return web.json_response({"status": "1"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/status", self.status)
        return app


def event(subject: int, version: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": TYPE,
        "schema_version": "1.0.0",
        "source": "MOJ_CIVIL_STATUS",
        "subject": {"personal_id_hmac": f"{subject:064x}"},
        "change_type": "RESIDENCE_CHANGED",
        "changed_fields": ["permanent_address"],
        "record_version": version,
        "cause_ref": f"HS-{subject}-{version}",
        **extra,
    }


def set_secrets() -> None:
    """The keys and the webhook secret the config refers to (also for subprocesses)."""
    os.environ["LGSP_TEST_ONEWAY_KEY"] = KEY
    os.environ["LGSP_TEST_ONEWAY_KEY_2"] = KEY + "-2"
    os.environ["LGSP_TEST_WEBHOOK_SECRET"] = SECRET


@asynccontextmanager
async def bus(
    subs: dict[str, dict[str, Any]], broker_url: str | None, tmp_path: Path
) -> AsyncIterator[tuple[BusStack, Receiver, RoutingConfig]]:
    set_secrets()
    receiver = Receiver()
    async with serve_app(receiver.app()) as receiver_url:
        cfg = config(subs, receiver_url)
        store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
        await store.connect()
        receiver.metrics = Metrics(CollectorRegistry(), role="worker")
        try:
            async with (
                open_auditor(cfg, store) as auditor,
                running_bus(
                    cfg, broker_url, KEY, auditor=auditor, worker_metrics=receiver.metrics
                ) as stack,
            ):
                yield stack, receiver, cfg
        finally:
            await store.aclose()


@pytest.mark.rabbitmq
async def test_a_subscriber_down_gets_everything_after_once_and_in_order_per_key(
    rabbit_vhost: Any, tmp_path: Path
) -> None:
    down = Subscriber(SECRET.encode())
    up = Subscriber(SECRET.encode())
    subs = {
        "residence": hook(down),
        "health": hook(up, fields=["change_type", "subject.personal_id_hmac", "record_version"]),
    }
    async with bus(subs, rabbit_vhost.url(), tmp_path) as (stack, _, _cfg):
        await up.start()  # `down` is not listening: connections are refused
        sent: list[dict[str, Any]] = []
        for version in range(1, 9):  # a steady stream: 5 citizens, 8 versions each
            for subject in range(5):
                ev = event(subject, version)
                status, body = await stack.post(f"/v1/events/{TYPE}", ev)
                assert status == 202, body
                sent.append(ev)
            await asyncio.sleep(0.05)
        await up.wait_for(len(sent))
        assert down.received == []  # the live subscriber was not held up by the dead one
        await asyncio.sleep(1.0)  # a few refused attempts pile up on `down`
        await down.start()
        await down.wait_for(len(sent))
        for sub in (down, up):
            assert sub.bad_signatures == 0
            assert set(sub.unique()) == {e["event_id"] for e in sent}
            for subject in range(5):
                hmac = f"{subject:064x}"
                versions = [
                    e["record_version"]
                    for e in sub.unique().values()
                    if e["subject"]["personal_id_hmac"] == hmac
                ]
                assert versions == sorted(versions) == list(range(1, 9))
        # Minimisation: `health` lists its fields; `residence` gets all but the sensitive.
        assert {k for e in up.received for k in e} == {
            "event_id",
            "event_type",
            "schema_version",
            "change_type",
            "subject",
            "record_version",
        }
        assert all("cause_ref" not in e and "changed_fields" in e for e in down.received)
        await down.stop()
        await up.stop()


@pytest.mark.rabbitmq
async def test_refusing_slow_and_poison_go_to_the_dlq_with_why_and_the_rest_flows(
    rabbit_vhost: Any, tmp_path: Path
) -> None:
    refusing = Subscriber(SECRET.encode(), status=400)
    slow = Subscriber(SECRET.encode(), pause_s=2.0)
    good = Subscriber(SECRET.encode())
    subs = {
        "refusing": hook(refusing),
        "slow": hook(slow, timeout_s=0.3, deliver_within_s=2),
        "good": hook(good),
    }
    async with bus(subs, rabbit_vhost.url(), tmp_path) as (stack, _, cfg):
        for s in (refusing, slow, good):
            await s.start()
        # A poison message straight onto the events exchange (a foreign publisher).
        connection = await aio_pika.connect(rabbit_vhost.url())
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EVENTS_EXCHANGE)
            await exchange.publish(
                aio_pika.Message(b"\xff not json", headers={"x-lgsp-event-type": TYPE}),
                routing_key=f"{TYPE}.0",
            )
        ev = event(7, 1)
        status, _ = await stack.post(f"/v1/events/{TYPE}", ev)
        assert status == 202
        await good.wait_for(1)
        broker = stack.worker_broker
        p = partition(ev["subject"]["personal_id_hmac"], cfg.delivery.partitions)

        async def dead(consumer: str, p: int) -> int:
            return (await broker.outbox_counts(subscription_key(consumer, "main", p)))[1]

        await until(lambda: _all(dead("refusing", p), dead("slow", p), dead("good", 0)))
        reasons: dict[str, set[str]] = {}
        for consumer in ("refusing", "slow", "good"):
            for q in {0, p}:
                async with broker.dead_letters_claim(subscription_key(consumer, "main", q)) as held:  # type: ignore[attr-defined]
                    for claimed in held:
                        reasons.setdefault(consumer, set()).add(
                            f"{claimed.letter.reason}:{claimed.letter.last_error}"
                        )
        assert "rejected:the event is not JSON" in reasons["good"]
        assert any(r.startswith("refused:HTTP_400") for r in reasons["refusing"])
        assert any(r.startswith("deliver_within:") and "TIMEOUT" in r for r in reasons["slow"])
        assert refusing.received == []
        assert good.unique().keys() == {ev["event_id"]}
        # `dlq replay --outbox`: the refusing subscriber is fixed; only it gets the event again.
        refusing.status = 200
        dlq = cast(OutboxBroker, broker)
        replayed = await replay_outbox(
            dlq, subscription_key("refusing", "main", p), None, "refused"
        )
        assert len(replayed) == 1
        await refusing.wait_for(1)
        assert [e["event_id"] for e in refusing.received] == [ev["event_id"]]
        assert len(good.received) == 1
        slow.pause_s = 0.0
        for s in (refusing, slow, good):
            await s.stop()


async def _all(*counts: Any) -> bool:
    return all([await c >= 1 for c in counts])


@pytest.mark.parametrize(
    "broker_kind", ["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)]
)
async def test_sends_are_accepted_delivered_once_in_order_and_report_their_state(
    broker_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("rabbit_vhost").url() if broker_kind == "amqp" else None
    async with bus({}, url, tmp_path) as (stack, receiver, _):
        ids = [f"rq-{uuid.uuid4().hex[:16]}" for _ in range(12)]
        receiver.fail_first = set(ids[::3])  # every third first attempt: 503
        for i, rid in enumerate(ids):
            body = {"request_id": rid, "dossier_id": f"D{i % 3}", "seq": i}
            status, answer = await stack.post("/v1/dossier-status/push", body)
            assert (status, answer["state"]) == (202, "QUEUED"), answer
        again = {"request_id": ids[0], "dossier_id": "D0", "seq": 0}
        status, answer = await stack.post("/v1/dossier-status/push", again)
        assert status == 202  # a repeat: the same answer, not a second message
        status, answer = await stack.post("/v1/dossier-status/push", {**again, "seq": 99})
        assert (status, answer["error"]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
        refused = f"rq-{uuid.uuid4().hex[:16]}"
        body = {"request_id": refused, "dossier_id": "REFUSE", "seq": 0}
        assert (await stack.post("/v1/dossier-status/push", body))[0] == 202

        async def state(rid: str) -> dict[str, Any]:
            hdrs = {"Authorization": f"Bearer {KEY}"}
            async with stack.session.get(f"{stack.url}v1/messages/{rid}", headers=hdrs) as r:
                assert r.status == 200
                result: dict[str, Any] = await r.json()
                return result

        async def settled() -> bool:
            states = [(await state(r))["state"] for r in [*ids, refused]]
            return all(s in ("DELIVERED", "DEAD") for s in states)

        await until(settled)
        assert set(receiver.seen) == set(ids)  # each delivered, none twice
        for d in ("D0", "D1", "D2"):
            seqs = [s for dossier, s in receiver.order if dossier == d]
            assert seqs == sorted(seqs)  # one dossier's updates never overtake each other
        first = await state(ids[0])
        assert (first["state"], first["attempts"]) == ("DELIVERED", 2)
        # Every attempt is measured and audited (publish → the call's exchange record).
        assert receiver.metrics is not None
        stream = "send.dossier-status.push"
        counted = receiver.metrics.deliveries.total
        assert counted.labels(stream, "DELIVERED")._value.get() == len(ids)
        assert counted.labels(stream, "UPSTREAM_UNAVAILABLE")._value.get() == len(ids[::3])
        assert stack.gateway.store is not None
        await asyncio.sleep(0.5)  # the audit writer's group commit (fail_open records)
        trail = await stack.gateway.store.audit_find(request_id=ids[0])
        sends = [
            (r.outcome, r.status) for r in trail if r.operation == "push" and r.kind == "exchange"
        ]
        assert sends == [("OK", 202), ("OK", 202), ("IDEMPOTENCY_CONFLICT", 409)]
        attempts = [(r.outcome, r.detail["attempt"]) for r in trail if r.kind == "delivery"]
        assert attempts == [("UPSTREAM_UNAVAILABLE", 1), ("DELIVERED", 2)]
        dead = await state(refused)
        assert dead["state"] == "DEAD"
        assert dead["last_error"].startswith("UPSTREAM")


@pytest.mark.parametrize(
    "broker_kind", ["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)]
)
async def test_bad_events_are_refused_with_a_code_and_nothing_is_published(
    broker_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("rabbit_vhost").url() if broker_kind == "amqp" else None
    listener = Subscriber(SECRET.encode())
    subs = {"watcher": hook(listener), "puller": {"kind": "pull", "events": [TYPE]}}
    async with bus(subs, url, tmp_path) as (stack, _, _cfg):
        await listener.start()
        cases: list[tuple[str, Any, str | None, int, str]] = [
            ("citizen.record.unknown", event(1, 1), None, 404, "UNKNOWN_EVENT_TYPE"),
            (TYPE, {**event(1, 1), "record_version": 0}, None, 400, "INVALID_EVENT"),
            (TYPE, {**event(1, 1), "extra": 1}, None, 400, "INVALID_EVENT"),
            (TYPE, {**event(1, 1), "event_type": "x.y"}, None, 400, "INVALID_EVENT"),
            (TYPE, event(1, 1, changed_fields=["079123456789"]), None, 400, "RAW_PERSONAL_ID"),
            (TYPE, event(1, 1), KEY + "-2", 403, "FORBIDDEN_EVENT_TYPE"),
            (TYPE, event(1, 1, cause_ref="x" * 3000), None, 413, "PAYLOAD_TOO_LARGE"),
            (TYPE, b"{not json", None, 400, "MALFORMED_JSON"),
            (TYPE, _twice(event(1, 1)), None, 400, "DUPLICATE_KEY"),
            (TYPE, b'{"a":' * 40 + b"1" + b"}" * 40, None, 400, "JSON_TOO_DEEP"),
        ]
        for event_type, body, key, status, code in cases:
            got_status, got = await stack.post(f"/v1/events/{event_type}", body, key=key)
            assert (got_status, got["error"]["code"]) == (status, code), (event_type, got)
        # A good one after them all: it is the only one anybody receives.
        ev = event(2, 1)
        assert (await stack.post(f"/v1/events/{TYPE}", ev))[0] == 202
        await listener.wait_for(1)
        hdrs = {"Authorization": f"Bearer {KEY}"}
        assert [e["event_id"] for e in listener.received] == [ev["event_id"]]
        store = stack.gateway.store
        assert store is not None
        await until(lambda: _logged(store, 1))
        assert (await store.events_after("sub:puller.main", 0, 10))[0].event_id == ev["event_id"]
        del hdrs
        await listener.stop()


def _twice(ev: dict[str, Any]) -> bytes:
    """``ev`` with its event_id written twice (another id first): what a proxy keeping the
    first of two keys would read differently."""
    raw = orjson.dumps(ev)
    return b'{"event_id":"' + uuid.uuid4().hex.encode() + b'",' + raw[1:]


async def _logged(store: Any, count: int) -> bool:
    return len(await store.events_after("sub:puller.main", 0, 10)) >= count


async def test_pull_subscribers_page_with_a_durable_cursor(tmp_path: Path) -> None:
    subs = {"puller": {"kind": "pull", "events": [TYPE], "fields": ["record_version"]}}
    async with bus(subs, None, tmp_path) as (stack, _, _cfg):
        sent = [event(3, v) for v in range(1, 6)]
        for ev in sent:
            assert (await stack.post(f"/v1/events/{TYPE}", ev))[0] == 202
        store = stack.gateway.store
        assert store is not None
        await until(lambda: _logged(store, 5))

        async def pull(query: str, key: str = KEY + "-puller") -> tuple[int, dict[str, Any]]:
            hdrs = {"Authorization": f"Bearer {key}"}
            async with stack.session.get(f"{stack.url}v1/events{query}", headers=hdrs) as r:
                return r.status, await r.json()

        def versions(page: dict[str, Any]) -> list[int]:
            return [item["event"]["record_version"] for item in page["events"]]

        status, page = await pull("?limit=2")
        assert (status, versions(page), page["next"]) == (200, [1, 2], 2)
        assert set(page["events"][0]["event"]) == {
            "event_id",
            "event_type",
            "schema_version",
            "record_version",
        }
        status, page = await pull("?after=2&limit=2")  # acknowledges 1..2
        assert versions(page) == [3, 4]
        status, page = await pull("?limit=10")  # no after: resume from the durable cursor
        assert versions(page) == [3, 4, 5]  # 3 and 4 again: not acknowledged yet
        status, page = await pull("?after=5")
        assert (status, page["events"]) == (200, [])
        for query, code in (
            ("?after=99", "INVALID_CURSOR"),
            ("?limit=0", "INVALID_LIMIT"),
            ("?after=-1", "INVALID_CURSOR"),
        ):
            status, page = await pull(query)
            assert (status, page["error"]["code"]) == (400, code)
        status, page = await pull("", key=KEY)
        assert (status, page["error"]["code"]) == (404, "UNKNOWN_SUBSCRIPTION")
        assert (await store.cursor_get("sub:puller.main")) == 5
