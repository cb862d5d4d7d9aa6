"""Dead letters on both brokers: why a message is there (reason, attempts, last error),
list/show/replay/purge, and the ``lgsp-bus dlq`` command on a real RabbitMQ with the
audit trail recording each action."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
import yaml

from adapters.base import parse_routing, request_models
from bus.admin.deadletters import Broker as DlqBroker
from bus.admin.deadletters import detail, list_letters, purge, replay
from bus.broker import Broker, QueueSpec
from bus.broker.base import dlq_name
from bus.broker.deadletters import dead_letter_from, dead_letter_headers
from bus.broker.memory import MemoryBroker
from bus.envelope import Reply, Request, encode_request
from bus.errors import DeadlineExceeded
from bus.sealing import Keyring
from bus.store import open_store
from tests.contract.test_broker_contract import (
    echo,
    fresh_service,
    make_request,
    publish_raw,
    serving,
)
from tests.support.rabbit import TestVhost


def dlq(broker: Broker) -> DlqBroker:
    """The broker as the DLQ tools see it (both brokers implement the operations)."""
    assert hasattr(broker, "dead_letters_claim")
    return broker  # type: ignore[return-value]


async def letters_of(broker: Broker, service: str, count: int) -> list[Any]:
    """The DLQ once it holds ``count`` letters (dead-lettering is asynchronous on RabbitMQ)."""
    found: list[Any] = []
    for _ in range(100):
        found = await list_letters(dlq(broker), service, 100)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"DLQ of {service} holds {len(found)}, not {count}")


async def crash(req: Request) -> Reply:
    raise RuntimeError(f"handler bug with 001085000123 in it ({req.request_id})")


# -- pure -----------------------------------------------------------------------------------


def test_our_headers_say_why_and_mask_id_numbers() -> None:
    headers = dead_letter_headers(
        {"x-lgsp-service": "civil-status", "x-lgsp-request-id": "req-1"},
        "delivery_limit",
        "lookup of 001085000123 failed",
        4,
        now=1_700_000_000.0,
    )
    letter = dead_letter_from("civil-status", b"{}", headers, "corr-1")
    assert (letter.reason, letter.attempts, letter.dead_at) == ("delivery_limit", 4, 1.7e9)
    assert "001085000123" not in letter.last_error
    assert "001*******23" in letter.last_error
    assert letter.request_id == "req-1"
    assert letter.id == headers["x-lgsp-dead-id"]


def test_rabbitmq_x_death_is_read_when_ours_are_absent() -> None:
    headers = {
        "x-death": [{"reason": "expired", "count": 1, "queue": "lgsp.svc.x", "time": None}],
        "x-lgsp-operation": "lookup",
    }
    letter = dead_letter_from("x", b"{}", headers, "corr-9")
    assert (letter.reason, letter.attempts, letter.id) == ("expired", 0, "corr-9")
    assert "deadline" in letter.last_error
    assert letter.operation == "lookup"


def test_show_masks_personal_data_unless_revealed() -> None:
    body = {
        "request_id": "req-1",
        "by_person": {"id_number": "001085000123", "full_name": "Nguyễn Văn An"},
        "note": "about 001085000123",
    }
    letter = dead_letter_from("civil-status", json.dumps(body).encode(), {}, "c")
    masked = detail(letter, reveal=False)["body"]
    assert masked["by_person"] == {"id_number": "***", "full_name": "***"}
    assert masked["note"] == "about 001*******23"
    assert detail(letter, reveal=True)["body"] == body


# -- both brokers ---------------------------------------------------------------------------


async def test_failing_handler_dead_letters_with_reason_attempts_and_last_error(
    broker: Broker,
) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service, delivery_limit=2)])
    async with serving(broker, service, crash):
        with pytest.raises(DeadlineExceeded):
            await broker.request(make_request(service, {"n": 1}, timeout=3))
        [letter] = await letters_of(broker, service, 1)
    assert letter.reason == "delivery_limit"
    assert letter.attempts == 2
    assert "handler bug" in letter.last_error
    assert "001085000123" not in letter.last_error
    assert letter.operation == "lookup"


async def test_listing_returns_the_letters_and_purge_removes_them(
    broker: Broker, broker_url: str | None
) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    for i in range(3):
        await publish_raw(broker, broker_url, service, f"not json {i}".encode(), {})
    async with serving(broker, service, echo):
        first = await letters_of(broker, service, 3)
    again = await list_letters(dlq(broker), service, 100)
    assert sorted(x.id for x in again) == sorted(x.id for x in first)  # listing took nothing
    assert all(x.reason == "rejected" and x.attempts >= 1 for x in first)
    gone = await purge(dlq(broker), service, {first[0].id}, None)
    assert [x.id for x in gone] == [first[0].id]
    assert len(await list_letters(dlq(broker), service, 100)) == 2
    gone = await purge(dlq(broker), service, None, None)
    assert len(gone) == 2
    assert await list_letters(dlq(broker), service, 100) == []


async def test_looking_at_dead_letters_changes_nothing(
    broker: Broker, broker_url: str | None
) -> None:
    """21.15d: ``dlq list``/``show`` hold the letters for a moment; on the quorum DLQ,
    returning them counted a delivery on each look (x-delivery-count grew, and with it the
    attempts of a letter RabbitMQ dead-lettered itself). Looked at five times, every letter
    reads the same, in the same order, and RabbitMQ holds it undelivered."""
    service = fresh_service()
    await broker.declare([QueueSpec(service, delivery_limit=1)])
    for i in range(3):
        await publish_raw(broker, broker_url, service, f"not json {i}".encode(), {})
    async with serving(broker, service, echo):
        await letters_of(broker, service, 3)
    looks = [
        [detail(x, reveal=True) for x in await list_letters(dlq(broker), service, 100)]
        for _ in range(5)
    ]
    assert all(look == looks[0] for look in looks), looks
    assert [x["attempts"] for x in looks[0]] == [1, 1, 1]
    shown = await list_letters(dlq(broker), service, 1)  # a look at the first only
    assert [x.id for x in shown] == [looks[0][0]["id"]]
    assert [detail(x, reveal=True) for x in await list_letters(dlq(broker), service, 100)] == (
        looks[0]
    )
    if broker_url is not None:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(dlq_name(service), passive=True)
            message = await queue.get(no_ack=False, timeout=5)
            assert message is not None
            assert not message.redelivered
            assert (message.headers or {}).get("x-delivery-count", 0) == 0
            expires = message.headers["x-lgsp-dlq-expires-at"]  # the DLQ's TTL still runs
            assert isinstance(expires, int)
            assert expires > 0
            await channel.close()


@pytest.mark.rabbitmq
async def test_a_letter_rabbitmq_dead_lettered_keeps_its_facts_when_looked_at(
    rabbit_vhost: TestVhost,
) -> None:
    from bus.broker.amqp.broker import AmqpBroker

    broker = AmqpBroker(rabbit_vhost.url(), name="test-look")
    await broker.connect()
    try:
        service = fresh_service()
        await broker.declare([QueueSpec(service)])
        with pytest.raises(DeadlineExceeded):  # nobody consumes: RabbitMQ expires it
            await broker.request(make_request(service, {"late": True}, timeout=0.3))
        [first] = await letters_of(broker, service, 1)
        for _ in range(4):
            [again] = await list_letters(broker, service, 100)
            assert detail(again, reveal=True) == detail(first, reveal=True)
        assert (again.reason, again.attempts) == ("expired", 0)
    finally:
        await broker.aclose()


async def test_replay_republishes_with_a_fresh_deadline(broker: Broker) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service, delivery_limit=1)])
    async with serving(broker, service, crash):
        with pytest.raises(DeadlineExceeded):
            await broker.request(make_request(service, {"n": 7}, timeout=1.5))
        [letter] = await letters_of(broker, service, 1)
    await asyncio.sleep(0.2)  # the original deadline is long gone by now
    answers: list[Reply] = []

    async def keep(req: Request, reply: Reply) -> None:
        answers.append(reply)

    async with serving(broker, service, echo):
        results = await replay(
            dlq(broker), service, None, reason=None, timeout_s=lambda op: 5.0, on_answer=keep
        )
    assert [(r.id, r.outcome, r.left_dlq) for r in results] == [(letter.id, "OK", True)]
    assert answers[0].body is not None
    assert answers[0].body["echo"] == {"n": 7}
    assert await list_letters(dlq(broker), service, 100) == []


async def test_undecodable_letters_are_not_replayed(broker: Broker, broker_url: str | None) -> None:
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    await publish_raw(broker, broker_url, service, b"{broken", {})
    async with serving(broker, service, echo):
        await letters_of(broker, service, 1)
        results = await replay(dlq(broker), service, None, reason=None, timeout_s=lambda op: 2)
    assert [(r.outcome, r.left_dlq) for r in results] == [("NOT_REPLAYABLE", False)]
    assert len(await list_letters(dlq(broker), service, 100)) == 1


CITIZEN = {"personal_id": "001085000123", "full_name": "NGUYEN VAN AN"}
OFFICER = "001085000999"


async def raw_dead_letters(broker: Broker, url: str | None, service: str) -> list[Any]:
    """(body, headers) of each dead letter as the DLQ holds it, behind the bus's back."""
    if isinstance(broker, MemoryBroker):
        return [(x.body, x.headers) for x in broker._queues[service].dead]
    assert url is not None
    found = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(dlq_name(service), passive=True)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            found.append((message.body, dict(message.headers or {})))
    return found  # the channel closed without acks: every letter is back in the DLQ


