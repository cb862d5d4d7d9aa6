"""Soak mode: moderate open-loop load on the bus for a bounded time; does its memory grow?

The bus (gateway + worker on a RabbitMQ vhost of the run, the simulators in their own
processes) gets ``rate`` requests per second on a fixed schedule — civil-status and
population lookups alternating, or one of them — for ``warmup`` plus ``minutes``. RSS of
every process is sampled every ``sample_s``; "start" is the sample at the end of the
warm-up, "end" the one when the counted window closes; growth is end over start. Errors
are every non-2xx answer or failure in the counted window (``shed`` when the client's
in-flight cap was reached because the bus fell behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure import run_loadgen
from bench.procs import Child
from bench.procstat import cpu_seconds, machine_info, memory_kb
from bench.report import write_json
from bench.run import SCHEMA, code_version, environment, remove_tree
from bench.systems import BusRunSettings, open_lab

__all__ = ["SoakSettings", "print_soak", "run_soak"]


@dataclass
class SoakSettings(BusRunSettings):
    """What one soak run does."""

    minutes: float = 10.0
    rate: float = 50.0
    warmup_s: float = 60.0
    paths: str = "both"
    sample_s: float = 10.0


def _sample(procs: dict[str, Child]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, child in procs.items():
        mem = memory_kb(child.pid)
        out[name] = {
            "rss_mib": round(mem.get("VmRSS", 0) / 1024, 1),
            "cpu_s": round(cpu_seconds(child.pid) or 0.0, 2),
        }
    return out


def _growth(start: dict[str, Any], end: dict[str, Any], peak: dict[str, float]) -> dict[str, Any]:
    table = {}
    for name, s in start.items():
        e = end.get(name, s)
        before, after = s["rss_mib"], e["rss_mib"]
        table[name] = {
            "rss_start_mib": before,
            "rss_end_mib": after,
            "rss_max_mib": peak.get(name, after),
            "growth_pct": round(100.0 * (after - before) / before, 1) if before else None,
        }
    return table


async def run_soak(settings: SoakSettings, argv: Sequence[str]) -> dict[str, Any]:
    """Run the soak; write and return its JSON document."""
    started = time.monotonic()
    duration = settings.minutes * 60
    targets = {"both": ["bus-rest", "bus-soap"], "rest": ["bus-rest"], "soap": ["bus-soap"]}
    names = targets[settings.paths]
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "soak",
        "complete": False,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *argv]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "code": code_version(),
        "machine": await environment(),
    }
    samples: list[dict[str, Any]] = []
    marks: dict[str, dict[str, Any]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="lgsp-soak-"))
    print(
        f"soak: {settings.rate:g} req/s for {settings.warmup_s:.0f} s warm-up + "
        f"{settings.minutes:g} min ({settings.paths})",
        file=sys.stderr,
    )
    try:
        async with open_lab(settings.lab(names, workdir)) as lab:
            document["bus"] = lab.info
            procs: dict[str, Child] = {}
            lists = [lab.targets[n].requests for n in names]
            for n in names:
                procs.update(lab.targets[n].processes)
            # Alternate the services request by request.
            requests = [r for group in zip(*lists, strict=False) for r in group]
            t0 = time.monotonic()

            async def sampler() -> None:
                while True:
                    samples.append({"t_s": round(time.monotonic() - t0, 1), **_sample(procs)})
                    await asyncio.sleep(settings.sample_s)

            def on_event(kind: str, data: dict[str, Any], loadgen: Child) -> None:
                if kind in ("measuring", "measured"):
                    marks[kind] = _sample(procs)
                elif kind == "progress":
                    rss = ", ".join(
                        f"{n} {memory_kb(c.pid).get('VmRSS', 0) / 1024:.0f} MiB"
                        for n, c in procs.items()
                    )
                    print(
                        f"  {data['elapsed_s']:7.0f} s  ok {data['ok']}  errors {data['errors']}"
                        f"  in flight {data['in_flight']}  RSS: {rss}",
                        file=sys.stderr,
                        flush=True,
                    )

            load = {
                "mode": "open",
                "rate": settings.rate,
                "max_in_flight": 256,
                "warmup_s": settings.warmup_s,
                "duration_s": duration,
                "timeout_s": settings.timeout_s,
                "progress_s": max(settings.sample_s, 30.0),
            }
            sampling = asyncio.create_task(sampler())
            try:
                result = await run_loadgen(requests, "request_id", load, workdir, on_event)
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            for child in procs.values():
                child.check_alive()
        peak: dict[str, float] = {}
        for s in samples:
            for name in procs:
                peak[name] = max(peak.get(name, 0.0), s[name]["rss_mib"])
        start, end = marks.get("measuring", {}), marks.get("measured", {})
        cpu = {
            n: round(100 * (end[n]["cpu_s"] - start[n]["cpu_s"]) / duration, 1)
            for n in start
            if n in end
        }
        document.update(
            complete=True,
            result=result,
            processes=_growth(start, end, peak),
            cpu_pct=cpu,
            samples=samples,
        )
    finally:
        document["elapsed_s"] = round(time.monotonic() - started, 1)
        document["loadavg_end"] = machine_info()["loadavg"]
        if samples:
            prefix = "soak-" if document["complete"] else "partial-soak-"
            document["json_path"] = str(write_json(document, settings.out_dir, prefix))
        if not settings.keep_logs:
            await asyncio.to_thread(remove_tree, workdir)
    return document


def print_soak(document: dict[str, Any]) -> None:
    """The soak's figures on stdout."""
    result = document["result"]
    lat = result["latency_ms"]
    print()
    print(f"command: {document['command']}   elapsed {document['elapsed_s']:.0f} s")
    print(
        f"offered {result['rate']} req/s, served {result['rps']} req/s over "
        f"{result['duration_s']:.0f} s: {result['requests']} ok, {result['errors']} errors "
        f"{result['error_kinds'] or ''}"
    )
    print(
        f"latency p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
        f"max {lat['max']:.1f}"
    )
    print()
    print(f"{'process':<18} {'RSS start':>10} {'RSS end':>9} {'max':>7} {'growth':>7} {'CPU%':>6}")
    for name, p in document["processes"].items():
        shown = "—" if p["growth_pct"] is None else f"{p['growth_pct']:+.1f}%"
        print(
            f"{name:<18} {p['rss_start_mib']:>9.1f}M {p['rss_end_mib']:>8.1f}M "
            f"{p['rss_max_mib']:>6.1f}M {shown:>7} {document['cpu_pct'].get(name, 0):>6.1f}"
        )
    bus = {n: p for n, p in document["processes"].items() if not n.startswith("sim-")}
    growth = max((float(p["growth_pct"] or 0.0) for p in bus.values()), default=0.0)
    verdict = "met" if growth <= 10 and result["errors"] == 0 else "NOT met"
    print(
        f"\ntarget (RSS growth ≤ 10% after warm-up, zero errors): {verdict} — largest bus "
        f"growth {growth:+.1f}%, {result['errors']} errors"
    )
    if document.get("json_path"):
        print(f"results: {document['json_path']}")
