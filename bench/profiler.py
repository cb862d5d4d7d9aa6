"""Sampling profiles of the bus's processes under load (py-spy), and where their time goes.

``py-spy record --nonblocking --gil`` samples a running process from outside (no code
change, no pause of the target), here 100 times a second, only while a thread holds the GIL
— on a loop-per-process server that is the CPU-bound work: Python and C extensions
(uvloop, orjson, lxml). Waits (epoll, locks) are not sampled, and neither is work done with
the GIL released (sqlite3's statements in aiosqlite's thread): that shows in the process's
CPU% but not here. Output is "collapsed stacks", one line per distinct stack:
``frame;frame;…;leaf count``. :func:`summarise` reads it back into shares of samples: by
the area of the innermost frame (our code, each library, the event loop's C code), by
function, and by each of our modules a sample passed through.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.procs import Child

__all__ = ["AREAS", "area_of", "pyspy_path", "record", "summarise"]

AREAS: tuple[tuple[str, str], ...] = (
    ("/bus/broker/", "bus.broker"),
    ("/bus/", "bus (other)"),
    ("/adapters/", "adapters"),
    ("/aio_pika/", "aio-pika"),
    ("/aiormq/", "aiormq"),
    ("/pamqp/", "pamqp"),
    ("/aiohttp/", "aiohttp"),
    ("/multidict/", "aiohttp"),
    ("/yarl/", "aiohttp"),
    ("/pydantic", "pydantic"),
    ("/structlog/", "structlog"),
    ("/logging/", "logging"),
    ("/zeep/", "zeep"),
    ("/lxml/", "lxml"),
    ("/prometheus_client/", "prometheus"),
    ("/aiosqlite/", "sqlite"),
    ("/sqlite3/", "sqlite"),
    ("/asyncpg/", "asyncpg"),
    ("/tenacity/", "tenacity"),
    ("/orjson", "orjson"),
    ("/json/", "json (stdlib)"),
    ("/asyncio/runners.py", "event loop (uvloop)"),
    ("/uvloop/", "event loop (uvloop)"),
    ("/asyncio/", "asyncio"),
    ("/threading.py", "threads"),
    ("/concurrent/", "threads"),
)
"""File-path fragment → area, first match wins (``bus/broker`` before ``bus``)."""

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def pyspy_path() -> str | None:
    """The py-spy executable (beside this Python, else on PATH)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _file(frame: str) -> str:
    match = _FRAME.match(frame)
    return match.group("file") if match else frame


def area_of(frame: str) -> str:
    """The area a collapsed-stack frame (``func (path/file.py:line)``) belongs to."""
    path = "/" + _file(frame)  # py-spy writes paths relative to sys.path: "bus/gateway.py"
    for fragment, area in AREAS:
        if fragment in path:
            return area
    return "other"


def _own_module(frame: str) -> str | None:
    path = _file(frame)
    if path.startswith(("bus/", "adapters/")) and path != "bus/cli.py":
        return path
    return None


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    parts = Path(match.group("file")).parts
    tail = "/".join(parts[-2:]) if parts else ""
    return f"{match.group('func')} ({tail}:{match.group('line') or '?'})"


def _stacks(lines: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarise(collapsed: Iterable[str], top: int = 12) -> dict[str, Any]:
    """Where the on-CPU samples are: by area of the innermost frame (``self_area_pct``), by
    function (``self_pct``), and by each of our modules they passed through (``module_pct``,
    inclusive: a module that calls a library is charged for the library's time too)."""
    total = 0
    leaves: Counter[str] = Counter()
    self_areas: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for frames, count in _stacks(collapsed):
        total += count
        leaves[_short(frames[-1])] += count
        self_areas[area_of(frames[-1])] += count
        for module in {m for m in map(_own_module, frames) if m}:
            modules[module] += count
    pct = 100.0 / total if total else 0.0
    return {
        "samples": total,
        "self_area_pct": {k: round(v * pct, 1) for k, v in self_areas.most_common()},
        "self_pct": {k: round(v * pct, 1) for k, v in leaves.most_common(top)},
        "module_pct": {k: round(v * pct, 1) for k, v in modules.most_common(top)},
    }


async def record(
    processes: Mapping[str, Child], seconds: float, out_dir: Path, rate: int = 100
) -> dict[str, Path]:
    """py-spy each process for ``seconds`` at once; returns name → collapsed-stacks file."""
    exe = pyspy_path()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy; it is a dev dependency)")
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    outputs = {name: out_dir / f"{name}.collapsed" for name in processes}
    spies = []
    for name, child in processes.items():
        spy = Child(
            f"py-spy-{name}",
            [
                exe, "record", "--pid", str(child.pid), "--duration", str(max(1, round(seconds))),
                "--rate", str(rate), "--format", "raw", "--nonblocking", "--gil",
                "--output", str(outputs[name]),
            ],
            env={"PATH": "/usr/bin:/bin"},
            log_path=out_dir / f"py-spy-{name}.log",
            cwd=out_dir,
        )  # fmt: skip
        await spy.start()
        spies.append(spy)
    try:
        for spy in spies:
            assert spy.proc is not None
            await asyncio.wait_for(spy.proc.wait(), seconds + 30)
    finally:
        for spy in spies:
            await spy.stop(grace_s=5)
    missing = [n for n, p in outputs.items() if not p.exists()]
    if missing:
        tails = "\n".join(s.log_tail(5) for s in spies)
        raise RuntimeError(f"py-spy wrote no profile for {missing}:\n{tails}")
    return outputs
