"""The gateway's access log: one ``gateway.request_finished`` line per answered request.

An :class:`~bus.exchange.ExchangeObserver`, so the pipeline knows nothing of it. The line
carries the status, outcome code and latency, with the correlation id, service, operation
and consumer (names from the config) — never the request's body or personal data.
"""

from __future__ import annotations

import structlog

from bus.exchange import Exchange

__all__ = ["AccessLogObserver"]


class AccessLogObserver:
    """Logs every finished exchange at ``info`` (``--log-level warning`` silences it)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("bus.gateway.access")

    async def exchange_finished(self, exchange: Exchange) -> None:
        """Log the outcome of ``exchange``."""
        known = {
            "correlation_id": exchange.correlation_id,
            "service": exchange.service,
            "operation": exchange.operation,
            "consumer": exchange.consumer,
        }
        self._log.info(
            "gateway.request_finished",
            status=exchange.status,
            code=exchange.outcome,
            elapsed_ms=round(exchange.latency_s * 1000, 1),
            **{k: v for k, v in known.items() if v is not None},
        )
