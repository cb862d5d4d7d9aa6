"""One-way sends through a worker SIGKILL and a cut of the gateway's broker connection, on
the real RabbitMQ: every send that got ``202`` is delivered, none that got an error is,
one dossier's updates arrive in order. ``lgsp-bus worker`` subprocesses (killed only
ones this test started), the gateway in the test process behind a TCP proxy to RabbitMQ,
the store one SQLite file both share."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapters.base import parse_routing, request_models
from bus.broker import open_broker, queue_specs
from bus.broker.outbox import outbox_specs
from bus.gateway.app import Gateway, Runtime, build_app
from bus.store import open_store
from tests.e2e.test_oneway import KEY, Receiver, config_data, set_secrets
from tests.support.polling import until
from tests.support.procs import reap
from tests.support.rabbit import TestVhost
from tests.support.stack import serve_app
from tests.support.subscriber import free_port
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(150)]


@asynccontextmanager
async def worker(routing: Path, amqp_url: str, store_url: str, log: Path) -> AsyncIterator[Any]:
    env = {**os.environ, "LGSP_AMQP_URL": amqp_url, "LGSP_STORE_URL": store_url}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bus.cli.main",
            "--log-format",
            "json",
            "worker",
            "--config",
            str(routing),
            "--no-watch",
            "--http-port",
            "-1",
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        await until(lambda: _logged(log, "delivery.started"), 30)
        yield proc
    finally:
        await reap(proc)


async def _logged(log: Path, event: str) -> bool:
    return event in log.read_bytes().decode(errors="replace")  # noqa: ASYNC240 - a small log file


async def test_nothing_acknowledged_is_lost_through_worker_kill_and_broker_cut(
    rabbit_vhost: TestVhost, tmp_path: Path
) -> None:
    set_secrets()
    receiver = Receiver()
    receiver.pause_s = 0.05  # a backlog builds up: the kill finds messages queued
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    store_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    accepted: list[tuple[str, str, int]] = []
    delivered_at_kill = 0
    refused: list[str] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(proxy.aclose)
        receiver_url = await stack.enter_async_context(serve_app(receiver.app()))
        data = config_data({}, receiver_url)
        routing = tmp_path / "routing.yaml"
        routing.write_text(yaml.safe_dump(data), encoding="utf-8")
        cfg = parse_routing(data)
        store = open_store(store_url)
        await store.connect()
        stack.push_async_callback(store.aclose)
        broker = open_broker(rabbit_vhost.url(port=proxy.port), name="test-gateway")
        await broker.connect()
        stack.push_async_callback(broker.aclose)
        await broker.declare(queue_specs(cfg))
        await broker.declare_outbox(outbox_specs(cfg))
        gateway = Gateway(broker, Runtime.build(cfg, models=request_models(cfg)))
        gateway.store = store
        url = await stack.enter_async_context(serve_app(build_app(gateway)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        log = tmp_path / "workers.log"

        async def send(i: int) -> None:
            rid = f"rq-{uuid.uuid4().hex[:16]}"
            dossier = f"D{i % 4}"
            body = {"request_id": rid, "dossier_id": dossier, "seq": i}
            hdrs = {"Authorization": f"Bearer {KEY}"}
            try:
                async with session.post(
                    f"{url}v1/dossier-status/push", json=body, headers=hdrs
                ) as r:
                    (accepted.append((rid, dossier, i)) if r.status == 202 else refused.append(rid))
            except aiohttp.ClientError:
                refused.append(rid)

        first = await stack.enter_async_context(worker(routing, rabbit_vhost.url(), store_url, log))
        for i in range(40):
            await send(i)
            if i == 15:
                first.send_signal(signal.SIGKILL)  # mid-stream, holding or posting a message
                delivered_at_kill = len(receiver.seen)
            if i == 25:
                proxy.cut()  # the gateway's broker connection drops under it
        second = await stack.enter_async_context(
            worker(routing, rabbit_vhost.url(), store_url, log)
        )
        for i in range(40, 60):
            await send(i)

        async def settled() -> bool:
            return set(receiver.seen) >= {rid for rid, _, _ in accepted}

        await until(settled, 60)
        await asyncio.sleep(0.5)  # anything wrongly queued would arrive by now too
        assert delivered_at_kill < 16  # the kill left sends undelivered
        assert refused  # the cut refused some sends
        assert accepted
        assert len(accepted) + len(refused) == 60
        assert set(receiver.seen) == {rid for rid, _, _ in accepted}  # none lost, none extra
        assert not set(receiver.seen) & set(refused)  # an error means never delivered
        for dossier in ("D0", "D1", "D2", "D3"):
            seqs = [s for d, s in receiver.order if d == dossier]
            assert seqs == sorted(seqs)
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)


@asynccontextmanager
async def gateway_process(
    routing: Path, amqp_url: str, store_url: str, port: int, log: Path
) -> AsyncIterator[Any]:
    env = {**os.environ, "LGSP_AMQP_URL": amqp_url, "LGSP_STORE_URL": store_url}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bus.cli.main", "--log-format", "json", "gateway",
            "--config", str(routing), "--no-watch", "--host", "127.0.0.1", "--port", str(port),
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as probe:

            async def up() -> bool:
                try:
                    async with probe.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await until(up, 30)
        yield proc
    finally:
        await reap(proc)


async def test_a_gateway_killed_mid_stream_loses_no_202_and_a_retry_delivers_once(
    rabbit_vhost: TestVhost, tmp_path: Path
) -> None:
    set_secrets()
    receiver = Receiver()
    store_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    answers: dict[str, int] = {}  # request_id → HTTP status (0: no answer, connection lost)
    bodies: dict[str, dict[str, Any]] = {}
    async with AsyncExitStack() as stack:
        receiver_url = await stack.enter_async_context(serve_app(receiver.app()))
        routing = tmp_path / "routing.yaml"
        routing.write_text(yaml.safe_dump(config_data({}, receiver_url)), encoding="utf-8")
        log = tmp_path / "procs.log"
        await stack.enter_async_context(worker(routing, rabbit_vhost.url(), store_url, log))
        port = free_port()
        gw = await stack.enter_async_context(
            gateway_process(routing, rabbit_vhost.url(), store_url, port, log)
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        hdrs = {"Authorization": f"Bearer {KEY}"}

        async def send(rid: str) -> None:
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/dossier-status/push",
                    json=bodies[rid],
                    headers=hdrs,
                ) as r:
                    answers[rid] = r.status
            except aiohttp.ClientError:
                answers[rid] = 0

        ids = [f"rq-{uuid.uuid4().hex[:16]}" for _ in range(40)]
        for i, rid in enumerate(ids):
            bodies[rid] = {"request_id": rid, "dossier_id": f"D{i % 4}", "seq": i}
        first = [asyncio.create_task(send(rid)) for rid in ids[:30]]
        await asyncio.sleep(0.05)
        gw.send_signal(signal.SIGKILL)  # with requests in flight
        await asyncio.gather(*first)
        await stack.enter_async_context(
            gateway_process(routing, rabbit_vhost.url(), store_url, port, log)
        )
        lost = [rid for rid in ids[:30] if answers[rid] == 0]
        for rid in [*lost, *ids[30:]]:  # the callers repeat what got no answer, same ids
            await send(rid)
        ok = {rid for rid, status in answers.items() if status == 202}
        errors = {rid for rid, status in answers.items() if status not in (0, 202)}

        async def settled() -> bool:
            return set(receiver.seen) >= ok

        await until(settled, 60)
        await asyncio.sleep(0.5)
        assert ok == set(ids)  # every send was accepted, at first or on its repeat
        assert not errors
        assert set(receiver.seen) == ok  # none lost
        assert all(n >= 1 for n in receiver.attempts.values())
        assert len(receiver.order) == len(ok)  # each accepted once by the upstream
