"""``broker.urls``: the nodes of a RabbitMQ cluster, and what the processes connect to."""

from __future__ import annotations

import pytest

from adapters.base import parse_routing
from bus.broker import amqp_address
from bus.broker.amqp.failover import split_urls
from bus.broker.base import QueueSpec, dlq_arguments, queue_arguments
from bus.config import ConfigError


def test_urls_with_a_password_reference_and_env_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_routing(
        {
            "version": 1,
            "broker": {
                "urls": [
                    "amqp://lgsp@rabbit-0:5672/lgsp",
                    "amqp://rabbit-1:5672/lgsp",  # no user: left as it is
                    "env:T_NODE_URL",
                ],
                "password": "env:T_AMQP_PASSWORD",
            },
        }
    )
    monkeypatch.setenv("T_AMQP_PASSWORD", "p,w@d")
    monkeypatch.setenv("T_NODE_URL", "amqp://u:x@rabbit-2/lgsp")
    address = amqp_address(config, {})
    assert address is not None
    assert split_urls(address) == [
        "amqp://lgsp:p%2Cw%40d@rabbit-0:5672/lgsp",
        "amqp://rabbit-1:5672/lgsp",
        "amqp://u:x@rabbit-2/lgsp",
    ]
    # LGSP_AMQP_URL, when set, wins (one URL or several separated by commas).
    assert amqp_address(config, {"LGSP_AMQP_URL": "amqp://a/,amqp://b/"}) == "amqp://a/,amqp://b/"
    assert amqp_address(parse_routing({"version": 1}), {}) is None  # in-memory


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://u:secret@rabbit-0/lgsp", "inline secrets"),
        ("http://rabbit-0/", "amqp://"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_routing({"version": 1, "broker": {"urls": [url]}})


def test_quorum_group_size_sets_the_replicas_of_both_queues() -> None:
    spec = QueueSpec("svc", quorum_group_size=3)
    assert queue_arguments(spec)["x-quorum-initial-group-size"] == 3
    assert dlq_arguments(spec)["x-quorum-initial-group-size"] == 3
    assert "x-quorum-initial-group-size" not in queue_arguments(QueueSpec("svc"))
