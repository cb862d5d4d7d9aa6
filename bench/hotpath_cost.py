"""CPU cost of the bus's small per-request steps (no I/O): metrics, the access log line, ids.

Run: ``.venv/bin/python -m bench.hotpath_cost [--seconds 1.0]``. Single-threaded, so every
figure is per core; each row calls the real function. Rows with "(uncached)" repeat what the
code did before a cut, for the before/after figures in README's table of cuts:

* metrics: :meth:`bus.observe.metrics.Metrics.request_finished` (gateway, once per request),
  ``upstream_call`` and ``worker_started``/``worker_finished`` (worker), against the same
  families' ``labels(...)`` looked up on every call;
* access log: :class:`bus.observe.accesslog.AccessLogObserver` with the JSON logging of
  :func:`bus.logs.configure` writing to ``/dev/null`` (processors, masking, rendering);
* ids: :func:`bus.canonical.new_id` (exchange and correlation ids, ≈ 4 a request) against
  the ``uuid.uuid4().hex`` it drew before;
* at rest: :class:`bus.sealing.Keyring` sealing and opening a 2 KiB answer (AES-256-GCM,
  as the store does once each per answered request and read);
* validation: the civil-status request model on a bench body (gateway and worker each
  once per request), and its free-text check against the per-character scan it had;
* upstream URL: :meth:`adapters.common.http.UpstreamHttp.url` (remembered) against the
  ``urljoin`` it ran on every call.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import unicodedata
import uuid
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urljoin

from adapters.civil_status.models import CivilStatusLookup
from adapters.common.http import UpstreamHttp
from bench.workload import civil_bodies
from bus import logs
from bus.canonical import _INVISIBLE, _plain_text, new_id
from bus.config import UpstreamConfig
from bus.exchange import Exchange
from bus.observe.accesslog import AccessLogObserver
from bus.observe.metrics import Metrics
from bus.sealing import Keyring


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a warm-up)."""
    for _ in range(100):
        fn()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            fn()
        calls += 100
    return calls / elapsed


def rows() -> list[tuple[str, Callable[[], object]]]:
    """The measured steps."""
    m = Metrics(role="all")

    def gateway_metrics() -> None:
        m.request_finished(
            service="civil-status",
            operation="lookup",
            consumer="dvc",
            code="OK",
            status=200,
            seconds=0.01,
        )

    def gateway_uncached() -> None:
        s, o = m._service("civil-status"), m._operation("lookup")
        m.requests.labels(s, o, m._consumer("dvc"), m._code("OK"), "ok").inc()
        m.request_duration.labels(s, o, "ok").observe(0.01)

    def worker_metrics() -> None:
        m.worker_started("civil-status")
        m.upstream_call("civil-status", "lookup", "OK", 0.01)
        m.worker_finished("civil-status")

    def worker_uncached() -> None:
        s, o = m._service("civil-status"), m._operation("lookup")
        m.worker_in_flight.labels(s).inc()
        m.upstream_requests.labels(s, o, m._code("OK")).inc()
        m.upstream_duration.labels(s, o).observe(0.01)
        m.worker_in_flight.labels(s).dec()

    devnull = open("/dev/null", "w")  # noqa: SIM115 (lives as long as the benchmark)
    logs.configure("json", "info", devnull)
    access = AccessLogObserver()
    exchange = Exchange(correlation_id=str(uuid.uuid4()))
    exchange.service, exchange.operation, exchange.consumer = "civil-status", "lookup", "dvc"
    exchange.status, exchange.outcome = 200, "OK"
    coro = access.exchange_finished

    def access_line() -> None:
        with contextlib.suppress(StopIteration):
            coro(exchange).send(None)  # it never awaits: run it without an event loop

    ring = Keyring.generated()
    answer = b'{"persons":[{"personal_id":"001085000123"}],"pad":"' + b"x" * 2000 + b'"}'
    where = ("portal", "req-0123456789abcdef")
    key_id, sealed = ring.seal(where, answer)

    def seal_open() -> None:
        ring.open(key_id, where, ring.seal(where, answer)[1])

    body = dict(civil_bodies(1)[0], request_id=str(uuid.uuid4()))
    name = "Nguyễn Thị Minh Khai"

    def per_character() -> bool:
        return any(unicodedata.category(ch) in _INVISIBLE for ch in name)

    upstream = UpstreamConfig.model_validate({"url": "https://moj.example/api"})
    http = UpstreamHttp(upstream, cast(Any, None), cast(Any, None))

    return [
        ("gateway metrics (uncached)", gateway_uncached),
        ("gateway metrics", gateway_metrics),
        ("worker metrics (uncached)", worker_uncached),
        ("worker metrics", worker_metrics),
        ("access log line", access_line),
        ("new id (uuid.uuid4().hex)", lambda: uuid.uuid4().hex),
        ("new id", new_id),
        ("answer seal (2 KiB)", lambda: ring.seal(where, answer)),
        ("answer open (2 KiB)", lambda: ring.open(key_id, where, sealed)),
        ("answer seal + open (2 KiB)", seal_open),
        ("civil-status request validation", lambda: CivilStatusLookup.model_validate(body)),
        ("free-text check (per character)", per_character),
        ("free-text check", lambda: _plain_text(name)),
        ("upstream URL (urljoin)", lambda: urljoin("https://moj.example/api/", "v1/birth")),
        ("upstream URL", lambda: http.url("/v1/birth")),
    ]


def main() -> None:
    """Print µs per call and calls per second per core for each step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per row")
    args = parser.parse_args()
    print(f"{'step':34} {'µs/call':>9} {'calls/s/core':>13}")
    for name, fn in rows():
        rate = _rate(fn, args.seconds)
        print(f"{name:34} {1e6 / rate:9.1f} {rate:13,.0f}")


if __name__ == "__main__":
    main()
