"""structlog set-up: JSON lines in production, readable lines in a terminal, PII masked.

``configure()`` is called once by the CLI. The correlation id (and service, operation,
consumer) are bound per request with :func:`structlog.contextvars.bind_contextvars` at the
gateway edge and again in the worker from the message, so one id follows a request across
the broker. :func:`mask_pii` runs last before rendering: any 9- or 12-digit run (an ID
number) is masked as ``001*******45`` wherever it appears, so a careless log call cannot
leak one.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import orjson
import structlog

__all__ = ["configure", "mask_id", "mask_pii"]

_ID_RE = re.compile(r"(?<!\d)(\d{12}|\d{9})(?!\d)")


def mask_id(value: str) -> str:
    """``001234567845`` → ``001*******45`` (first three and last two digits kept)."""
    if len(value) < 6:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _ID_RE.sub(lambda m: mask_id(m.group(0)), value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def mask_pii(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask ID numbers in every value of the event."""
    for key, value in event_dict.items():
        event_dict[key] = _mask(value)
    return event_dict


def configure(
    fmt: Literal["json", "console"] | None = None, level: str = "info", stream: Any = None
) -> None:
    """Configure structlog once for the process (``fmt=None``: console on a TTY, else JSON)."""
    out = stream or sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda o, **_: orjson.dumps(o).decode()
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
