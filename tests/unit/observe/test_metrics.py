"""Metrics: traffic through a running bus moves the right counters and histograms.

A whole bus (gateway + worker + MOJ simulator, on the in-memory broker and on the real
RabbitMQ) serves successful, failing and rejected requests and a poison message; the
gateway's ``/metrics`` and the worker's ``/metrics`` are scraped over HTTP before and after
and parsed with ``prometheus_client.parser``. Every label set is checked against an
allow-list, and no request id, ID number, name or key may appear anywhere in the output.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from adapters.civil_status.data import sample_person, sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import build_app as build_sim
from bus.broker.memory import MemoryBroker
from bus.observe.health import WorkerStatus, build_worker_app, sample_queues
from bus.observe.metrics import (
    BREAKER_STATES,
    MAX_VALUES_PER_LABEL,
    NONE,
    OTHER,
    Metrics,
    config_version,
)
from tests.e2e.test_e2e_civil_status import lookup as civil_lookup
from tests.support.stack import BusStack, new_secret, running_bus, serve_app, stack_config

NAME = r"[a-z][a-z0-9_-]{0,62}"
CODE = r"[A-Z][A-Z0-9_]{1,63}"
BOUNDED = rf"^(?:{NAME}|{re.escape(NONE)}|{OTHER})$"
LABEL_VALUES = {
    "service": BOUNDED,
    "operation": BOUNDED,
    "consumer": BOUNDED,
    "upstream": BOUNDED,
    "code": rf"^(?:{CODE}|{OTHER})$",
    "outcome": r"^(?:ok|rejected|failed)$",
    "reason": r"^(?:nack|unroutable|error|rejected|delivery_limit|expired|other)$",
    "state": r"^(?:closed|half_open|open)$",
    "result": r"^(?:success|failure)$",
    "version": r"^[0-9a-z.+]{1,40}$",
    "python": r"^[0-9a-z.+]{1,20}$",
    "role": r"^(?:gateway|worker|all)$",
    "adapter": BOUNDED,
    "le": r"^(?:[0-9.e+-]+|\+Inf)$",
}
"""Every label the bus may put on a metric, and what its values may look like."""
ALLOWED_LABELS: dict[str, set[str]] = {
    "lgsp_build": {"version", "python", "role"},
    "lgsp_requests": {"service", "operation", "consumer", "code", "outcome"},
    "lgsp_request_duration_seconds": {"service", "operation", "outcome"},
    "lgsp_upstream_requests": {"service", "operation", "code"},
    "lgsp_upstream_request_duration_seconds": {"service", "operation"},
    "lgsp_worker_requests_in_flight": {"service"},
    "lgsp_upstream_retries": {"service", "operation"},
    "lgsp_circuit_breaker_state": {"upstream"},
    "lgsp_circuit_breaker_transitions": {"upstream", "state"},
    "lgsp_broker_publish_failures": {"reason"},
    "lgsp_dead_lettered_messages": {"service", "reason"},
    "lgsp_queue_messages": {"service"},
    "lgsp_dlq_messages": {"service"},
    "lgsp_config_info": {"version"},
    "lgsp_config_reloads": {"result"},
    "lgsp_service_info": {"service", "upstream", "adapter"},
}
"""Label names per metric family; a family not listed here may have no labels at all."""


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[str, list[Sample]]:
    """GET ``url`` + ``metrics`` and parse it."""
    async with session.get(url + "metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return text, parse(text)


def check_labels(samples: Iterable[Sample]) -> None:
    """Every label of every ``lgsp_`` sample is allowed and its value well-formed."""
    families = sorted(ALLOWED_LABELS, key=len, reverse=True)
    for s in samples:
        assert s.name.startswith("lgsp_"), s.name
        family = next((f for f in families if s.name.startswith(f)), None)
        allowed = set(ALLOWED_LABELS.get(family or "", set())) | {"le"}
        assert set(s.labels) <= allowed, f"{s.name} has labels {sorted(s.labels)}"
        for label, val in s.labels.items():
            assert re.match(LABEL_VALUES[label], val), f"{s.name}{{{label}={val!r}}}"


@dataclass
class MeteredBus:
    """A running bus with metrics on, and where to scrape them."""

    stack: BusStack
    service: str
    worker_url: str
    gateway: Metrics
    worker: Metrics
    amqp_url: str | None
    secrets: tuple[str, ...]

    async def scrape_both(self) -> tuple[str, list[Sample], list[Sample]]:
        """The two expositions joined, and the samples of each."""
        gw_text, gw = await scrape(self.stack.session, self.stack.url)
        wk_text, wk = await scrape(self.stack.session, self.worker_url)
        return gw_text + wk_text, gw, wk

    async def lookup(self, body: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        """POST a lookup of the test's own service."""
        return await self.stack.post(f"/v1/{self.service}/lookup", body, **kw)


