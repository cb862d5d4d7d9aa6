"""Medians over rounds, ratios to baseline A, the printed tables and the JSON file.

Per target and concurrency: the median over rounds of requests/s, of each latency
percentile, of CPU per request and of each process's CPU%; the largest peak RSS; the sum
of errors; the range of requests/s over rounds (the noise); the most foreign CPU seen.
Ratios divide by baseline A's median at the same concurrency in the same run; ``×A rd``
(``rps_vs_A_paired``) is the median of per-round ratios, each against A in the same round.

CPU per request is the CPU time of the processes the harness started for the target (the
simulator included; RabbitMQ, which is shared, left out — its CPU% is in the per-process
table) over the requests answered in the window. On a shared machine it is the steadier
figure: other work slows a target down (fewer requests/s, longer tails) but changes little
what each request costs.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SHORT", "format_processes", "format_table", "summarise_runs", "write_json"]

SHORT = {
    "bus-gateway": "gw",
    "bus-worker": "wk",
    "baseline-gateway": "gw",
    "baseline-consumer": "cons",
    "embedded": "bus",
    "sim-civil-status": "sim",
    "sim-population": "sim",
    "rabbitmq": "mq",
    "loadgen": "load",
}
"""Short process labels for the printed tables."""


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 2)


def summarise_runs(
    measurements: Sequence[Mapping[str, Any]], order: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per (target, concurrency), targets in ``order``, ratios to target ``A``."""
    keys: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for m in measurements:
        keys.setdefault((m["target"], int(m["concurrency"])), []).append(m)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for (target, conc), runs in keys.items():
        rps = [float(r["rps"]) for r in runs]
        names = {n for r in runs for n in r["processes"]}
        processes = {
            n: {
                "cpu_pct": _round(_median(r["processes"].get(n, {}).get("cpu_pct") for r in runs)),
                "peak_rss_mib": max(
                    (
                        r["processes"][n]["peak_rss_mib"] or r["processes"][n]["rss_mib"] or 0.0
                        for r in runs
                        if n in r["processes"]
                    ),
                    default=None,
                ),
            }
            for n in sorted(names)
        }
        rows[(target, conc)] = {
            "target": target,
            "concurrency": conc,
            "rounds": len(runs),
            "rps": _round(statistics.median(rps)),
            "rps_range": [min(rps), max(rps)],
            "latency_ms": {
                q: _round(_median(float(r["latency_ms"][q]) for r in runs), 2)
                for q in ("p50", "p90", "p99")
            },
            "errors": sum(int(r["errors"]) for r in runs),
            "error_kinds": _merge(r.get("error_kinds", {}) for r in runs),
            "cpu_ms_per_request": _round(_median(r["cpu_ms_per_request"] for r in runs), 3),
            "foreign_cpu_pct_max": max(float(r["foreign_cpu_pct"]) for r in runs),
            "processes": processes,
        }
    for (target, conc), row in rows.items():
        base = rows.get(("A", conc))
        row["rps_vs_A"] = _ratio(row["rps"], base["rps"] if base else None)
        row["rps_vs_A_paired"] = _paired_ratio(keys[(target, conc)], keys.get(("A", conc), []))
        row["p99_vs_A"] = _ratio(
            row["latency_ms"]["p99"], base["latency_ms"]["p99"] if base else None
        )
        row["cpu_vs_A"] = _ratio(
            row["cpu_ms_per_request"], base["cpu_ms_per_request"] if base else None
        )
    rank = {t: i for i, t in enumerate(order)}
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1], rank.get(k[0], 99), k[0]))]


def _paired_ratio(
    runs: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]]
) -> float | None:
    """Median over rounds of this round's req/s over baseline A's in the same round.

    Rounds are interleaved (each target once per round, order rotating), so A's figure of
    the same round was measured within a minute of this one: on a shared machine whose
    speed drifts over minutes this ratio moves much less than the ratio of the medians."""
    a_by_round = {r.get("round"): float(r["rps"]) for r in base if r.get("round") is not None}
    ratios = [
        float(r["rps"]) / a_by_round[r["round"]] for r in runs if a_by_round.get(r.get("round"))
    ]
    return round(statistics.median(ratios), 2) if ratios else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _merge(kinds: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        for name, count in k.items():
            out[name] = out.get(name, 0) + int(count)
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The main table: throughput and latency, each as a ratio to baseline A."""
    head = (
        f"{'target':<14} {'c':>4} {'req/s':>8} {'×A':>5} {'×A rd':>5} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'p99 ×A':>6} {'errors':>6} {'CPU ms/req':>10} {'CPU ×A':>6}"
    )
    lines = [head, "-" * len(head)]
    last_c = None
    for r in rows:
        if last_c is not None and r["concurrency"] != last_c:
            lines.append("")
        last_c = r["concurrency"]
        lat = r["latency_ms"]
        lines.append(
            f"{r['target']:<14} {r['concurrency']:>4} {_fmt(r['rps'], '8.0f')} "
            f"{_fmt(r['rps_vs_A'], '5.2f')} {_fmt(r.get('rps_vs_A_paired'), '5.2f')} "
            f"{_fmt(lat['p50'], '7.1f')} {_fmt(lat['p90'], '7.1f')} "
            f"{_fmt(lat['p99'], '7.1f')} {_fmt(r['p99_vs_A'], '6.2f')} {r['errors']:>6} "
            f"{_fmt(r['cpu_ms_per_request'], '10.2f')} {_fmt(r.get('cpu_vs_A'), '6.2f')}"
        )
    return "\n".join(lines)


def format_processes(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per process: CPU% (of one core; median over rounds) and peak RSS (MiB, largest)."""
    lines = [f"{'target':<14} {'c':>4}  CPU% / peak RSS MiB per process"]
    for r in rows:
        parts = []
        for name, p in r["processes"].items():
            rss = p["peak_rss_mib"]
            rss_text = "" if name == "rabbitmq" or rss is None else f"/{rss:.0f}"
            parts.append(f"{SHORT.get(name, name)} {_fmt(p['cpu_pct'], '.0f')}%{rss_text}")
        foreign = r["foreign_cpu_pct_max"]
        extra = f"  (foreign ≤{foreign:.0f}%)" if foreign >= 10 else ""
        lines.append(f"{r['target']:<14} {r['concurrency']:>4}  {'  '.join(parts)}{extra}")
    return "\n".join(lines)


def write_json(document: Mapping[str, Any], directory: Path, prefix: str = "") -> Path:
    """Write ``document`` to ``directory/<prefix><UTC timestamp>.json``; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{prefix}{stamp}.json"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return path
