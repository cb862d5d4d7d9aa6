"""Dead letters in the console: list, inspect (masked, or revealed for an auditor), replay,
purge — the operations of :mod:`bus.admin.deadletters` (the same as ``lgsp-bus dlq``),
here acting on the broker this process holds (so the embedded in-memory broker's DLQ too).

Inspecting, revealing, replaying and purging are each recorded in the audit trail
(``dlq.show`` with ``reveal``, ``dlq.replay``, ``dlq.purge``; actor: the admin key's name)
*before* they happen; if the record cannot be written the action is refused with ``503
AUDIT_UNAVAILABLE`` and nothing is done. At most :data:`MAX_LIST` letters per service are
listed (oldest first).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from bus.admin.access import Principal
from bus.admin.deadletters import Broker as DlqBroker
from bus.admin.deadletters import answer_keeper, detail, list_letters, purge, replay, summary
from bus.audit.writer import Auditor, AuditUnavailable
from bus.broker.deadletters import DeadLetter
from bus.errors import BusUnavailable, NotFoundError
from bus.reload.reloader import ConfigReloader

from .roles import require

__all__ = ["MAX_LIST", "inspect", "letters", "purge_letters", "replay_letters", "trail"]

MAX_LIST = 100


class DlqUnavailable(BusUnavailable):
    """This process holds no broker with a DLQ (e.g. the console on a worker without one)."""

    default_code = "DLQ_UNAVAILABLE"


class LetterNotFound(NotFoundError):
    """No dead letter with that id in that service's DLQ."""

    default_code = "LETTER_NOT_FOUND"


def _dlq(reloader: ConfigReloader) -> DlqBroker:
    broker = reloader.handles.broker
    if broker is None or not hasattr(broker, "dead_letters_claim"):
        raise DlqUnavailable("this process holds no broker with dead-letter queues")
    return cast(DlqBroker, broker)


def trail(reloader: ConfigReloader) -> Auditor:
    """The audit trail of this process, or ``503 AUDIT_UNAVAILABLE``."""
    auditor = reloader.auditor
    if not isinstance(auditor, Auditor):
        raise AuditUnavailable("this process has no audit trail: the action is refused")
    return auditor


def _service(reloader: ConfigReloader, service: str) -> str:
    if service not in reloader.config.services:
        raise NotFoundError(f"no service {service!r}", code="UNKNOWN_SERVICE")
    return service


async def letters(reloader: ConfigReloader, service: str | None = None) -> list[dict[str, Any]]:
    """Summaries (no body) of the dead letters of ``service`` (or of every service)."""
    broker = _dlq(reloader)
    names = [_service(reloader, service)] if service else sorted(reloader.config.services)
    out: list[dict[str, Any]] = []
    for name in names:
        out += [summary(letter) for letter in await list_letters(broker, name, MAX_LIST)]
    return out


async def _find(broker: DlqBroker, service: str, letter_id: str) -> DeadLetter:
    for letter in await list_letters(broker, service, 10_000):
        if letter.id == letter_id:
            return letter
    raise LetterNotFound(f"no dead letter {letter_id!r} in the DLQ of {service}")


async def inspect(
    reloader: ConfigReloader, who: Principal, service: str, letter_id: str, *, reveal: bool
) -> dict[str, Any]:
    """One letter with headers and body, masked unless ``reveal`` (auditor only)."""
    if reveal:
        require(who, "dlq.reveal")
    broker, service = _dlq(reloader), _service(reloader, service)
    letter = await _find(broker, service, letter_id)
    await trail(reloader).admin_action(
        "dlq.show", who.name, {"service": service, "ids": [letter_id], "reveal": reveal}
    )
    return detail(letter, reveal=reveal)


async def replay_letters(
    reloader: ConfigReloader, who: Principal, service: str, ids: Collection[str]
) -> list[dict[str, Any]]:
    """Publish the chosen letters again with a fresh deadline; wait for their answers."""
    require(who, "dlq.replay")
    broker, service = _dlq(reloader), _service(reloader, service)
    auditor = trail(reloader)
    config = reloader.config
    await auditor.admin_action("dlq.replay", who.name, {"service": service, "ids": sorted(ids)})

    def timeout_s(operation: str) -> float:
        op = config.services[service].operations.get(operation)
        return op.timeout_s if op is not None else 10.0

    done = await replay(
        broker,
        service,
        set(ids),
        reason=None,
        timeout_s=timeout_s,
        on_answer=answer_keeper(config, auditor.store),
    )
    return [
        {"id": r.id, "request_id": r.request_id, "outcome": r.outcome, "left_dlq": r.left_dlq}
        for r in done
    ]


async def purge_letters(
    reloader: ConfigReloader, who: Principal, service: str, ids: Collection[str]
) -> list[str]:
    """Delete the chosen letters for good; returns the ids deleted."""
    require(who, "dlq.purge")
    broker, service = _dlq(reloader), _service(reloader, service)
    await trail(reloader).admin_action(
        "dlq.purge", who.name, {"service": service, "ids": sorted(ids)}
    )
    return [letter.id for letter in await purge(broker, service, set(ids), None)]