@pytest.fixture
async def bus(broker_url: str | None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MeteredBus]:
    token, key, outsider = new_secret(), new_secret(), new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", outsider)
    # A service name of its own: the RabbitMQ vhost is shared by the whole test run.
    service = f"cs-{uuid.uuid4().hex[:8]}"
    async with serve_app(build_sim(token=token, hang_s=30)) as sim_url:
        config = stack_config(
            civil_url=sim_url,
            token_env="T_MOJ_TOKEN",
            key_env="T_PORTAL_KEY",
            timeout_s=3.0,
            extra_services={
                service: {
                    "adapter": "civil_status",
                    "upstream": "moj",
                    "operations": {"lookup": {"timeout_s": 3.0}},
                }
            },
            allow={service: ["lookup"]},
        )
        # One process on the in-memory broker (like `lgsp-bus run`), two on RabbitMQ.
        if broker_url is None:
            gateway = worker = Metrics(CollectorRegistry(), role="all")
        else:
            gateway = Metrics(CollectorRegistry(), role="gateway")
            worker = Metrics(CollectorRegistry(), role="worker")
        async with running_bus(
            config, broker_url, key, gateway_metrics=gateway, worker_metrics=worker
        ) as stack:
            status = WorkerStatus(config, stack.worker_broker, [service])
            async with serve_app(build_worker_app(status, worker)) as worker_url:
                yield MeteredBus(
                    stack, service, worker_url, gateway, worker, broker_url, (token, key, outsider)
                )


def lookup_body(**query: Any) -> dict[str, Any]:
    """A complete civil-status lookup (caller, officer and purpose included)."""
    return civil_lookup("BIRTH", **query)


