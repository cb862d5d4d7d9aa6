"""Shared fixtures: a RabbitMQ vhost per run, brokers of every kind, loopback helpers."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from bus.broker import Broker, open_broker
from tests.rabbit import TestVhost


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[TestVhost]:
    """A fresh vhost on the real RabbitMQ for this test run."""
    if not _reachable("127.0.0.1", 5672):
        message = "RabbitMQ is not reachable on 127.0.0.1:5672 (the test command starts it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    vhost = TestVhost()
    yield vhost
    vhost.close()


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-memory broker, else an AMQP URL of this run's vhost."""
    if request.param == "memory":
        return None
    vhost: TestVhost = request.getfixturevalue("rabbit_vhost")
    return vhost.url()


@pytest.fixture
async def broker(broker_url: str | None) -> AsyncIterator[Broker]:
    """A connected broker of each kind."""
    b = open_broker(broker_url, name="lgsp-test")
    await b.connect()
    yield b
    await b.aclose()
