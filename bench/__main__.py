"""``python -m bench``: the load benchmark (``run``, the default) and ``soak``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.busconfig import BenchConfigError
from bench.procs import ChildFailed
from bench.run import RESULTS_DIR, RunSettings, print_report, run_benchmark
from bench.systems import REPO, TARGETS

QUICK = {"rounds": 1, "warmup_s": 0.5, "duration_s": 2.0, "prime_s": 0.5, "retries": 0}
"""``--quick``: one short round (≈ 1.5 min in all); figures are noisier."""


def _csv_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(not 1 <= v <= 1024 for v in values):
        raise argparse.ArgumentTypeError("concurrency levels are 1..1024, comma-separated")
    return values


def _targets(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"targets are among: {', '.join(TARGETS)}")
    return names


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name, value


def _bounded(low: float, high: float) -> Any:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}")
        return value

    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=REPO / "routing.yaml",
        help="routing.yaml to start from (default: the shipped one)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_assignment,
        default=[],
        metavar="PATH=YAML",
        help="change the bus's config, e.g. --set broker.prefetch=64 (YAML value; null "
        "deletes); repeatable",
    )
    p.add_argument(
        "--bus-env",
        action="append",
        type=_assignment,
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the bus processes; repeatable",
    )
    p.add_argument(
        "--log-level", default="info", help="the bus processes' log level (default: info)"
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs (path printed)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m bench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load benchmark of lgsp-bus against in-run baselines, all on loopback. "
        "'run' (the default) measures baseline B (simulator direct), baseline A (minimal "
        "aiohttp → RabbitMQ RPC → consumer path), the bus (gateway + worker on RabbitMQ; REST "
        "and SOAP) and the embedded bus, interleaved, at each concurrency; prints a table "
        "(ratios to baseline A) and writes bench/results/<timestamp>.json. 'soak' runs "
        "moderate open-loop load on the bus and reports RSS growth and errors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="the benchmark (default; ≈ 8 min, --quick ≈ 1.5 min)")
    run.add_argument("--quick", action="store_true", help="one short round per target/level")
    run.add_argument(
        "--targets",
        type=_targets,
        default=list(TARGETS),
        help=f"comma-separated, among {', '.join(TARGETS)} (default: all)",
    )
    run.add_argument("--concurrency", type=_csv_ints, default=[1, 16, 128], help="default 1,16,128")
    run.add_argument(
        "--rounds", type=int, choices=range(1, 21), metavar="1..20", default=None,
        help="rounds per target and level; the median is reported (default 3, quick 1)",
    )  # fmt: skip
    run.add_argument(
        "--warmup", type=_bounded(0, 120), default=None,
        help="s of uncounted load before each measurement (default 1.5, quick 0.5)",
    )  # fmt: skip
    run.add_argument(
        "--duration", type=_bounded(0.2, 600), default=None,
        help="s counted per measurement (default 5, quick 2)",
    )  # fmt: skip
    run.add_argument(
        "--profile",
        type=_bounded(0, 300),
        default=0.0,
        metavar="SECONDS",
        help="after the rounds, py-spy each bus-like target's processes under c=16 load for "
        "this long and print where their time goes (needs py-spy; default off)",
    )
    run.add_argument(
        "--max-foreign",
        type=_bounded(0, 10_000),
        default=25.0,
        help="retry a measurement (up to --retries times) when other work on the machine used "
        "more than this %% of a core meanwhile (default 25)",
    )
    run.add_argument(
        "--retries", type=int, choices=range(6), metavar="0..5", default=None,
        help="at most this many retries of a disturbed measurement (default 2, quick 0)",
    )  # fmt: skip
    run.add_argument(
        "--prime", type=_bounded(0, 120), default=None, help="s of load per target first"
    )
    _common(run)

    soak = sub.add_parser("soak", help="bounded open-loop load on the bus: RSS growth, errors")
    soak.add_argument("--minutes", type=_bounded(0.05, 240), default=10.0, help="default 10")
    soak.add_argument("--rate", type=_bounded(0.1, 5000), default=50.0, help="req/s (default 50)")
    soak.add_argument(
        "--warmup",
        type=_bounded(0, 1800),
        default=None,
        help="s before RSS at start (default: 60, at most a fifth of the run)",
    )
    soak.add_argument(
        "--paths",
        choices=["both", "rest", "soap"],
        default="both",
        help="civil-status REST, population SOAP, or both alternating (default)",
    )
    soak.add_argument(
        "--sample", type=_bounded(1, 600), default=10.0, help="RSS sampling period, s"
    )
    _common(soak)
    return parser


def _overrides(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {path: yaml.safe_load(value) for path, value in pairs}


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run (after every child was stopped)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _serve(main: Coroutine[Any, Any, Any]) -> Any:
    received: list[int] = []

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if not received:
                task.cancel()  # unwinds: every child stopped, the vhost deleted, JSON kept
            else:
                print("bench: still stopping the processes it started…", file=sys.stderr)
            received.append(signum)

        # Installed even where the shell ignored SIGINT (a background job), so that an
        # interrupt always goes through the same clean-up.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await main
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0]) from None
            raise

    return asyncio.run(guarded())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in ("run", "soak", "-h", "--help"):
        args_list.insert(0, "run")
    args = build_parser().parse_args(args_list)
    common = {
        "config_path": args.config,
        "log_level": args.log_level,
        "bus_env": dict(args.bus_env),
        "config_overrides": _overrides(args.overrides),
        "out_dir": args.out,
        "keep_logs": args.keep_logs,
    }
    try:
        if args.command == "soak":
            from bench.soak import SoakSettings, print_soak, run_soak

            warmup = args.warmup if args.warmup is not None else min(60.0, args.minutes * 12)
            soak = SoakSettings(
                minutes=args.minutes,
                rate=args.rate,
                warmup_s=warmup,
                paths=args.paths,
                sample_s=args.sample,
                **common,
            )
            print_soak(_serve(run_soak(soak, args_list)))
            return 0
        settings = RunSettings(
            targets=args.targets,
            concurrency=args.concurrency,
            max_foreign_pct=args.max_foreign,
            profile_s=args.profile,
            **common,
        )
        if args.quick:
            for key, value in QUICK.items():
                setattr(settings, key, value)
        for key, value in (
            ("rounds", args.rounds),
            ("warmup_s", args.warmup),
            ("duration_s", args.duration),
            ("prime_s", args.prime),
            ("retries", args.retries),
        ):
            if value is not None:
                setattr(settings, key, value)
        print_report(_serve(run_benchmark(settings, args_list)))
    except Interrupted as exc:
        print(f"bench: {exc} — every process it started has been stopped", file=sys.stderr)
        return 128 + exc.signum
    except (ChildFailed, BenchConfigError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