async def publish_poison(bus: MeteredBus) -> None:
    """A message no worker can decode, straight onto the service's queue."""
    if bus.amqp_url is None:
        broker = bus.stack.worker_broker
        assert isinstance(broker, MemoryBroker)
        broker.publish_raw(bus.service, b"\xff not json", {}, None)
        return
    connection = await aio_pika.connect(bus.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("lgsp.requests")
        await exchange.publish(aio_pika.Message(b"\xff not json"), f"{bus.service}.lookup")


async def wait_for(check: Any, bound_s: float) -> None:
    """Poll the async ``check`` until true, at most ``bound_s``."""
    end = time.monotonic() + bound_s
    while not await check():
        assert time.monotonic() < end, f"not within {bound_s}s"
        await asyncio.sleep(0.05)


async def test_traffic_moves_counters_and_histograms(bus: MeteredBus) -> None:
    svc = {"service": bus.service, "operation": "lookup"}
    _, gw0, wk0 = await bus.scrape_both()

    ok_bodies = [
        lookup_body(by_registration=sample_registration(0, RecordType.BIRTH, i)) for i in range(3)
    ]
    person = sample_person(0, RecordType.BIRTH, 4)
    ok_bodies.append(lookup_body(by_person=person))
    for body in ok_bodies:
        status, reply = await bus.lookup(body)
        assert status == 200, reply
    failing = lookup_body(by_registration={"authority_code": "00001", "number": "FAIL503"})
    status, reply = await bus.lookup(failing)
    assert (status, reply["error"]["code"]) == (503, "UPSTREAM_UNAVAILABLE")
    invalid = lookup_body(by_registration={"authority_code": "00001", "number": "1", "x": "y"})
    status, reply = await bus.lookup(invalid)
    assert (status, reply["error"]["code"]) == (400, "UNKNOWN_FIELD")
    status, reply = await bus.lookup(lookup_body(), key="not-a-key")
    assert (status, reply["error"]["code"]) == (401, "UNAUTHENTICATED")
    status, reply = await bus.lookup(lookup_body(), key=bus.secrets[2])
    assert (status, reply["error"]["code"]) == (403, "FORBIDDEN_OPERATION")

    text, gw, wk = await bus.scrape_both()

    def delta(before: list[Sample], after: list[Sample], name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Gateway: one count per answer, by consumer and code; rejected calls are counted too.
    assert delta(gw0, gw, "lgsp_requests_total", **svc, consumer="portal", code="OK") == 4
    assert (
        delta(gw0, gw, "lgsp_requests_total", **svc, code="UPSTREAM_UNAVAILABLE", outcome="failed")
        == 1
    )
    assert delta(gw0, gw, "lgsp_requests_total", **svc, code="UNKNOWN_FIELD", outcome="rejected")
    assert (
        delta(gw0, gw, "lgsp_requests_total", service=NONE, consumer=NONE, code="UNAUTHENTICATED")
        == 1
    )
    assert delta(gw0, gw, "lgsp_requests_total", **svc, consumer="outsider") == 1
    hist = "lgsp_request_duration_seconds"
    assert delta(gw0, gw, f"{hist}_count", **svc, outcome="ok") == 4
    assert delta(gw0, gw, f"{hist}_count", **svc, outcome="failed") == 1
    assert delta(gw0, gw, f"{hist}_sum", **svc, outcome="ok") > 0
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in gw
        if s.name == f"{hist}_bucket" and s.labels["outcome"] == "ok"
        if s.labels["service"] == bus.service
    )
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), "histogram buckets are cumulative"
    assert buckets[-1] == (float("inf"), value(gw, f"{hist}_count", **svc, outcome="ok"))
    assert buckets[0][0] == 0.005
    assert buckets[-2][0] == 30.0
    assert value(gw, "lgsp_gateway_requests_in_flight") == 0
    assert value(gw, "lgsp_broker_connected") == 1

    # Worker: the upstream was called for the 4 good requests and the failing one only.
    assert delta(wk0, wk, "lgsp_upstream_requests_total", **svc, code="OK") == 4
    up_fail = delta(wk0, wk, "lgsp_upstream_requests_total", **svc, code="UPSTREAM_UNAVAILABLE")
    assert up_fail == 1
    assert delta(wk0, wk, "lgsp_upstream_request_duration_seconds_count", **svc) == 5
    # 503 is transient: the failing request was retried (within its deadline) first.
    assert delta(wk0, wk, "lgsp_upstream_retries_total", **svc) >= 1
    assert value(wk, "lgsp_worker_requests_in_flight", service=bus.service) == 0
    assert value(wk, "lgsp_broker_connected") == 1
    assert value(gw, "lgsp_config_info") == 1
    role = "all" if bus.amqp_url is None else "worker"
    assert value(wk, "lgsp_build_info", role=role) == 1

    check_labels(gw + wk)
    # Nothing that identifies a request or a person, and no secret, anywhere in the output.
    forbidden = [b["request_id"] for b in [*ok_bodies, failing, invalid]]
    forbidden += [person["id_number"], person["full_name"], *bus.secrets]
    forbidden += [ok_bodies[0]["caller"]["officer_id"], ok_bodies[0]["purpose"]["dossier_id"]]
    for needle in forbidden:
        assert needle not in text


