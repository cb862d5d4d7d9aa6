"""The gateway's metrics of each exchange: an :class:`~bus.exchange.ExchangeObserver`."""

from __future__ import annotations

from bus.exchange import Exchange
from bus.observe.metrics import Metrics

__all__ = ["MetricsObserver"]


class MetricsObserver:
    """Counts and times every finished gateway exchange (an ``ExchangeObserver``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def exchange_finished(self, exchange: Exchange) -> None:
        """Record the exchange; never raises into the request."""
        self.metrics.request_finished(
            service=exchange.service,
            operation=exchange.operation,
            consumer=exchange.consumer,
            code=exchange.outcome,
            status=exchange.status,
            seconds=exchange.latency_s,
        )
