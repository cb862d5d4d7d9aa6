"""How long the console's pages and API take, against a readiness probe as the baseline.

Run: ``.venv/bin/python bench/console_cost.py [--requests 200]``. Starts ``lgsp-bus run``
(embedded broker, simulators, the console on its own admin port, via
``tests/support/console.py``), logs in as a viewer and times ``--requests`` sequential GETs
of each page and of ``/admin/api/overview``, interleaved with the gateway's ``/readyz``;
prints the median and p95 in ms and each page's median as a ratio to ``/readyz``'s. The
pages are rendered per request (no caching); the overview also reads each queue's depth.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from tests.support.console import console_bus, session_login

PAGES = ("", "services", "deadletters", "config")


def _time(http: requests.Session, url: str) -> float:
    started = time.perf_counter()
    r = http.get(url, timeout=30)
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with console_bus("") as bus:
        http, _ = session_login(bus, "viewer")
        bearer = {"Authorization": f"Bearer {bus.keys['viewer']}"}
        targets = {f"/admin/console/{p}": bus.admin + f"admin/console/{p}" for p in PAGES}
        targets["/admin/api/overview"] = bus.admin + "admin/api/overview"
        times: dict[str, list[float]] = {name: [] for name in [*targets, "/readyz"]}
        probe = requests.Session()  # kept alive, as the console's session is
        for _ in range(args.requests):
            times["/readyz"].append(_time(probe, bus.gateway + "readyz"))
            for name, url in targets.items():
                if name.startswith("/admin/api"):
                    http.headers.update(bearer)
                times[name].append(_time(http, url))
                http.headers.pop("Authorization", None)
        base = statistics.median(times["/readyz"])
        print(f"{'path':<28} {'median ms':>9} {'p95 ms':>7} {'× readyz':>8}")
        for name, samples in times.items():
            med = statistics.median(samples)
            p95 = statistics.quantiles(samples, n=20)[-1]
            print(f"{name:<28} {med:>9.2f} {p95:>7.2f} {med / base:>8.2f}")


if __name__ == "__main__":
    main()
