"""The Broker protocol: request/reply to service queues, and serving a queue with a handler.

Contract (checked by ``tests/test_broker_contract.py`` against every implementation):

- ``request`` publishes durably to ``<service>.<operation>`` and waits for the reply until the
  request's deadline: :class:`~bus.errors.DeadlineExceeded` after it; no queue for the service
  → :class:`~bus.errors.BrokerUnavailable` (code ``NO_ROUTE``) at once; queue full →
  :class:`~bus.errors.Overloaded` at once; broker unreachable → ``BrokerUnavailable``.
- ``publish``/``consume``/``declare_outbox``/``outbox_counts`` carry one-way sends and
  events (:mod:`bus.broker.outbox`): confirmed before ``publish`` returns; a handler's
  disposition acks, requeues in place (order kept) or dead-letters with a reason.
- ``serve`` hands each request to the handler with at most ``prefetch`` in flight, publishes
  the reply, then acknowledges. A message whose deadline has passed is dropped unhandled. A
  message that cannot be decoded, or whose handler raised ``delivery_limit`` times, is
  dead-lettered to ``lgsp.dlq.<service>``. When ``stop`` is set it stops taking messages,
  finishes those in flight (unfinished ones return to the queue) and returns.

Topology: queues are declared with immutable arguments only (:func:`queue_arguments`); the
settings an operator changes (``broker.delivery_limit``, ``max_queue_length``,
``dlq_ttl_s``) are RabbitMQ policies (:func:`queue_policies`), which a running queue takes
on without being re-created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from bus.broker.outbox import DeliveryHandler, OutboxSpec
from bus.config import RoutingConfig, resolve_secret
from bus.envelope import Reply, Request
from bus.sealing import Keyring

__all__ = [
    "NULL_RECORDER",
    "Broker",
    "BrokerRecorder",
    "Handler",
    "QueuePolicy",
    "QueueSpec",
    "TopologyConflict",
    "amqp_address",
    "dlq_arguments",
    "queue_arguments",
    "queue_policies",
    "queue_specs",
]

Handler = Callable[[Request], Awaitable[Reply]]

REQUESTS_EXCHANGE = "lgsp.requests"
DLX = "lgsp.dlx"


def queue_name(service: str) -> str:
    """The service's work queue."""
    return f"lgsp.svc.{service}"


def dlq_name(service: str) -> str:
    """The service's dead-letter queue."""
    return f"lgsp.dlq.{service}"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """Topology of one service's queue."""

    service: str
    delivery_limit: int = 5
    max_length: int = 10_000
    dlq_ttl_s: int = 14 * 24 * 3600
    quorum_group_size: int | None = None
    """Replicas of the quorum queues (``x-quorum-initial-group-size``); None: RabbitMQ's."""


def _replicas(spec: QueueSpec) -> dict[str, Any]:
    if spec.quorum_group_size is None:
        return {}
    return {"x-quorum-initial-group-size": spec.quorum_group_size}


def queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    """Arguments declared on the service's work queue: only what never changes — the queue
    type and where dead letters go (the fixed ``lgsp.dlx``, routed by the service's name;
    RabbitMQ accepts a dead-letter routing key argument only beside its exchange). Every
    setting of ``broker.*`` lives in the policy :data:`WORK_POLICY` (:func:`queue_policies`),
    so changing one never makes a declaration conflict with the queue that exists."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": spec.service,
        **_replicas(spec),
    }


def dlq_arguments(spec: QueueSpec) -> dict[str, Any]:
    """Arguments declared on the service's dead-letter queue (its TTL is in a policy)."""
    return {"x-queue-type": "quorum", **_replicas(spec)}


