"""The webhook signature: ``X-Lgsp-Signature: t=<unix seconds>,v1=<hex>`` where ``hex`` is
HMAC-SHA256 under the subscription's secret of ``f"{t}.".encode() + body`` (the Stripe
scheme). A receiver recomputes it over the raw body, compares in constant time, and
refuses a ``t`` older than its tolerance (replays). :func:`verify` is the reference a
subscriber may copy (README, "Verifying a webhook").
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_HEADER", "TOLERANCE_S", "sign", "verify"]

SIGNATURE_HEADER = "X-Lgsp-Signature"
TOLERANCE_S = 300


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` signed now (or at ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: bytes, body: bytes, header: str, *, tolerance_s: int = TOLERANCE_S) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` within ``tolerance_s`` of now."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
