"""Child processes of the harness: start, wait until ready, stop — always, even on Ctrl-C.

Each child runs in its own session (so a terminal's Ctrl-C reaches only the harness, which
then stops the children in order) and gets ``PR_SET_PDEATHSIG``: if the harness itself is
killed outright, the kernel sends the child SIGTERM. Output goes to a log file in the run's
temporary directory, never to a pipe that could fill up and stall the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

__all__ = [
    "REPO_ROOT",
    "Child",
    "ChildFailed",
    "bus_command",
    "child_env",
    "free_port",
    "wait_http",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout the harness runs from (children start there, so ``-m bench.…`` resolves)."""

STOP_GRACE_S = 20.0
"""SIGTERM → SIGKILL bound (the bus drains in-flight work within its own, shorter grace)."""


class ChildFailed(RuntimeError):
    """A child process exited early or never became ready."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (the child binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bus_command() -> list[str]:
    """How to run ``lgsp-bus``: the console script beside this Python, else ``-m bus.cli.main``."""
    script = Path(sys.executable).with_name("lgsp-bus")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bus.cli.main"]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without any ``LGSP_*`` variable (the harness sets each one it means
    to), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGSP_")}
    env.update(extra)
    return env


class Child:
    """One child process, logging to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The child's pid (started)."""
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    async def start(self, *, stdout_pipe: bool = False) -> None:
        """Start the process (returns at once; see :meth:`check_alive` / :func:`wait_http`);
        ``stdout_pipe``: stdout is read by the harness (stderr still goes to the log)."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else log,
                stderr=log if stdout_pipe else asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's output (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`ChildFailed` (with the log tail) if the process has exited."""
        if self.proc is not None and self.proc.returncode is not None:
            raise ChildFailed(
                f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}"
            )

    async def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit status."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            return await proc.wait()


def _signal_group(pid: int, sig: int) -> None:
    # The child leads its own session/process group: signal the group, so anything it
    # spawned goes too; fall back to the pid if the group is already gone.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def wait_http(
    url: str,
    child: Child | Sequence[Child],
    *,
    timeout_s: float = 60.0,
    ok: Sequence[int] = (200,),
) -> None:
    """Poll ``url`` (GET) until it answers one of ``ok``; fail if a child dies or time runs out."""
    children = [child] if isinstance(child, Child) else list(child)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            for c in children:
                c.check_alive()
            try:
                async with session.get(url) as response:
                    if response.status in ok:
                        return
                    last = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.1)
    tails = "\n".join(f"--- {c.name}:\n{c.log_tail()}" for c in children)
    raise ChildFailed(f"{url} not ready after {timeout_s:.0f} s ({last})\n{tails}")
