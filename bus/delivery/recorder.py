"""What delivery reports: each attempt's outcome (metrics and the audit trail) and the age
of the message each partition holds (the oldest undelivered one, for alerts)."""

from __future__ import annotations

import time
from typing import Protocol

import structlog

from bus.audit.chain import AuditEntry
from bus.audit.writer import Auditor, AuditUnavailable

__all__ = ["NULL_METRICS", "DeliveryMetrics", "DeliveryReport"]

log = structlog.get_logger("bus.delivery.recorder")


class DeliveryMetrics(Protocol):
    """Delivery metrics (``bus.observe.deliveries.DeliveryGauges`` implements it)."""

    def delivery_attempted(self, stream: str, outcome: str, lag_s: float | None) -> None:
        """One attempt of ``stream`` ended with ``outcome``; ``lag_s`` (publish → delivered)
        when it was delivered."""
        ...

    def delivery_holding(self, key: str, since: float | None) -> None:
        """Outbox partition ``key`` holds an undelivered message published at ``since``
        (``None``: it holds none)."""
        ...


class _Null:
    def delivery_attempted(self, stream: str, outcome: str, lag_s: float | None) -> None:
        """Ignored."""

    def delivery_holding(self, key: str, since: float | None) -> None:
        """Ignored."""


NULL_METRICS: DeliveryMetrics = _Null()


class DeliveryReport:
    """Tells metrics and the audit trail about each attempt."""

    def __init__(self, metrics: DeliveryMetrics = NULL_METRICS, auditor: Auditor | None = None):
        self.metrics = metrics
        self.auditor = auditor

    async def attempted(
        self,
        *,
        stream: str,
        consumer: str,
        service: str,
        operation: str,
        msg_id: str,
        attempt: int,
        outcome: str,
        status: int,
        published_at: float,
        started: float,
    ) -> None:
        """One attempt (``outcome`` ``DELIVERED``, ``DEAD`` or the failure's code)."""
        lag = time.time() - published_at if outcome == "DELIVERED" else None
        self.metrics.delivery_attempted(stream, outcome, lag)
        if self.auditor is None:
            return
        entry = AuditEntry(
            time_us=int(started * 1_000_000),
            kind="delivery",
            request_id=msg_id,
            consumer=consumer,
            service=service,
            operation=operation,
            outcome=outcome,
            status=status,
            latency_us=int((time.time() - started) * 1_000_000),
            action="deliver",
            detail={"stream": stream, "attempt": attempt},
        )
        try:
            await self.auditor.record(entry, durable=False)
        except AuditUnavailable:
            log.error("delivery.audit_refused", stream=stream)
