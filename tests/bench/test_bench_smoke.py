"""The benchmark end to end, in a tiny configuration (seconds): ``python -m bench`` starts its
processes, measures, prints the table, writes the JSON, and stops everything it started —
also when interrupted. No timing assertions: only that the figures exist and are sane."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO
from tests.support.rabbit import TestVhost

TINY = ["--rounds", "1", "--warmup", "0.2", "--duration", "0.6", "--prime", "0.2", "--retries", "0"]
ROW_KEYS = {
    "target",
    "concurrency",
    "rps",
    "rps_vs_A",
    "latency_ms",
    "p99_vs_A",
    "errors",
    "cpu_ms_per_request",
    "processes",
}


def bench(*args: str, tmp_path: Path, timeout: float = 55) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    return proc.stdout, json.loads(files[0].read_text())


def test_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "soak" in proc.stdout
    assert "baseline A" in proc.stdout


def test_run_without_rabbitmq_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out, doc = bench(
        "--targets", "B,embedded-rest", "--concurrency", "1,2", *TINY, tmp_path=tmp_path
    )  # fmt: skip
    assert "req/s" in out
    assert "embedded-rest" in out
    assert doc["complete"] is True
    assert {"schema", "command", "machine", "code", "settings", "bus", "summary"} <= set(doc)
    rows = doc["summary"]
    assert {(r["target"], r["concurrency"]) for r in rows} == {
        ("B", 1), ("B", 2), ("embedded-rest", 1), ("embedded-rest", 2)
    }  # fmt: skip
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert row["rps"] > 0
        assert row["errors"] == 0, row["error_kinds"]
        assert row["rps_vs_A"] is None  # no baseline A in this run
    embedded = next(r for r in rows if r["target"] == "embedded-rest")
    assert {"embedded", "sim-civil-status", "loadgen"} <= set(embedded["processes"])
    assert embedded["processes"]["embedded"]["peak_rss_mib"] > 0


@pytest.mark.rabbitmq
def test_run_on_rabbitmq_has_ratios_to_baseline_a(tmp_path: Path) -> None:
    out, doc = bench(
        "--targets", "A,bus-rest,bus-soap", "--concurrency", "2", *TINY, tmp_path=tmp_path
    )  # fmt: skip
    rows = {r["target"]: r for r in doc["summary"]}
    assert set(rows) == {"A", "bus-rest", "bus-soap"}
    assert rows["A"]["rps_vs_A"] == 1.0
    for row in rows.values():
        assert row["errors"] == 0, row["error_kinds"]
        assert row["rps_vs_A"] is not None
        # one round: the per-round paired ratio is that round's ratio of the two
        assert row["rps_vs_A_paired"] == round(row["rps"] / rows["A"]["rps"], 2)
        assert "rabbitmq" in row["processes"]
    assert {"bus-gateway", "bus-worker"} <= set(rows["bus-rest"]["processes"])
    assert "sim-population" in rows["bus-soap"]["processes"]
    assert doc["bus"]["features"]["api_key_auth"] is True
    assert "bus-soap" in out


@pytest.mark.rabbitmq
def test_soak_reports_rss_growth_and_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench", "soak", "--minutes", "0.05", "--rate", "20",
            "--warmup", "1", "--sample", "1", "--paths", "rest", "--out", str(tmp_path),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=55, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "growth" in proc.stdout
    doc = json.loads(next(tmp_path.glob("soak-*.json")).read_text())
    assert doc["complete"] is True
    assert doc["result"]["errors"] == 0, doc["result"]["error_kinds"]
    for name in ("bus-gateway", "bus-worker"):
        p = doc["processes"][name]
        assert {"rss_start_mib", "rss_end_mib", "growth_pct"} <= set(p)
        assert p["rss_start_mib"] > 0


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_interrupt_stops_every_process_it_started(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "bench", "--targets", "B,embedded-rest", "--concurrency", "1",
        "--rounds", "20", "--duration", "5", "--retries", "0", "--out", str(tmp_path),
    ]  # fmt: skip
    with subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + 45
            for line in proc.stderr:
                if "round 1/" in line or time.monotonic() > deadline:
                    break
            kids = _children(proc.pid)
            # The simulator, the embedded bus and the load generator of the next measurement.
            assert len(kids) >= 2
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=40)
            assert proc.returncode == 128 + signal.SIGINT
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not [k for k in kids if _alive(k)]
    assert list(tmp_path.glob("partial-*.json"))  # what was measured is kept


@pytest.mark.rabbitmq
def test_confirm_cost_measures_both_modes(rabbit_vhost: TestVhost) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench.confirm_cost", "--url", rabbit_vhost.url(),
            "--messages", "300", "--rounds", "1",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["confirms=on", "confirms=off"]
    for line in lines:
        assert "µs/msg" in line
        assert float(line.split()[-2]) > 0  # msg/s


def test_tracing_cost_measures_off_and_on() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.tracing_cost", "--requests", "100", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    off, on = (float(v) for v in re.findall(r"(\d+\.\d+) µs/request", lines[0]))
    assert off > 0
    assert on > 0
    assert lines[1].startswith("median ratio on/off ×")


def test_commit_cost_measures_full_and_normal(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.commit_cost", "--commits", "20", "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.split("\n\n")
    rows = [line.split() for line in first.splitlines()[1:]]
    assert [r[0] for r in rows] == ["FULL", "NORMAL", "FULL", "NORMAL"]
    assert all(float(wall) > 0 and float(cpu) >= 0 for _, wall, cpu in rows)
    store = [line.split()[:3] for line in second.strip().splitlines()[1:]]
    assert [r[0] for r in store] == ["hop", "inline", "hop", "inline"]
    assert all(float(wall) > 0 and float(cpu) >= 0 for _, wall, cpu in store)
    assert not list(tmp_path.iterdir())  # its database is removed


def test_hotpath_cost_measures_every_step() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.hotpath_cost", "--seconds", "0.05"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {line[:34].strip(): line[34:].split() for line in proc.stdout.splitlines()[1:]}
    for step in ("civil-status request validation", "free-text check", "upstream URL"):
        assert float(steps[step][0]) > 0, proc.stdout
