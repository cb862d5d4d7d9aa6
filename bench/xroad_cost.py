"""What the X-Road ingress costs over the JSON API, for the same call.

Run: ``.venv/bin/python bench/xroad_cost.py [--requests 300]``. Starts a bus on the
in-memory broker (``tests/support/stack.py``) serving the procedure simulator as
``getDossierStatus`` (``tests/support/xroad.py``), and times ``--requests`` sequential
calls of each: ``POST /v1/dossier-status/status`` (API key), ``POST /r1/…`` and
``POST /xroad`` (SOAP, X-Road headers), interleaved. Prints the median and p95 in ms and
each ingress's median as a ratio to ``/v1``'s (the ratio is the figure: the machine's
speed cancels out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import aiohttp

from adapters.base import parse_routing
from adapters.procedure.simulator import build_app
from tests.support.stack import new_secret, running_bus, serve_app
from tests.support.xroad import MEMBER, PORTAL, config, envelope, headers, status_body

DOSSIER = "000.00.00.H31-260115-0042"


async def _time(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> float:
    started = time.perf_counter()
    async with session.post(url, **kwargs) as r:
        await r.read()
        assert r.status == 200, r.status
    return (time.perf_counter() - started) * 1000


async def main(requests: int) -> None:
    os.environ["T_PROC_TOKEN"] = token = new_secret()
    os.environ["T_BENCH_KEY"] = key = new_secret()
    async with serve_app(build_app(token=token)) as sim_url:
        data = config(sim_url).model_dump(mode="json", exclude_none=True)
        data["consumers"]["portal"]["api_keys"] = [{"key": "env:T_BENCH_KEY"}]
        cfg = parse_routing(data)
        async with running_bus(cfg, None, key) as bus:
            s, base = bus.session, bus.url
            times: dict[str, list[float]] = {"/v1": [], "/r1": [], "/xroad": []}
            for i in range(requests):
                rid = f"bench-{i:08d}"
                times["/v1"].append(
                    await _time(
                        s,
                        base + "v1/dossier-status/status",
                        json={"request_id": rid, "dossier_id": DOSSIER},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                )
                times["/r1"].append(
                    await _time(
                        s,
                        base + f"r1/{MEMBER}/getDossierStatus",
                        json={"dossier_id": DOSSIER},
                        headers={"X-Road-Client": PORTAL, "X-Road-Id": rid + "r"},
                    )
                )
                times["/xroad"].append(
                    await _time(
                        s,
                        base + "xroad",
                        data=envelope(headers(msg_id=rid + "s"), status_body(DOSSIER)),
                        headers={"Content-Type": "text/xml"},
                    )
                )
    v1 = statistics.median(times["/v1"])
    for name, values in times.items():
        values.sort()
        median, p95 = statistics.median(values), values[int(len(values) * 0.95) - 1]
        print(f"{name:8} median {median:6.2f} ms  p95 {p95:6.2f} ms  ratio {median / v1:4.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
