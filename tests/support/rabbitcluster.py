"""A throw-away 3-node RabbitMQ cluster, started by the test run from the installed RabbitMQ.

Three fresh nodes (never the machine's shared node on 5672): each with its own node name,
AMQP and distribution ports (free loopback ports), config, mnesia and log directories
under one temporary directory, and one Erlang cookie of their own (``HOME`` points at the
temporary directory, for the nodes and for ``rabbitmqctl``). The nodes boot in parallel;
the second and third then ``join_cluster`` the first. :meth:`RabbitCluster.close` kills
every node and removes the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RABBITMQ_SERVER", "ClusterNode", "RabbitCluster"]

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""The server script itself (``/usr/sbin/rabbitmq-server`` switches to the rabbitmq user)."""
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ClusterNode:
    """One node: its name, AMQP port and files."""

    name: str
    port: int
    dist_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    def url(self, vhost: str = "%2F") -> str:
        """AMQP URL of this node (guest is allowed on loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def os_pid(self) -> int | None:
        """The Erlang VM's process id, once the node wrote it."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


class RabbitCluster:
    """Three nodes joined into one cluster; ``with RabbitCluster() as c: ...``."""

    def __init__(self, size: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lgsp-cluster-"))
        tag = secrets.token_hex(3)
        (self.dir / ".erlang.cookie").write_text(secrets.token_hex(16))
        (self.dir / ".erlang.cookie").chmod(0o400)
        self.nodes = [
            ClusterNode(f"lgsp{tag}n{i}@localhost", _free_port(), _free_port(), self.dir / f"n{i}")
            for i in range(1, size + 1)
        ]

    def __enter__(self) -> RabbitCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _env(self, node: ClusterNode) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),
            "RABBITMQ_CONF_ENV_FILE": str(node.home / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.home / "log"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, node: ClusterNode, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <node> args…`` with the cluster's cookie; its stdout."""
        done = subprocess.run(
            [str(RABBITMQCTL), "-q", "-n", node.name, *args],
            env={**os.environ, "HOME": str(self.dir)},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stderr.decode()[-2000:]}"
            )
        return done.stdout.decode()

    def start(self) -> None:
        """Boot every node (in parallel), then join the others to the first."""
        for node in self.nodes:
            node.home.mkdir()
            (node.home / "rabbitmq-env.conf").write_text("")
            (node.home / "enabled_plugins").write_text("[].\n")
            (node.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.port}\n"
                "disk_free_limit.absolute = 50MB\n"
                "log.console = false\n"
                "log.file.level = warning\n"
            )
            with (node.home / "stderr.log").open("wb") as stderr:
                node.process = subprocess.Popen(
                    [str(RABBITMQ_SERVER)],
                    env=self._env(node),
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                    cwd=node.home,  # its crash dumps (MnesiaCore.*) land there, not in the repo
                )
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._await_startup, self.nodes))
        for node in self.nodes[1:]:  # one at a time: concurrent joins can fail in mnesia
            self._join(node)

    def _join(self, node: ClusterNode) -> None:
        self.ctl(node, "stop_app")
        self.ctl(node, "join_cluster", self.nodes[0].name)
        self.ctl(node, "start_app")

    def _await_startup(self, node: ClusterNode, bound_s: float = 90) -> None:
        end = time.monotonic() + bound_s
        while True:
            assert node.process is not None
            if node.process.poll() is not None:
                log = (node.home / "stderr.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"RabbitMQ node {node.name} exited at start: {log}")
            try:
                self.ctl(node, "await_startup", "--timeout", "60", timeout=70)
                return
            except RuntimeError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)  # not registered with epmd yet

    def urls(self, vhost: str = "%2F") -> list[str]:
        """Every node's AMQP URL, in order."""
        return [node.url(vhost) for node in self.nodes]

    def node_named(self, name: str) -> ClusterNode:
        """The node called ``name``."""
        return next(node for node in self.nodes if node.name == name)

    def queues(self, via: ClusterNode) -> dict[str, dict[str, Any]]:
        """``list_queues`` of the default vhost: name → {leader, members, messages}."""
        out = self.ctl(
            via, "list_queues", "name", "leader", "members", "messages", "--formatter", "json"
        )
        return {row["name"]: row for row in json.loads(out or "[]")}

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node's Erlang VM (no clean shutdown)."""
        pid = node.os_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)

    def close(self) -> None:
        """Kill every node, remove every file."""
        for node in self.nodes:
            if node.process is not None:
                self.kill(node)
        keep = os.environ.get("LGSP_CLUSTER_LOGS")  # a directory to copy the node logs to
        if keep:
            for node in self.nodes:
                shutil.copytree(node.home / "log", Path(keep) / node.name, dirs_exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
