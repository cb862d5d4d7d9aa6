"""Dead letters: what a message in ``lgsp.dlq.<service>`` is, why it is there, and the
operations both brokers offer on a DLQ (for ``lgsp-bus dlq``, see :mod:`bus.admin.deadletters`).

A message reaches the DLQ three ways, and its headers say which:

* ``rejected`` — it could not be decoded (a poison message); the worker dead-letters it
  itself with ``x-lgsp-dead-reason``, ``x-lgsp-dead-attempts``, ``x-lgsp-last-error``,
  ``x-lgsp-dead-at`` (epoch ms) and ``x-lgsp-dead-id``;
* ``delivery_limit`` — it was delivered ``delivery_limit`` times without being answered
  (the handler failed, or the worker holding it died); the worker dead-letters it with the
  same headers on the next delivery, and RabbitMQ's own ``x-delivery-limit`` is the
  backstop (then only RabbitMQ's ``x-death`` headers say so);
* ``expired`` — its deadline passed while it waited in the queue (RabbitMQ, ``x-death``).

Parsing is pure, so both brokers and the CLI read headers the same way.

Dead letters the worker copies are sealed at rest (:func:`seal_letter`, the broker's
``keyring``): the body and the ``x-lgsp-officer`` header are AES-GCM under the first key,
bound to the service and the dead-letter id, ``x-lgsp-sealed`` names the key. Both
brokers open them when a DLQ operation holds them (:func:`opened`), so ``show --reveal``
and ``replay`` work as before; a letter that does not open (a key no longer configured)
stays sealed: ``show`` gives its size only and ``replay`` reports ``NOT_REPLAYABLE``.
Messages RabbitMQ dead-letters itself (``expired``, the ``x-delivery-limit`` backstop)
keep the body they were published with.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bus.canonical import new_id
from bus.logs import mask_pii
from bus.sealing import Keyring

__all__ = [
    "MAX_SCAN",
    "ClaimedLetter",
    "DeadLetter",
    "DeadLetterQueue",
    "Keyring",
    "dead_letter_from",
    "dead_letter_headers",
    "opened",
    "scrub_error",
    "seal_letter",
    "sealed_letter",
]

MAX_SCAN = 10_000
"""Most messages one DLQ operation takes hold of at once (they sit unacknowledged)."""
MAX_ERROR_CHARS = 500

_H = "x-lgsp-"
_OURS = ("dead-reason", "dead-attempts", "last-error", "dead-at", "dead-id", "sealed")
SEALED = _H + "sealed"
"""Header naming the at-rest key a dead letter is sealed under."""
_OFFICER = _H + "officer"
_SEALED_OFFICER = _H + "sealed-officer"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in a DLQ, with why it is there."""

    id: str
    """Stable handle for ``show``/``replay``/``purge``: our dead-letter id, else the
    correlation id, else a hash of the message."""
    service: str
    body: bytes
    headers: dict[str, Any]
    correlation_id: str | None
    reason: str
    """``rejected``, ``delivery_limit``, ``expired`` or RabbitMQ's reason."""
    attempts: int
    """Deliveries before it was dead-lettered."""
    last_error: str
    dead_at: float | None
    """Epoch seconds, when known."""

    @property
    def operation(self) -> str | None:
        """The operation it was sent to, when its headers say."""
        return _text(self.headers.get(_H + "operation"))

    @property
    def request_id(self) -> str | None:
        """The caller's request id, when its headers say."""
        return _text(self.headers.get(_H + "request-id"))

    @property
    def consumer(self) -> str | None:
        """The calling system, when its headers say."""
        return _text(self.headers.get(_H + "consumer"))


@dataclass(frozen=True, slots=True)
class ClaimedLetter:
    """A dead letter held by one DLQ operation; ``ack`` removes it from the DLQ for good."""

    letter: DeadLetter
    ack: Callable[[], Awaitable[None]]


class DeadLetterQueue(Protocol):
    """The DLQ operations a broker offers (both brokers implement them)."""

    def dead_letters_claim(
        self, service: str, *, limit: int = MAX_SCAN
    ) -> AbstractAsyncContextManager[list[ClaimedLetter]]:
        """Hold up to ``limit`` dead letters of ``service`` (oldest first); those not acked
        inside the block return to the DLQ when it ends."""
        ...

    async def dead_letters_purge(self, service: str) -> int:
        """Delete every dead letter of ``service``; returns how many."""
        ...


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes) and (text := _text(value)) and text.isdigit():
        return int(text)
    return None


