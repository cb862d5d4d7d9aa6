"""Fault tests: the bus on a real RabbitMQ and a real MOJ simulator, with TCP proxies in
between that cut, refuse or blackhole connections. Each scenario is bounded in time and
prints the figures it observed (``FAULT`` lines; run with ``-s`` to see them).

Worker crashes and SIGTERM under load, with workers as separate processes, are in
``tests/test_faults_workers.py``; DLQ operations in ``tests/test_dlq.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from adapters.base import parse_routing, request_models
from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import STATS, build_app
from bus.broker import Broker, open_broker, queue_specs
from bus.broker.amqp.broker import AmqpBroker
from bus.broker.base import queue_name
from bus.config import RoutingConfig
from bus.envelope import Request, encode_request
from bus.gateway.app import Gateway, Runtime
from bus.gateway.app import build_app as build_gateway
from tests.e2e.test_e2e_civil_status import lookup
from tests.support.rabbit import TestVhost
from tests.support.stack import new_secret, running_bus, serve_app
from tests.support.tcpproxy import TcpProxy

KEY_ENV, TOKEN_ENV = "T_FAULT_KEY", "T_FAULT_TOKEN"
RETRYABLE = {"BROKER_UNAVAILABLE", "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", "OVERLOADED"}


def figures(scenario: str, **values: Any) -> None:
    """One line of observed figures (for the report)."""
    print(f"FAULT {scenario}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def fresh_service() -> str:
    """A service name of its own per test: queues live on in the run's shared vhost."""
    return f"civil-{uuid.uuid4().hex[:8]}"


