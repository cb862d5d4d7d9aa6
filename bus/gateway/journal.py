"""Where the idempotency step writes an exchange's claim and answer: the store alone, or
the audit trail's :class:`Journal`, which puts each in the same transaction as the
exchange's audit record (the claim with the ``STARTED`` record, the answer with the final
one): one commit each instead of two, and the record is durable before the request is
published (fail_closed) or its answer leaves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from bus.exchange import Exchange
from bus.store.base import MessageWrite, Store, StoredMessage

__all__ = ["Journal", "Journals", "journal_of"]


class Journal(Protocol):
    """Writes the claim and the answer of one exchange together with its audit records,
    one commit each (:class:`bus.audit.observer.AuditJournal`)."""

    async def claim(self, write: MessageWrite) -> StoredMessage | None:
        """:meth:`Store.message_begin`, with the exchange's ``STARTED`` record."""
        ...

    async def finish(self, write: MessageWrite, outcome: str, status: int) -> None:
        """:meth:`Store.message_finish`, with the exchange's final record."""
        ...


@runtime_checkable
class Journals(Protocol):
    """An observer offering a :class:`Journal` per exchange (the audit trail)."""

    def journal(self, exchange: Exchange, store: Store) -> Journal | None:
        """The exchange's journal, if its records go to ``store``."""
        ...


def journal_of(observers: Iterable[object], exchange: Exchange, store: Store) -> Journal | None:
    """The first journal an observer offers for ``exchange`` on ``store``."""
    for observer in observers:
        if isinstance(observer, Journals) and (journal := observer.journal(exchange, store)):
            return journal
    return None
