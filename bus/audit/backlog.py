"""The audit writer's queue of records not yet durable, and how their waiters are told.

Each queued record may carry a waiter (a ``fail_closed`` caller, or any caller whose
idempotency write rides in the record's transaction) and that write. :func:`answer`
settles the head of the queue after a commit; :func:`refuse` tells every waiter the store
failed. Used by :mod:`bus.audit.writer` only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from bus.audit.chain import AuditEntry
from bus.errors import AuditUnavailable
from bus.store.base import MessageWrite, StoredMessage

__all__ = ["AuditRecorder", "Pending", "answer", "refuse", "refused"]


class AuditRecorder(Protocol):
    """Where the writer reports its commits (``bus.metrics.Metrics`` is one)."""

    def audit_written(self, seconds: float, records: int = 1) -> None:
        """``records`` became durable in one write of ``seconds``."""
        ...

    def audit_write_failed(self) -> None:
        """A write failed (its records stay in the backlog)."""
        ...


@dataclass(slots=True)
class Pending:
    """One queued record: its waiter, and the message write in its transaction."""

    entry: AuditEntry
    waiter: asyncio.Future[StoredMessage | None] | None
    write: MessageWrite | None = None
    durable: bool = True
    queued: float = field(default_factory=time.monotonic)


def answer(pending: deque[Pending], count: int, results: list[StoredMessage | None] | None) -> None:
    """The first ``count`` records committed: pop them and wake their waiters with their
    writes' ``results`` (one per write, in order; ``None``: the commit landed but its
    answer was lost, so a write's result is unknown and its waiter gets an error)."""
    answers = iter(results or ())
    for _ in range(count):
        item = pending.popleft()
        result = next(answers, None) if item.write is not None else None
        if item.waiter is None or item.waiter.done():
            continue
        if item.write is not None and results is None:
            item.waiter.set_exception(ConnectionError("the store's answer was lost"))
        else:
            item.waiter.set_result(result)


def refuse(pending: deque[Pending]) -> None:
    """Tell every waiter its record is not durable (the store is failing): a durable one's
    record is rewritten to say the caller got AUDIT_UNAVAILABLE (the answer was withheld);
    the writes are dropped (the records stay queued)."""
    for item in pending:
        if item.waiter is not None and not item.waiter.done():
            if item.durable:
                item.waiter.set_exception(
                    AuditUnavailable("the audit record could not be written", retry_after=1.0)
                )
                item.entry = refused(item.entry)
            else:
                item.waiter.set_exception(ConnectionError("the store failed"))
        item.waiter, item.write = None, None


def refused(entry: AuditEntry) -> AuditEntry:
    """An exchange record rewritten to say its caller got AUDIT_UNAVAILABLE."""
    if entry.kind != "exchange":
        return entry
    return dataclasses.replace(entry, outcome=AuditUnavailable.default_code, status=503)
