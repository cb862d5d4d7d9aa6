"""``lgsp-bus health``: probe a health endpoint, for container HEALTHCHECKs and scripts.

Standard library only, so the probe starts fast and needs nothing the image lacks (no
curl). Exit 0 when the endpoint answers 2xx within the timeout, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_URL", "probe", "register"]

URL_ENV = "LGSP_HEALTH_URL"
DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def probe(args: argparse.Namespace) -> int:
    """GET the URL; print the status; 0 if it is 2xx."""
    url: str = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"health: not an http(s) URL: {url}")
        return 2
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"health: {url} unreachable: {exc}")
        return 1
    print(f"health: {url} {status}")
    return 0 if 200 <= status < 300 else 1


def register(sub: Any) -> None:
    """Add the ``health`` command."""
    health = sub.add_parser(
        "health",
        help="probe a /healthz or /readyz endpoint (exit 0 if healthy)",
        description=f"GET a health endpoint; exit 0 on 2xx, else 1. URL: --url, else "
        f"${URL_ENV}, else {DEFAULT_URL}.",
    )
    health.add_argument("--url", help=f"endpoint to probe (default ${URL_ENV} or {DEFAULT_URL})")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    health.set_defaults(handler=probe)
