"""The ``lgsp-bus`` command: run the bus, its roles, its simulators and operator tools."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from bus import logs
from bus.cli.common import CONFIG_HELP, load_or_exit

if TYPE_CHECKING:
    from bus.config import RoutingConfig

__all__ = ["main"]


COMMAND_MODULES = (
    "bus.cli.config",
    "bus.cli.audit",
    "bus.cli.report",
    "bus.cli.probe",
    "bus.cli.dlq",
    "bus.cli.store",
)
"""Modules with a ``register(subparsers)`` function adding an operator command group."""


ENVIRONMENT = """\
environment:
  LGSP_CONFIG            routing file (default ./routing.yaml, else the shipped one)
  LGSP_AMQP_URL          RabbitMQ, amqp://user:pass@host:5672/vhost (run: in-memory without)
  LGSP_AMQP_MANAGEMENT_URL  RabbitMQ management API for the queue policies
                         (default http://<AMQP host>:15672; "none": policies come from
                         definitions.json)
  LGSP_STORE_URL         idempotent answers and audit trail: sqlite:///PATH (default
                         ./lgsp-bus.sqlite3) or postgresql://user:pass@host/db
  LGSP_AUDIT_KEY         audit subject key, >= 16 characters (routing.yaml: env:LGSP_AUDIT_KEY)
  LGSP_DEMO_API_KEY      the demo consumer's key (run: random when unset)
  LGSP_SIM_CIVIL_STATUS_TOKEN, LGSP_SIM_POPULATION_SECRET
                         the simulators' credentials (run: random when unset)
  LGSP_SIM_CIVIL_STATUS_PORT, LGSP_SIM_POPULATION_PORT
                         run: the simulators' ports (as --civil-status-sim-port …)