async def test_dead_letters_are_sealed_at_rest_and_still_replay(
    broker: Broker, broker_url: str | None
) -> None:
    broker.keyring = Keyring.from_texts([("k1", "k1-at-rest-key-of-the-test-bus-0123456")])
    service = fresh_service()
    await broker.declare([QueueSpec(service, delivery_limit=1)])
    req = dataclasses.replace(make_request(service, CITIZEN, timeout=1.5), officer=OFFICER)
    async with serving(broker, service, crash):
        with pytest.raises(DeadlineExceeded):
            await broker.request(req)
        [letter] = await letters_of(broker, service, 1)
    # At rest: no ID number, name or officer in the body or the headers.
    [(body, headers)] = await raw_dead_letters(broker, broker_url, service)
    assert headers["x-lgsp-sealed"] == "k1"
    for secret in ("001085000123", "NGUYEN", OFFICER):
        assert secret.encode() not in body
        assert secret not in repr(headers)
    # Held by a DLQ operation: opened, as it was sent.
    assert json.loads(letter.body) == CITIZEN
    assert letter.headers["x-lgsp-officer"] == OFFICER
    assert "x-lgsp-sealed" not in letter.headers
    assert detail(letter, reveal=True)["body"] == CITIZEN
    # Under a ring without its key it stays sealed: not replayable, still in the DLQ.
    broker.keyring = Keyring.from_texts([("k2", "k2-at-rest-key-of-the-test-bus-0123456")])
    async with serving(broker, service, echo):
        results = await replay(dlq(broker), service, None, reason=None, timeout_s=lambda op: 5)
    assert [(r.outcome, r.left_dlq) for r in results] == [("NOT_REPLAYABLE", False)]
    # Rotated (k2 seals, k1 still opens): the replay delivers the original request.
    broker.keyring = Keyring.from_texts(
        [
            ("k2", "k2-at-rest-key-of-the-test-bus-0123456"),
            ("k1", "k1-at-rest-key-of-the-test-bus-0123456"),
        ]
    )
    answers: list[Reply] = []

    async def keep(req: Request, reply: Reply) -> None:
        answers.append(reply)

    async with serving(broker, service, echo):
        results = await replay(
            dlq(broker), service, None, reason=None, timeout_s=lambda op: 5.0, on_answer=keep
        )
    assert [r.outcome for r in results] == ["OK"]
    assert answers[0].body is not None
    assert answers[0].body["echo"] == CITIZEN
    assert await list_letters(dlq(broker), service, 100) == []


