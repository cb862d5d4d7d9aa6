"""Hot reload of routing.yaml: validate, prepare every part, swap them at once — or change nothing.

Triggers: ``SIGHUP``; a change of the file or of a file it references (watchfiles, those
files only: :mod:`bus.reload.watch`); and
``POST /admin/reload`` (:mod:`bus.admin.api`). One reload runs at a time:

1. read and validate the file exactly as at start (every error, located; warnings logged);
2. *prepare* each attached part (:class:`ReloadTarget`) without touching what runs: the
   gateway builds its next ``Runtime`` (keys resolved, request models built), the worker
   opens adapters for new and changed services, new queues and bindings are declared;
3. if anything failed, undo the preparations: the running config stays, and the rejection
   is logged, counted (``recorder``) and shown in ``/readyz`` (:meth:`readiness`);
4. else *commit* every part — plain assignments with no ``await`` between them, so no
   request sees half a config; requests in flight finish under the config they started
   with;
5. *settle* in the background (:mod:`bus.reload.targets`): replaced adapters close when
   their in-flight calls end, removed services are consumed for one more deadline, then
   stopped.

The version of a config is :func:`bus.metrics.config_version` (a digest of its validated
content, the same ``lgsp_config_info`` shows). Every reload is recorded as an admin action
(``config.reload``) through :attr:`ConfigReloader.auditor` when the audit trail is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from adapters.base import parse_routing
from bus.broker.base import Broker
from bus.config import ConfigError, RoutingConfig
from bus.config.diff import diff_configs, needs_restart, summary
from bus.config.rules import config_warnings
from bus.config.source import YamlDocument
from bus.observe.metrics import Metrics, config_version
from bus.reload.watch import Watched, watch

__all__ = [
    "AdminAuditor",
    "BusHandles",
    "ConfigReloader",
    "Prepared",
    "ReloadRecorder",
    "ReloadResult",
    "ReloadTarget",
]

log = structlog.get_logger("bus.reload.reloader")

Outcome = Literal["applied", "unchanged", "rejected"]
MAX_SHOWN = 20
"""Errors kept in a result (``/readyz`` and the admin answer); the log has them all."""


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did."""

    outcome: Outcome
    trigger: str
    """``sighup``, ``file``, ``admin`` or ``api``."""
    actor: str
    at: float
    version: str
    """The config in force after this reload."""
    candidate: str | None = None
    """The version of the file tried (``None`` if it did not validate)."""
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (time as RFC 3339)."""
        out = asdict(self)
        out["at"] = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")
        for name in ("errors", "warnings", "changes", "restart_needed"):
            out[name] = list(out[name])
        return out


class Prepared(Protocol):
    """One part's next state, built but not yet in force."""

    def commit(self) -> None:
        """Put it in force (synchronous: it must not fail or wait)."""
        ...

    async def settle(self, closing: asyncio.Event) -> None:
        """After the commit: release what was replaced (return early once ``closing``)."""
        ...

    async def abort(self) -> None:
        """Another part failed: release what was built."""
        ...


class ReloadTarget(Protocol):
    """A part of the process that follows the config (gateway, worker, admin keys)."""

    name: str

    async def prepare(self, old: RoutingConfig, new: RoutingConfig) -> Prepared:
        """Build the next state for ``new``; raise with an operator's message if it cannot."""
        ...


class ReloadRecorder(Protocol):
    """Metrics of reloads (:class:`bus.metrics.Metrics` is one)."""

    def config_reload(self, ok: bool, config: RoutingConfig | None = None, at: float = 0.0) -> None:
        """A reload was tried; on success ``config`` is in force since ``at``."""
        ...


class AdminAuditor(Protocol):
    """The audit trail's admin-action API (:class:`bus.audit.Auditor` is one)."""

    async def admin_action(
        self, action: str, actor: str, detail: Mapping[str, Any] | None = None, *, outcome: str
    ) -> None:
        """Record an operator action durably."""
        ...