"""


def _serve(main: Coroutine[Any, Any, None]) -> int:
    from bus.broker.base import TopologyConflict
    from bus.gateway.server import PortInUse

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    code = 0
    try:
        runner(main)
    except* (PortInUse, TopologyConflict) as refused:  # inside a task group, or not
        print(f"lgsp-bus: {refused.exceptions[0]}", file=sys.stderr)
        code = 2
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lgsp-bus")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _sim_ports(args: argparse.Namespace) -> dict[str, int]:
    from bus.cli.roles import SIM_PORT_ENV

    ports: dict[str, int] = {}
    for kind, env in SIM_PORT_ENV.items():
        value = getattr(args, kind.replace("-", "_") + "_sim_port", None) or os.environ.get(env)
        if value is None:
            continue
        try:
            port = int(value)
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            print(f"lgsp-bus run: {env} must be a port, 1..65535", file=sys.stderr)
            raise SystemExit(2)
        ports[kind] = port
    return ports


async def _with_signals(role: str, args: argparse.Namespace) -> None:
    import structlog

    from bus.observe import tracing

    config = load_or_exit(args.config)
    try:
        on = tracing.configure(config, role)
    except tracing.TracingUnavailable as exc:
        print(f"lgsp-bus {role}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log = structlog.get_logger("bus.cli")
    log.info("tracing.configured", on=on, exporter="otlp/http" if on else None)
    if role in ("run", "gateway"):  # the backend in force (also in /readyz, rate_limit)
        log.info("ratelimit.backend", backend=config.gateway.rate_limit_backend.kind)
    try:
        await _serve_role(role, args, config)
    finally:
        tracing.shutdown()  # exports the spans still buffered


async def _serve_role(role: str, args: argparse.Namespace, config: RoutingConfig) -> None:
    from bus.broker import amqp_address
    from bus.cli import roles as runner
    from bus.cli.audit import check_audit_key
    from bus.cli.reloading import reloading
    from bus.cli.store import check_store_keys
    from bus.observe.metrics import Metrics

    check_store_keys(config, role)  # unreadable or short store.keys: exit 2, plainly
    stop = asyncio.Event()
    runner.install_signal_handlers(stop)
    metrics = Metrics(role="all" if role == "run" else role)
    amqp_url = amqp_address(config, os.environ)
    if role == "run":
        ports = _sim_ports(args)

        def adjust(loaded: RoutingConfig) -> RoutingConfig:
            return runner.with_sim_ports(loaded, ports) if ports else loaded

        config = adjust(config)
        check_audit_key(config, role)
        print(f"lgsp-bus: broker {'RabbitMQ' if amqp_url else 'in-memory (embedded)'}")
        async with reloading(args, config, metrics, adjust) as reloader:  # SIGHUP, file, /admin
            await runner.run_all(
                config,
                amqp_url=amqp_url,
                host=args.host,
                port=args.port,
                stop=stop,
                with_sims=not args.no_sim,
                metrics=metrics,
                reloader=reloader,
            )
        return
    if amqp_url is None:
        print(
            f"lgsp-bus {role}: set LGSP_AMQP_URL (amqp://user:pass@host/vhost) or "
            "broker.urls; only 'lgsp-bus run' can use the in-memory broker",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if role == "gateway":
        from bus.audit.observer import audit_trail

        check_audit_key(config, role)
        async with (
            audit_trail(config) as auditor,
            runner.connected_broker(config, amqp_url, metrics) as broker,
            reloading(args, config, metrics) as reloader,
        ):
            await runner.run_gateway(
                config,
                broker,
                args.host,
                args.port,
                stop,
                metrics=metrics,
                auditor=auditor,
                reloader=reloader,
            )
    elif role == "worker":
        services = args.service or None
        http = None if args.http_port < 0 else (args.http_host, args.http_port)
        async with (
            runner.connected_broker(config, amqp_url, metrics) as broker,
            reloading(args, config, metrics) as reloader,
        ):
            await runner.run_worker(
                config, broker, stop, services, metrics=metrics, http=http, reloader=reloader
            )


def _announce_demo(host: str, port: int, *, generated: bool) -> None:
    # A key the operator set is never echoed (terminals and their logs keep it); a key
    # generated for this run only is shown, since nobody else knows it.
    key = os.environ.get("LGSP_DEMO_API_KEY", "") if generated else "$LGSP_DEMO_API_KEY"
    where = "generated for this run only" if generated else "from LGSP_DEMO_API_KEY"
    print(
        f"\nTry it (demo consumer key {where}):\n"
        f"  curl -s http://{host}:{port}/v1/civil-status/lookup \\\n"
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        '    -d \'{"request_id": "demo-0001-birth", "record_type": "BIRTH",\n'
        '         "caller": {"system_id": "motcua", "unit_code": "H01",\n'
        '                    "officer_id": "001085000123"},\n'
        '         "purpose": {"procedure_code": "1.001234", "dossier_id": "HS-2026-0001",\n'
        '                     "legal_basis": "LEGAL_DUTY"},\n'
        '         "by_registration": {"authority_code": "00001", "number": "1"}}\'\n'
    )


async def _sim(args: argparse.Namespace) -> None:
    from bus.cli import roles as runner

    stop = asyncio.Event()
    runner.install_signal_handlers(stop)
    if args.kind == "civil-status":
        from adapters.civil_status.simulator import build_app as build_civil

        token = os.environ.get("LGSP_SIM_CIVIL_STATUS_TOKEN") or "sim-token"
        app = build_civil(
            token=token, seed=args.seed, latency_ms=args.latency_ms, error_rate=args.error_rate
        )
    else:
        from adapters.population_db.simulator import build_app as build_population

        secret = os.environ.get("LGSP_SIM_POPULATION_SECRET") or "sim-secret"
        app = build_population(
            username=args.username,
            secret=secret,
            seed=args.seed,
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
        )
    async with runner.http_site(app, args.host, args.port):
        print(f"simulator {args.kind} listening on http://{args.host}:{args.port}/")
        await stop.wait()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the tests of ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="lgsp-bus",
        description="Provincial data-exchange bus: HTTP gateway → RabbitMQ → adapter workers "
        "→ national databases (C06 population SOAP, MOJ civil-status REST).",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lgsp-bus {_version()}")
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        default=None,
        help="log line format (default: console on a terminal, JSON otherwise)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        help="least severe level logged (default info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cfg_help = CONFIG_HELP
    from bus.cli.reloading import add_arguments as reload_arguments  # --no-watch

    run = sub.add_parser(
        "run",
        help="gateway + worker + simulators in one process (embedded default)",
        description="Run gateway, worker and the simulators in one process. Uses RabbitMQ "
        "when LGSP_AMQP_URL or broker.urls is set, else the in-memory broker; keeps idempotent "
        "answers and the audit trail in LGSP_STORE_URL (default: SQLite ./lgsp-bus.sqlite3). "
        "Unset demo secrets (LGSP_DEMO_API_KEY, LGSP_SIM_*, LGSP_AUDIT_KEY) get random values "
        "for the run; a curl example is printed (with the demo key only if it was generated).",
    )
    run.add_argument("--config", help=cfg_help)
    reload_arguments(run)
    run.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    run.add_argument("--no-sim", action="store_true", help="do not start the simulators")
    for kind, env in (
        ("civil-status", "LGSP_SIM_CIVIL_STATUS_PORT"),
        ("population", "LGSP_SIM_POPULATION_PORT"),
    ):
        run.add_argument(
            f"--{kind}-sim-port",
            type=int,
            metavar="PORT",
            help=f"run the {kind} simulator on this port and point its loopback upstream "
            f"there (default: the port in routing.yaml; env {env})",
        )

    gw = sub.add_parser(
        "gateway",
        help="HTTP ingress only (needs LGSP_AMQP_URL or broker.urls)",
        description="Serve the HTTP API; publish requests to RabbitMQ (LGSP_AMQP_URL or "
        "broker.urls; several nodes of a cluster: failover between them).",
    )
    gw.add_argument("--config", help=cfg_help)
    reload_arguments(gw)
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gw.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")

    wk = sub.add_parser(
        "worker",
        help="consume service queues and call upstreams (needs LGSP_AMQP_URL or broker.urls)",
        description="Consume the service queues from RabbitMQ (LGSP_AMQP_URL or broker.urls) "
        "and call the adapters.",
    )
    wk.add_argument("--config", help=cfg_help)
    reload_arguments(wk)
    wk.add_argument(
        "--service", action="append", help="serve only this service (repeatable; default all)"
    )
    wk.add_argument(
        "--http-host", default="127.0.0.1", help="address of /healthz, /readyz, /metrics"
    )
    wk.add_argument(
        "--http-port",
        type=int,
        default=8081,
        help="port of /healthz, /readyz, /metrics (default 8081; -1: no HTTP server)",
    )

    sim = sub.add_parser(
        "sim",
        help="run a simulated national database",
        description="Serve a sandbox national DB with generated data and fault knobs.",
    )
    sim.add_argument("kind", choices=["civil-status", "population"])
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=None, help="default 8482 (civil), 8481 (pop.)")
    sim.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    sim.add_argument("--latency-ms", type=float, default=0.0, help="added latency per call")
    sim.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 503")
    sim.add_argument("--username", default="lgsp-demo", help="C06 username (population)")

    # Operator command groups live in their own modules; each adds its subparsers and
    # sets ``handler`` (args → exit code).
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lgsp-bus`` console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``lgsp-bus config diff a b | head``): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    if args.command == "sim":
        if args.port is None:
            args.port = 8482 if args.kind == "civil-status" else 8481
        return _serve(_sim(args))
    if args.command == "run":
        from bus.cli import roles as runner

        generated = runner.ensure_demo_secrets()
        _announce_demo(args.host, args.port, generated="LGSP_DEMO_API_KEY" in generated)
        if "LGSP_AUDIT_KEY" in generated:
            print(
                "Note: LGSP_AUDIT_KEY was unset, so this run uses a random audit key: "
                "'lgsp-bus audit query --subject' cannot find this run's records in a later "
                "run. Set a fixed key (export LGSP_AUDIT_KEY=..., at least 16 characters) to "
                "keep subject queries working across runs.\n"
            )
    return _serve(_with_signals(args.command, args))


if __name__ == "__main__":
    sys.exit(main())