@pytest.mark.rabbitmq
async def test_expired_requests_are_dead_lettered_as_expired(rabbit_vhost: TestVhost) -> None:
    from bus.broker.amqp.broker import AmqpBroker

    broker = AmqpBroker(rabbit_vhost.url(), name="test-expired")
    await broker.connect()
    try:
        service = fresh_service()
        await broker.declare([QueueSpec(service)])
        with pytest.raises(DeadlineExceeded):  # nobody consumes: it expires in the queue
            await broker.request(make_request(service, {"late": True}, timeout=0.3))
        [letter] = await letters_of(broker, service, 1)
        assert (letter.reason, letter.attempts) == ("expired", 0)
        async with serving(broker, service, echo):
            results = await replay(broker, service, None, reason="expired", timeout_s=lambda o: 5)
        assert [r.outcome for r in results] == ["OK"]
    finally:
        await broker.aclose()


# -- the command ----------------------------------------------------------------------------


@asynccontextmanager
async def amqp(url: str) -> AsyncIterator[Broker]:
    from bus.broker import open_broker

    broker = open_broker(url, name="test-dlq-cli")
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.aclose()


async def lgsp_bus(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``lgsp-bus`` as an operator would; exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bus.cli.main",
        "--log-format",
        "json",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.rabbitmq
async def test_dlq_command_lists_shows_replays_and_purges_with_audit(
    rabbit_vhost: TestVhost, tmp_path: Path
) -> None:
    service = fresh_service()
    config = {
        "version": 1,
        "broker": {"delivery_limit": 2},
        "upstreams": {"moj": {"url": "https://moj.example.vn/"}},
        "services": {
            service: {"adapter": "civil_status", "upstream": "moj", "operations": {"lookup": {}}}
        },
    }
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump(config), encoding="utf-8")
    store_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    env = {
        **os.environ,
        "LGSP_AMQP_URL": rabbit_vhost.url(),
        "LGSP_STORE_URL": store_url,
        "LGSP_CONFIG": str(routing),
    }
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(amqp(rabbit_vhost.url()))
        # Without store.keys the worker seals dead letters under the SQLite store's key file,
        # which the command (another process) opens.
        broker.keyring = open_store(store_url).keyring
        await broker.declare([QueueSpec(service, delivery_limit=2)])
        async with serving(broker, service, crash):
            for n in range(2):
                with pytest.raises(DeadlineExceeded):
                    await broker.request(make_request(service, {"n": n}, timeout=2))
            await letters_of(broker, service, 2)
        async with serving(broker, service, echo):  # a worker finds the poison
            _, headers = encode_request(make_request(service, {}))
            await publish_raw(broker, rabbit_vhost.url(), service, b"{poison", dict(headers))
            letters = await letters_of(broker, service, 3)
        poison = next(x for x in letters if x.reason == "rejected")

        code, out, err = await lgsp_bus(env, "dlq", "list", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert sorted(r["reason"] for r in listed) == [
            "delivery_limit",
            "delivery_limit",
            "rejected",
        ]

        code, out, err = await lgsp_bus(env, "dlq", "show", poison.id, "--actor", "ops-1")
        assert code == 0, err
        assert json.loads(out)["reason"] == "rejected"
        failed = next(x for x in letters if x.reason == "delivery_limit")
        code, out, err = await lgsp_bus(env, "dlq", "show", failed.id, "--reveal", "--actor", "o")
        assert code == 0, err
        assert json.loads(out)["body"] in ({"n": 0}, {"n": 1})

        async with serving(broker, service, echo):
            code, out, err = await lgsp_bus(
                env, "dlq", "replay", "--reason", "delivery_limit", "--actor", "ops-1"
            )
        assert code == 0, err + out
        assert out.count(" OK ") == 2

        code, out, err = await lgsp_bus(env, "dlq", "purge", "--all", "--actor", "ops-1")
        assert code == 0, err
        assert "purged 1 dead letter(s)" in out
        assert await list_letters(dlq(broker), service, 100) == []

    store = open_store(store_url)
    await store.connect()
    try:
        actions = [
            (r.action, r.actor)
            for chain in await store.audit_chains()
            for r in await store.audit_records(chain.chain, 0, 100)
            if r.kind == "admin"
        ]
    finally:
        await store.aclose()
    assert ("dlq.show", "ops-1") in actions
    assert ("dlq.replay", "ops-1") in actions
    assert ("dlq.purge", "ops-1") in actions


async def test_memory_dlq_is_a_dead_letter_queue() -> None:
    broker = MemoryBroker()
    await broker.connect()
    service = fresh_service()
    await broker.declare([QueueSpec(service)])
    broker.publish_raw(service, b"x", {}, "c1")
    async with serving(broker, service, echo):
        [letter] = await letters_of(broker, service, 1)
    assert broker.dead_letters(service)[0].id == letter.id
    assert await broker.dead_letters_purge(service) == 1
    await broker.aclose()


@pytest.mark.rabbitmq
async def test_a_replayed_answer_reaches_the_async_caller(
    rabbit_vhost: TestVhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers down: an async request expires into the DLQ and its caller is told so; the
    operator replays it once workers are back, and the caller's GET has the answer."""
    from bus.admin.deadletters import answer_keeper
    from bus.broker import queue_specs
    from bus.gateway.app import Gateway, Runtime, build_app
    from tests.faults.test_faults import KEY_ENV, TOKEN_ENV, fault_config, good, simulator
    from tests.support.stack import new_secret, running_bus, serve_app
    from tests.unit.gateway.test_idempotency import Api

    monkeypatch.setenv(KEY_ENV, new_secret())
    monkeypatch.setenv(TOKEN_ENV, new_secret())
    service = fresh_service()
    url = rabbit_vhost.url()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        config = parse_routing(fault_config(sim.url, service=service, timeout_s=1.0))
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        await store.connect()
        stack.push_async_callback(store.aclose)
        broker = await stack.enter_async_context(amqp(url))
        await broker.declare(queue_specs(config))
        runtime = Runtime.build(config, models=request_models(config))
        gateway = Gateway(broker, runtime, store=store)  # with its store, and no worker anywhere
        gateway_url = await stack.enter_async_context(serve_app(build_app(gateway)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        api = Api(gateway_url, session, service)
        body = good(4)
        assert (await api.post(body, {"Prefer": "respond-async"}))[0] == 202
        status, told = await api.answer(body["request_id"])
        assert (status, told["error"]["code"]) == (504, "DEADLINE_EXCEEDED")
        [letter] = await letters_of(broker, service, 1)
        assert letter.reason == "expired"

        async with running_bus(config, url, os.environ[KEY_ENV]):  # workers are back
            results = await replay(
                dlq(broker),
                service,
                {letter.id},
                reason=None,
                timeout_s=lambda op: 5.0,
                on_answer=answer_keeper(config, store),
            )
        assert [r.outcome for r in results] == ["OK"]
        status, answer = await api.answer(body["request_id"])
        assert status == 200
        assert answer["request_id"] == body["request_id"]
        assert answer["status"] == "FOUND"
        assert sim.calls == 1