async def test_poison_message_is_counted_and_the_dlq_depth_sampled(bus: MeteredBus) -> None:
    dead = {"service": bus.service, "reason": "rejected"}
    _, _, wk0 = await bus.scrape_both()
    await publish_poison(bus)

    async def counted() -> bool:
        _, _, wk = await bus.scrape_both()
        return value(wk, "lgsp_dead_lettered_messages_total", **dead) > value(
            wk0, "lgsp_dead_lettered_messages_total", **dead
        )

    await wait_for(counted, 10)
    stop = asyncio.Event()
    sampler = asyncio.create_task(
        sample_queues(bus.stack.worker_broker, [bus.service], bus.worker, stop, interval_s=0.1)
    )
    try:

        async def sampled() -> bool:
            _, _, wk = await bus.scrape_both()
            return value(wk, "lgsp_dlq_messages", service=bus.service) == 1

        await wait_for(sampled, 10)
        _, _, wk = await bus.scrape_both()
        assert value(wk, "lgsp_queue_messages", service=bus.service) == 0
    finally:
        stop.set()
        await asyncio.wait_for(sampler, 10)


async def test_worker_health_endpoints(bus: MeteredBus) -> None:
    async with bus.stack.session.get(bus.worker_url + "healthz") as r:
        assert r.status == 200
    async with bus.stack.session.get(bus.worker_url + "readyz") as r:
        detail = await r.json()
        assert r.status == 200, detail
    assert detail["checks"] == {"broker": True, "config": True, "consuming": True}
    assert detail["role"] == "worker"


# -- the Metrics object itself (no bus) ------------------------------------------------


def render(metrics: Metrics) -> list[Sample]:
    return parse(metrics.render().decode())


def test_label_values_are_bounded() -> None:
    m = Metrics(CollectorRegistry())
    # An ID number or a name in a label position never reaches the output.
    m.request_finished(
        service="079123456789",
        operation="Nguyễn Văn A",
        consumer=None,
        code="not a code",
        status=400,
        seconds=0.01,
    )
    samples = render(m)
    assert value(samples, "lgsp_requests_total", service=OTHER, operation=OTHER) == 1
    assert value(samples, "lgsp_requests_total", consumer=NONE, code=OTHER) == 1
    check_labels(samples)
    text = m.render().decode()
    assert "079123456789" not in text
    assert "Nguy" not in text


def test_label_cardinality_is_capped() -> None:
    m = Metrics(CollectorRegistry())
    for i in range(MAX_VALUES_PER_LABEL + 50):
        m.upstream_call(f"svc-{i}", "lookup", "OK", 0.01)
    services = {s.labels["service"] for s in render(m) if s.name == "lgsp_upstream_requests_total"}
    assert len(services) == MAX_VALUES_PER_LABEL + 1
    assert OTHER in services


def test_recording_methods_for_retries_breakers_audit_and_config() -> None:
    m = Metrics(CollectorRegistry(), role="all")
    m.upstream_retry("population", "lookup")
    m.upstream_retry("population", "lookup")
    for state in ("open", "half_open", "closed", "open"):
        m.breaker_changed("c06", state)
    with pytest.raises(ValueError, match="breaker state"):
        m.breaker_changed("c06", "broken")
    m.audit_written(0.004, records=3)
    m.audit_write_failed()
    m.audit_backlog(7)
    m.config_loaded("aaaaaaaaaaaa", 1000.0)
    m.config_reload(False)
    config = stack_config(civil_url="http://127.0.0.1:1/", token_env="T", key_env="K")
    m.config_reload(True, config, 2000.0)
    m.publish_failed("nack")
    m.publish_failed("something-else")
    m.broker_connection(False)
    m.broker_reconnected()
    s = render(m)
    assert value(s, "lgsp_upstream_retries_total", service="population") == 2
    assert value(s, "lgsp_circuit_breaker_state", upstream="c06") == BREAKER_STATES["open"]
    assert value(s, "lgsp_circuit_breaker_transitions_total", upstream="c06", state="open") == 2
    assert value(s, "lgsp_audit_records_written_total") == 3
    assert value(s, "lgsp_audit_write_duration_seconds_count") == 1
    assert value(s, "lgsp_audit_write_failures_total") == 1
    assert value(s, "lgsp_audit_backlog") == 7
    assert value(s, "lgsp_config_reloads_total", result="failure") == 1
    assert value(s, "lgsp_config_reloads_total", result="success") == 1
    assert value(s, "lgsp_config_last_reload_successful") == 1
    # Only the config in force is shown.
    assert [x.labels["version"] for x in s if x.name == "lgsp_config_info"] == [
        config_version(config)
    ]
    info = [x.labels for x in s if x.name == "lgsp_service_info"]
    assert info == [{"service": "civil-status", "upstream": "moj", "adapter": "civil_status"}]
    assert value(s, "lgsp_config_loaded_timestamp_seconds") == 2000.0
    assert value(s, "lgsp_broker_publish_failures_total", reason="nack") == 1
    assert value(s, "lgsp_broker_publish_failures_total", reason=OTHER) == 1
    assert value(s, "lgsp_broker_reconnects_total") == 1
    assert value(s, "lgsp_broker_connected") == 1
    check_labels(s)


