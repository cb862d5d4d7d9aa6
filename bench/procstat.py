"""CPU time and memory of processes and of the machine, read from ``/proc`` (Linux only).

CPU% is "of one core" (a process using both cores of a 2-core machine shows 200%). Peak
RSS is the kernel's high-water mark ``VmHWM``; for processes the harness started it is
reset at the start of each measurement (``clear_refs`` value 5), so it is the peak within
that window rather than since start-up. Processes the harness did not start (RabbitMQ) are
only read, never written to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CpuWindow",
    "ProcSample",
    "Watched",
    "cpu_seconds",
    "find_process",
    "machine_info",
    "memory_kb",
    "reset_peak",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (``None`` if it is gone)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in KiB (empty if it is gone)."""
    out: dict[str, int] = {}
    try:
        lines = (_PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` of ``pid`` to its current RSS; False where the kernel refuses."""
    try:
        (_PROC / str(pid) / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICKS, total / _TICKS


def find_process(comm: str) -> int | None:
    """The pid of a running process whose command name is ``comm`` (e.g. ``beam.smp``)."""
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == comm:
                return int(entry.name)
        except OSError:
            continue
    return None


def machine_info() -> dict[str, object]:
    """CPU model, core count, memory, kernel and load average of this machine."""
    model = ""
    try:
        for line in (_PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
        mem_kb = int((_PROC / "meminfo").read_text().split()[1])
        load = (_PROC / "loadavg").read_text().split()[:3]
    except OSError:
        mem_kb, load = 0, []
    uname = os.uname()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": f"{uname.sysname} {uname.release}",
        "loadavg": [float(x) for x in load],
    }


@dataclass(frozen=True, slots=True)
class Watched:
    """A process whose CPU and memory a measurement reports; ``owned``: the harness started
    it (so its peak RSS may be reset)."""

    name: str
    pid: int
    owned: bool = True


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process over one window: CPU% (of one core), peak and current RSS in MiB."""

    cpu_pct: float
    cpu_s: float
    peak_rss_mib: float | None
    rss_mib: float | None

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready."""
        return {
            "cpu_pct": round(self.cpu_pct, 1),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mib": None if self.peak_rss_mib is None else round(self.peak_rss_mib, 1),
            "rss_mib": None if self.rss_mib is None else round(self.rss_mib, 1),
        }


@dataclass
class CpuWindow:
    """CPU and memory of a set of processes (and the machine) between ``start`` and ``stop``."""

    watched: list[Watched]
    _cpu0: dict[str, float] = field(default_factory=dict)
    _peak_reset: dict[str, bool] = field(default_factory=dict)
    _machine0: tuple[float, float] = (0.0, 0.0)
    _t0: float = 0.0
    processes: dict[str, ProcSample] = field(default_factory=dict)
    machine_busy_pct: float = 0.0
    wall_s: float = 0.0

    def start(self) -> None:
        """Begin the window (reset owned processes' peak RSS)."""
        for w in self.watched:
            self._peak_reset[w.name] = w.owned and reset_peak(w.pid)
            self._cpu0[w.name] = cpu_seconds(w.pid) or 0.0
        self._machine0 = machine_busy()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        """End the window and compute every figure."""
        self.wall_s = max(1e-6, time.monotonic() - self._t0)
        busy1, total1 = machine_busy()
        busy0, total0 = self._machine0
        cores = os.cpu_count() or 1
        # /proc/stat's total grows by cores × wall: express busy as % of one core.
        span = max(1e-6, total1 - total0)
        self.machine_busy_pct = 100.0 * cores * (busy1 - busy0) / span
        for w in self.watched:
            cpu = (cpu_seconds(w.pid) or self._cpu0.get(w.name, 0.0)) - self._cpu0.get(w.name, 0.0)
            mem = memory_kb(w.pid)
            peak = mem.get("VmHWM") if self._peak_reset.get(w.name) else None
            rss = mem.get("VmRSS")
            self.processes[w.name] = ProcSample(
                cpu_pct=100.0 * cpu / self.wall_s,
                cpu_s=cpu,
                peak_rss_mib=None if peak is None else peak / 1024,
                rss_mib=None if rss is None else rss / 1024,
            )

    def total_cpu_s(self, names: Mapping[str, object] | None = None) -> float:
        """CPU seconds of the named processes (default all) in the window."""
        return sum(s.cpu_s for n, s in self.processes.items() if names is None or n in names)