def _when(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    number = _int(value)
    return None if number is None else float(number)


def scrub_error(text: str) -> str:
    """An error text safe to keep in a header: ID numbers masked, length capped."""
    masked = str(mask_pii(None, "", {"e": text})["e"])
    return masked[:MAX_ERROR_CHARS]


def dead_letter_headers(
    headers: Mapping[str, Any], reason: str, error: str, attempts: int, *, now: float | None = None
) -> dict[str, Any]:
    """``headers`` plus ours saying why the message is dead (and no stale ones)."""
    out = {k: v for k, v in headers.items() if not k.startswith(tuple(_H + o for o in _OURS))}
    out.update(
        {
            _H + "dead-reason": reason,
            _H + "dead-attempts": attempts,
            _H + "last-error": scrub_error(error),
            _H + "dead-at": round((time.time() if now is None else now) * 1000),
            _H + "dead-id": new_id(),
        }
    )
    return out


def _x_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]  # RabbitMQ puts the most recent death first
    return None


def dead_letter_from(
    service: str, body: bytes, headers: Mapping[str, Any], correlation_id: str | None
) -> DeadLetter:
    """Read a DLQ message: our headers first, RabbitMQ's ``x-death`` otherwise."""
    plain = dict(headers)
    death = _x_death(plain)
    reason = _text(plain.get(_H + "dead-reason"))
    if reason is None:
        reason = _text(death.get("reason")) if death else None
        reason = reason or _text(plain.get("x-first-death-reason")) or "unknown"
    attempts = _int(plain.get(_H + "dead-attempts"))
    if attempts is None:
        attempts = _int(plain.get("x-delivery-count")) or 0
    last_error = _text(plain.get(_H + "last-error"))
    if last_error is None:
        last_error = {
            "expired": "its deadline passed while it waited in the queue",
            "delivery_limit": "delivered too often without an answer",
        }.get(reason, "dead-lettered by the broker")
    dead_at = _when(plain.get(_H + "dead-at"))
    if dead_at is not None:
        dead_at /= 1000
    elif death is not None:
        dead_at = _when(death.get("time"))
    letter_id = _text(plain.get(_H + "dead-id")) or correlation_id
    if not letter_id:
        letter_id = hashlib.sha256(body).hexdigest()[:32]
    return DeadLetter(
        id=letter_id,
        service=service,
        body=body,
        headers=plain,
        correlation_id=correlation_id,
        reason=reason,
        attempts=attempts,
        last_error=last_error,
        dead_at=dead_at,
    )


def seal_letter(
    keyring: Keyring | None, service: str, headers: dict[str, Any], body: bytes
) -> tuple[dict[str, Any], bytes]:
    """A dead letter's headers (from :func:`dead_letter_headers`) and body, sealed: the body
    and the officer header, bound to ``service`` and the letter's id; as they are without
    a keyring."""
    if keyring is None:
        return headers, body
    context = ("dlq", service, str(headers[_H + "dead-id"]))
    out = {k: v for k, v in headers.items() if k != _OFFICER}
    officer = _text(headers.get(_OFFICER))
    if officer is not None:
        _, sealed_officer = keyring.seal((*context, "officer"), officer.encode())
        out[_SEALED_OFFICER] = base64.b64encode(sealed_officer).decode()
    key_id, sealed = keyring.seal(context, body)
    out[SEALED] = key_id
    return out, sealed


def opened(keyring: Keyring | None, letter: DeadLetter) -> DeadLetter:
    """``letter`` with its body and officer opened, as it was before :func:`seal_letter`;
    as it is if it was not sealed or does not open here."""
    key_id = _text(letter.headers.get(SEALED))
    if key_id is None or keyring is None:
        return letter
    context = ("dlq", letter.service, letter.id)
    body = keyring.open(key_id, context, letter.body)
    if body is None:
        return letter
    headers = {k: v for k, v in letter.headers.items() if k not in (SEALED, _SEALED_OFFICER)}
    officer = _text(letter.headers.get(_SEALED_OFFICER))
    if officer is not None:
        try:
            plain = keyring.open(key_id, (*context, "officer"), base64.b64decode(officer))
        except binascii.Error:
            plain = None
        if plain is not None:
            headers[_OFFICER] = plain.decode("utf-8", "replace")
    return dataclasses.replace(letter, body=body, headers=headers)


def sealed_letter(
    keyring: Keyring | None, service: str, body: bytes, headers: dict[str, Any], cid: str | None
) -> DeadLetter:
    """The dead letter of ``body`` with ``headers`` (from :func:`dead_letter_headers`), sealed."""
    headers, body = seal_letter(keyring, service, headers, body)
    return dead_letter_from(service, body, headers, cid)