@dataclass
class BusHandles:
    """What the running process holds, for the operators' console (:mod:`bus.admin.console`):
    filled in by the process roles as they start; ``None`` where this process has none."""

    broker: Broker | None = None
    metrics: Metrics | None = None
    readiness: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    """``/readyz`` detail providers (breakers, store, audit backlog, reloads)."""


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class ConfigReloader:
    """Owns the config in force and every reload of it (``async with`` owns its tasks)."""

    def __init__(
        self,
        path: str | Path,
        config: RoutingConfig,
        *,
        recorder: ReloadRecorder | None = None,
        auditor: AdminAuditor | None = None,
        adjust: Callable[[RoutingConfig], RoutingConfig] | None = None,
    ) -> None:
        self.path = Path(path)
        self.adjust = adjust
        """Applied to every reloaded file (``run``'s simulator ports), as at start."""
        self.config = config
        self.version = config_version(config)
        self.loaded_at = time.time()
        self.last: ReloadResult | None = None
        self.counts: dict[str, int] = {"applied": 0, "unchanged": 0, "rejected": 0}
        self.recorder = recorder
        self.auditor = auditor
        """Set once the audit trail is open; until then reloads are only logged."""
        self.admin_urls: list[str] = []
        """Where ``/admin/*`` is served on an address of its own (``admin.port``)."""
        self.handles = BusHandles()
        """The broker, metrics and readiness of this process, for the console."""
        self._targets: list[ReloadTarget] = []
        self._listeners: list[Callable[[RoutingConfig], None]] = []
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._trigger = "file"
        self._closing = asyncio.Event()
        self._settling: set[asyncio.Task[None]] = set()
        self._watched = Watched(self.path, config)
        self._refs = self._watched.references_digest()
        try:
            self.source: bytes | None = self.path.read_bytes()
            """The text of the file in force (as read when it was applied)."""
            self._seen: str | None = _digest(self.source)
        except OSError:
            self.source, self._seen = None, None

    # -- wiring ---------------------------------------------------------------------------

    def attach(self, target: ReloadTarget) -> None:
        """Let ``target`` follow the config from the next reload on."""
        self._targets.append(target)

    @property
    def parts(self) -> list[str]:
        """Names of the attached parts (``gateway``, ``worker``, ``admin``)."""
        return [target.name for target in self._targets]

    def on_applied(self, listener: Callable[[RoutingConfig], None]) -> None:
        """Call ``listener(config)`` after each applied reload (e.g. a status object)."""
        self._listeners.append(listener)

    async def __aenter__(self) -> ConfigReloader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Settling waits for in-flight calls; on shutdown those are over: finish now.
        self._closing.set()
        if self._settling:
            await asyncio.wait(self._settling, timeout=10)

    def readiness(self) -> dict[str, Any]:
        """``/readyz`` detail: the version in force and the last reload's result."""
        return {
            "config": {
                "version": self.version,
                "file": self.path.name,  # /readyz: never the absolute path (/admin/config has it)
                "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).isoformat(
                    timespec="seconds"
                ),
                "reloads": dict(self.counts),
                "follows": self.parts,
                "last_reload": self.last.to_dict() if self.last is not None else None,
            }
        }

    # -- reloading ------------------------------------------------------------------------

    async def reload(self, trigger: str = "api", actor: str = "system") -> ReloadResult:
        """Validate the file and apply it whole, or change nothing; one at a time."""
        async with self._lock:
            previous = self.last
            result = await self._reload(trigger, actor)
            self.last = result
            self.counts[result.outcome] += 1
        self._report(result, previous)
        await self._audit(result)
        return result

    def _result(self, outcome: Outcome, trigger: str, actor: str, **kw: Any) -> ReloadResult:
        return ReloadResult(outcome, trigger, actor, time.time(), self.version, **kw)

    def _parse(self, raw: bytes) -> tuple[RoutingConfig, YamlDocument]:
        doc = YamlDocument.from_text(raw.decode("utf-8"), str(self.path))
        new = parse_routing(doc.data, doc)
        return (new if self.adjust is None else self.adjust(new)), doc

    async def _reload(self, trigger: str, actor: str) -> ReloadResult:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            error = f"cannot read {self.path}: {exc.strerror}"
            return self._result("rejected", trigger, actor, errors=(error,))
        self._seen = _digest(raw)
        try:
            # Off the event loop: a large or hostile file must not stall the requests served
            # meanwhile (the parse itself is bounded: bus.config.source).
            new, doc = await asyncio.to_thread(self._parse, raw)
        except UnicodeDecodeError:
            return self._result("rejected", trigger, actor, errors=("the file is not UTF-8",))
        except ConfigError as exc:
            errors = [str(i) for i in exc.issues[:MAX_SHOWN]]
            if len(exc.issues) > MAX_SHOWN:
                errors.append(
                    f"… and {len(exc.issues) - MAX_SHOWN} more (lgsp-bus config validate)"
                )
            return self._result("rejected", trigger, actor, errors=tuple(errors))
        candidate = config_version(new)
        warnings = tuple(str(i) for i in config_warnings(new, doc)[:MAX_SHOWN])
        refs = Watched(self.path, new).references_digest()
        if candidate == self.version and trigger == "file" and refs == self._refs:
            return self._result("unchanged", trigger, actor, candidate=candidate)
        prepared: list[Prepared] = []
        target_name = ""
        try:
            for target in self._targets:
                target_name = target.name
                prepared.append(await target.prepare(self.config, new))
        except Exception as exc:  # any failure to build the next state rejects the file
            await self._abort(prepared)
            error = f"{target_name}: cannot apply: {_describe(exc)}"
            return self._result("rejected", trigger, actor, candidate=candidate, errors=(error,))
        except asyncio.CancelledError:
            await self._abort(prepared)
            raise
        old = self.config
        for part in prepared:
            part.commit()
        self.config, self.version, self.loaded_at = new, candidate, time.time()
        self._watched.follow(new)
        self._refs = refs
        self.source = raw
        for part in prepared:
            task = asyncio.create_task(self._settle(part))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        for listener in self._listeners:
            listener(new)
        changes = tuple(summary(diff_configs(old, new))) or ("no change in meaning",)
        restart = tuple(needs_restart(old, new))
        return self._result(
            "applied",
            trigger,
            actor,
            candidate=candidate,
            warnings=warnings,
            changes=changes,
            restart_needed=restart,
        )

    @staticmethod
    async def _abort(prepared: list[Prepared]) -> None:
        for part in prepared:
            try:
                await part.abort()
            except Exception:
                log.exception("config.reload_abort_failed")

    async def _settle(self, part: Prepared) -> None:
        # Owned by this reloader (kept in _settling, awaited on exit); never raises.
        try:
            await part.settle(self._closing)
        except Exception:
            log.exception("config.reload_settle_failed")

    def _report(self, result: ReloadResult, previous: ReloadResult | None) -> None:
        fields = {"trigger": result.trigger, "actor": result.actor, "version": result.version}
        if result.outcome == "applied":
            log.info(
                "config.reloaded",
                **fields,
                changes=list(result.changes),
                restart_needed=list(result.restart_needed),
                warnings=list(result.warnings),
            )
        elif result.outcome == "rejected":
            log.warning("config.reload_rejected", **fields, errors=list(result.errors))
        else:
            log.info("config.reload_unchanged", **fields)
        if self.recorder is None:
            return
        if result.outcome == "unchanged":
            # A broken file put back as it was: the file and the bus agree again.
            if previous is not None and previous.outcome == "rejected":
                self.recorder.config_reload(True, self.config, result.at)
            return
        ok = result.outcome == "applied"
        self.recorder.config_reload(ok, self.config if ok else None, result.at)

    async def _audit(self, result: ReloadResult) -> None:
        if self.auditor is None or result.outcome == "unchanged":
            return
        detail = {
            "trigger": result.trigger,
            "outcome": result.outcome,
            "version": result.version,
            "candidate": result.candidate,
            "changes": list(result.changes),
            "errors": len(result.errors),
        }
        outcome = "OK" if result.outcome == "applied" else "CONFIG_REJECTED"
        try:
            await self.auditor.admin_action("config.reload", result.actor, detail, outcome=outcome)
        except Exception as exc:  # the reload stands; the missing record must be seen
            log.error("config.reload_not_audited", error=_describe(exc))

    # -- triggers -------------------------------------------------------------------------

    def request(self, trigger: str) -> None:
        """Ask :meth:`serve` for a reload (safe from a signal handler; requests coalesce)."""
        if not self._wanted.is_set() or self._trigger == "file":
            self._trigger = trigger
        self._wanted.set()

    def _file_changed(self) -> bool:
        if self._watched.references_digest() != self._refs:
            return True
        try:
            return _digest(self.path.read_bytes()) != self._seen
        except OSError:
            return self._seen is not None

    async def serve(self, stop: asyncio.Event, *, watch: bool = True, sighup: bool = True) -> None:
        """Reload on SIGHUP and (``watch``) on file changes until ``stop``."""
        loop = asyncio.get_running_loop()
        if sighup:
            loop.add_signal_handler(signal.SIGHUP, self.request, "sighup")
        watch_stop = asyncio.Event()  # watchfiles sets its stop event when cancelled
        try:
            async with asyncio.TaskGroup() as tasks:
                if watch:
                    tasks.create_task(self._watch(watch_stop))
                while await _first(self._wanted, stop) is self._wanted:
                    self._wanted.clear()
                    trigger, self._trigger = self._trigger, "file"
                    if trigger == "file" and not self._file_changed():
                        continue
                    await self.reload(trigger, actor="operator" if trigger == "sighup" else trigger)
                watch_stop.set()
        finally:
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)

    async def _watch(self, stop: asyncio.Event) -> None:
        await watch(self._watched, lambda: self.request("file"), stop)


async def _first(*events: asyncio.Event) -> asyncio.Event:
    """Wait until one of ``events`` is set; return the first that is."""
    waiters = {asyncio.ensure_future(e.wait()): e for e in events}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return next(e for e in events if e.is_set())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__
