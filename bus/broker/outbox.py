"""One-way traffic on the broker: the topology of sends and event subscriptions, and what a
delivery handler is handed and answers.

Topology (declared by gateways and workers alike, from ``routing.yaml``):

* one-way sends: direct exchange ``lgsp.sends``; per ``mode: send`` operation the queues
  ``lgsp.send.<service>.<operation>.<p>``, routing key ``send.<service>.<operation>.<p>``;
  an operation with ``order_by`` has ``delivery.partitions`` of them (the partition is a
  hash of the key's value) consumed one message at a time by a single active consumer,
  one without has a single queue ``….0`` consumed ``delivery.prefetch`` at a time;
* events: topic exchange ``lgsp.events``, routing key ``<event_type>.<p>`` (``p`` from the
  event type's ``order_by`` value, else its ``event_id``); per subscription the queues
  ``lgsp.sub.<consumer>.<subscription>.<p>``, each bound to ``<type>.<p>`` of every type
  it subscribes to, consumed one at a time by a single active consumer (so order per key
  holds for every subscriber and a dead subscriber only fills its own queues).

Every queue is a durable quorum queue without ``x-delivery-limit`` (the delivery policy
counts attempts, in the store) with its DLQ ``lgsp.dlq.<key>`` on ``lgsp.dlx``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bus.config import RoutingConfig

__all__ = [
    "ACCEPTED_AT",
    "ACCEPT_GRACE_S",
    "ACK",
    "EVENTS_EXCHANGE",
    "EVENT_TYPE",
    "PUBLISHED_AT",
    "PUBLISHER",
    "PUBLISH_TIMEOUT_S",
    "REPLAYED_AT",
    "REQUEUE",
    "SENDS_EXCHANGE",
    "Delivery",
    "DeliveryHandler",
    "Disposition",
    "OutboxSpec",
    "outbox_queue",
    "outbox_specs",
    "partition",
    "send_key",
    "send_stream",
    "subscription_key",
    "subscription_stream",
]

SENDS_EXCHANGE = "lgsp.sends"
EVENTS_EXCHANGE = "lgsp.events"
OUTBOX_MAX_LENGTH = 1_000_000
"""Per outbox queue: a subscriber down for days must not lose events to a length limit;
RabbitMQ's memory/disk alarms are the real bound (named in the README)."""


PUBLISH_TIMEOUT_S = 10.0
"""Bound on one confirmed publish (then ``BROKER_UNAVAILABLE``)."""
ACCEPT_GRACE_S = PUBLISH_TIMEOUT_S + 2.0
"""A send's record still ``ACCEPTING`` this long after it was made belongs to a gateway
that died between publish and answer: its publish is over either way. A worker holding
the message then delivers it; a repeat of the request publishes it again."""
ACCEPTED_AT = "x-lgsp-accepted-at-ms"
"""Header: when the gateway accepted a send (its ``deliver_within`` clock starts)."""
PUBLISHED_AT = "x-lgsp-published-at-ms"
"""Header: when the gateway accepted an event."""
EVENT_TYPE = "x-lgsp-event-type"
PUBLISHER = "x-lgsp-publisher"
REPLAYED_AT = "x-lgsp-replayed-at-ms"
"""Header set by ``dlq replay``: the ``deliver_within`` clock starts again here."""


def send_stream(consumer: str) -> str:
    """The store stream of a consumer's sends."""
    return f"send:{consumer}"


def subscription_stream(consumer: str, subscription: str) -> str:
    """The store stream (and metric label) of a subscription."""
    return f"sub:{consumer}.{subscription}"


def partition(value: object, partitions: int) -> int:
    """A stable partition of ``value`` in ``0 .. partitions-1`` (same on every process)."""
    if partitions <= 1:
        return 0
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def send_key(service: str, operation: str, p: int) -> str:
    """The routing key (and outbox key) of a send operation's partition."""
    return f"send.{service}.{operation}.{p}"


def subscription_key(consumer: str, subscription: str, p: int) -> str:
    """The outbox key of one partition of a subscription."""
    return f"sub.{consumer}.{subscription}.{p}"


def outbox_queue(key: str) -> str:
    """The queue of an outbox key."""
    return f"lgsp.{key}"


@dataclass(frozen=True, slots=True)
class OutboxSpec:
    """One outbox queue: its key, what binds to it, how it is consumed."""

    key: str
    bindings: tuple[tuple[str, str], ...]
    """(exchange, routing key) pairs bound to the queue."""
    ordered: bool
    """Consumed by a single active consumer, one message at a time."""
    max_length: int = OUTBOX_MAX_LENGTH
    dlq_ttl_s: int = 14 * 24 * 3600


def outbox_specs(config: RoutingConfig) -> list[OutboxSpec]:
    """Every outbox queue of the config (see the module doc)."""
    n = config.delivery.partitions
    ttl = config.broker.dlq_ttl_s
    specs: list[OutboxSpec] = []
    for sname, svc in config.services.items():
        for oname, op in svc.operations.items():
            if op.mode != "send":
                continue
            for p in range(n if op.order_by else 1):
                key = send_key(sname, oname, p)
                ordered = op.order_by is not None
                specs.append(OutboxSpec(key, ((SENDS_EXCHANGE, key),), ordered, dlq_ttl_s=ttl))
    for cname, consumer in config.consumers.items():
        for sub_name, sub in consumer.subscriptions.items():
            # A pull subscription appends to one log: one partition, so one writer.
            for p in range(n if sub.kind == "webhook" else 1):
                bindings = tuple(
                    (EVENTS_EXCHANGE, f"{event}.{q}")
                    for event in sub.events
                    for q in (range(n) if sub.kind == "pull" else (p,))
                )
                key = subscription_key(cname, sub_name, p)
                specs.append(OutboxSpec(key, bindings, True, dlq_ttl_s=ttl))
    return specs


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a delivery handler."""

    key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str = ""
    redelivered: bool = False
    """Handed out before (a worker died or handed it back while holding it)."""


@dataclass(frozen=True, slots=True)
class Disposition:
    """What to do with a delivery: acknowledge it (done or dropped), hand it back to its
    queue (in place: the next consumer continues with it), or dead-letter it with why."""

    action: Literal["ack", "requeue", "dead"]
    reason: str = ""
    error: str = ""


ACK = Disposition("ack")
REQUEUE = Disposition("requeue")
DeliveryHandler = Callable[[Delivery], Awaitable[Disposition]]
