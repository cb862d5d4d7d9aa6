"""The load generator: a separate process (``python -m bench.loadgen SPEC.json``).

Closed loop (``concurrency`` workers, each sends its next request when the last one is
answered) or open loop (``rate`` requests per second on a fixed schedule, latency counted
from the scheduled start so a stalled server cannot hide its queueing). A warm-up runs
first and is not counted. It prints JSON lines on stdout: ``measuring`` when the counted
window starts, ``measured`` when it ends (the harness samples ``/proc`` at both),
``progress`` every ``progress_s`` in open loop, and last ``result``.

An error is any answer that is not 2xx or any exception (timeout, refused connection);
they are counted by kind (``HTTP 503 OVERLOADED``, ``TimeoutError`` …) — never with
bodies, which may hold personal data.

The spec (JSON)::

    {"requests": [{"method": "POST", "url": "...", "headers": {...}, "body": {...}}, ...],
     "unique_field": "request_id",   # set to a fresh value in every body (or null)
     "mode": "closed", "concurrency": 16, "rate": 50.0, "max_in_flight": 256,
     "warmup_s": 1.0, "duration_s": 5.0, "timeout_s": 15.0, "progress_s": 10.0}
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

__all__ = ["Recorder", "latency_summary", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending sequence (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 · n)
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds."""
    ordered = sorted(latencies_s)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    out = {f"p{q}": percentile(ordered, q) * 1000 for q in (50, 90, 99)}
    out["max"] = (ordered[-1] if ordered else 0.0) * 1000
    out["mean"] = mean * 1000
    return {k: round(v, 3) for k, v in out.items()}


@dataclass
class Recorder:
    """Counts answers inside the measuring window ``[start, end)`` (monotonic seconds)."""

    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0

    def record(self, started: float, finished: float, error: str | None) -> None:
        """One answer (or failure) that arrived at ``finished``."""
        if not self.start <= finished < self.end:
            if error is not None and finished < self.start:
                self.warmup_errors += 1
            return
        if error is None:
            self.latencies.append(finished - started)
        else:
            self.errors[error] += 1


@dataclass(frozen=True, slots=True)
class _Template:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any] | None


def _templates(spec: dict[str, Any]) -> list[_Template]:
    return [
        _Template(r["method"], r["url"], dict(r.get("headers") or {}), r.get("body"))
        for r in spec["requests"]
    ]


def _emit(event: str, **data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps({"event": event, **data}) + b"\n")
    sys.stdout.flush()


def _error_kind(response: aiohttp.ClientResponse, payload: bytes) -> str:
    code = ""
    if payload[:1] == b"{":
        try:
            err = orjson.loads(payload).get("error")
            if isinstance(err, dict) and isinstance(err.get("code"), str):
                code = " " + err["code"][:40]
        except orjson.JSONDecodeError:
            pass
    return f"HTTP {response.status}{code}"


class _Driver:
    def __init__(self, spec: dict[str, Any], session: aiohttp.ClientSession) -> None:
        self.templates = _templates(spec)
        self.unique = spec.get("unique_field")
        self.session = session
        self.counter = itertools.count()
        self.prefix = f"bench-{os.getpid()}-{int(time.time())}"

    async def one(self, started: float | None = None) -> tuple[float, float, str | None]:
        n = next(self.counter)
        tpl = self.templates[n % len(self.templates)]
        data = None
        if tpl.body is not None:
            body = tpl.body
            if self.unique:
                body = {**body, self.unique: f"{self.prefix}-{n}"}
            data = orjson.dumps(body)
        t0 = time.monotonic() if started is None else started
        error: str | None = None
        try:
            async with self.session.request(
                tpl.method, tpl.url, data=data, headers=tpl.headers
            ) as response:
                payload = await response.read()
                if not 200 <= response.status < 300:
                    error = _error_kind(response, payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        return t0, time.monotonic(), error


async def _closed(driver: _Driver, rec: Recorder, concurrency: int) -> None:
    async def worker() -> None:
        while time.monotonic() < rec.end:
            rec.record(*await driver.one())

    async with asyncio.TaskGroup() as tasks:
        for _ in range(concurrency):
            tasks.create_task(worker())


async def _open(
    driver: _Driver, rec: Recorder, rate: float, max_in_flight: int, progress_s: float
) -> None:
    in_flight = 0
    last_progress = time.monotonic()

    async def fire(scheduled: float) -> None:
        nonlocal in_flight
        try:
            rec.record(*await driver.one(started=scheduled))
        finally:
            in_flight -= 1

    begin = time.monotonic()
    async with asyncio.TaskGroup() as tasks:
        for k in itertools.count():
            scheduled = begin + k / rate
            if scheduled >= rec.end:
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                # The server is this far behind: count it, do not pile on more.
                rec.record(scheduled, time.monotonic(), "shed (client in-flight cap)")
            else:
                in_flight += 1
                tasks.create_task(fire(scheduled))
            now = time.monotonic()
            if now - last_progress >= progress_s:
                last_progress = now
                _emit(
                    "progress",
                    elapsed_s=round(now - begin, 1),
                    ok=len(rec.latencies),
                    errors=sum(rec.errors.values()),
                    in_flight=in_flight,
                )


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load described by ``spec``; returns the result (also printed)."""
    mode = spec.get("mode", "closed")
    concurrency = int(spec.get("concurrency", 1))
    timeout = aiohttp.ClientTimeout(total=float(spec.get("timeout_s", 15.0)))
    limit = concurrency if mode == "closed" else int(spec.get("max_in_flight", 256))
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    now = time.monotonic()
    warmup, duration = float(spec.get("warmup_s", 1.0)), float(spec["duration_s"])
    rec = Recorder(start=now + warmup, end=now + warmup + duration)

    async def marks() -> None:
        await asyncio.sleep(max(0.0, rec.start - time.monotonic()))
        _emit("measuring")
        await asyncio.sleep(max(0.0, rec.end - time.monotonic()))
        _emit("measured")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        driver = _Driver(spec, session)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(marks())
            if mode == "closed":
                await _closed(driver, rec, concurrency)
            else:
                await _open(
                    driver,
                    rec,
                    float(spec["rate"]),
                    limit,
                    float(spec.get("progress_s", 10.0)),
                )
    ok = len(rec.latencies)
    result = {
        "mode": mode,
        "concurrency": concurrency if mode == "closed" else None,
        "rate": spec.get("rate") if mode == "open" else None,
        "duration_s": duration,
        "requests": ok,
        "rps": round(ok / duration, 1),
        "errors": sum(rec.errors.values()),
        "error_kinds": dict(rec.errors),
        "warmup_errors": rec.warmup_errors,
        "latency_ms": latency_summary(rec.latencies),
    }
    _emit("result", **result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.loadgen SPEC.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.loadgen SPEC.json", file=sys.stderr)
        return 2
    spec = orjson.loads(Path(args[0]).read_bytes())
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(spec))
    else:
        uvloop.run(run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
