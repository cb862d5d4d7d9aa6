"""Scheduled pulls (``sources:`` in routing.yaml): poll an upstream list every ``every_s``,
turn each item not seen before into an event, remember it.

One round: call ``service.list_operation`` (through the worker's request handler: the
adapter, its retries and breaker, as the source's ``consumer``), take the list at
``items``, and for each item whose ``item_id`` the store has not seen: fetch it with
``get_operation`` (if set), map it to an event (``mapping``), publish it (confirmed) and
only then mark it seen. The event_id is derived from source and item id (UUID v5), so a
crash between publish and mark publishes the *same* event again — a subscriber that dedupes
by event_id sees it once. A failed round (upstream down) is logged and tried again next
round; an item that cannot be fetched or mapped is skipped this round and tried again.

Limits: every worker process runs every source (N workers poll N times; the seen-set
makes that harmless but not free) — run sources on one worker (``lgsp-bus worker`` with
the sources) in production; an upstream list is read whole each round (no paging).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from bus.audit.chain import subject_key
from bus.broker.base import Broker, Handler
from bus.broker.outbox import EVENT_TYPE, EVENTS_EXCHANGE, PUBLISHED_AT, PUBLISHER, partition
from bus.config import RoutingConfig
from bus.config.delivery import SourceConfig, dotted_get
from bus.envelope import Request
from bus.store.base import Store

__all__ = ["MAPPINGS", "SourcePoller", "ltks_dossier"]

log = structlog.get_logger("bus.delivery.sources")

_CHANGES = {"KS": "BIRTH_REGISTERED", "KT": "DEATH_REGISTERED"}
_ID_FIELDS = {"KS": "nksSoDinhDanh", "KT": "nktSoDinhDanh"}


def _iso(moj_date: str) -> str | None:
    """``dd/MM/yyyy`` → RFC 3339 midnight UTC+7, else ``None``."""
    try:
        day = datetime.strptime(moj_date, "%d/%m/%Y")
    except (TypeError, ValueError):
        return None
    return day.strftime("%Y-%m-%dT00:00:00+07:00")


def ltks_dossier(
    detail: dict[str, Any], event_id: str, key: bytes, event_type: str
) -> dict[str, Any] | None:
    """An MOJ interlinked dossier (``dossier`` in the get answer) as ``citizen.record.changed``;
    ``None`` if it is not a birth/death dossier naming its subject's ID."""
    dossier = detail.get("dossier")
    if not isinstance(dossier, dict):
        return None
    module = dossier.get("module")
    record = dotted_get(dossier, "data.hoTich") or {}
    id_number = record.get(_ID_FIELDS.get(str(module), ""), "") if isinstance(record, dict) else ""
    if module not in _CHANGES or not isinstance(id_number, str) or not id_number:
        return None
    event: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": "1.0.0",
        "occurred_at": _iso(str(record.get("ngayDangKy"))) or _now(),
        "source": "MOJ_CIVIL_STATUS",
        "subject": {"personal_id_hmac": subject_key(key, id_number)},
        "change_type": _CHANGES[str(module)],
        "changed_fields": [],
        "record_version": 1,
        "cause_ref": str(dossier.get("maHoSo", ""))[:64],
    }
    return event


Mapping = Callable[[dict[str, Any], str, bytes, str], "dict[str, Any] | None"]
MAPPINGS: dict[str, Mapping] = {"ltks_dossier": ltks_dossier}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class SourcePoller:
    """One scheduled pull."""

    def __init__(
        self,
        name: str,
        config: RoutingConfig,
        store: Store,
        broker: Broker,
        handler: Handler,
        key: bytes,
    ) -> None:
        self.name, self.config, self.store = name, config, store
        self.broker, self.handler, self.key = broker, handler, key
        self.src: SourceConfig = config.sources[name]
        self.stream = f"source:{name}"

    async def _call(self, operation: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        op = self.config.services[self.src.service].operations[operation]
        rid = uuid.uuid4().hex
        reply = await self.handler(
            Request(
                request_id=rid,
                service=self.src.service,
                operation=operation,
                consumer=self.src.consumer,
                correlation_id=rid,
                deadline=time.time() + op.timeout_s,
                body={"request_id": rid, **fields},
            )
        )
        if reply.error is not None:
            log.warning("source.call_failed", source=self.name, code=reply.error.get("code"))
            return None
        return dict(reply.body or {})

    async def poll_once(self) -> int:
        """One round; how many new events it published."""
        listed = await self._call(self.src.list_operation, {})
        items = dotted_get(listed, self.src.items) if listed is not None else None
        if not isinstance(items, list):
            return 0
        published = 0
        for item in items:
            item_id = dotted_get(item, self.src.item_id)
            if item_id is None or await self.store.source_seen(self.stream, str(item_id)):
                continue
            detail = item
            if self.src.get_operation is not None:
                detail = await self._call(self.src.get_operation, {"id": str(item_id)})
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"lgsp:{self.name}:{item_id}"))
            mapping = MAPPINGS[self.src.mapping]
            event = mapping(detail, event_id, self.key, self.src.event) if detail else None
            if event is None:
                log.warning("source.item_skipped", source=self.name)
                continue
            await self._publish(event)
            await self.store.source_mark(self.stream, str(item_id))
            published += 1
        return published

    async def _publish(self, event: dict[str, Any]) -> None:
        now = time.time()
        event["published_at"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        declared = self.config.events[self.src.event]
        order = dotted_get(event, declared.order_by) if declared.order_by else None
        p = partition(
            order if order is not None else event["event_id"], self.config.delivery.partitions
        )
        headers = {
            EVENT_TYPE: self.src.event,
            PUBLISHER: f"source:{self.name}",
            PUBLISHED_AT: round(now * 1000),
        }
        await self.broker.publish(
            EVENTS_EXCHANGE,
            f"{self.src.event}.{p}",
            orjson.dumps(event),
            headers,
            message_id=event["event_id"],
            mandatory=False,
        )
        log.info("source.published", source=self.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``every_s`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # the next round tries again
                log.warning("source.round_failed", source=self.name, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.src.every_s)
