"""The audit trail: one hash-chained record per exchange and per admin action.

Policies per route (``audit:`` of a service in routing.yaml; default fail_closed for
personal data, else ``audit.default_policy``):

* ``fail_closed`` — the answer waits until its record is durable; if the store fails, the
  caller gets ``503 AUDIT_UNAVAILABLE`` instead of the answer (and the record, rewritten to
  say so, stays queued until it can be written);
* ``fail_open`` — the answer goes first; the record waits in the backlog, retried with
  backoff, visible in ``/readyz`` (``audit.backlog``). Never dropped while the process
  lives; when the backlog is full every answer is refused instead.

:class:`AuditObserver` plugs the writer (:class:`Auditor`, in :mod:`bus.audit.writer`)
into the gateway (``bus.exchange``); :meth:`Auditor.admin_action` records operator actions
(config reload, DLQ replay, purge…); :func:`audit_trail` opens store and writer for a
process; :func:`verify_store` walks every chain. The pure parts — canonical form, hashes,
subject keys, verification — are in :mod:`bus.audit.chain`. Audit records are not logs:
logs may be sampled, records are not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from bus.audit.accesses import EXCHANGE_REF, STARTED
from bus.audit.chain import SUBJECT_KEYS, AuditEntry, ChainProblem, ChainVerifier, Pin, nfc
from bus.audit.writer import LEASE_S, Auditor, AuditRecorder, AuditUnavailable
from bus.canonical import exchange_id, new_id
from bus.config import AuditPolicy, RoutingConfig, resolve_secret
from bus.config.atrest import keyring_for
from bus.config.models import MIN_AUDIT_KEY_CHARS
from bus.exchange import Exchange
from bus.store import open_store, store_url_from_env
from bus.store.base import (
    GENESIS_HASH,
    AuditRecord,
    ChainHead,
    MessageWrite,
    Store,
    StoredMessage,
)

__all__ = [
    "LEASE_S",
    "STORE_FRESH_S",
    "AuditJournal",
    "AuditKeyError",
    "AuditObserver",
    "AuditRecorder",
    "AuditUnavailable",
    "Auditor",
    "ChainReport",
    "Sampler",
    "StoreProbe",
    "audit_policy",
    "audit_trail",
    "exchange_entry",
    "load_subject_key",
    "open_auditor",
    "verify_store",
]

log = structlog.get_logger("bus.audit.observer")

MIN_KEY_CHARS = MIN_AUDIT_KEY_CHARS


def audit_policy(config: RoutingConfig, service: str | None) -> AuditPolicy:
    """The service's own policy; else fail_closed for personal data; else the default."""
    svc = config.services.get(service) if service is not None else None
    if svc is None:
        return config.audit.default_policy
    if svc.audit is not None:
        return svc.audit
    return "fail_closed" if svc.personal_data else config.audit.default_policy


class AuditKeyError(ValueError):
    """The configured audit key cannot be read, or is too short (a start-up error)."""


def load_subject_key(config: RoutingConfig) -> bytes | None:
    """The configured audit key's bytes (``None`` if none is configured); raises
    :class:`AuditKeyError` if the reference cannot be read or the key is too short."""
    ref = config.audit.subject_key
    if ref is None:
        return None
    try:
        key = resolve_secret(ref)
    except (KeyError, OSError, ValueError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise AuditKeyError(f"audit.subject_key: {reason}") from None
    if len(key) < MIN_KEY_CHARS:
        raise AuditKeyError(
            f"audit.subject_key: the key must be at least {MIN_KEY_CHARS} characters"
        )
    return key.encode("utf-8")


STORE_FRESH_S = 1.0
"""How long a store answer (a commit, a lease renewal, a ping) vouches for the store: a
``fail_closed`` request after that pings it first (one ping shared by concurrent requests)."""


class StoreProbe:
    """Whether the audit store can be expected to take a durable record now: the writer is
    not failing and the store answered within :data:`STORE_FRESH_S` (else it is pinged)."""

    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor
        self._ping: asyncio.Future[bool] | None = None

    async def check(self) -> None:
        """Raise :class:`AuditUnavailable` if a durable record could not be written."""
        auditor = self.auditor
        if auditor.failing:
            raise AuditUnavailable("the audit store is failing; try again later", retry_after=1.0)
        if auditor.store_ok and time.monotonic() - auditor.store_checked <= STORE_FRESH_S:
            return
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self._probe())
        if not await asyncio.shield(self._ping):
            raise AuditUnavailable(
                "the audit store is unreachable; try again later", retry_after=1.0
            )

    async def _probe(self) -> bool:
        auditor = self.auditor
        try:
            async with asyncio.timeout(auditor.settings.commit_timeout_s):
                ok = await auditor.store.ping()
        except Exception:  # a driver's own error, or the timeout: not reachable
            ok = False
        auditor.store_ok, auditor.store_checked = ok, time.monotonic()
        if not ok:
            log.warning("audit.store_unreachable", backend=getattr(auditor.store, "backend", "?"))
        return ok


