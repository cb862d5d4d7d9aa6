"""The audit writer: this process's chain, group commit, durability policies, leases.

:class:`Auditor` claims a chain from the store with a lease (renewed every ``LEASE_S``/3),
so instances never write one chain, and runs one writer task: records queue up while a
commit runs, and the next commit takes them all in one transaction (``max_batch``).
``record(entry, durable=True)`` (fail_closed) returns once the record is durable, else
raises :class:`AuditUnavailable` within about two commit timeouts — and the record,
rewritten to say the caller got ``AUDIT_UNAVAILABLE``, stays queued; ``durable=False``
(fail_open) returns at once and the record waits in the backlog (at most ``OPEN_LINGER_S``
for company, then retried with backoff while the store fails). ``record(entry, write=…)``
puts an idempotency claim or answer in the same transaction as the record (one commit for
both) and returns the write's result once committed. A commit whose outcome is
unknown (timeout) is settled by reading the chain head back before anything else is
written, so the chain never forks or repeats. Seen from :mod:`bus.audit.observer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from bus.audit.backlog import AuditRecorder, Pending, answer, refuse, refused
from bus.audit.chain import AuditEntry, key_fingerprint, nfc, seal, subject_key
from bus.config import AuditSettings
from bus.errors import AuditUnavailable
from bus.store.base import (
    AuditRecord,
    ChainConflict,
    ChainHead,
    MessageWrite,
    Store,
    StoredMessage,
)

__all__ = ["LEASE_S", "OPEN_LINGER_S", "AuditRecorder", "AuditUnavailable", "Auditor"]

log = structlog.get_logger("bus.audit.observer")

LEASE_S = 30.0
"""A chain's lease; renewed every third of it. A killed process's chain is free after it."""
OPEN_LINGER_S = 0.05
"""How long fail_open records may wait for company before a commit (group commit)."""


class Auditor:
    """This process's audit writer (use as ``async with``; see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        node: str,
        key: bytes | None,
        settings: AuditSettings | None = None,
        holder: str | None = None,
        recorder: AuditRecorder | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.node = node
        self.settings = settings or AuditSettings()
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._key = key
        self.key_id = key_fingerprint(key) if key is not None else None
        self._pending: deque[Pending] = deque()
        self._head: ChainHead | None = None
        self._doubt: tuple[int, str, list[AuditRecord]] | None = None
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        """Set when a durable record waits (or a batch is full): commit without lingering."""
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False
        self._lost = False
        self.written = 0
        self.commits = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.store_ok = False
        self.store_checked = 0.0

    @property
    def chain(self) -> str | None:
        """The chain this process writes (once started)."""
        return self._head.chain if self._head is not None else None

    @property
    def failing(self) -> bool:
        """The last commit failed (the writer is retrying): durable records are refused."""
        return self._failing

    @property
    def backlog(self) -> int:
        """Records not yet durable."""
        return len(self._pending)

    def backlog_size(self) -> float:
        """:attr:`backlog`, as a callable (for a metrics gauge read at scrape time)."""
        return float(len(self._pending))

    async def __aenter__(self) -> Auditor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Claim a chain and start the writer and the lease keeper."""
        self._head = await self.store.audit_claim(self.node, self.holder, LEASE_S, time.time())
        self.store_ok, self.store_checked = True, time.monotonic()
        log.info("audit.chain_claimed", chain=self._head.chain, seq=self._head.head_seq)
        self._tasks = [
            asyncio.create_task(self._writer(), name="audit-writer"),
            asyncio.create_task(self._lease_keeper(), name="audit-lease"),
        ]

    async def aclose(self, drain_s: float = 10.0) -> None:
        """Write what is queued (at most ``drain_s``), stop, give the chain up."""
        self._closing.set()
        self._wake.set()
        self._urgent.set()
        writer = self._tasks[0] if self._tasks else None
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), drain_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._pending:
            # Not silent: the operator must know records were lost with the process.
            log.error("audit.backlog_unwritten", records=len(self._pending), chain=self.chain)
        if self._head is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.store.audit_release(self._head.chain, self.holder),
                    self.settings.commit_timeout_s,
                )
            log.info("audit.checkpoint", chain=self.chain, **self._checkpoint())

    def _checkpoint(self) -> dict[str, Any]:
        assert self._head is not None
        return {"seq": self._head.head_seq, "hash": self._head.head_hash}

    def subject_key(self, id_number: str | None) -> str | None:
        """The keyed hash of an ID number (``None`` without an ID or without a key)."""
        if id_number is None or self._key is None:
            return None
        return subject_key(self._key, id_number)

    async def record(
        self, entry: AuditEntry, *, durable: bool, write: MessageWrite | None = None
    ) -> StoredMessage | None:
        """Queue ``entry``; with ``durable``, return only once it is written (else raise
        :class:`AuditUnavailable`). Never drops a record while the backlog has room.
        With ``write``, always wait: the write lands in the record's transaction and its
        result is returned (a failed store: ``AuditUnavailable`` if ``durable``, else
        ``ConnectionError``; the record stays queued, the write is dropped)."""
        if self._closing.is_set() or not self._tasks:
            raise AuditUnavailable("the audit writer is not running")
        if len(self._pending) >= 2 * self.settings.max_backlog:
            self.dropped += 1
            log.error("audit.record_dropped", dropped=self.dropped, backlog=len(self._pending))
            raise AuditUnavailable("the audit backlog is full")
        full = len(self._pending) >= self.settings.max_backlog
        if full or (durable and self._failing):
            # Refused at once rather than after a doomed wait; the record (saying so) is
            # kept and written when the store is back.
            self._pending.append(Pending(refused(entry), None))
            self._wake.set()
            reason = "the audit backlog is full" if full else "the audit store is failing"
            raise AuditUnavailable(f"{reason}; try again later", retry_after=1.0)
        if write is not None and self._failing:
            self._pending.append(Pending(entry, None))
            self._wake.set()
            raise ConnectionError("the store is failing")
        waits = durable or write is not None
        waiter = asyncio.get_running_loop().create_future() if waits else None
        self._pending.append(Pending(entry, waiter, write, durable))
        self._wake.set()
        if waits or len(self._pending) >= self.settings.max_batch:
            self._urgent.set()
        return await waiter if waiter is not None else None

    async def admin_action(
        self,
        action: str,
        actor: str,
        detail: Mapping[str, Any] | None = None,
        *,
        outcome: str = "OK",
        subject_id: str | None = None,
    ) -> None:
        """Record an operator action durably (e.g. ``action="config.reload"``, ``actor`` the
        admin key's name). ``detail`` must hold no personal data: pass a citizen's ID as
        ``subject_id`` (keyed-hashed). Raises :class:`AuditUnavailable` if not written."""
        skey = self.subject_key(subject_id)
        entry = AuditEntry(
            time_us=int(time.time() * 1_000_000),
            kind="admin",
            action=nfc(action),
            actor=nfc(actor),
            detail=nfc(dict(detail or {})),
            outcome=outcome,
            subject_key=skey,
            key_id=self.key_id if skey is not None else None,
        )
        await self.record(entry, durable=True)

    def readiness(self) -> dict[str, Any]:
        """``/readyz`` detail: the store's state and the audit backlog."""
        oldest = time.monotonic() - self._pending[0].queued if self._pending else 0.0
        return {
            "store": {
                "backend": getattr(self.store, "backend", type(self.store).__name__),
                "reachable": self.store_ok,
                "checked_s_ago": round(time.monotonic() - self.store_checked, 1),
            },
            "audit": {
                "chain": self.chain,
                "state": "failing" if self._failing else "ok",
                "backlog": len(self._pending),
                "oldest_backlog_s": round(oldest, 1),
                "written": self.written,
                "commits": self.commits,
                "dropped": self.dropped,
                "last_error": self.last_error,
                "subject_key": self.key_id is not None,
            },
        }

    # -- the writer -------------------------------------------------------------------------

    async def _writer(self) -> None:
        backoff = 0.05
        while True:
            if not self._pending and self._doubt is None:
                if self._closing.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urgent.is_set():
                # Only fail_open records queued: let more gather, so a steady trickle costs
                # one commit per linger rather than one per record.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), OPEN_LINGER_S)
            self._urgent.clear()
            if await self._flush():
                backoff = 0.05
                self._failing = False
                continue
            self._failing = True
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), backoff)
            backoff = min(backoff * 2, 2.0)

    async def _flush(self) -> bool:
        """One group commit; ``False`` if the store failed (the batch stays queued)."""
        timeout = self.settings.commit_timeout_s
        try:
            if self._doubt is not None or self._lost:
                await asyncio.wait_for(self._settle(), timeout)
            if not self._pending:
                return True
            assert self._head is not None
            batch = _one_class(itertools.islice(self._pending, self.settings.max_batch))
            records, seq, prev = [], self._head.head_seq, self._head.head_hash
            for item in batch:
                seq += 1
                rec = seal(
                    item.entry, chain=self._head.chain, node=self.node, seq=seq, prev_hash=prev
                )
                records.append(rec)
                prev = rec.hash
            self._doubt = (self._head.head_seq, self._head.head_hash, records)
            started = time.perf_counter()
            writes = [item.write for item in batch if item.write is not None]
            chain, holder = self._head.chain, self.holder
            results: list[StoredMessage | None] = []
            if writes:
                append = self.store.audit_append_with(
                    chain, holder, records, writes, lasting=_lasting(batch[0])
                )
                results = await asyncio.wait_for(append, timeout)
            else:
                await asyncio.wait_for(self.store.audit_append(chain, holder, records), timeout)
        except ChainConflict:
            log.warning("audit.chain_lost", chain=self.chain)
            self._lost, self._doubt = True, None
            return True
        except Exception as exc:
            self._store_failed(exc)
            refuse(self._pending)
            return False
        self._committed(records, results)
        if self.recorder is not None:
            self.recorder.audit_written(time.perf_counter() - started, len(records))
        return True

    async def _settle(self) -> None:
        """After a failed or lost commit, learn what the store has (the commit may have
        landed before the error) and re-claim the chain if it is no longer ours."""
        assert self._head is not None
        head = await self.store.audit_head(self._head.chain)
        doubt, self._doubt = self._doubt, None
        if doubt is not None and head is not None and head.holder == self.holder:
            _, _, records = doubt
            if head.head_seq == records[-1].seq and head.head_hash == records[-1].hash:
                self._committed(records, None)  # landed, but the writes' results are lost
                return
        if self._lost or head is None or head.holder != self.holder:
            self._head = await self.store.audit_claim(self.node, self.holder, LEASE_S, time.time())
            self._lost = False
            log.info("audit.chain_claimed", chain=self._head.chain, seq=self._head.head_seq)
        else:
            self._head = head

    def _committed(
        self, records: list[AuditRecord], results: list[StoredMessage | None] | None
    ) -> None:
        answer(self._pending, len(records), results)
        last = records[-1]
        assert self._head is not None
        self._head = dataclasses.replace(self._head, head_seq=last.seq, head_hash=last.hash)
        self._doubt = None
        self.written += len(records)
        self.commits += 1
        self.store_ok, self.store_checked = True, time.monotonic()

    def _store_failed(self, exc: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.audit_write_failed()
        self.last_error = type(exc).__name__
        self.store_ok, self.store_checked = False, time.monotonic()
        log.warning(
            "audit.write_failed",
            error=self.last_error,
            backlog=len(self._pending),
            chain=self.chain,
        )

    async def _lease_keeper(self) -> None:
        last_logged: tuple[int, str] | None = None
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), LEASE_S / 3)
            if self._closing.is_set() or self._head is None:
                return
            try:
                held = await asyncio.wait_for(
                    self.store.audit_renew(self._head.chain, self.holder, LEASE_S, time.time()),
                    self.settings.commit_timeout_s,
                )
            except Exception as exc:
                self._store_failed(exc)
                continue
            self.store_ok, self.store_checked = True, time.monotonic()
            if not held:
                self._lost = True
                self._wake.set()
            mark = (self._head.head_seq, self._head.head_hash)
            if mark != last_logged:
                # Head hashes in the (shipped, external) log are witnesses against a
                # wholesale rewrite of the store: `audit verify --pin` checks them.
                log.info("audit.checkpoint", chain=self._head.chain, seq=mark[0], hash=mark[1])
                last_logged = mark


def _lasting(item: Pending) -> bool:
    """A record must outlive the machine unless it carries a write that need not (a
    synchronous request's claim with its STARTED record: ``MessageWrite.lasting``)."""
    return item.write is None or item.write.lasting


def _one_class(items: Iterable[Pending]) -> list[Pending]:
    """The first records queued that are all lasting or all not: a commit of sync claims
    does not wait for the disk behind the answers' records, nor they for it."""
    batch: list[Pending] = []
    for item in items:
        if batch and _lasting(item) != _lasting(batch[0]):
            break
        batch.append(item)
    return batch
