"""What the files under ``deploy/`` must say, derived from the code (not copied from it).

``rabbitmq_topology`` renders the RabbitMQ definitions of a routing config from the same
functions the AMQP broker declares and applies with (``queue_arguments``,
``dlq_arguments``, ``queue_policies``, the exchange and queue names), so
``deploy/rabbitmq/definitions.json`` can be compared with — or regenerated from — what the
bus really declares::

    .venv/bin/python -m tests.support.deploy    # rewrite the topology, keep the users
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sys
from typing import Any

import orjson
import pytest

from adapters.base import load_routing
from bus.broker.base import (
    DLX,
    REQUESTS_EXCHANGE,
    QueuePolicy,
    dlq_arguments,
    dlq_name,
    queue_arguments,
    queue_name,
    queue_policies,
    queue_specs,
)
from bus.config import RoutingConfig
from tests.support.paths import REPO

__all__ = [
    "COMPOSE_ROUTING",
    "DEFINITIONS",
    "DEPLOY",
    "K8S_ROUTING",
    "TOPOLOGY_KEYS",
    "VHOST",
    "debian_tool",
    "rabbit_password_hash",
    "rabbitmq_topology",
]

ROOT = REPO
DEPLOY = ROOT / "deploy"
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"
COMPOSE_ROUTING = DEPLOY / "compose" / "routing.yaml"
K8S_ROUTING = DEPLOY / "k8s" / "routing.yaml"
VHOST = "lgsp"
TOPOLOGY_KEYS = ("vhosts", "exchanges", "queues", "bindings", "policies")


def _policy(policy: QueuePolicy) -> dict[str, Any]:
    """A policy of the broker's own (:func:`bus.broker.base.queue_policies`) as definitions."""
    return {
        "vhost": VHOST,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to,
        "priority": policy.priority,
        "definition": dict(sorted(policy.definition.items())),
    }


def rabbitmq_topology(config: RoutingConfig) -> dict[str, Any]:
    """Vhost, exchanges, queues, bindings and policies the bus declares for ``config``."""
    specs = queue_specs(config)
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for spec in specs:
        for name, arguments in (
            (queue_name(spec.service), queue_arguments(spec)),
            (dlq_name(spec.service), dlq_arguments(spec)),
        ):
            queues.append(
                {
                    "name": name,
                    "vhost": VHOST,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": dict(sorted(arguments.items())),
                }
            )
        for source, destination, key in (
            (REQUESTS_EXCHANGE, queue_name(spec.service), f"{spec.service}.*"),
            (DLX, dlq_name(spec.service), spec.service),
        ):
            bindings.append(
                {
                    "source": source,
                    "vhost": VHOST,
                    "destination": destination,
                    "destination_type": "queue",
                    "routing_key": key,
                    "arguments": {},
                }
            )
    exchange = {"vhost": VHOST, "durable": True, "auto_delete": False, "internal": False}
    # Every service shares the broker settings, so one policy per queue family fits all.
    policies = [_policy(p) for p in queue_policies(specs[0])] if specs else []
    return {
        "vhosts": [{"name": VHOST, "metadata": {"description": "lgsp-bus", "tags": []}}],
        "exchanges": [
            {"name": REQUESTS_EXCHANGE, "type": "topic", **exchange, "arguments": {}},
            {"name": DLX, "type": "direct", **exchange, "arguments": {}},
        ],
        "queues": queues,
        "bindings": bindings,
        "policies": policies,
    }


def rabbit_password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + pw))."""
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def debian_tool(command: str, package: str) -> str:
    """The path of ``command`` (Debian package ``package``; ``./test`` installs it when it
    can); skips the test without it, fails it in CI."""
    path = shutil.which(command)
    if path is None:
        message = (
            f"{command} is not installed (apt-get install --no-install-recommends {package}; "
            "./test does it when run as root)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def main() -> int:
    """Rewrite the topology of definitions.json from the compose routing; keep its users."""
    current = orjson.loads(DEFINITIONS.read_bytes())
    current.update(rabbitmq_topology(load_routing(COMPOSE_ROUTING)))
    DEFINITIONS.write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {DEFINITIONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
