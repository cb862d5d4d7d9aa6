"""A RabbitMQ vhost for one benchmark run (``lgsp-bench-<random>``), deleted after it.

Like ``tests/rabbit.py``, through ``rabbitmqctl`` on the local node, so the run needs no
management plugin. A run killed with SIGKILL leaves its vhost behind; the name says whose
it is (``rabbitmqctl list_vhosts``, then ``delete_vhost``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from urllib.parse import quote

__all__ = ["BenchVhost", "rabbitmq_version"]


def _ctl() -> str:
    return shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


async def _run(*args: str, timeout_s: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        _ctl(),
        "-q",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"rabbitmqctl {args[0]} timed out") from None
    if proc.returncode:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {err.decode(errors='replace')[-300:]}")
    return out.decode(errors="replace")


async def rabbitmq_version() -> str:
    """The local RabbitMQ's version (empty if it cannot be read)."""
    try:
        return (await _run("version", timeout_s=30)).strip()
    except (RuntimeError, OSError):
        return ""


class BenchVhost:
    """Create with :meth:`create`, remove with :meth:`delete` (idempotent)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.name = f"lgsp-bench-{uuid.uuid4().hex[:10]}"
        self.host, self.port = host, port
        self.user = os.environ.get("LGSP_TEST_AMQP_USER", "guest")
        self.password = os.environ.get("LGSP_TEST_AMQP_PASSWORD", "guest")
        self._created = False

    @property
    def url(self) -> str:
        """The AMQP URL of the vhost."""
        return (
            f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/"
            f"{quote(self.name, safe='')}"
        )

    async def create(self) -> None:
        """Add the vhost with full permissions for the user."""
        await _run("add_vhost", self.name)
        self._created = True
        await _run("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    async def delete(self) -> None:
        """Delete the vhost and everything in it."""
        if self._created:
            self._created = False
            await _run("delete_vhost", self.name)
