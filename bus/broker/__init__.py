"""Broker backends: ``memory`` (embedded, tests) and ``amqp`` (RabbitMQ via aio-pika)."""

from bus.broker.amqp.broker import AmqpBroker
from bus.broker.base import (
    NULL_RECORDER,
    Broker,
    BrokerRecorder,
    Handler,
    QueueSpec,
    amqp_address,
    queue_specs,
)
from bus.broker.memory import MemoryBroker

__all__ = [
    "NULL_RECORDER",
    "Broker",
    "BrokerRecorder",
    "Handler",
    "QueueSpec",
    "amqp_address",
    "open_broker",
    "queue_specs",
]


def open_broker(
    url: str | None, *, name: str = "lgsp-bus", recorder: BrokerRecorder = NULL_RECORDER
) -> Broker:
    """An unconnected broker for ``url`` (``None`` or ``memory://`` → in-memory; several
    AMQP URLs separated by commas → the nodes of one cluster, with failover); it reports
    connection state, publish failures and dead letters to ``recorder`` (metrics)."""
    if url is None or url.startswith("memory:"):
        return MemoryBroker(recorder=recorder)
    return AmqpBroker(url, name=name, recorder=recorder)