def fault_config(
    upstream_url: str,
    *,
    service: str = "civil-status",
    timeout_s: float = 3.0,
    retry: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
    broker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A routing mapping: one consumer, the MOJ simulator (at ``upstream_url``), one
    civil-status ``service``."""
    return {
        "version": 1,
        "gateway": {"shutdown_grace_s": 10, **(gateway or {})},
        "broker": {"prefetch": 16, "delivery_limit": 3, **(broker or {})},
        "consumers": {
            "portal": {"api_keys": [{"key": f"env:{KEY_ENV}"}], "allow": {service: ["lookup"]}}
        },
        "upstreams": {
            "moj": {
                "url": upstream_url,
                "allow_plain_http": True,
                "auth": {"kind": "bearer", "token": f"env:{TOKEN_ENV}"},
                "breaker": breaker or {},
            }
        },
        "services": {
            service: {
                "adapter": "civil_status",
                "upstream": "moj",
                "operations": {"lookup": {"timeout_s": timeout_s, "retry": retry or {}}},
            }
        },
    }


def good(i: int) -> dict[str, Any]:
    """A lookup that finds sample ``i``."""
    return lookup(by_registration=sample_registration(0, RecordType.BIRTH, i % 2000))


def fault(number: str) -> dict[str, Any]:
    """A lookup that triggers the simulator's fault ``number`` (HANG, FAIL503 …)."""
    return lookup(by_registration={"authority_code": "00001", "number": number})


@dataclass
class Result:
    """What a client saw for one request."""

    request_id: str
    status: int
    code: str
    started: float
    ended: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        """Seconds from send to answer."""
        return self.ended - self.started


@dataclass
class Client:
    """An HTTP client of the gateway with the consumer's key."""

    url: str
    session: aiohttp.ClientSession
    key: str
    service: str
    worker_broker: Broker | None = None

    async def call(
        self, body: dict[str, Any], *, headers: dict[str, str] | None = None, bound_s: float = 30
    ) -> Result:
        """POST a lookup; a transport failure or a hang past ``bound_s`` is status 0."""
        hdrs = {"Authorization": f"Bearer {self.key}", "X-Request-Id": body["request_id"]}
        hdrs.update(headers or {})
        started = time.monotonic()
        try:
            async with self.session.post(
                f"{self.url}v1/{self.service}/lookup",
                json=body,
                headers=hdrs,
                timeout=aiohttp.ClientTimeout(total=bound_s),
            ) as r:
                data = await r.json()
                code = "OK" if r.status == 200 else str(data.get("error", {}).get("code"))
                return Result(
                    body["request_id"], r.status, code, started, time.monotonic(), dict(r.headers)
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Result(body["request_id"], 0, type(exc).__name__, started, time.monotonic())

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET a JSON document of the gateway."""
        async with self.session.get(
            self.url + path.lstrip("/"), headers={"Authorization": f"Bearer {self.key}"}
        ) as r:
            return r.status, await r.json()


@dataclass
class Sim:
    """The MOJ simulator behind a TCP proxy."""

    app: web.Application
    proxy: TcpProxy

    @property
    def calls(self) -> int:
        """API requests the simulator has served."""
        return self.app[STATS].requests

    @property
    def url(self) -> str:
        """The upstream URL the bus uses (through the proxy)."""
        return f"http://127.0.0.1:{self.proxy.port}/"


@asynccontextmanager
async def simulator(**knobs: Any) -> AsyncIterator[Sim]:
    """The simulator (``knobs`` go to its ``build_app``) with a proxy in front."""
    app = build_app(token=os.environ[TOKEN_ENV], **knobs)
    async with serve_app(app) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        proxy = await TcpProxy("127.0.0.1", port).start()
        try:
            yield Sim(app, proxy)
        finally:
            await proxy.aclose()


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, new_secret())
    monkeypatch.setenv(TOKEN_ENV, new_secret())


@asynccontextmanager
async def bus(config: RoutingConfig, amqp_url: str | None) -> AsyncIterator[Client]:
    """Gateway + in-process worker (``tests.stack.running_bus``)."""
    async with running_bus(config, amqp_url, os.environ[KEY_ENV]) as stack:
        service = next(iter(config.services))
        yield Client(stack.url, stack.session, stack.key, service, stack.worker_broker)


@asynccontextmanager
async def gateway_only(
    config: RoutingConfig, amqp_url: str | None
) -> AsyncIterator[tuple[Client, Broker]]:
    """A gateway whose queue nobody consumes (or whose workers run elsewhere)."""
    async with AsyncExitStack() as stack:
        broker = open_broker(amqp_url, name="test-gateway")
        await broker.connect()
        stack.push_async_callback(broker.aclose)
        await broker.declare(queue_specs(config))
        url = await stack.enter_async_context(
            serve_app(
                build_gateway(Gateway(broker, Runtime.build(config, models=request_models(config))))
            )
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield Client(url, session, os.environ[KEY_ENV], next(iter(config.services))), broker


async def until(predicate: Any, bound_s: float, what: str) -> float:
    """Poll ``predicate()`` until true; seconds it took, or fail after ``bound_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > bound_s:
            raise AssertionError(f"{what}: not within {bound_s}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# -- broker connection cut under steady load ------------------------------------------------


@pytest.mark.rabbitmq
async def test_broker_cut_under_steady_load(rabbit_vhost: TestVhost) -> None:
    timeout_s = 3.0
    broker_proxy = await TcpProxy("127.0.0.1", 5672).start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(broker_proxy.aclose)
        sim = await stack.enter_async_context(simulator())
        config = parse_routing(fault_config(sim.url, service=fresh_service(), timeout_s=timeout_s))
        client = await stack.enter_async_context(
            bus(config, rabbit_vhost.url(port=broker_proxy.port))
        )
        results: list[Result] = []
        bodies: dict[str, dict[str, Any]] = {}
        clock0 = time.monotonic()
        run_until = clock0 + 9.0

        async def steady(n: int) -> None:
            i = 0
            while time.monotonic() < run_until:
                body = good(n * 1000 + i)
                bodies[body["request_id"]] = body
                results.append(await client.call(body, bound_s=timeout_s + 10))
                i += 1
                await asyncio.sleep(0.02)

        load = [asyncio.create_task(steady(n)) for n in range(8)]
        await asyncio.sleep(2.0)
        cut_at = time.monotonic()
        broker_proxy.accepting = False
        broker_proxy.cut()
        await asyncio.sleep(2.0)
        broker_proxy.accepting = True
        back_at = time.monotonic()
        await asyncio.gather(*load)

        # Every request: an answer or a clear retryable code, within its deadline.
        strays = [r for r in results if r.status != 200 and r.code not in RETRYABLE]
        late = [r for r in results if r.elapsed > timeout_s + 1.0]
        assert not strays, strays[:3]
        assert not late, late[:3]
        failed = [r for r in results if r.status != 200]
        resumed = [r.ended for r in results if r.status == 200 and r.started >= back_at]
        assert resumed, "no request succeeded after the broker came back"
        resume_s = min(resumed) - back_at
        assert resume_s < 10

        # The caller retries what failed, with the same request: nothing is lost.
        retried = await asyncio.gather(
            *(client.call(bodies[r.request_id], bound_s=timeout_s + 5) for r in failed)
        )
        lost = [r for r in retried if r.status != 200]
        after = await asyncio.gather(*(client.call(good(9000 + i)) for i in range(20)))
        assert all(r.status == 200 for r in after)
        assert not lost, lost[:3]
        # Nothing the broker accepted is stuck: the work queue drains (messages whose
        # deadline passed during the cut go to the DLQ as "expired").
        assert client.worker_broker is not None
        counts = (1, 0)
        for _ in range(100):
            counts = await client.worker_broker.message_counts(client.service)
            if counts[0] == 0:
                break
            await asyncio.sleep(0.1)
        assert counts[0] == 0, f"{counts[0]} messages stuck in the work queue"
        figures(
            "broker-cut",
            requests=len(results),
            ok=len(results) - len(failed),
            failed_with_retryable_code=len(failed),
            codes=sorted({r.code for r in failed}),
            slowest_s=round(max(r.elapsed for r in results), 2),
            cut_s=round(back_at - cut_at, 1),
            resume_s=round(resume_s, 2),
            lost_after_retry=len(lost),
            stuck_in_queue=counts[0],
            expired_to_dlq=counts[1],
        )


# -- upstream flapping, down, back ----------------------------------------------------------


@pytest.mark.rabbitmq
async def test_upstream_flapping_retries_succeed_within_budget(rabbit_vhost: TestVhost) -> None:
    attempts, requests, timeout_s = 6, 40, 3.0
    retry = {"attempts": attempts, "backoff_initial_s": 0.02, "backoff_max_s": 0.1}
    # The breaker is set above the flapping rate: this scenario is about retries.
    breaker = {"failure_ratio": 0.9, "min_calls": 50}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(error_rate=0.5, seed=7))
        config = parse_routing(
            fault_config(
                sim.url, service=fresh_service(), timeout_s=timeout_s, retry=retry, breaker=breaker
            )
        )
        client = await stack.enter_async_context(bus(config, rabbit_vhost.url()))
        gate = asyncio.Semaphore(4)

        async def one(i: int) -> Result:
            async with gate:
                return await client.call(good(i))

        results = await asyncio.gather(*(one(i) for i in range(requests)))
    ok = [r for r in results if r.status == 200]
    assert all(r.code in ("OK", "UPSTREAM_UNAVAILABLE") for r in results)
    assert all(r.elapsed < timeout_s + 0.5 for r in results)
    assert len(ok) >= 0.9 * requests  # P(6 failures in a row) = 1/64 per request
    assert requests < sim.calls <= attempts * requests
    figures(
        "flapping",
        requests=requests,
        ok=len(ok),
        upstream_calls=sim.calls,
        bound=attempts * requests,
        slowest_s=round(max(r.elapsed for r in results), 2),
    )


@pytest.mark.rabbitmq
async def test_upstream_down_breaker_opens_fails_fast_then_closes(
    rabbit_vhost: TestVhost,
) -> None:
    open_s = 1.5
    breaker = {"min_calls": 4, "failure_ratio": 0.5, "open_s": open_s, "window_s": 30}
    retry = {"attempts": 2, "backoff_initial_s": 0.02, "backoff_max_s": 0.05}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        config = parse_routing(
            fault_config(sim.url, service=fresh_service(), retry=retry, breaker=breaker)
        )
        client = await stack.enter_async_context(bus(config, rabbit_vhost.url()))
        assert (await client.call(good(1))).status == 200

        sim.proxy.accepting = False  # the upstream is down: connections are refused
        sim.proxy.cut()
        codes: list[str] = []
        for i in range(10):
            result = await client.call(good(10 + i))
            codes.append(result.code)
            if result.code == "CIRCUIT_OPEN":
                break
        assert codes[-1] == "CIRCUIT_OPEN", codes
        assert set(codes[:-1]) <= {"UPSTREAM_UNAVAILABLE"}
        _, ready = await client.get("/readyz")
        assert ready["breakers"]["moj"]["state"] == "open"

        calls = sim.calls
        fast = [await client.call(good(30 + i)) for i in range(5)]
        assert all(r.code == "CIRCUIT_OPEN" and r.status == 503 for r in fast)
        assert all(r.elapsed < 0.5 for r in fast)
        assert all(1 <= int(r.headers["Retry-After"]) <= 2 for r in fast)
        assert sim.calls == calls, "an open breaker must not call the upstream"

        sim.proxy.accepting = True  # the upstream is back
        back_at = time.monotonic()
        while (await client.call(good(50))).status != 200:
            assert time.monotonic() - back_at < open_s + 5, "the breaker did not close"
            await asyncio.sleep(0.1)
        closed_s = time.monotonic() - back_at
        _, ready = await client.get("/readyz")
        assert ready["breakers"]["moj"]["state"] == "closed"
        assert ready["breakers"]["moj"]["times_opened"] == 1
    figures(
        "breaker",
        failures_before_open=len(codes) - 1,
        fail_fast_max_ms=round(max(r.elapsed for r in fast) * 1000, 1),
        upstream_calls_while_open=0,
        closed_after_upstream_back_s=round(closed_s, 2),
        open_s=open_s,
    )


@pytest.mark.rabbitmq
@pytest.mark.parametrize("breaker_enabled", [False, True])
async def test_a_retry_storm_cannot_amplify(rabbit_vhost: TestVhost, breaker_enabled: bool) -> None:
    attempts, requests = 3, 30
    retry = {"attempts": attempts, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        config = parse_routing(
            fault_config(
                sim.url, service=fresh_service(), retry=retry, breaker={"enabled": breaker_enabled}
            )
        )
        client = await stack.enter_async_context(bus(config, rabbit_vhost.url()))
        results = await asyncio.gather(*(client.call(fault("FAIL503")) for _ in range(requests)))
    assert all(r.code in ("UPSTREAM_UNAVAILABLE", "CIRCUIT_OPEN") for r in results)
    assert sim.calls <= attempts * requests
    if not breaker_enabled:
        assert sim.calls == attempts * requests  # each request: exactly its attempts
    else:
        assert sim.calls < attempts * requests  # the open breaker sheds the rest
    figures(
        f"retry-storm(breaker={'on' if breaker_enabled else 'off'})",
        requests=requests,
        attempts=attempts,
        upstream_calls=sim.calls,
        bound=attempts * requests,
    )


# -- poison messages ------------------------------------------------------------------------


async def publish_raw(amqp_url: str, service: str, body: bytes, headers: dict[str, Any]) -> None:
    """Put a message straight on the work queue, as a broken or foreign publisher would."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(body, headers=headers, correlation_id=uuid.uuid4().hex),
            routing_key=queue_name(service),
        )


@pytest.mark.rabbitmq
async def test_poison_messages_between_good_ones_go_to_the_dlq(rabbit_vhost: TestVhost) -> None:
    url = rabbit_vhost.url()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        service = fresh_service()
        config = parse_routing(fault_config(sim.url, service=service))
        client = await stack.enter_async_context(bus(config, url))
        _, valid_headers = encode_request(
            Request("poison-1", service, "lookup", "portal", "c", time.time() + 60, {})
        )
        poisons: list[tuple[bytes, dict[str, Any]]] = [
            (b"{not json", dict(valid_headers)),
            (b"[1, 2, 3]", dict(valid_headers)),
            (b"{}", {"x-lgsp-service": service}),  # headers missing
        ]
        results: list[Result] = []
        for i, (body, headers) in enumerate(poisons):
            results += await asyncio.gather(*(client.call(good(i * 10 + j)) for j in range(5)))
            await publish_raw(url, service, body, headers)
        results += await asyncio.gather(*(client.call(good(100 + j)) for j in range(5)))
        assert all(r.status == 200 for r in results)

        dlq_broker = open_broker(url, name="test-dlq")
        await dlq_broker.connect()
        stack.push_async_callback(dlq_broker.aclose)
        assert isinstance(dlq_broker, AmqpBroker)
        letters = []
        for _ in range(50):
            async with dlq_broker.dead_letters_claim(service) as held:
                letters = [c.letter for c in held]
            if len(letters) == len(poisons):
                break
            await asyncio.sleep(0.1)
    assert sorted(letter.body for letter in letters) == sorted(body for body, _ in poisons)
    for letter in letters:
        assert letter.reason == "rejected"
        assert letter.attempts >= 1
        assert letter.last_error
        assert letter.dead_at is not None
    figures("poison", good_answered=len(results), poison_dead_lettered=len(letters))


# -- deadlines --------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_gateway_answers_deadline_exceeded_on_time_with_no_worker(
    rabbit_vhost: TestVhost,
) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        config = parse_routing(fault_config(sim.url, service=fresh_service(), timeout_s=10))
        client, _ = await stack.enter_async_context(gateway_only(config, rabbit_vhost.url()))
        result = await client.call(good(1), headers={"X-Lgsp-Timeout-Ms": "700"})
    assert (result.status, result.code) == (504, "DEADLINE_EXCEEDED")
    assert 0.6 <= result.elapsed < 0.7 + 1.0
    figures("no-worker", deadline_s=0.7, answered_after_s=round(result.elapsed, 2))


@pytest.mark.rabbitmq
async def test_worker_never_starts_expired_work(rabbit_vhost: TestVhost) -> None:
    url = rabbit_vhost.url()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        service = fresh_service()
        config = parse_routing(fault_config(sim.url, service=service))
        declarer = open_broker(url, name="test-declare")
        await declarer.connect()
        stack.push_async_callback(declarer.aclose)
        await declarer.declare(queue_specs(config))
        now = time.time()
        # Past its deadline, and with less time left than the worker keeps for the reply.
        for deadline in (now - 5, now - 0.1, now + 0.15):
            body, headers = encode_request(
                Request(
                    f"stale-{uuid.uuid4().hex[:8]}",
                    service,
                    "lookup",
                    "portal",
                    uuid.uuid4().hex,
                    deadline,
                    good(1),
                )
            )
            await publish_raw(url, service, body, dict(headers))
        await asyncio.sleep(0.2)
        client = await stack.enter_async_context(bus(config, url))
        result = await client.call(good(2))
        assert result.status == 200
        await asyncio.sleep(0.3)
    assert sim.calls == 1, "only the live request may reach the upstream"


@pytest.mark.rabbitmq
async def test_retries_of_a_hanging_upstream_stay_inside_the_deadline(
    rabbit_vhost: TestVhost,
) -> None:
    timeout_s = 2.0
    retry = {"attempts": 5, "attempt_timeout_s": 0.5, "backoff_initial_s": 0.05}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(hang_s=30))
        config = parse_routing(
            fault_config(sim.url, service=fresh_service(), timeout_s=timeout_s, retry=retry)
        )
        client = await stack.enter_async_context(bus(config, rabbit_vhost.url()))
        result = await client.call(fault("HANG"))
    assert (result.status, result.code) == (504, "UPSTREAM_TIMEOUT")
    assert result.elapsed < timeout_s + 0.3
    assert 2 <= sim.calls <= 4  # 0.5 s attempts inside 2 s − the reply margin
    figures(
        "hang", deadline_s=timeout_s, answered_after_s=round(result.elapsed, 2), attempts=sim.calls
    )


@pytest.mark.rabbitmq
async def test_a_non_idempotent_operation_is_not_retried_after_a_timeout(
    rabbit_vhost: TestVhost,
) -> None:
    retry = {"attempts": 4, "attempt_timeout_s": 0.5, "backoff_initial_s": 0.05}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(hang_s=30))
        data = fault_config(sim.url, service=fresh_service(), timeout_s=2.0, retry=retry)
        next(iter(data["services"].values()))["operations"]["lookup"]["idempotent"] = False
        client = await stack.enter_async_context(bus(parse_routing(data), rabbit_vhost.url()))
        result = await client.call(fault("HANG"))
    assert (result.status, result.code) == (504, "UPSTREAM_TIMEOUT")
    assert sim.calls == 1  # the upstream may have acted on the first call: no second one


# -- backpressure -----------------------------------------------------------------------------


async def test_gateway_in_flight_bound_is_503_with_retry_after(broker_url: str | None) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(hang_s=30))
        config = parse_routing(
            fault_config(
                sim.url, service=fresh_service(), timeout_s=2.0, gateway={"max_in_flight": 2}
            )
        )
        client = await stack.enter_async_context(bus(config, broker_url))
        hanging = [asyncio.create_task(client.call(fault("HANG"))) for _ in range(2)]
        await until(lambda: sim.calls >= 2, 5, "two requests in flight")
        refused = await client.call(good(1))
        await asyncio.gather(*hanging)
    assert (refused.status, refused.code) == (503, "OVERLOADED")
    assert refused.headers["Retry-After"] == "1"
    assert refused.elapsed < 0.5
    figures("gateway-bound", refused_after_ms=round(refused.elapsed * 1000, 1))


async def test_full_queue_is_503_with_retry_after_at_once(broker_url: str | None) -> None:
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator())
        config = parse_routing(
            fault_config(
                sim.url, service=fresh_service(), timeout_s=1.5, broker={"max_queue_length": 2}
            )
        )
        client, _ = await stack.enter_async_context(gateway_only(config, broker_url))
        waiting: list[asyncio.Task[Result]] = []
        refused: Result | None = None
        # RabbitMQ's quorum queues admit about one message over the limit.
        for i in range(6):
            task = asyncio.create_task(client.call(good(i)))
            await asyncio.sleep(0.15)
            if task.done():
                refused = task.result()
                break
            waiting.append(task)
        timed_out = await asyncio.gather(*waiting)
    assert refused is not None, "the queue never refused"
    assert (refused.status, refused.code) == (503, "OVERLOADED")
    assert refused.headers["Retry-After"] == "1"
    assert refused.elapsed < 0.5
    assert 2 <= len(waiting) <= 3
    assert all(r.code == "DEADLINE_EXCEEDED" for r in timed_out)
    figures(
        "queue-bound",
        admitted=len(waiting),
        refused_after_ms=round(refused.elapsed * 1000, 1),
    )


async def test_a_callers_short_deadlines_do_not_open_the_shared_breaker() -> None:
    # One consumer's X-Lgsp-Timeout-Ms shorter than the upstream's answer time: its
    # requests time out, but that is its deadline, not the upstream's health; the breaker
    # stays closed for everyone (issue 21.4: ~15 such calls used to open it for 15 s).
    breaker = {"min_calls": 4, "failure_ratio": 0.5, "open_s": 15, "window_s": 30}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(latency_ms=600))
        config = parse_routing(fault_config(sim.url, service=fresh_service(), breaker=breaker))
        client = await stack.enter_async_context(bus(config, None))
        short = [await client.call(good(i), headers={"X-Lgsp-Timeout-Ms": "300"}) for i in range(8)]
        assert {r.status for r in short} == {504}, [(r.status, r.code) for r in short]
        _, ready = await client.get("/readyz")
        assert ready["breakers"]["moj"]["state"] == "closed"
        assert ready["breakers"]["moj"]["failures"] == 0
        assert (await client.call(good(100))).status == 200
        # The upstream timing out inside the operation's own timeout still counts.
        slow = await stack.enter_async_context(simulator(latency_ms=600))
        own = parse_routing(
            fault_config(slow.url, service=fresh_service(), breaker=breaker, timeout_s=0.4)
        )
        other = await stack.enter_async_context(bus(own, None))
        codes = [(await other.call(good(200 + i))).code for i in range(6)]
        assert codes[-1] == "CIRCUIT_OPEN", codes
