"""The Store protocol: durable state of the bus (request results for idempotency and async
mode; the audit trail). Implementations: ``sqlite`` (embedded default) and ``postgres``
(production); one contract suite runs against both.

Message results are keyed by (consumer, request_id): request ids are chosen by callers, so
they are only unique per calling system, and one consumer must never see another's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["MessageState", "Store", "StoredMessage"]

MessageState = Literal["pending", "done"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A request the bus has accepted, and (once done) the answer it gave."""

    consumer: str
    request_id: str
    body_hash: str
    """SHA-256 hex of the canonical request body: same id + other hash = conflict."""
    state: MessageState
    status: int | None
    """HTTP status of the answer (``None`` while pending)."""
    reply: bytes | None
    """The answer's JSON body exactly as sent (``None`` while pending)."""
    created_at: float
    updated_at: float
    expires_at: float


class Store(Protocol):
    """Durable state; every method is safe to call from several processes at once."""

    async def connect(self) -> None:
        """Open connections and create the schema if it does not exist (idempotent)."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...

    async def ping(self) -> bool:
        """True if the store answers (for ``/readyz``)."""
        ...

    async def message_begin(
        self, consumer: str, request_id: str, body_hash: str, ttl_s: float
    ) -> StoredMessage | None:
        """Claim (consumer, request_id) as ``pending``; ``None`` if this call claimed it,
        else the existing record (pending or done) — atomically, across processes."""
        ...

    async def message_finish(
        self, consumer: str, request_id: str, status: int, reply: bytes
    ) -> None:
        """Store the answer of a claimed request (state becomes ``done``)."""
        ...

    async def message_release(self, consumer: str, request_id: str) -> None:
        """Forget a ``pending`` claim (the request was never sent, e.g. rejected first)."""
        ...

    async def message_get(self, consumer: str, request_id: str) -> StoredMessage | None:
        """The record of (consumer, request_id), if any and not expired."""
        ...

    async def messages_prune(self, now: float) -> int:
        """Delete records whose ``expires_at`` has passed; returns how many."""
        ...
