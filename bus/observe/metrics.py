"""Prometheus metrics of one process, on an injected registry; every name starts ``lgsp_``.

One :class:`Metrics` object per process (the CLI makes it; tests make their own registry),
handed to the parts that record: the gateway (:class:`bus.observe.observer.MetricsObserver`),
the worker, the broker (the :class:`~bus.broker.base.BrokerRecorder` protocol: the broker
needs no prometheus), retry, breaker, audit and config reload (``record``-style methods).
``/metrics`` renders :meth:`Metrics.render`.

Label values are bounded (:mod:`bus.observe.labels`, fixed reason sets): no ID is a label.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from bus.config import RoutingConfig
from bus.observe.labels import (
    CODE_RE,
    MAX_VALUES_PER_LABEL,
    NAME_RE,
    NONE,
    OTHER,
    BoundedLabel,
    Children,
)

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MAX_VALUES_PER_LABEL",
    "NONE",
    "OTHER",
    "ROLES",
    "Metrics",
    "config_version",
]

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
"""Seconds; from a cache-fast 5 ms answer to the 30 s a slow national DB may take."""
AUDIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds; an audit write is a local (group) commit, expected well under 100 ms."""

ROLES: Final = ("all", "gateway", "worker")
"""What a :class:`Metrics` may be for; each role registers only its families."""
BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
"""``lgsp_circuit_breaker_state`` values."""
PUBLISH_FAILURE_REASONS: Final = frozenset({"nack", "unroutable", "error"})
DEAD_LETTER_REASONS: Final = frozenset({"rejected", "delivery_limit", "expired", "other"})
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_LINK_HELP = "Times the broker link's self-check found it dead (half-open) and tore it down"


def config_version(config: RoutingConfig) -> str:
    """A short, stable digest of a routing config (what ``lgsp_config_info`` shows)."""
    canonical = config.model_dump_json(exclude_defaults=False).encode()
    return hashlib.sha256(canonical).hexdigest()[:12]


def _package_version() -> str:
    try:
        return metadata.version("lgsp-bus")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _outcome(status: int) -> str:
    """``ok`` (2xx), ``rejected`` (4xx: the caller's request) or ``failed`` (5xx)."""
    if 200 <= status < 400:
        return "ok"
    if 400 <= status < 500:
        return "rejected"
    return "failed"