def test_every_name_is_prefixed_and_follows_conventions() -> None:
    families = list(text_string_to_metric_families(Metrics(CollectorRegistry()).render().decode()))
    assert families
    for family in families:
        assert family.name.startswith("lgsp_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client adds it to the samples
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert family.documentation, family.name


GATEWAY_FAMILIES = {
    "lgsp_requests",
    "lgsp_request_duration_seconds",
    "lgsp_gateway_requests_in_flight",
    "lgsp_audit_records_written",
    "lgsp_audit_write_failures",
    "lgsp_audit_backlog",
    "lgsp_audit_write_duration_seconds",
}
WORKER_FAMILIES = {
    "lgsp_upstream_requests",
    "lgsp_upstream_request_duration_seconds",
    "lgsp_worker_requests_in_flight",
    "lgsp_upstream_retries",
    "lgsp_circuit_breaker_state",
    "lgsp_circuit_breaker_transitions",
    "lgsp_dead_lettered_messages",
    "lgsp_queue_messages",
    "lgsp_dlq_messages",
}


def families_of(role: str) -> set[str]:
    m = Metrics(CollectorRegistry(), role=role)
    # Record into every family, so one with samples could not hide as an empty one.
    m.request_finished(service="s", operation="o", consumer="c", code="OK", status=200, seconds=0.1)
    m.upstream_call("s", "o", "OK", 0.1)
    m.worker_started("s")
    m.upstream_retry("s", "o")
    m.breaker_changed("u", "open")
    m.dead_lettered("s", "rejected")
    m.queue_depths("s", 1, 1)
    m.audit_written(0.01)
    m.audit_write_failed()
    m.audit_backlog(1)
    return {f.name for f in text_string_to_metric_families(m.render().decode())}


def test_each_role_exposes_only_its_own_families() -> None:
    everything = families_of("all")
    gateway, worker = families_of("gateway"), families_of("worker")
    assert everything >= GATEWAY_FAMILIES | WORKER_FAMILIES
    assert not gateway & WORKER_FAMILIES
    assert not worker & GATEWAY_FAMILIES
    assert gateway | worker == everything
    shared = gateway & worker
    assert {"lgsp_broker_connected", "lgsp_config_info", "lgsp_build_info"} <= shared
    with pytest.raises(ValueError, match="role"):
        Metrics(CollectorRegistry(), role="sim")


def test_breakers_in_force_are_shown_from_the_start_and_retired_ones_dropped() -> None:
    m = Metrics(CollectorRegistry(), role="worker")
    m.breakers_in_force({"moj": "closed", "c06": "open"})
    s = render(m)
    assert value(s, "lgsp_circuit_breaker_state", upstream="moj") == 0
    assert value(s, "lgsp_circuit_breaker_state", upstream="c06") == BREAKER_STATES["open"]
    assert not [x for x in s if x.name == "lgsp_circuit_breaker_transitions_total"]
    m.breakers_in_force({"moj": "closed", "new": "closed"}, retired=["c06", "never-seen"])
    shown = {x.labels["upstream"] for x in render(m) if x.name == "lgsp_circuit_breaker_state"}
    assert shown == {"moj", "new"}