class AuditObserver:
    """The gateway's :class:`~bus.exchange.ExchangeObserver` writing one record per exchange,
    and its :class:`~bus.exchange.ExchangeGate`: a ``fail_closed`` route is refused with
    ``503 AUDIT_UNAVAILABLE`` before anything is fetched when the store is known to be down.

    Holds the config for per-route policies: on a config reload build a new one over the
    same auditor (:meth:`with_config`)."""

    def __init__(
        self,
        auditor: Auditor,
        config: RoutingConfig,
        probe: StoreProbe | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.auditor = auditor
        self.config = config
        self.probe = probe or StoreProbe(auditor)
        self.sampler = sampler or Sampler()

    def with_config(self, config: RoutingConfig) -> AuditObserver:
        """The same auditor (store probe, unauthenticated-record sampler) under a new config."""
        return AuditObserver(self.auditor, config, self.probe, self.sampler)

    async def exchange_starting(self, exchange: Exchange) -> None:
        """Refuse a ``fail_closed`` exchange whose record could not be written."""
        if audit_policy(self.config, exchange.service) == "fail_closed":
            await self.probe.check()

    async def exchange_sending(self, exchange: Exchange) -> None:
        """The exchange's ``STARTED`` record before it is published (fail_closed: durable
        first), unless its idempotency claim already wrote it (:class:`AuditJournal`)."""
        if exchange.ref is None:
            await self.started(exchange, None)

    def journal(self, exchange: Exchange, store: Store) -> AuditJournal | None:
        """The idempotency step's writes joined to this exchange's records (one commit
        each), if ``store`` is the one this trail is written to."""
        return AuditJournal(self, exchange) if store is self.auditor.store else None

    async def started(self, exchange: Exchange, write: MessageWrite | None) -> StoredMessage | None:
        """Queue the ``STARTED`` record (with ``write`` in its transaction)."""
        exchange.ref = new_id()
        entry = dataclasses.replace(
            exchange_entry(self.auditor, exchange),
            outcome=STARTED,
            status=0,
            fields=(),
            latency_us=0,
        )
        return await self.auditor.record(entry, durable=self._durable(exchange), write=write)

    async def finished(self, exchange: Exchange, write: MessageWrite | None = None) -> None:
        """Write the final record now (with ``write`` in its transaction)."""
        exchange.recorded = True
        entry = exchange_entry(self.auditor, exchange)
        await self.auditor.record(entry, durable=self._durable(exchange), write=write)

    async def exchange_finished(self, exchange: Exchange) -> None:
        """Record the exchange under its route's policy; unauthenticated ones sampled."""
        if exchange.recorded:  # with its stored answer (AuditJournal.finish)
            return
        if exchange.consumer is None and exchange.outcome == "UNAUTHENTICATED":
            await self._unauthenticated(exchange)
            return
        await self.finished(exchange)

    def _durable(self, exchange: Exchange) -> bool:
        return audit_policy(self.config, exchange.service) == "fail_closed"

    async def _unauthenticated(self, exchange: Exchange) -> None:
        # Nobody's data was reached: one record a second, not durable, carrying how many
        # were left out before it (metrics still count every one).
        suppressed = self.sampler.admit()
        if suppressed is None:
            return
        entry = exchange_entry(self.auditor, exchange)
        if suppressed:
            entry = dataclasses.replace(entry, detail={"suppressed_before": suppressed})
        await self.auditor.record(entry, durable=False)


class AuditJournal:
    """An exchange's idempotency writes in its audit records' transactions: the claim with
    the ``STARTED`` record, the answer with the final one (``bus.gateway.idempotency``'s
    ``Journal``). Under fail_closed each returns only once durable."""

    def __init__(self, observer: AuditObserver, exchange: Exchange) -> None:
        self.observer = observer
        self.exchange = exchange

    async def claim(self, write: MessageWrite) -> StoredMessage | None:
        """Claim with the ``STARTED`` record (a second claim of one exchange: alone)."""
        if self.exchange.ref is not None:
            store = self.observer.auditor.store
            return await store.message_begin(
                write.consumer, write.request_id, write.body_hash, write.ttl_s
            )
        return await self.observer.started(self.exchange, write)

    async def finish(self, write: MessageWrite, outcome: str, status: int) -> None:
        """Store the answer with the final record, which says ``outcome`` and ``status``."""
        self.exchange.outcome, self.exchange.status = outcome, status
        await self.observer.finished(self.exchange, write)


class Sampler:
    """Admits one unauthenticated record per clock second; counts the others."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._second = -1
        self._suppressed = 0

    def admit(self) -> int | None:
        """``None``: leave this one out; else record it, with this many left out before."""
        second = int(self._clock())
        if second == self._second:
            self._suppressed += 1
            return None
        self._second = second
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


def exchange_entry(auditor: Auditor, exchange: Exchange) -> AuditEntry:
    """The record of a finished exchange (raw IDs are hashed, not copied): ``subject_key``
    the citizen asked about, ``detail.subject_keys`` every citizen the answer returns."""
    skey = auditor.subject_key(exchange.subject_id)
    detail = _detail(exchange)
    returned = sorted({k for k in map(auditor.subject_key, exchange.citizen_ids) if k})
    if returned:  # every citizen the answer returns, keyed (detail: old records verify)
        detail[SUBJECT_KEYS] = returned
    return AuditEntry(
        time_us=int(exchange.started_at * 1_000_000),
        kind="exchange",
        # A rejected body's request_id is whatever the caller sent: kept only if it has the
        # shape of an id, so free text (a name, say) never reaches the trail.
        request_id=exchange_id(exchange.request_id),
        correlation_id=exchange.correlation_id,
        consumer=exchange.consumer,
        officer=exchange.officer,
        unit=exchange.unit,
        service=exchange.service,
        operation=exchange.operation,
        purpose={str(k): str(nfc(v)) for k, v in exchange.purpose.items()},
        subject_key=skey,
        key_id=auditor.key_id if skey is not None or returned else None,
        fields=tuple(nfc(f) for f in exchange.fields_returned),
        outcome=exchange.outcome,
        status=exchange.status,
        latency_us=int(exchange.latency_s * 1_000_000),
        # In detail (hashed, free-form): records written before they existed still verify.
        detail=detail,
    )


def _detail(exchange: Exchange) -> dict[str, object]:
    detail: dict[str, object] = {"credential": exchange.credential} if exchange.credential else {}
    if exchange.ref is not None:
        detail[EXCHANGE_REF] = exchange.ref
    return detail


@asynccontextmanager
async def open_auditor(
    config: RoutingConfig, store: Store, *, holder: str | None = None
) -> AsyncIterator[Auditor]:
    """A started auditor for ``config`` on a connected ``store``; closed (drained) on exit."""
    key = load_subject_key(config)
    if key is None:
        log.warning("audit.no_subject_key", hint="set audit.subject_key in routing.yaml")
    auditor = Auditor(store, node=config.node, key=key, settings=config.audit, holder=holder)
    async with auditor:
        yield auditor


@asynccontextmanager
async def audit_trail(
    config: RoutingConfig, store_url: str | None = None
) -> AsyncIterator[Auditor]:
    """Open the store (``store_url``, else ``$LGSP_STORE_URL``, else the SQLite default) and
    a started auditor on it; the gateway's ``Runtime.store`` is ``auditor.store``."""
    url = store_url or store_url_from_env()
    store = open_store(url, keyring_for(config, url))
    await store.connect()
    try:
        async with open_auditor(config, store) as auditor:
            yield auditor
    finally:
        await store.aclose()


@dataclass
class ChainReport:
    """What verification found on one chain."""

    head: ChainHead
    checked: int
    problem: ChainProblem | None


async def verify_store(
    store: Store,
    pins: Iterable[Pin] = (),
    page: int = 1000,
    visit: Callable[[AuditRecord], None] | None = None,
) -> list[ChainReport]:
    """Walk every chain; each report names its chain's first problem, if any. A chain whose
    prune anchor no surviving ``audit.prune`` record names is reported as ``anchor``.
    ``visit`` is called with every record that verified, in chain order (the reports in
    :mod:`bus.report` read the trail this way: one walk both checks and counts)."""
    pins = list(pins)
    reports: list[ChainReport] = []
    witnesses: set[tuple[str, int, str]] = set()
    for head in await store.audit_chains():
        verifier = ChainVerifier(head, pins)
        after = head.anchor_seq
        while verifier.problem is None:
            records = await store.audit_records(head.chain, after, page)
            for rec in records:
                if verifier.feed(rec) is not None:
                    break
                if visit is not None:
                    visit(rec)
            if len(records) < page:
                break
            after = records[-1].seq
        verifier.finish()
        witnesses |= verifier.witnesses
        reports.append(ChainReport(head, verifier.checked, verifier.problem))
    present = {r.head.chain for r in reports}
    for pin in sorted({p for p in pins if p.chain not in present}, key=lambda p: p.chain):
        # A pin is a promise that the chain exists: wiping the trail (records and the
        # chain row, or both tables) must not pass as "0 chains, all intact".
        gone = ChainHead(pin.chain, "", 0, GENESIS_HASH, 0, GENESIS_HASH, None, 0.0)
        problem = ChainProblem(pin.chain, pin.seq, "missing", "a pinned chain is not in the store")
        reports.append(ChainReport(gone, 0, problem))
        present.add(pin.chain)
    for report in reports:
        head = report.head
        anchor = (head.chain, head.anchor_seq, head.anchor_hash)
        if report.problem is None and head.anchor_seq > 0 and anchor not in witnesses:
            report.problem = ChainProblem(
                head.chain,
                head.anchor_seq,
                "anchor",
                "records up to here were removed, but no audit.prune record names this anchor",
            )
    return reports