class Metrics:
    """The ``lgsp_`` metrics of this process's ``role``, registered on ``registry``.

    ``role`` is ``gateway``, ``worker`` or ``all`` (``run``: both in one process). Each role
    exposes only its own families (plus the broker, config and process ones both have): a
    worker shows no request, in-flight or audit series, a gateway no upstream, breaker or
    queue series. The other role's recording methods still work but record nowhere seen.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, role: str = "all") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown metrics role {role!r} (one of {', '.join(ROLES)})")
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        gw = r if role in ("gateway", "all") else None
        wk = r if role in ("worker", "all") else None
        self._service = BoundedLabel(NAME_RE)
        self._operation = BoundedLabel(NAME_RE)
        self._consumer = BoundedLabel(NAME_RE)
        self._upstream = BoundedLabel(NAME_RE)
        self._adapter = BoundedLabel(NAME_RE)
        self._code = BoundedLabel(CODE_RE)
        ProcessCollector(namespace="lgsp", registry=r)
        Info("lgsp_build", "Version of the running bus", registry=r).info(
            {"version": _package_version(), "python": platform.python_version(), "role": role}
        )

        # gateway
        self.requests = Counter(
            "lgsp_requests",
            "Requests answered by the gateway, by outcome code (OK or the error code)",
            ["service", "operation", "consumer", "code", "outcome"],
            registry=gw,
        )
        self.request_duration = Histogram(
            "lgsp_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer",
            ["service", "operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=gw,
        )
        self.gateway_in_flight = Gauge(
            "lgsp_gateway_requests_in_flight", "Requests the gateway is working on", registry=gw
        )

        # worker and upstreams
        self.upstream_requests = Counter(
            "lgsp_upstream_requests",
            "Calls of a national DB by the worker (retries included), by outcome code",
            ["service", "operation", "code"],
            registry=wk,
        )
        self.upstream_duration = Histogram(
            "lgsp_upstream_request_duration_seconds",
            "Time the worker spent on one request's upstream call, retries included",
            ["service", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=wk,
        )
        self.worker_in_flight = Gauge(
            "lgsp_worker_requests_in_flight",
            "Requests the worker is working on",
            ["service"],
            registry=wk,
        )
        self.retries = Counter(
            "lgsp_upstream_retries",
            "Upstream calls repeated after a transient failure",
            ["service", "operation"],
            registry=wk,
        )
        self.breaker_state = Gauge(
            "lgsp_circuit_breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
            ["upstream"],
            registry=wk,
        )
        self.breaker_transitions = Counter(
            "lgsp_circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            ["upstream", "state"],
            registry=wk,
        )

        # broker and queues
        self.broker_connected = Gauge(
            "lgsp_broker_connected",
            "1 while connected to the broker and able to publish",
            registry=r,
        )
        self.broker_reconnects = Counter(
            "lgsp_broker_reconnects",
            "Times the broker connection came back after a loss",
            registry=r,
        )
        self.broker_link_failures = Counter("lgsp_broker_link_failures", _LINK_HELP, registry=r)
        self.publish_failures = Counter(
            "lgsp_broker_publish_failures",
            "Publishes the broker did not confirm: nack (queue full), unroutable, error",
            ["reason"],
            registry=r,
        )
        self.dead_lettered_total = Counter(
            "lgsp_dead_lettered_messages",
            "Messages this process sent to a dead-letter queue, by reason",
            ["service", "reason"],
            registry=wk,
        )
        self.queue_messages = Gauge(
            "lgsp_queue_messages",
            "Messages waiting in a service's work queue (sampled)",
            ["service"],
            registry=wk,
        )
        self.dlq_messages = Gauge(
            "lgsp_dlq_messages",
            "Messages in a service's dead-letter queue (sampled)",
            ["service"],
            registry=wk,
        )

        # audit
        self.audit_records = Counter(
            "lgsp_audit_records_written", "Audit records made durable", registry=gw
        )
        self.audit_failures = Counter(
            "lgsp_audit_write_failures",
            "Audit writes that failed (and will be retried)",
            registry=gw,
        )
        self.audit_backlog_size = Gauge(
            "lgsp_audit_backlog", "Audit records waiting to be written", registry=gw
        )
        self.audit_write_duration = Histogram(
            "lgsp_audit_write_duration_seconds",
            "Time of one audit write (one group commit)",
            buckets=AUDIT_BUCKETS,
            registry=gw,
        )

        # config
        self.config_info = Gauge(
            "lgsp_config_info", "The routing config in force (its digest)", ["version"], registry=r
        )
        self.config_reloads = Counter(
            "lgsp_config_reloads", "Config reload attempts, by result", ["result"], registry=r
        )
        self.config_last_reload_ok = Gauge(
            "lgsp_config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), else 0",
            registry=r,
        )
        self.config_loaded_at = Gauge(
            "lgsp_config_loaded_timestamp_seconds",
            "When the config in force was loaded (Unix time)",
            registry=r,
        )
        self.service_info = Gauge(
            "lgsp_service_info",
            "Services of the config in force and the upstream (national DB) each calls",
            ["service", "upstream", "adapter"],
            registry=r,
        )
        self.config_last_reload_ok.set(1)
        self._config_version: str | None = None
        c = Children  # the hot families' children, cached (never removed)
        self._req, self._req_s = c(self.requests), c(self.request_duration)
        self._up, self._up_s = c(self.upstream_requests), c(self.upstream_duration)
        self._busy = c(self.worker_in_flight)

    # -- gateway ----------------------------------------------------------------------

    def request_finished(
        self,
        *,
        service: str | None,
        operation: str | None,
        consumer: str | None,
        code: str,
        status: int,
        seconds: float,
    ) -> None:
        """One answered gateway request (``code`` is ``OK`` or the error code)."""
        svc, op, outcome = self._service(service), self._operation(operation), _outcome(status)
        self._req(svc, op, self._consumer(consumer), self._code(code), outcome).inc()
        self._req_s(svc, op, outcome).observe(seconds)

    def watch_gateway_in_flight(self, read: Callable[[], float]) -> None:
        """Read the gateway's in-flight count at each scrape (it is swapped with the config)."""
        self.gateway_in_flight.set_function(read)

    # -- worker and upstreams -----------------------------------------------------------

    def upstream_call(self, service: str, operation: str, code: str, seconds: float) -> None:
        """One request's upstream call by the worker finished (``OK`` or the error code)."""
        svc, op = self._service(service), self._operation(operation)
        self._up(svc, op, self._code(code)).inc()
        self._up_s(svc, op).observe(seconds)

    def worker_started(self, service: str) -> None:
        """The worker took a request of ``service`` (pair with :meth:`worker_finished`)."""
        self._busy(self._service(service)).inc()

    def worker_finished(self, service: str) -> None:
        """The worker finished a request of ``service``."""
        self._busy(self._service(service)).dec()

    def upstream_retry(self, service: str, operation: str) -> None:
        """For the retry policy: an upstream call is about to be repeated."""
        self.retries.labels(self._service(service), self._operation(operation)).inc()

    def breaker_changed(self, upstream: str, state: str) -> None:
        """For the circuit breakers: ``upstream``'s breaker is now ``closed|half_open|open``."""
        if state not in BREAKER_STATES:
            raise ValueError(f"unknown breaker state {state!r}")
        name = self._upstream(upstream)
        self.breaker_state.labels(name).set(BREAKER_STATES[state])
        self.breaker_transitions.labels(name, state).inc()

    def breakers_in_force(self, states: Mapping[str, str], retired: Iterable[str] = ()) -> None:
        """For the worker: the state of each of its breakers, by upstream, at start-up and
        when a reload replaces them (so every upstream has a series before its first change);
        ``retired`` upstreams have no breaker any more and lose theirs."""
        for upstream in retired:
            with contextlib.suppress(KeyError):
                self.breaker_state.remove(self._upstream(upstream))
        for upstream, state in states.items():
            self.breaker_state.labels(self._upstream(upstream)).set(BREAKER_STATES[state])

    # -- broker (the BrokerRecorder protocol) -------------------------------------------

    def broker_connection(self, connected: bool) -> None:
        """The broker connection went up or down."""
        self.broker_connected.set(1 if connected else 0)

    def broker_reconnected(self) -> None:
        """The broker connection came back after a loss."""
        self.broker_reconnects.inc()
        self.broker_connected.set(1)

    def link_failed(self) -> None:
        """The broker link's self-check found it dead; a reconnect follows."""
        self.broker_link_failures.inc()

    def publish_failed(self, reason: str) -> None:
        """A publish was not confirmed: ``nack`` (queue full), ``unroutable`` or ``error``."""
        self.publish_failures.labels(reason if reason in PUBLISH_FAILURE_REASONS else OTHER).inc()

    def dead_lettered(self, service: str, reason: str) -> None:
        """A message of ``service`` went to its DLQ (``rejected``, ``delivery_limit`` …)."""
        why = reason if reason in DEAD_LETTER_REASONS else OTHER
        self.dead_lettered_total.labels(self._service(service), why).inc()

    def queue_depths(self, service: str, ready: int, dead: int) -> None:
        """Sampled depth of ``service``'s work queue and DLQ."""
        svc = self._service(service)
        self.queue_messages.labels(svc).set(ready)
        self.dlq_messages.labels(svc).set(dead)

    # -- audit --------------------------------------------------------------------------

    def audit_written(self, seconds: float, records: int = 1) -> None:
        """For the audit writer: ``records`` became durable in one write of ``seconds``."""
        self.audit_records.inc(records)
        self.audit_write_duration.observe(seconds)

    def audit_write_failed(self) -> None:
        """For the audit writer: a write failed (the records stay in the backlog)."""
        self.audit_failures.inc()

    def audit_backlog(self, size: int) -> None:
        """For the audit writer: records accepted but not yet durable."""
        self.audit_backlog_size.set(size)

    def watch_audit_backlog(self, read: Callable[[], float]) -> None:
        """Read the audit backlog at each scrape instead of being told."""
        self.audit_backlog_size.set_function(read)

    # -- config -------------------------------------------------------------------------

    def config_loaded(self, version: str, loaded_at: float) -> None:
        """The config ``version`` (see :func:`config_version`) is now in force."""
        if self._config_version is not None and self._config_version != version:
            self.config_info.remove(self._config_version)
        self._config_version = version
        self.config_info.labels(version).set(1)
        self.config_loaded_at.set(loaded_at)

    def config_applied(self, config: RoutingConfig, at: float) -> None:
        """``config`` is in force since ``at``: its version and its services' upstreams."""
        self.config_loaded(config_version(config), at)
        self.service_info.clear()
        for name, svc in config.services.items():
            self.service_info.labels(
                self._service(name), self._upstream(svc.upstream), self._adapter(svc.adapter)
            ).set(1)

    def config_reload(self, ok: bool, config: RoutingConfig | None = None, at: float = 0.0) -> None:
        """For hot reload: a reload was tried; on success ``config`` is in force since ``at``."""
        self.config_reloads.labels("success" if ok else "failure").inc()
        self.config_last_reload_ok.set(1 if ok else 0)
        if ok and config is not None:
            self.config_applied(config, at)

    # -- exposition ---------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format (for ``/metrics``)."""
        return generate_latest(self.registry)
