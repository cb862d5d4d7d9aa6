"""``lgsp-bus config …``: operator tools for routing.yaml."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bus.config import ConfigError, load_config

__all__ = ["register", "validate"]


def validate(args: argparse.Namespace) -> int:
    """``config validate [FILE]``: every error with its YAML path and line; exit 1 on any."""
    from bus.cli import default_config_path

    target = Path(args.file) if args.file else default_config_path()
    try:
        config = load_config(target)
    except ConfigError as exc:
        print(f"{target}: {len(exc.issues)} error(s)")
        for issue in exc.issues:
            print(f"  {issue}")
        return 1
    print(
        f"{target}: OK ({len(config.services)} services, {len(config.upstreams)} upstreams, "
        f"{len(config.consumers)} consumers)"
    )
    return 0


def register(sub: Any) -> None:
    """Add the ``config`` command group."""
    from bus.cli import CONFIG_HELP

    config = sub.add_parser("config", help="operator tools for routing.yaml")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = csub.add_parser(
        "validate",
        help="check a routing file; every error with its YAML path and line",
        description="Validate a routing file. Prints every error with its YAML path and "
        "line:column; exits 1 if there is any.",
    )
    check.add_argument("file", nargs="?", help=CONFIG_HELP)
    check.set_defaults(handler=validate)
