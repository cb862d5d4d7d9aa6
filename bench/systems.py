"""The systems under test, each in its own processes, started for one run and stopped after.

:func:`open_lab` starts what the chosen targets need — the simulators, a RabbitMQ vhost,
the bus (gateway + worker), baseline A (gateway + consumer), the embedded bus — waits
until each answers a real request, and on exit (normal, error or Ctrl-C) stops every
process it started and deletes the vhost.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.busconfig import (
    API_KEY_ENV,
    CIVIL_TOKEN_ENV,
    POPULATION_SECRET_ENV,
    BenchConfig,
    bench_config,
    features,
    set_path,
)
from bench.procs import (
    REPO_ROOT,
    Child,
    ChildFailed,
    bus_command,
    child_env,
    free_port,
    wait_http,
)
from bench.rabbit import BenchVhost
from bench.workload import (
    TARGETS,
    baseline_requests,
    bus_requests,
    civil_bodies,
    direct_requests,
    population_bodies,
)

__all__ = [
    "REPO",
    "RESULTS_DIR",
    "TARGETS",
    "BusRunSettings",
    "Lab",
    "LabSettings",
    "Target",
    "open_lab",
]

REPO = REPO_ROOT


@dataclass
class Target:
    """One system under test: the requests the load sends and the processes it costs."""

    name: str
    description: str
    requests: list[dict[str, Any]]
    unique_field: str | None
    processes: dict[str, Child]
    """Label → process whose CPU and RSS count for this target (the simulator included)."""
    uses_rabbitmq: bool


@dataclass(frozen=True)
class LabSettings:
    """What to start and how."""

    targets: Sequence[str]
    workdir: Path
    config_path: Path = REPO / "routing.yaml"
    log_level: str = "info"
    bus_env: dict[str, str] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    ready_timeout_s: float = 90.0


RESULTS_DIR = REPO / "bench" / "results"


@dataclass
class BusRunSettings:
    """What every harness command (``run``, ``soak``) sets the same way: the config the bus
    runs on and how it logs, the load's request timeout, where results go."""

    timeout_s: float = 15.0
    out_dir: Path = RESULTS_DIR
    config_path: Path = REPO / "routing.yaml"
    log_level: str = "info"
    bus_env: dict[str, str] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    keep_logs: bool = False

    def lab(self, targets: Sequence[str], workdir: Path) -> LabSettings:
        """The lab to start for ``targets`` with these settings."""
        return LabSettings(
            targets=targets,
            workdir=workdir,
            config_path=self.config_path,
            log_level=self.log_level,
            bus_env=self.bus_env,
            config_overrides=self.config_overrides,
        )


@dataclass
class Lab:
    """The running systems: targets by name, the config the bus runs on, the vhost."""

    targets: dict[str, Target] = field(default_factory=dict)
    config: BenchConfig | None = None
    vhost: BenchVhost | None = None
    children: list[Child] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def child(self, name: str) -> Child | None:
        """A started process by name."""
        return next((c for c in self.children if c.name == name), None)


class _Starter:
    def __init__(self, lab: Lab, settings: LabSettings) -> None:
        self.lab, self.settings = lab, settings
        (settings.workdir / "logs").mkdir(parents=True, exist_ok=True)

    async def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(
            name,
            argv,
            env=child_env(env),
            log_path=self.settings.workdir / "logs" / f"{name}.log",
            cwd=REPO,
        )
        self.lab.children.append(child)
        await child.start()
        return child

    def bus(self, *args: str) -> list[str]:
        return [*bus_command(), "--log-level", self.settings.log_level, *args]


