"""The benchmark's pure parts: the bus config it writes, percentiles, summaries, /proc reading,
and the load generator against a real loopback server."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml
from aiohttp import web

from bench import loadgen
from bench.baseline import moj_query
from bench.busconfig import (
    API_KEY_ENV,
    CIVIL_TOKEN_ENV,
    POPULATION_SECRET_ENV,
    BenchConfigError,
    bench_config,
    features,
    set_path,
)
from bench.procstat import CpuWindow, Watched, cpu_seconds, memory_kb
from bench.report import format_processes, format_table, summarise_runs
from bench.workload import civil_bodies, direct_requests, population_bodies
from tests.support.paths import REPO
from tests.support.stack import serve_app

SHIPPED = REPO / "routing.yaml"
CIVIL, POP = "http://127.0.0.1:9001/", "http://127.0.0.1:9002/"


def shipped() -> dict[str, Any]:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_bench_config_points_the_shipped_file_at_the_run() -> None:
    cfg = bench_config(shipped(), civil_url=CIVIL, population_url=POP)
    ups = cfg.data["upstreams"]
    civil_up = ups[cfg.data["services"][cfg.civil_service]["upstream"]]
    assert civil_up["url"] == CIVIL
    assert civil_up["auth"]["token"] == f"env:{CIVIL_TOKEN_ENV}"
    assert cfg.population_service is not None
    pop_up = ups[cfg.data["services"][cfg.population_service]["upstream"]]
    assert pop_up["url"] == POP
    assert pop_up["auth"]["secret"] == f"env:{POPULATION_SECRET_ENV}"
    assert list(cfg.data["consumers"]) == [cfg.consumer]
    assert cfg.data["consumers"][cfg.consumer]["api_keys"] == [{"key": f"env:{API_KEY_ENV}"}]
    assert {API_KEY_ENV, CIVIL_TOKEN_ENV, POPULATION_SECRET_ENV} <= set(cfg.env)
    assert all(len(v) >= 16 for v in cfg.env.values())
    # Everything else the shipped file turns on is kept as it is.
    assert cfg.data["broker"] == shipped()["broker"]
    on = features(cfg.data)
    assert on["api_key_auth"] is True
    assert on["audit_policy"][cfg.civil_service] == "fail_closed"  # personal data


def test_bench_config_drops_what_the_run_cannot_serve_and_lifts_rate_limits() -> None:
    data = shipped()
    data["services"]["extra"] = {
        "adapter": "rest",
        "upstream": "elsewhere",
        "operations": {"get": {}},
    }
    data["upstreams"]["elsewhere"] = {"url": "https://example.invalid/", "auth": {"kind": "none"}}
    data["consumers"]["other"] = {"api_keys": [{"key": "env:OTHER_KEY"}], "allow": {}}
    consumer = next(iter(shipped()["consumers"]))
    data["consumers"][consumer]["rate_limit"] = {"rate_per_s": 5, "burst": 5}
    data["consumers"][consumer]["allow"]["extra"] = ["get"]
    data["audit"] = {"hmac_key": "env:SOME_AUDIT_KEY"}
    cfg = bench_config(data, civil_url=CIVIL, population_url=None)
    assert "extra" not in cfg.data["services"]
    assert "elsewhere" not in cfg.data["upstreams"]
    assert cfg.population_service is None
    assert set(cfg.data["services"]) == {cfg.civil_service}
    assert "other" not in cfg.data["consumers"]
    kept = cfg.data["consumers"][consumer]
    assert "extra" not in kept["allow"]
    assert kept["rate_limit"]["rate_per_s"] >= 100_000
    assert "SOME_AUDIT_KEY" in cfg.env  # every env: secret gets a value for the run
    assert "OTHER_KEY" not in cfg.env
    assert len(cfg.adjustments) >= 4


def test_bench_config_needs_a_civil_status_service() -> None:
    data = shipped()
    data["services"] = {k: v for k, v in data["services"].items() if v["adapter"] != "civil_status"}
    with pytest.raises(BenchConfigError):
        bench_config(data, civil_url=CIVIL, population_url=POP)


def test_set_path_sets_creates_and_deletes() -> None:
    data: dict[str, Any] = {"broker": {"prefetch": 32}}
    set_path(data, "broker.prefetch", 64)
    set_path(data, "audit.mode", "off")
    assert data == {"broker": {"prefetch": 64}, "audit": {"mode": "off"}}
    set_path(data, "audit", None)
    assert data == {"broker": {"prefetch": 64}}


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile(values, 100) == 100
    assert loadgen.percentile([], 99) == 0
    summary = loadgen.latency_summary([0.001, 0.002, 0.003])
    assert set(summary) == {"p50", "p90", "p99", "max", "mean"}
    assert summary["p50"] == 2.0


def test_recorder_counts_only_the_window() -> None:
    rec = loadgen.Recorder(start=10.0, end=20.0)
    rec.record(9.0, 9.5, "HTTP 503")  # warm-up
    rec.record(9.5, 10.5, None)
    rec.record(15.0, 15.1, "TimeoutError")
    rec.record(19.0, 21.0, None)  # after the window
    assert rec.latencies == [pytest.approx(1.0)]
    assert dict(rec.errors) == {"TimeoutError": 1}
    assert rec.warmup_errors == 1


async def test_loadgen_counts_requests_and_coded_errors(capsys: pytest.CaptureFixture[str]) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        if int(body["request_id"].rsplit("-", 1)[1]) % 2:
            return web.json_response({"error": {"code": "OVERLOADED"}}, status=503)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/x", handler)
    async with serve_app(app) as url:
        spec = {
            "requests": [{"method": "POST", "url": url + "x", "headers": {}, "body": {"a": 1}}],
            "unique_field": "request_id",
            "concurrency": 2,
            "warmup_s": 0.1,
            "duration_s": 0.4,
            "timeout_s": 5,
        }
        result = await loadgen.run(spec)
    assert result["requests"] > 0
    assert set(result["error_kinds"]) == {"HTTP 503 OVERLOADED"}
    events = [line for line in capsys.readouterr().out.splitlines() if line]
    assert '"measuring"' in events[0]
    assert '"result"' in events[-1]


async def test_loadgen_open_loop_keeps_its_rate() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    async with serve_app(app) as url:
        spec = {
            "requests": [{"method": "GET", "url": url, "headers": {}, "body": None}],
            "mode": "open",
            "rate": 50,
            "warmup_s": 0.1,
            "duration_s": 1.0,
            "timeout_s": 5,
        }
        result = await loadgen.run(spec)
    assert result["errors"] == 0
    assert 30 <= result["requests"] <= 60  # 50 scheduled; generous for a shared machine


def test_proc_readings_of_this_process() -> None:
    assert (cpu_seconds(os.getpid()) or 0) > 0
    mem = memory_kb(os.getpid())
    assert mem["VmRSS"] > 0
    assert mem["VmHWM"] >= mem["VmRSS"]
    assert cpu_seconds(2**22 + 1) is None  # no such pid
    window = CpuWindow([Watched("me", os.getpid(), owned=False)])
    window.start()
    sum(i * i for i in range(200_000))
    window.stop()
    sample = window.processes["me"]
    assert sample.cpu_s >= 0
    assert sample.peak_rss_mib is None  # not owned: never reset, so not reported as a peak
    assert sample.rss_mib is not None


def _measurement(target: str, conc: int, rps: float, p99: float) -> dict[str, Any]:
    return {
        "target": target,
        "concurrency": conc,
        "rps": rps,
        "latency_ms": {"p50": p99 / 3, "p90": p99 / 2, "p99": p99},
        "errors": 1 if target == "bus-rest" else 0,
        "error_kinds": {"HTTP 503 OVERLOADED": 1} if target == "bus-rest" else {},
        "cpu_ms_per_request": 2.0,
        "foreign_cpu_pct": 12.0,
        "processes": {"bus-gateway": {"cpu_pct": 50.0, "peak_rss_mib": 70.0, "rss_mib": 69.0}},
    }


def test_summary_takes_medians_and_ratios_to_baseline_a() -> None:
    runs = [
        _measurement("A", 16, 400, 50),
        _measurement("A", 16, 500, 60),
        _measurement("A", 16, 600, 40),
        _measurement("bus-rest", 16, 400, 75),
        _measurement("bus-rest", 16, 450, 70),
        _measurement("bus-rest", 16, 350, 80),
    ]
    rows = summarise_runs(runs, ["A", "bus-rest"])
    assert [r["target"] for r in rows] == ["A", "bus-rest"]
    a, bus = rows
    assert a["rps"] == 500
    assert a["rps_vs_A"] == 1.0
    assert bus["rps"] == 400
    assert bus["rps_vs_A"] == 0.8
    assert bus["p99_vs_A"] == 1.5
    assert bus["errors"] == 3
    assert bus["rps_range"] == [350, 450]
    assert bus["cpu_vs_A"] == 1.0
    assert bus["rps_vs_A_paired"] is None  # these measurements name no round
    table = format_table(rows)
    assert "req/s" in table
    assert "bus-rest" in table
    assert "0.80" in table
    assert "gw 50%/70" in format_processes(rows)


def test_paired_ratio_compares_each_round_with_baseline_a_of_the_same_round() -> None:
    # The machine slows down over the run: A's median is from a fast round, the bus's from
    # slow ones, so the ratio of medians says 0.65 while every round says 0.75 or 0.8.
    a_rps, bus_rps = [1000, 600, 400], [800, 480, 300]
    runs = []
    for rnd, (a_value, bus_value) in enumerate(zip(a_rps, bus_rps, strict=True), start=1):
        for target, rps in (("A", a_value), ("bus-rest", bus_value)):
            m = _measurement(target, 16, rps, 50)
            m["round"] = rnd
            runs.append(m)
    runs.append({**_measurement("bus-rest", 16, 150, 50), "round": 4})  # no A in round 4
    a, bus = summarise_runs(runs, ["A", "bus-rest"])
    assert a["rps_vs_A_paired"] == 1.0
    assert bus["rps_vs_A_paired"] == 0.8  # median of 0.8, 0.8, 0.75; round 4 unpaired
    assert bus["rps_vs_A"] == 0.65  # median 390 (of 800, 480, 300, 150) over A's 600
    assert " 0.65  0.80 " in format_table([a, bus])


def test_workload_bodies_and_direct_requests() -> None:
    civil = civil_bodies(4)
    assert len(civil) == 12
    assert {b["record_type"] for b in civil} == {"BIRTH", "MARRIAGE", "DEATH"}
    path, params = moj_query(civil[0])
    assert path == "/api/hotich/khaisinh"
    assert set(params) == {"noiDangKy", "so", "quyenSo", "ngayDangKy"}
    assert params["ngayDangKy"].count("/") == 2
    gets = direct_requests("http://127.0.0.1:1/", "tok", civil)
    assert gets[0]["url"].startswith("http://127.0.0.1:1/api/hotich/khaisinh?noiDangKy=")
    people = population_bodies(3)
    assert all(len(p["subject"]["id_number"]) == 12 for p in people)
