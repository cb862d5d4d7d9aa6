"""A throw-away RabbitMQ vhost per test run, so runs never collide and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from urllib.parse import quote

__all__ = ["TestVhost"]


class TestVhost:
    """Creates ``lgsp-test-<random>`` with full permissions for guest; deletes it on close."""

    __test__ = False

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.name = f"lgsp-test-{uuid.uuid4().hex[:10]}"
        self.host = host
        self.port = port
        self.user = os.environ.get("LGSP_TEST_AMQP_USER", "guest")
        self.password = os.environ.get("LGSP_TEST_AMQP_PASSWORD", "guest")
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        self._ctl = ctl
        self._run("add_vhost", self.name)
        self._run("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def _run(self, *args: str) -> None:
        subprocess.run([self._ctl, "-q", *args], check=True, capture_output=True, timeout=60)

    def url(self, host: str | None = None, port: int | None = None) -> str:
        """AMQP URL of the vhost (optionally through a proxy at host:port)."""
        return (
            f"amqp://{self.user}:{self.password}@{host or self.host}:{port or self.port}/"
            f"{quote(self.name, safe='')}"
        )

    def close(self) -> None:
        """Delete the vhost and everything in it."""
        self._run("delete_vhost", self.name)