WORK_POLICY = "lgsp-work-queues"
DLQ_POLICY = "lgsp-dead-letter-queues"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """A RabbitMQ policy over one family of the bus's queues (vhost-wide)."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "queues"


def queue_policies(spec: QueueSpec) -> list[QueuePolicy]:
    """The policies carrying ``broker.*`` (the same for every service of a config): the
    work queues' delivery limit, length bound, overflow and dead-lettering, the DLQs' TTL.
    ``deploy/rabbitmq/definitions.json`` carries the same, by the same names."""
    return [
        QueuePolicy(
            WORK_POLICY,
            r"^lgsp\.svc\.",
            {
                "dead-letter-exchange": DLX,
                "delivery-limit": spec.delivery_limit,
                "max-length": spec.max_length,
                "overflow": "reject-publish",
            },
        ),
        QueuePolicy(DLQ_POLICY, r"^lgsp\.dlq\.", {"message-ttl": spec.dlq_ttl_s * 1000}),
    ]


class TopologyConflict(Exception):
    """A queue exists with arguments the bus no longer declares (a one-line message that
    says what differs and how to migrate)."""


def queue_specs(config: RoutingConfig) -> list[QueueSpec]:
    """One spec per configured service."""
    b = config.broker
    return [
        QueueSpec(name, b.delivery_limit, b.max_queue_length, b.dlq_ttl_s, b.quorum_group_size)
        for name in config.services
    ]


def amqp_address(config: RoutingConfig, environ: Mapping[str, str]) -> str | None:
    """The broker address the processes use: ``LGSP_AMQP_URL`` when set (one URL, or several
    separated by commas), else ``broker.urls`` (each ``env:``/``file:`` reference resolved,
    ``broker.password`` put into those that name a user), else None (in-memory broker)."""
    given = environ.get("LGSP_AMQP_URL")
    if given:
        return given
    settings = config.broker
    urls: list[str] = []
    for entry in settings.urls:
        if entry.startswith(("env:", "file:")):
            urls.append(resolve_secret(entry))
            continue
        parts = urlsplit(entry)
        if settings.password is not None and parts.username is not None:
            secret = quote(resolve_secret(settings.password), safe="")
            host = parts.netloc.rpartition("@")[2]
            entry = urlunsplit(parts._replace(netloc=f"{parts.username}:{secret}@{host}"))
        urls.append(entry)
    return ",".join(urls) or None


class BrokerRecorder(Protocol):
    """What a broker reports for metrics (``bus.metrics.Metrics`` implements it), so the
    broker itself needs no metrics library."""

    def broker_connection(self, connected: bool) -> None:
        """The connection went up (``True``) or down."""
        ...

    def broker_reconnected(self) -> None:
        """The connection came back after a loss."""
        ...

    def link_failed(self) -> None:
        """The link's self-check found it dead (half-open); a reconnect follows."""
        ...

    def publish_failed(self, reason: str) -> None:
        """A publish was not confirmed: ``nack`` (queue full), ``unroutable`` or ``error``."""
        ...

    def dead_lettered(self, service: str, reason: str) -> None:
        """This process sent a message of ``service`` to its DLQ (``rejected`` …)."""
        ...


class _NullRecorder:
    """Records nothing (a broker without metrics)."""

    def broker_connection(self, connected: bool) -> None:
        """Ignored."""

    def broker_reconnected(self) -> None:
        """Ignored."""

    def link_failed(self) -> None:
        """Ignored."""

    def publish_failed(self, reason: str) -> None:
        """Ignored."""

    def dead_lettered(self, service: str, reason: str) -> None:
        """Ignored."""


NULL_RECORDER: BrokerRecorder = _NullRecorder()


class Broker(Protocol):
    """Carries requests to workers and replies back; dead letters the bus copies to a DLQ
    are sealed under ``keyring`` (``None``: kept as they are)."""

    keyring: Keyring | None

    async def connect(self) -> None:
        """Open connections (idempotent)."""
        ...

    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        """Declare exchanges, service queues and DLQs (idempotent)."""
        ...

    async def request(self, req: Request) -> Reply:
        """Publish ``req`` and wait for its reply until ``req.deadline``."""
        ...

    async def serve(
        self, service: str, handler: Handler, *, prefetch: int, stop: asyncio.Event
    ) -> None:
        """Consume the service's queue until ``stop`` is set, then drain and return."""
        ...

    @property
    def ready(self) -> bool:
        """True while connected and able to publish."""
        ...

    async def message_counts(self, service: str) -> tuple[int, int]:
        """Messages waiting in the service's work queue and in its DLQ (for metrics)."""
        ...

    # One-way traffic (bus/broker/outbox.py): sends and event subscriptions.

    async def declare_outbox(self, specs: Sequence[OutboxSpec]) -> None:
        """Declare ``lgsp.sends``, ``lgsp.events``, each outbox queue, its bindings and its
        DLQ (idempotent)."""
        ...

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        message_id: str,
        mandatory: bool,
    ) -> None:
        """Publish persistently and return once the broker has it (publisher confirm; the
        memory broker: enqueued). ``exchange`` ``""`` is the default exchange (routing key =
        queue). Unroutable and ``mandatory`` → ``BrokerUnavailable`` ``NO_ROUTE``; a queue
        full → ``Overloaded``; anything else unconfirmed → ``BrokerUnavailable`` (the
        message may or may not have been queued)."""
        ...

    async def consume(
        self, key: str, handler: DeliveryHandler, *, prefetch: int, stop: asyncio.Event
    ) -> None:
        """Hand each message of outbox ``key`` to ``handler`` (at most ``prefetch`` at once;
        an ordered queue has one active consumer across processes) and do what it answers:
        ack, requeue in place, or dead-letter to ``lgsp.dlq.<key>`` with the reason. A
        handler that raises requeues. Until ``stop``; in-flight ones then finish or are
        cancelled (requeued)."""
        ...

    async def outbox_counts(self, key: str) -> tuple[int, int]:
        """Messages waiting in outbox ``key`` and in its DLQ."""
        ...

    async def aclose(self) -> None:
        """Close everything; pending requests fail with ``BrokerUnavailable``."""
        ...
