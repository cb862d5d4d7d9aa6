"""What every ``lgsp-bus`` command shares: the ``--config`` help and loading the routing file."""

from __future__ import annotations

import sys
from pathlib import Path

from adapters.base import load_routing
from bus.config import ConfigError, RoutingConfig, default_config_path

__all__ = ["CONFIG_HELP", "load_or_exit"]

CONFIG_HELP = "routing config (default: $LGSP_CONFIG, ./routing.yaml, or the shipped one)"


def load_or_exit(path: str | None) -> RoutingConfig:
    """The routing config at ``path`` (default :func:`default_config_path`); an invalid one
    is reported on stderr, issue by issue, and the command exits with 2."""
    target = Path(path) if path else default_config_path()
    try:
        return load_routing(target)
    except ConfigError as exc:
        print(f"{target}: invalid configuration", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        raise SystemExit(2) from None
