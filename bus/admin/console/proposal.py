"""A proposed routing.yaml in the console: validate, diff against the config in force, apply.

The same code paths as the command line and ``/admin/reload``: validation is
:func:`bus.config.load.validate_text` (what ``lgsp-bus config validate`` runs: every error
with its line:column, then warnings), the diff is :func:`bus.config.diff.diff_configs`
(``config diff``: grants revoked and added first), and applying writes the text to the
routing file (atomically: a temporary file in its directory, then a rename) and runs
:meth:`~bus.reload.reloader.ConfigReloader.reload` — recorded as ``config.reload`` with the admin's
name. If that reload is rejected (e.g. a secret reference that does not resolve on this
host) the previous file is put back and the running config stays. An apply names the
version it was diffed against; if another change came first it is refused with ``409
CONFIG_CHANGED``. Limits: :data:`MAX_TEXT` bytes; the routing file's directory must be
writable by the bus (not so for a read-only ConfigMap mount: edit it there instead).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from adapters.base import registry
from bus.admin.access import ConfigRejected, Principal
from bus.config.diff import diff_configs, needs_restart
from bus.config.load import validate_text
from bus.config.source import ConfigIssue
from bus.errors import Conflict, InvalidRequest
from bus.observe.metrics import config_version
from bus.reload.reloader import ConfigReloader

from .roles import require

__all__ = ["MAX_TEXT", "apply", "check"]

MAX_TEXT = 512 * 1024


def _issue(issue: ConfigIssue) -> dict[str, Any]:
    return {
        "path": issue.dotted,
        "line": issue.line,
        "column": issue.column,
        "message": issue.message,
    }


def _text(text: str) -> str:
    if not text.strip():
        raise InvalidRequest("the proposed config is empty")
    if len(text.encode("utf-8")) > MAX_TEXT:
        raise InvalidRequest(f"the proposed config is over {MAX_TEXT} bytes")
    return text


def check(reloader: ConfigReloader, text: str) -> dict[str, Any]:
    """Validation and (if valid) the semantic diff against the config in force."""
    found = validate_text(_text(text), "proposed routing.yaml", kinds=registry)
    report: dict[str, Any] = {
        "ok": found.config is not None and not found.errors,
        "errors": [_issue(i) for i in found.errors],
        "warnings": [_issue(i) for i in found.warnings],
        "base_version": reloader.version,
        "candidate_version": None,
        "changes": [],
        "restart_needed": [],
    }
    if found.config is not None:
        changes = diff_configs(reloader.config, found.config)
        acl = [c for c in changes if c.section == "acl"]
        report["candidate_version"] = config_version(found.config)
        report["changes"] = [c.to_dict() for c in acl + [c for c in changes if c not in acl]]
        report["restart_needed"] = needs_restart(reloader.config, found.config)
    return report


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def apply(
    reloader: ConfigReloader, who: Principal, text: str, base_version: str
) -> dict[str, Any]:
    """Write ``text`` as the routing file and reload; ``422``/``409`` change nothing."""
    require(who, "config.apply")
    report = check(reloader, text)
    if not report["ok"]:
        raise ConfigRejected(
            f"{len(report['errors'])} error(s) in the proposed config; nothing changed",
            detail={"errors": report["errors"][:50]},
        )
    if base_version != reloader.version:
        raise Conflict(
            "the config in force changed since this proposal was checked; check it again",
            code="CONFIG_CHANGED",
        )
    path = reloader.path
    try:
        previous = path.read_bytes()
    except OSError:
        previous = None
    try:
        _write(path, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigRejected(
            f"cannot write {path}: {exc.strerror}; nothing changed", code="CONFIG_NOT_WRITABLE"
        ) from None
    result = await reloader.reload("console", actor=who.name)
    if result.outcome == "rejected":
        if previous is not None:
            _write(path, previous)
        raise ConfigRejected(
            f"{len(result.errors)} error(s) applying the config; the running config stays",
            detail=result.to_dict(),
        )
    return result.to_dict()
