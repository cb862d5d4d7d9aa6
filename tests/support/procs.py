"""Child processes of a test: killing and reaping them without racing asyncio's watcher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

__all__ = ["reap"]


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
