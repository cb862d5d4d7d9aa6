"""Changing ``broker.*`` never bricks a worker: the settings are policies, applied in place.

On the real RabbitMQ (a vhost per test): a declare with other limits succeeds and the
running queue takes them on; a queue left by an older bus (limits as queue arguments) is
one line saying what differs and how to migrate — from the API and from ``lgsp-bus worker``
(exit 2, no traceback).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from bus.broker.amqp.broker import AmqpBroker
from bus.broker.base import QueueSpec, TopologyConflict, queue_name
from tests.support.paths import REPO
from tests.support.rabbit import TestVhost

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def vhost(rabbit_vhost: TestVhost) -> Iterator[TestVhost]:
    """A vhost of its own (policies are vhost-wide)."""
    fresh = TestVhost()
    yield fresh
    fresh.close()


def _ctl(*args: str) -> list[dict[str, Any]]:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    out = subprocess.run(
        [ctl, "-q", *args, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def _effective(vhost: TestVhost, queue: str) -> dict[str, Any]:
    """The definition of the policy RabbitMQ applies to ``queue``."""
    applied = {
        r["name"]: r["policy"] for r in _ctl("list_queues", "-p", vhost.name, "name", "policy")
    }
    policies = {r["name"]: r["definition"] for r in _ctl("list_policies", "-p", vhost.name)}
    definition = policies[applied[queue]]
    return dict(json.loads(definition) if isinstance(definition, str) else definition)


async def _declared(vhost: TestVhost, spec: QueueSpec) -> None:
    broker = AmqpBroker(vhost.url(), name="test-topology")
    await broker.connect()
    try:
        await broker.declare([spec])
    finally:
        await broker.aclose()


async def test_changed_broker_settings_are_applied_to_the_running_queue(vhost: TestVhost) -> None:
    await _declared(vhost, QueueSpec("civil-status", delivery_limit=5, max_length=10_000))
    before = _effective(vhost, queue_name("civil-status"))
    assert (before["delivery-limit"], before["max-length"]) == (5, 10_000)
    # The operator changes broker.delivery_limit 5 → 8 and restarts: no conflict.
    await _declared(vhost, QueueSpec("civil-status", delivery_limit=8, max_length=500))
    after = _effective(vhost, queue_name("civil-status"))
    assert (after["delivery-limit"], after["max-length"]) == (8, 500)
    assert after["overflow"] == "reject-publish"
    assert after["dead-letter-exchange"] == "lgsp.dlx"
    assert _effective(vhost, "lgsp.dlq.civil-status")["message-ttl"] == 14 * 24 * 3600 * 1000


async def _old_style_queue(vhost: TestVhost, service: str) -> None:
    """The queue as an older bus declared it: every limit as a queue argument."""
    connection = await aio_pika.connect(vhost.url())
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            queue_name(service),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 5,
                "x-max-length": 10_000,
                "x-overflow": "reject-publish",
                "x-dead-letter-exchange": "lgsp.dlx",
                "x-dead-letter-routing-key": service,
            },
        )


async def test_a_queue_left_with_old_arguments_is_one_line_on_how_to_migrate(
    vhost: TestVhost,
) -> None:
    await _old_style_queue(vhost, "civil-status")
    with pytest.raises(TopologyConflict) as info:
        await _declared(vhost, QueueSpec("civil-status"))
    message = str(info.value)
    assert "\n" not in message
    assert "lgsp.svc.civil-status" in message
    assert "inequivalent arg" in message  # what differs, in RabbitMQ's words
    assert f"rabbitmqctl delete_queue -p {vhost.name} lgsp.svc.civil-status" in message


async def test_the_worker_command_exits_2_with_that_line(vhost: TestVhost, tmp_path: Path) -> None:
    await _old_style_queue(vhost, "civil-status")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bus.cli.main",
        "worker",
        "--config",
        str(REPO / "routing.yaml"),
        "--http-port",
        "-1",
        "--no-watch",
        env={**os.environ, "LGSP_AMQP_URL": vhost.url()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    (line,) = [line for line in text.splitlines() if "refused to declare queue" in line]
    assert "delete_queue" in line
