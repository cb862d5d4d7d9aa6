"""The last hour of traffic per service, from the bus's own counters, as small bar charts.

Every :data:`SAMPLE_S` seconds the console reads ``lgsp_requests`` (the gateway's answers
by service and outcome) from this process's :class:`~bus.metrics.Metrics` and keeps the
totals in a ring of :data:`SLOTS` samples per service (one hour at the default; a few KB
of memory). A chart (inline SVG, drawn from these numbers in the template) has a bar per interval:
its height the requests, its red part the server errors (5xx); the last bar is the
interval under way (read live). Counts are this process's: behind a load
balancer each gateway's console shows its own share (Prometheus/Grafana has the sum).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from bus.observe.metrics import Metrics

__all__ = ["SAMPLE_S", "SLOTS", "Bar", "Chart", "TrafficHistory", "chart"]

SAMPLE_S = 60.0
SLOTS = 60
"""Samples kept per service: SLOTS × SAMPLE_S = the hour the overview shows."""


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    total: float
    failed: float


def read_counts(metrics: Metrics) -> dict[str, tuple[float, float]]:
    """Service → (answered, answered with 5xx) since the process started."""
    out: dict[str, tuple[float, float]] = {}
    for family in metrics.requests.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            service = sample.labels.get("service", "-")
            total, failed = out.get(service, (0.0, 0.0))
            bad = sample.value if sample.labels.get("outcome") == "failed" else 0.0
            out[service] = (total + sample.value, failed + bad)
    return out


class TrafficHistory:
    """The ring of samples; :meth:`run` fills it while the console is served."""

    def __init__(self, metrics: Callable[[], Metrics | None], *, slots: int = SLOTS) -> None:
        self._metrics = metrics
        self._slots = slots
        self._rings: dict[str, deque[_Sample]] = {}

    def sample(self, now: float | None = None) -> None:
        """Take one sample of every service's counters."""
        metrics = self._metrics()
        if metrics is None:
            return
        now = time.time() if now is None else now
        for service, (total, failed) in read_counts(metrics).items():
            self._ring(service, now).append(_Sample(now, total, failed))

    def _ring(self, service: str, now: float) -> deque[_Sample]:
        ring = self._rings.get(service)
        if ring is None:
            # Counters start at zero with the process: that is the first sample's baseline.
            ring = self._rings[service] = deque([_Sample(now, 0.0, 0.0)], maxlen=self._slots + 1)
        return ring

    def series(self, service: str) -> tuple[list[float], list[float]]:
        """Requests and 5xx per interval, oldest first, the interval under way last."""
        ring = list(self._rings.get(service, [_Sample(0.0, 0.0, 0.0)]))
        metrics = self._metrics()
        if metrics is not None:
            total, failed = read_counts(metrics).get(service, (0.0, 0.0))
            ring.append(_Sample(time.time(), total, failed))
        pairs = list(itertools.pairwise(ring))
        return [b.total - a.total for a, b in pairs], [b.failed - a.failed for a, b in pairs]

    @contextlib.asynccontextmanager
    async def running(self, interval_s: float = SAMPLE_S) -> AsyncIterator[None]:
        """Sample every ``interval_s`` until the block ends."""

        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(frozen=True, slots=True)
class Bar:
    """One interval's bar: requests (full height) and the 5xx part of it, in pixels."""

    x: float
    width: float
    y: float
    height: float
    error_y: float
    error_height: float


@dataclass(frozen=True)
class Chart:
    """One small bar chart: a bar per interval (numbers only) and what they add up to."""

    bars: tuple[Bar, ...]
    total: int
    failed: int
    peak: int
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no drawing)."""
        return {"requests": self.total, "errors_5xx": self.failed, "peak_per_interval": self.peak}


def chart(
    requests: list[float], errors: list[float], *, width: int = 240, height: int = 48
) -> Chart:
    """A chart of one service's series, right-aligned (the newest interval at the right),
    one slot per interval of the hour; heights relative to the busiest interval."""
    slots = max(SLOTS, len(requests))
    step = width / slots
    peak = max([*requests, 1.0])
    room = height - 2
    bars = []
    start = width - step * len(requests)
    for i, (n, bad) in enumerate(zip(requests, errors, strict=True)):
        tall = room * n / peak
        red = room * bad / peak
        x = start + i * step
        bars.append(
            Bar(
                round(x, 1),
                round(max(step - 1, 1), 1),
                round(height - tall, 1),
                round(tall, 1),
                round(height - red, 1),
                round(red, 1),
            )
        )
    return Chart(
        bars=tuple(bars),
        total=int(sum(requests)),
        failed=int(sum(errors)),
        peak=int(peak),
        width=width,
        height=height,
    )
