"""Broker backends: ``memory`` (embedded, tests) and ``amqp`` (RabbitMQ via aio-pika)."""

from bus.broker.base import Broker, Handler, QueueSpec, queue_specs

__all__ = ["Broker", "Handler", "QueueSpec", "open_broker", "queue_specs"]


def open_broker(url: str | None, *, name: str = "lgsp-bus") -> Broker:
    """An unconnected broker for ``url`` (``None`` or ``memory://`` → in-memory)."""
    if url is None or url.startswith("memory:"):
        from bus.broker.memory import MemoryBroker

        return MemoryBroker()
    from bus.broker.amqp import AmqpBroker

    return AmqpBroker(url, name=name)