async def _validate_config(path: Path, env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *bus_command(),
        "config",
        "validate",
        str(path),
        env=child_env(env),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode:
        raise ChildFailed(f"the benchmark's routing.yaml is invalid:\n{out.decode()[-2000:]}")


async def _first_answer(target: Target, children: Sequence[Child], timeout_s: float) -> None:
    """Send the target's first request until it is answered 2xx (the worker is consuming)."""
    req = target.requests[0]
    deadline = time.monotonic() + timeout_s
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() < deadline:
            for c in children:
                c.check_alive()
            body = dict(req["body"]) if req.get("body") is not None else None
            if body is not None and target.unique_field:
                body[target.unique_field] = f"bench-probe-{secrets.token_hex(6)}"
            try:
                async with session.request(
                    req["method"], req["url"], json=body, headers=req["headers"]
                ) as response:
                    text = await response.text()
                    if 200 <= response.status < 300:
                        return
                    last = f"HTTP {response.status}: {text[:300]}"
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        break  # the request itself is refused: waiting will not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.25)
    tails = "\n".join(f"--- {c.name}:\n{c.log_tail()}" for c in children)
    raise ChildFailed(f"{target.name} never answered a request ({last})\n{tails}")


@asynccontextmanager
async def open_lab(settings: LabSettings) -> AsyncIterator[Lab]:  # noqa: C901 (ARCHITECTURE.md)
    """Start everything ``settings.targets`` need; stop all of it on exit."""
    wanted = set(settings.targets)
    unknown = wanted - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown targets: {sorted(unknown)} (known: {', '.join(TARGETS)})")
    lab = Lab()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_teardown, lab)
        s = _Starter(lab, settings)
        soap = bool(wanted & {"bus-soap", "embedded-soap"})
        amqp = bool(wanted & {"A", "bus-rest", "bus-soap"})
        bus_amqp = bool(wanted & {"bus-rest", "bus-soap"})
        embedded = bool(wanted & {"embedded-rest", "embedded-soap"})

        civil_port, pop_port = free_port(), free_port()
        civil_url = f"http://127.0.0.1:{civil_port}/"
        pop_url = f"http://127.0.0.1:{pop_port}/" if soap else None
        shipped = yaml.safe_load(settings.config_path.read_text(encoding="utf-8"))
        cfg = bench_config(shipped, civil_url=civil_url, population_url=pop_url)
        for dotted, value in settings.config_overrides.items():
            set_path(cfg.data, dotted, value)
            cfg.adjustments.append(f"{dotted} set to {value!r} (--set)")
        lab.config = cfg
        secret_env = dict(cfg.env)
        config_file = settings.workdir / "routing.yaml"
        config_file.write_text(yaml.safe_dump(cfg.data, sort_keys=False, allow_unicode=True))
        validating = asyncio.create_task(_validate_config(config_file, secret_env))

        civil_sim = await s.start(
            "sim-civil-status",
            s.bus("sim", "civil-status", "--port", str(civil_port)),
            {CIVIL_TOKEN_ENV: secret_env[CIVIL_TOKEN_ENV]},
        )
        sims = [civil_sim]
        pop_sim = None
        if soap:
            pop_sim = await s.start(
                "sim-population",
                s.bus(
                    "sim",
                    "population",
                    "--port",
                    str(pop_port),
                    "--username",
                    cfg.population_username,
                ),
                {POPULATION_SECRET_ENV: secret_env[POPULATION_SECRET_ENV]},
            )
            sims.append(pop_sim)
        await validating
        if amqp:
            lab.vhost = BenchVhost()
            await lab.vhost.create()

        bus_env = {**secret_env, **settings.bus_env}
        store = settings.workdir / "store"
        store.mkdir(exist_ok=True)
        ready: list[tuple[str, list[Child]]] = []
        gw_port = base_port = emb_port = 0
        if bus_amqp:
            assert lab.vhost is not None
            env = {
                "LGSP_AMQP_URL": lab.vhost.url,
                "LGSP_STORE_URL": f"sqlite:///{store / 'bus.sqlite3'}",
                **bus_env,
            }
            # --http-port 0: the worker's health/metrics port is picked free, so two runs
            # (or a bus on this host) never collide on the default 8081.
            worker = await s.start(
                "bus-worker",
                s.bus("worker", "--config", str(config_file), "--http-port", "0"),
                env,
            )
            gw_port = free_port()
            gateway = await s.start(
                "bus-gateway",
                s.bus("gateway", "--config", str(config_file), "--port", str(gw_port)),
                env,
            )
            ready.append((f"http://127.0.0.1:{gw_port}/readyz", [gateway, worker]))
        if "A" in wanted:
            assert lab.vhost is not None
            broker = cfg.data.get("broker") or {}
            common = ["--amqp", lab.vhost.url]
            common += ["--max-length", str(broker.get("max_queue_length", 10_000))]
            bench_python = [sys.executable, "-m", "bench.baseline"]
            consumer = await s.start(
                "baseline-consumer",
                [
                    *bench_python,
                    "consumer",
                    *common,
                    "--upstream",
                    civil_url,
                    "--prefetch",
                    str(broker.get("prefetch", 32)),
                ],
                {CIVIL_TOKEN_ENV: secret_env[CIVIL_TOKEN_ENV]},
            )
            base_port = free_port()
            base_gw = await s.start(
                "baseline-gateway",
                [*bench_python, "gateway", *common, "--port", str(base_port)],
                {},
            )
            ready.append((f"http://127.0.0.1:{base_port}/healthz", [base_gw, consumer]))
        if embedded:
            emb_port = free_port()
            env = {"LGSP_STORE_URL": f"sqlite:///{store / 'embedded.sqlite3'}", **bus_env}
            emb = await s.start(
                "embedded",
                s.bus("run", "--no-sim", "--config", str(config_file), "--port", str(emb_port)),
                env,
            )
            ready.append((f"http://127.0.0.1:{emb_port}/readyz", [emb]))
        ready.append((civil_url + "_sim/stats", [civil_sim]))
        if pop_sim is not None:
            ready.append((f"{pop_url}_sim/stats", [pop_sim]))
        await asyncio.gather(
            *(wait_http(url, kids, timeout_s=settings.ready_timeout_s) for url, kids in ready)
        )

        key = secret_env[API_KEY_ENV]
        civil, population = civil_bodies(), population_bodies()

        def add(name: str, requests: list[dict[str, Any]], *procs: str, sim: Child) -> None:
            lab.targets[name] = Target(
                name=name,
                description=TARGETS[name],
                requests=requests,
                unique_field=None if name == "B" else "request_id",
                processes=_procs(lab, *procs, sim=sim),
                uses_rabbitmq=name in ("A", "bus-rest", "bus-soap"),
            )

        if "B" in wanted:
            add("B", direct_requests(civil_url, secret_env[CIVIL_TOKEN_ENV], civil), sim=civil_sim)
        if "A" in wanted:
            reqs = baseline_requests(base_port, civil)
            add("A", reqs, "baseline-gateway", "baseline-consumer", sim=civil_sim)
        for kind, port, procs in (
            ("bus", gw_port, ("bus-gateway", "bus-worker")),
            ("embedded", emb_port, ("embedded",)),
        ):
            if f"{kind}-rest" in wanted:
                reqs = bus_requests(port, cfg.civil_service, key, civil)
                add(f"{kind}-rest", reqs, *procs, sim=civil_sim)
            if f"{kind}-soap" in wanted:
                assert pop_sim is not None
                assert cfg.population_service is not None
                reqs = bus_requests(port, cfg.population_service, key, population)
                add(f"{kind}-soap", reqs, *procs, sim=pop_sim)
        await asyncio.gather(
            *(
                _first_answer(t, list(t.processes.values()), settings.ready_timeout_s)
                for t in lab.targets.values()
            )
        )
        lab.info = {
            "features": features(cfg.data),
            "config_adjustments": cfg.adjustments,
            "vhost": lab.vhost.name if lab.vhost else None,
        }
        if gw_port or emb_port:
            lab.info["metrics_endpoint"] = await _probe_metrics(gw_port or emb_port)
        yield lab


async def _teardown(lab: Lab) -> None:
    """Stop every child at once (the load has ended: nothing is in flight), then delete
    the vhost once nothing is connected to it."""
    try:
        await asyncio.gather(*(child.stop() for child in reversed(lab.children)))
    finally:
        if lab.vhost is not None:
            await lab.vhost.delete()


def _procs(lab: Lab, *names: str, sim: Child) -> dict[str, Child]:
    procs: dict[str, Child] = {}
    for name in names:
        child = lab.child(name)
        assert child is not None
        procs[name] = child
    procs[sim.name] = sim
    return procs


async def _probe_metrics(port: int) -> str:
    """Whether the gateway serves ``/metrics`` (the metrics feature is on)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            return f"GET /metrics → HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"GET /metrics failed: {type(exc).__name__}"
