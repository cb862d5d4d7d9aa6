"""routing.yaml's one-way parts: what a config with events, subscriptions and sends must
say, and the error it gets otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import parse_routing
from bus.broker.outbox import outbox_specs
from bus.config import ConfigError
from bus.config.delivery import Redelivery

SCHEMA = {
    "type": "object",
    "required": ["event_id"],
    "properties": {"event_id": {"type": "string"}},
}


def cfg(sub: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    consumer: dict[str, Any] = {"publish": ["a.changed"]}
    if sub is not None:
        consumer["subscriptions"] = {"main": sub}
    return {
        "version": 1,
        "events": {"a.changed": {"schema": SCHEMA}},
        "consumers": {"c": consumer},
        **extra,
    }


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "webhook", "events": ["a.changed"], "url": url, "secret": "env:X", **extra}


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_routing(data)
    return str(caught.value)


def test_webhook_urls_must_be_https_outside_loopback() -> None:
    assert "must be https://" in refused(cfg(hook("http://subscriber.example/hook")))
    assert "must be https://" in refused(cfg(hook("http://10.0.0.5/hook", allow_plain_http=True)))
    assert "must be https://" in refused(cfg(hook("http://127.0.0.1:9/hook")))  # not allowed
    parse_routing(cfg(hook("http://127.0.0.1:9/hook", allow_plain_http=True)))
    parse_routing(cfg(hook("https://subscriber.example/hook")))


def test_subscription_kinds_say_what_they_need() -> None:
    assert "needs url and secret" in refused(cfg({"kind": "webhook", "events": ["a.changed"]}))
    pull = {"kind": "pull", "events": ["a.changed"], "url": "https://x.example/"}
    assert "has no url or secret" in refused(cfg(pull))
    assert "secret" in refused(cfg(hook("https://x.example/", secret="s3cret")))


def test_names_of_event_types_must_be_declared_and_valid() -> None:
    assert "unknown event type 'b.changed'" in refused(
        cfg({"kind": "pull", "events": ["b.changed"]})
    )
    data = cfg()
    data["consumers"]["c"]["publish"] = ["b.changed"]
    assert "publish names unknown event type" in refused(data)
    data = cfg()
    data["events"] = {"Nodots": {"schema": SCHEMA}}
    data["consumers"]["c"]["publish"] = []
    assert "not a valid event type name" in refused(data)


def test_an_event_schema_must_be_a_valid_object_schema() -> None:
    data = cfg()
    data["events"]["a.changed"]["schema"] = {"type": "object", "required": "event_id"}
    assert "not a valid JSON Schema" in refused(data)
    data["events"]["a.changed"]["schema"] = {"type": "array"}
    assert '"type": "object"' in refused(data)


def test_reserved_service_names() -> None:
    data = cfg(
        upstreams={"u": {"url": "https://u.example/"}},
        services={"events": {"adapter": "rest", "upstream": "u", "operations": {"x": {}}}},
    )
    assert "reserved" in refused(data)


def test_outbox_topology_follows_the_config() -> None:
    data = cfg(
        {
            "kind": "webhook",
            "events": ["a.changed"],
            "url": "https://h.example/",
            "secret": "env:X",
        },
        delivery={"partitions": 3},
    )
    data["consumers"]["p"] = {"subscriptions": {"log": {"kind": "pull", "events": ["a.changed"]}}}
    specs = {s.key: s for s in outbox_specs(parse_routing(data))}
    assert sorted(specs) == ["sub.c.main.0", "sub.c.main.1", "sub.c.main.2", "sub.p.log.0"]
    assert specs["sub.c.main.1"].bindings == (("lgsp.events", "a.changed.1"),)
    assert {b for _, b in specs["sub.p.log.0"].bindings} == {f"a.changed.{p}" for p in range(3)}
    assert all(s.ordered for s in specs.values())


def test_redelivery_backs_off_up_to_its_cap() -> None:
    policy = Redelivery(initial_s=1, max_s=10, factor=3)
    assert [policy.wait_s(n) for n in range(1, 5)] == [1, 3, 9, 10]
    with pytest.raises(ValueError, match="initial_s"):
        Redelivery(initial_s=5, max_s=1)


def test_a_source_names_what_exists() -> None:
    data = cfg(
        sources={
            "s": {
                "service": "nope",
                "list_operation": "list",
                "consumer": "ghost",
                "event": "b.changed",
                "mapping": "ltks_dossier",
            }
        }
    )
    text = refused(data)
    assert "unknown service 'nope'" in text
    assert "unknown event type 'b.changed'" in text
    assert "unknown consumer 'ghost'" in text
