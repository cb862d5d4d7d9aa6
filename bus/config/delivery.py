"""Models of ``routing.yaml``'s one-way parts: redelivery, event types, subscriptions,
scheduled pulls (sources), and the delivery topology settings.

* an operation with ``mode: send`` is a one-way send (:class:`~bus.config.models.
  OperationConfig` holds ``mode``, ``deliver_within_s``, ``order_by``, ``redelivery``);
* ``events:`` declares event types, each with a JSON Schema (checked when the config loads:
  it must itself be a valid schema) and an optional ``order_by`` path;
* ``consumers.<c>.publish`` lists the types a consumer may publish, ``consumers.<c>.
  subscriptions`` what it receives (webhook or pull);
* ``sources:`` polls an upstream operation on a schedule and turns new items into events.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "EVENT_TYPE_RE",
    "DeliverySettings",
    "EventType",
    "Redelivery",
    "SourceConfig",
    "Subscription",
    "dotted_get",
    "is_loopback",
]

EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,4}$")
_PATH_RE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
_SECRET_RE = r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$"  # noqa: S105 - a pattern, no secret
DAY_S = 86_400.0


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback IP address."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dotted_get(data: Any, path: str) -> Any:
    """The value at ``a.b.c`` in nested dicts, ``None`` if any step is missing."""
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema (2020-12): {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError('an event schema must have "type": "object"')
    return schema


DottedPath = Annotated[str, Field(pattern=_PATH_RE)]


class Redelivery(_Model):
    """Spacing of delivery attempts of a one-way send or an event (exponential backoff)."""

    initial_s: float = Field(1.0, gt=0, le=3600, description="wait after the first failure")
    max_s: float = Field(300.0, gt=0, le=6 * 3600, description="cap on one wait")
    factor: float = Field(2.0, ge=1, le=10)

    @model_validator(mode="after")
    def _order(self) -> Redelivery:
        if self.initial_s > self.max_s:
            raise ValueError("initial_s must not exceed max_s")
        return self

    def wait_s(self, failures: int) -> float:
        """The wait after the ``failures``-th failed attempt (1-based)."""
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1)))


class EventType(_Model):
    """One event type the bus carries (``POST /v1/events/<type>``)."""

    description: str = ""
    schema_: Annotated[dict[str, Any], AfterValidator(_check_schema)] = Field(
        alias="schema", description="JSON Schema (2020-12) every event of this type must pass"
    )
    order_by: DottedPath | None = Field(
        None, description="events with the same value here reach each subscriber in order"
    )
    max_bytes: int = Field(16 * 1024, ge=256, le=1024 * 1024, description="largest event body")
    sensitive_fields: list[DottedPath] = Field(
        default_factory=list,
        description="fields delivered only to subscriptions that list them in fields",
    )

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Subscription(_Model):
    """What a consumer receives: events of some types, by webhook or by pulling."""

    kind: Literal["webhook", "pull"]
    events: list[Annotated[str, Field(pattern=EVENT_TYPE_RE.pattern)]] = Field(min_length=1)
    url: str | None = Field(None, description="webhook: where each event is POSTed")
    secret: Annotated[str, Field(pattern=_SECRET_RE)] | None = Field(
        None, description="webhook: HMAC-SHA256 signing secret (env:NAME or file:PATH)"
    )
    allow_plain_http: bool = Field(False, description="permit http:// to a loopback URL (tests)")
    fields: list[DottedPath] | None = Field(
        None,
        description="fields of the event this subscriber gets (dotted paths); unset: every "
        "field not marked sensitive by the event type",
    )
    deliver_within_s: float = Field(
        3 * DAY_S, ge=1, le=30 * DAY_S, description="after this, an undelivered event is dead"
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="webhook: bound on one POST")
    redelivery: Redelivery = Redelivery()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an absolute https:// URL")
        return value

    @model_validator(mode="after")
    def _kind(self) -> Subscription:
        if self.kind == "webhook":
            if self.url is None or self.secret is None:
                raise ValueError("a webhook subscription needs url and secret")
            parts = urlsplit(self.url)
            if parts.scheme != "https" and not (
                self.allow_plain_http and is_loopback(parts.hostname)
            ):
                raise ValueError(
                    "webhook URL must be https:// (plain http:// only to a loopback address "
                    "with allow_plain_http: true)"
                )
        elif self.url is not None or self.secret is not None:
            raise ValueError("a pull subscription has no url or secret")
        return self


class SourceConfig(_Model):
    """A scheduled pull: call ``service.list_operation`` every ``every_s``, fetch each new
    item with ``get_operation`` (if given) and publish it as an event of type ``event``."""

    service: str
    list_operation: str
    get_operation: str | None = None
    consumer: str = Field(description="the consumer the bus calls as (its grants apply)")
    every_s: float = Field(60.0, ge=1, le=DAY_S)
    items: DottedPath = Field("items", description="where the list reply holds the items")
    item_id: DottedPath = Field("id", description="the field that names an item")
    event: Annotated[str, Field(pattern=EVENT_TYPE_RE.pattern)]
    mapping: Literal["ltks_dossier"] = Field(
        description="how an item becomes an event: ltks_dossier (an MOJ interlinked "
        "birth/death dossier → citizen.record.changed)"
    )


class DeliverySettings(_Model):
    """Topology of one-way sends and event subscriptions."""

    partitions: int = Field(
        4,
        ge=1,
        le=64,
        description="sub-queues of every ordered send route and every subscription: keys "
        "in different partitions never wait on each other",
    )
    prefetch: int = Field(
        16, ge=1, le=1000, description="deliveries in flight per unordered send queue"
    )
