"""One measurement: a load-generator process against one target, ``/proc`` sampled around it.

The load generator says when its counted window starts and ends; CPU time and peak RSS of
the target's processes, of RabbitMQ (read only; shared with anything else using it), of the
load generator and of the whole machine are taken at exactly those two moments. "Foreign"
CPU is the machine's busy time not explained by any of those processes: other work on the
machine (other engineers' tests, say) that ran during the window.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.procs import REPO_ROOT, Child, ChildFailed, child_env
from bench.procstat import CpuWindow, Watched, find_process
from bench.systems import Target

__all__ = ["LoadSpec", "measure", "run_loadgen", "summarise"]

LoadSpec = dict[str, Any]
"""The load generator's spec (see :mod:`bench.loadgen`) without ``requests``."""


async def run_loadgen(
    requests: list[dict[str, Any]],
    unique_field: str | None,
    load: LoadSpec,
    workdir: Path,
    on_event: Callable[[str, dict[str, Any], Child], None],
) -> dict[str, Any]:
    """Run one load-generator process; ``on_event(kind, data, loadgen)`` sees each event as
    it arrives (``measuring``, ``measured``, ``progress``); returns the ``result``."""
    spec = {**load, "requests": requests, "unique_field": unique_field}
    spec_path = workdir / "load.json"
    spec_path.write_bytes(orjson.dumps(spec))
    loadgen = Child(
        "loadgen",
        [sys.executable, "-m", "bench.loadgen", str(spec_path)],
        env=child_env({}),
        log_path=workdir / "logs" / "loadgen.log",
        cwd=REPO_ROOT,
    )
    result: dict[str, Any] | None = None
    bound = float(load["warmup_s"]) + float(load["duration_s"]) + float(load["timeout_s"]) + 30
    await loadgen.start(stdout_pipe=True)
    try:
        assert loadgen.proc is not None
        assert loadgen.proc.stdout is not None
        async with asyncio.timeout(bound):
            async for line in loadgen.proc.stdout:
                event = orjson.loads(line)
                kind = event.pop("event")
                if kind == "result":
                    result = event
                else:
                    on_event(kind, event, loadgen)
            await loadgen.proc.wait()
    finally:
        await loadgen.stop(grace_s=5)
    if result is None:
        raise ChildFailed(f"the load generator gave no result:\n{loadgen.log_tail()}")
    return result


async def measure(target: Target, load: LoadSpec, workdir: Path) -> dict[str, Any]:
    """Run the load against ``target``; the loadgen's result plus per-process CPU and RSS."""
    watched = [Watched(label, child.pid) for label, child in target.processes.items()]
    rabbit = find_process("beam.smp") if target.uses_rabbitmq else None
    if rabbit is not None:
        watched.append(Watched("rabbitmq", rabbit, owned=False))
    windows: list[CpuWindow] = []

    def on_event(kind: str, data: dict[str, Any], loadgen: Child) -> None:
        if kind == "measuring":
            window = CpuWindow([*watched, Watched("loadgen", loadgen.pid)])
            window.start()
            windows.append(window)
        elif kind == "measured" and windows:
            windows[-1].stop()

    result = await run_loadgen(target.requests, target.unique_field, load, workdir, on_event)
    if not windows or not windows[-1].processes:
        raise ChildFailed("the load generator never reported its measuring window")
    for child in target.processes.values():
        child.check_alive()
    return summarise(target, result, windows[-1])


def summarise(target: Target, result: dict[str, Any], window: CpuWindow) -> dict[str, Any]:
    """The loadgen result with the window's process figures and CPU per request."""
    # RabbitMQ is left out: it is shared (other work on it would count as ours); its CPU%
    # is in the per-process figures.
    sut = list(target.processes)
    ours = window.total_cpu_s()
    requests = max(1, int(result["requests"]))
    foreign = window.machine_busy_pct - 100.0 * ours / window.wall_s
    return {
        **result,
        "target": target.name,
        "processes": {name: s.as_dict() for name, s in window.processes.items()},
        "cpu_ms_per_request": round(1000 * window.total_cpu_s(dict.fromkeys(sut)) / requests, 3),
        "machine_busy_pct": round(window.machine_busy_pct, 1),
        "foreign_cpu_pct": round(max(0.0, foreign), 1),
        "window_s": round(window.wall_s, 3),
    }
