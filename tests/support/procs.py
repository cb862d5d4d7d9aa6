"""Child processes of a test: killing and reaping them without racing asyncio's watcher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import aiohttp

__all__ = ["reap", "wait_ready"]


async def wait_ready(
    proc: asyncio.subprocess.Process, url: str, log: Path, bound_s: float = 30
) -> None:
    """Until ``url``'s ``/readyz`` answers 200; fails with ``log`` if ``proc`` exits first,
    or after ``bound_s``."""
    deadline = time.monotonic() + bound_s
    async with aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, log.read_text(errors="replace")  # noqa: ASYNC240 - the failure message
            assert time.monotonic() < deadline, f"{url} did not become ready"
            try:
                async with session.get(url + "readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ``proc`` if it has not ended, then wait for it.

    The signal goes through ``os.kill``, not ``proc.kill()``: asyncio's ``Process.kill``
    calls ``subprocess.Popen.send_signal``, which first polls the child
    (``waitpid(WNOHANG)``). A child that a test has just SIGKILLed is then reaped by that
    poll before asyncio's child watcher thread gets it, and the watcher reports
    "Unknown child process … returncode 255" in place of the real ``-9``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
