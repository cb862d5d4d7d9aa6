"""One exchange (a request and its outcome) as the gateway saw it, and who is told about it.

The gateway fills an :class:`Exchange` as the request moves through its pipeline and, when
the outcome is known — answered, rejected or failed — awaits every
:class:`ExchangeObserver` before the HTTP response leaves. The audit trail (which may hold
the answer back until its record is durable) and metrics plug in here, without the
pipeline knowing about either. No raw personal data is put on an exchange except
``subject_id`` and ``citizen_ids``, which observers must only ever store keyed-hashed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Exchange", "ExchangeGate", "ExchangeHerald", "ExchangeObserver"]


@dataclass
class Exchange:
    """What happened to one request (mutable while the gateway works on it)."""

    correlation_id: str
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    request_id: str | None = None
    consumer: str | None = None
    credential: str | None = None
    """Which of the consumer's credentials authenticated it: the API key's ``label`` (else
    ``key-<n>``) or ``cert-<n>``; never the secret. Recorded as ``detail.credential``."""
    service: str | None = None
    operation: str | None = None
    officer: str | None = None
    unit: str | None = None
    """The officer's unit (``caller.unit_code``), recorded with the officer in the audit trail."""
    purpose: dict[str, Any] = field(default_factory=dict)
    subject_id: str | None = field(default=None, repr=False)
    """The ID number the request is about (for keyed hashing only; never log it)."""
    citizen_ids: list[str] = field(default_factory=list, repr=False)
    """The ID numbers of every citizen the answer returns (keyed-hashed into the audit
    record's ``detail.subject_keys``; never log them)."""
    fields_returned: list[str] = field(default_factory=list)
    outcome: str = "PENDING"
    """``OK`` or the error code the caller got."""
    status: int = 0
    ref: str | None = None
    """Set once the exchange's ``STARTED`` audit record is queued: the id its final record
    carries too (``detail.exchange``), so a reader counts the pair once."""
    recorded: bool = False
    """The final audit record is written already (with the stored answer, one commit)."""

    @property
    def latency_s(self) -> float:
        """Seconds since the request arrived."""
        return time.perf_counter() - self.started


class ExchangeObserver(Protocol):
    """Told about every finished exchange, before the response is sent."""

    async def exchange_finished(self, exchange: Exchange) -> None:
        """Record ``exchange``; raising a ``BusError`` replaces the answer with that error."""
        ...


@runtime_checkable
class ExchangeGate(Protocol):
    """An observer that may refuse an exchange before anything is fetched for it (the audit
    trail, when a ``fail_closed`` route's record could not be written)."""

    async def exchange_starting(self, exchange: Exchange) -> None:
        """Raise a ``BusError`` to refuse ``exchange`` (its service and operation are known)."""
        ...


@runtime_checkable
class ExchangeHerald(Protocol):
    """An observer told before a request is sent towards an upstream (the audit trail:
    its ``STARTED`` record, so a process killed before the answer still left one)."""

    async def exchange_sending(self, exchange: Exchange) -> None:
        """Record that ``exchange`` is being sent; raising a ``BusError`` refuses it."""
        ...
