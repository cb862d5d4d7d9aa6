"""Delivery metrics of one-way sends and event subscriptions (registered by
:class:`~bus.observe.metrics.Metrics` as ``metrics.deliveries``).

* ``lgsp_deliveries_total{subscription,outcome}`` — attempts by outcome (``DELIVERED``,
  ``DEAD``, or the failure's code: ``HTTP_503``, ``TIMEOUT`` …); ``subscription`` is the
  stream (``sub:<consumer>.<name>`` or ``send.<service>.<operation>``);
* ``lgsp_delivery_lag_seconds{subscription}`` — publish (or accept) → delivered;
* ``lgsp_delivery_backlog{subscription}`` — messages waiting in its queues (sampled);
* ``lgsp_delivery_dead{subscription}`` — messages in its DLQs (sampled);
* ``lgsp_delivery_oldest_seconds{subscription}`` — age of the oldest message a partition
  of it holds undelivered (0 when none is held).

Label values are config names (bounded); never an event id or a subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bus.broker.base import Broker
from bus.broker.outbox import OutboxSpec
from bus.errors import BusError

__all__ = ["LAG_BUCKETS", "DeliveryGauges", "sample_outbox", "stream_of_key"]

LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 72 * 3600)
"""Seconds; from a prompt webhook to a three-day outage."""
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,40}")


def stream_of_key(key: str) -> str:
    """The metric label of an outbox partition key (``sub.c.s.3`` → ``sub:c.s``)."""
    kind, _, rest = key.partition(".")
    base = rest.rsplit(".", 1)[0]
    return f"sub:{base}" if kind == "sub" else f"send.{base}"


class DeliveryGauges:
    """The delivery metrics; implements ``bus.delivery.recorder.DeliveryMetrics``."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        """On ``registry`` (``None``: recorded, never exposed — another role's process)."""
        self.total = Counter(
            "lgsp_deliveries",
            "Delivery attempts of sends and events, by stream and outcome",
            ["subscription", "outcome"],
            registry=registry,
        )
        self.lag = Histogram(
            "lgsp_delivery_lag_seconds",
            "Publish (or accept) to delivered",
            ["subscription"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.backlog = Gauge(
            "lgsp_delivery_backlog",
            "Messages waiting in a stream's queues (sampled)",
            ["subscription"],
            registry=registry,
        )
        self.dead = Gauge(
            "lgsp_delivery_dead",
            "Messages in a stream's dead-letter queues (sampled)",
            ["subscription"],
            registry=registry,
        )
        self.oldest = Gauge(
            "lgsp_delivery_oldest_seconds",
            "Age of the oldest message a stream's partitions hold undelivered",
            ["subscription"],
            registry=registry,
        )
        self._holding: dict[str, float] = {}

    def delivery_attempted(self, stream: str, outcome: str, lag_s: float | None) -> None:
        """One attempt ended (an outcome that is not a code is counted as ``OTHER``)."""
        self.total.labels(stream, outcome if _CODE.fullmatch(outcome) else "OTHER").inc()
        if lag_s is not None:
            self.lag.labels(stream).observe(max(0.0, lag_s))

    def delivery_holding(self, key: str, since: float | None) -> None:
        """A partition holds (or let go of) a message published at ``since``."""
        if since is None:
            self._holding.pop(key, None)
        else:
            self._holding[key] = since
        self.refresh_oldest(stream_of_key(key))

    def refresh_oldest(self, stream: str) -> None:
        """Recompute the oldest held age of ``stream``."""
        times = [t for k, t in self._holding.items() if stream_of_key(k) == stream]
        self.oldest.labels(stream).set(time.time() - min(times) if times else 0.0)

    def counts(self, stream: str, ready: int, dead: int) -> None:
        """A sample of a stream's queue depths."""
        self.backlog.labels(stream).set(ready)
        self.dead.labels(stream).set(dead)


async def sample_outbox(
    broker: Broker,
    specs: Sequence[OutboxSpec],
    gauges: DeliveryGauges,
    stop: asyncio.Event,
    interval_s: float = 5.0,
) -> None:
    """Sample backlog and DLQ depth of every stream, and refresh held ages, until ``stop``."""
    while not stop.is_set():
        totals: dict[str, list[int]] = {}
        for spec in specs:
            try:
                async with asyncio.timeout(5):
                    ready, dead = await broker.outbox_counts(spec.key)
            except (BusError, TimeoutError):
                continue
            sums = totals.setdefault(stream_of_key(spec.key), [0, 0])
            sums[0] += ready
            sums[1] += dead
        for stream, (ready, dead) in totals.items():
            gauges.counts(stream, ready, dead)
            gauges.refresh_oldest(stream)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
