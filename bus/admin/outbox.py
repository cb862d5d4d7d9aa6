"""``lgsp-bus dlq replay --outbox``: dead sends and events back to their queue.

A dead letter of an outbox queue (``lgsp.dlq.<key>``) is published again to the head
end of its own queue ``lgsp.<key>`` (default exchange, confirmed, then acked in the DLQ),
without our dead-letter headers and with ``x-lgsp-replayed-at-ms``: its ``deliver_within``
clock starts again then, and a ``DEAD`` delivery record lets it through once more. Other
subscribers of the same event are not sent it again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from bus.broker.deadletters import DeadLetterQueue
from bus.broker.outbox import REPLAYED_AT, outbox_queue

__all__ = ["replay_outbox"]

_DEAD_HEADERS = ("x-lgsp-dead-", "x-lgsp-last-error", "x-death", "x-first-death", "x-last-death")


class OutboxBroker(DeadLetterQueue, Protocol):
    """What replay needs of a broker: its DLQ operations and ``publish``."""

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        message_id: str,
        mandatory: bool,
    ) -> None:
        """The broker's own confirmed ``publish``."""


async def replay_outbox(
    broker: OutboxBroker, key: str, ids: Collection[str] | None, reason: str | None
) -> list[str]:
    """Requeue the selected dead letters of outbox ``key``; their ids."""
    replayed: list[str] = []
    async with broker.dead_letters_claim(key) as held:
        for claimed in held:
            letter = claimed.letter
            if (ids is not None and letter.id not in ids) or (
                reason is not None and letter.reason != reason
            ):
                continue
            headers = {k: v for k, v in letter.headers.items() if not k.startswith(_DEAD_HEADERS)}
            headers[REPLAYED_AT] = round(time.time() * 1000)
            await broker.publish(
                "",
                outbox_queue(key),
                letter.body,
                headers,
                message_id=letter.correlation_id or letter.id,
                mandatory=True,
            )
            await claimed.ack()
            replayed.append(letter.id)
    return replayed
