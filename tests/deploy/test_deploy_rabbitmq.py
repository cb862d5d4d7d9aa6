"""deploy/rabbitmq/definitions.json says exactly what the bus declares.

Statically: its vhost, exchanges, quorum queues (with their arguments), DLX bindings and
policies equal those rendered from the broker's own topology functions for the compose
routing (``tests/deploy_support.py``; ``python -m tests.support.deploy`` regenerates them).
Live: the bus declares its topology in a fresh vhost of the real RabbitMQ, and RabbitMQ's
own listing of queues, exchanges and bindings matches the file.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from adapters.base import load_routing
from bus.broker import queue_specs
from bus.broker.amqp.broker import AmqpBroker
from tests.support.deploy import (
    COMPOSE_ROUTING,
    DEFINITIONS,
    DEPLOY,
    K8S_ROUTING,
    TOPOLOGY_KEYS,
    VHOST,
    rabbit_password_hash,
    rabbitmq_topology,
)
from tests.support.rabbit import TestVhost


def definitions() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return data


def test_topology_matches_what_the_code_declares() -> None:
    expected = rabbitmq_topology(load_routing(COMPOSE_ROUTING))
    actual = definitions()
    for key in TOPOLOGY_KEYS:
        assert actual[key] == expected[key], (
            f"definitions.json '{key}' differs from the code; regenerate with "
            "`.venv/bin/python -m tests.support.deploy`"
        )
    queues = {q["name"]: q for q in actual["queues"]}
    work = queues["lgsp.svc.civil-status"]["arguments"]
    assert work["x-queue-type"] == "quorum"
    assert work["x-dead-letter-exchange"] == "lgsp.dlx"
    policy_keys = {"x-delivery-limit", "x-max-length", "x-overflow", "x-message-ttl"}
    assert not policy_keys & set(work), "a queue argument would shadow the policy"
    assert not policy_keys & set(queues["lgsp.dlq.civil-status"]["arguments"])
    # Everything broker.* sets is in the policies (queue arguments would shadow them).
    policies = {p["name"]: p["definition"] for p in actual["policies"]}
    assert policies["lgsp-work-queues"]["dead-letter-exchange"] == "lgsp.dlx"
    assert set(policies["lgsp-work-queues"]) == {
        "dead-letter-exchange",
        "delivery-limit",
        "max-length",
        "overflow",
    }
    assert set(policies["lgsp-dead-letter-queues"]) == {"message-ttl"}


def test_one_definitions_file_fits_compose_and_kubernetes() -> None:
    assert queue_specs(load_routing(COMPOSE_ROUTING)) == queue_specs(load_routing(K8S_ROUTING))


def test_users_permissions_and_the_stack_url_agree() -> None:
    defs = definitions()
    users = {u["name"]: u for u in defs["users"]}
    vhosts = {v["name"] for v in defs["vhosts"]}
    for perm in defs["permissions"]:
        assert perm["user"] in users
        assert perm["vhost"] in vhosts
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    url = urlsplit(compose["x-lgsp-env"]["LGSP_AMQP_URL"].split(",")[0])
    assert unquote(url.path.lstrip("/")) == VHOST
    user = users[url.username or ""]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    salt = base64.b64decode(user["password_hash"])[:4]
    assert rabbit_password_hash(url.password or "", salt) == user["password_hash"]
    assert "administrator" not in user["tags"], "the bus's own user is not an admin"


# -- live ---------------------------------------------------------------------------------


def _ctl() -> str:
    return shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def _list(what: str, vhost: str, *items: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_ctl(), "-q", what, "-p", vhost, *items, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def _arguments(raw: Any) -> dict[str, Any]:
    """rabbitmqctl prints arguments as a map or as [name, type, value] lists, by version."""
    if isinstance(raw, dict):
        return raw
    return {item[0]: item[-1] for item in raw}


@pytest.fixture
def fresh_vhost(rabbit_vhost: TestVhost) -> Iterator[TestVhost]:
    """A vhost of its own: the definitions name real service queues."""
    vhost = TestVhost()
    yield vhost
    vhost.close()


@pytest.mark.rabbitmq
async def test_rabbitmq_sees_the_same_topology_after_the_bus_declares(
    fresh_vhost: TestVhost,
) -> None:
    config = load_routing(COMPOSE_ROUTING)
    broker = AmqpBroker(fresh_vhost.url(), name="test-definitions")
    await broker.connect()
    try:
        await broker.declare(queue_specs(config))
    finally:
        await broker.aclose()
    defs = definitions()
    listed = {
        q["name"]: (q["durable"], _arguments(q["arguments"]))
        for q in _list("list_queues", fresh_vhost.name, "name", "durable", "arguments")
    }
    expected = {q["name"]: (q["durable"], q["arguments"]) for q in defs["queues"]}
    assert listed == expected
    exchanges = {
        e["name"]: (e["type"], e["durable"])
        for e in _list("list_exchanges", fresh_vhost.name, "name", "type", "durable")
        if e["name"].startswith("lgsp.")
    }
    assert exchanges == {e["name"]: (e["type"], e["durable"]) for e in defs["exchanges"]}
    bindings = {
        (b["source_name"], b["destination_name"], b["routing_key"])
        for b in _list(
            "list_bindings", fresh_vhost.name, "source_name", "destination_name", "routing_key"
        )
        if b["source_name"].startswith("lgsp.")
    }
    assert bindings == {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    # The bus applied the same policies the file carries (through the management API).
    applied = {
        p["name"]: (p["pattern"], json.loads(p["definition"]))  # a JSON text in the listing
        for p in _list("list_policies", fresh_vhost.name)
    }
    assert applied == {p["name"]: (p["pattern"], p["definition"]) for p in defs["policies"]}
