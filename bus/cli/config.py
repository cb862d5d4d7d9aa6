"""``lgsp-bus config …``: operator tools for routing.yaml — validate, explain, diff, schema.

Exit codes: ``validate`` 0 valid / 1 errors (or warnings with ``--strict``); ``explain`` 0
allowed / 1 denied / 2 invalid file; ``diff`` 0 no change / 1 changes / 2 invalid file
(as diff(1)); ``schema --check`` 0 current / 1 stale. ``--json`` gives machine-readable
output for CI and editors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from adapters.base import load_routing, registry
from bus.cli.common import CONFIG_HELP
from bus.config import ConfigError, RoutingConfig, default_config_path
from bus.config.diff import diff_configs, needs_restart
from bus.config.explain import explain as explain_call
from bus.config.explain import render_table
from bus.config.load import Validation, validate_text
from bus.config.source import ConfigIssue

__all__ = ["SCHEMA_URI", "diff", "explain", "register", "routing_schema", "schema", "validate"]

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def _target(file: str | None) -> Path:
    return Path(file) if file else default_config_path()


def _issue_dict(issue: ConfigIssue) -> dict[str, Any]:
    return {
        "path": issue.dotted,
        "line": issue.line,
        "column": issue.column,
        "message": issue.message,
    }


def _load_or_report(path: Path) -> RoutingConfig | None:
    """The config, or ``None`` after printing its errors (to stderr)."""
    try:
        return load_routing(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


def validate(args: argparse.Namespace) -> int:
    """``config validate [FILE]``: every error with its YAML path and line; exit 1 on any."""
    target = _target(args.file)
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        found = Validation(None, [ConfigIssue((), f"cannot read {target}: {exc.strerror}")])
    else:
        found = validate_text(text, str(target), kinds=registry, secrets=args.secrets)
    config, errors, warnings = found.config, found.errors, found.warnings
    failed = bool(errors) or (args.strict and bool(warnings))
    if args.json:
        report = {
            "file": str(target),
            "ok": not failed,
            "errors": [_issue_dict(i) for i in errors],
            "warnings": [_issue_dict(i) for i in warnings],
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 1 if failed else 0
    if errors:
        print(f"{target}: {len(errors)} error(s)")
        for issue in errors:
            print(f"  {issue}")
    elif config is not None:
        print(
            f"{target}: OK ({len(config.services)} services, {len(config.upstreams)} "
            f"upstreams, {len(config.consumers)} consumers)"
            + (f", {len(warnings)} warning(s)" if warnings else "")
        )
    for issue in warnings:
        print(f"  warning: {issue}")
    return 1 if failed else 0


def explain(args: argparse.Namespace) -> int:
    """``config explain``: would this call be allowed, and what governs it."""
    target = _target(args.file)
    config = _load_or_report(target)
    if config is None:
        return 2
    result = explain_call(config, args.consumer, args.service, args.operation)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{target}:")
        print(render_table(result))
    return 0 if result.allowed else 1


def diff(args: argparse.Namespace) -> int:
    """``config diff OLD NEW``: the semantic changes, ACL grants first."""
    old, new = _load_or_report(Path(args.old)), _load_or_report(Path(args.new))
    if old is None or new is None:
        return 2
    changes = diff_configs(old, new)
    restart = needs_restart(old, new)
    if args.json:
        report = {
            "changed": bool(changes),
            "changes": [c.to_dict() for c in changes],
            "restart_needed": restart,
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 1 if changes else 0
    if not changes:
        print(f"{args.old} → {args.new}: no semantic change")
        return 0
    grants = [c for c in changes if c.section == "acl"]
    print(f"{args.old} → {args.new}: {len(changes)} change(s)")
    if grants:
        print(f"\nACL ({len(grants)} grant(s) revoked or added):")
        for change in grants:
            print(f"  {change}")
    rest = [c for c in changes if c.section != "acl"]
    if rest:
        print("\nConfiguration:")
        for change in rest:
            print(f"  {change}")
    if restart:
        print(f"\nTakes effect only after a restart: {', '.join(restart)}")
    return 1


def routing_schema() -> dict[str, Any]:
    """JSON Schema of routing.yaml, generated from the pydantic models."""
    generated = RoutingConfig.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_URI, **generated, "title": "lgsp-bus routing.yaml"}


def schema_text() -> str:
    """The schema as the shipped ``routing.schema.json`` holds it."""
    return json.dumps(routing_schema(), ensure_ascii=False, indent=2) + "\n"


def schema(args: argparse.Namespace) -> int:
    """``config schema [-o FILE] [--check FILE]``."""
    text = schema_text()
    if args.check:
        current = Path(args.check).read_text(encoding="utf-8") if Path(args.check).exists() else ""
        if current == text:
            print(f"{args.check}: current")
            return 0
        print(f"{args.check}: stale; regenerate with: lgsp-bus config schema -o {args.check}")
        return 1
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    """Add the ``config`` command group."""
    config = sub.add_parser("config", help="operator tools for routing.yaml")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = csub.add_parser(
        "validate",
        help="check a routing file; every error with its YAML path and line",
        description="Validate a routing file. Prints every error with its YAML path and "
        "line:column, then warnings (legal but probably unintended); exits 1 on any error.",
    )
    check.add_argument("file", nargs="?", help=CONFIG_HELP)
    check.add_argument("--strict", action="store_true", help="warnings fail too")
    check.add_argument(
        "--secrets",
        action="store_true",
        help="also check that every env:/file: reference resolves here (run on the bus's host)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.set_defaults(handler=validate)

    why = csub.add_parser(
        "explain",
        help="dry run: would this call be allowed, and what governs it",
        description="Explain what the bus does for one call: allowed or the error the "
        "gateway gives, adapter, upstream, queue, timeout, retry, breaker, audit, rate limit. "
        "Exits 0 if allowed, 1 if denied, 2 if the file is invalid.",
    )
    why.add_argument("file", nargs="?", help=CONFIG_HELP)
    why.add_argument("--consumer", required=True, help="calling system (consumers.<name>)")
    why.add_argument("--service", required=True)
    why.add_argument("--operation", required=True)
    why.add_argument("--json", action="store_true", help="JSON instead of a table")
    why.set_defaults(handler=explain)

    cmp = csub.add_parser(
        "diff",
        help="semantic diff of two routing files; ACL grants first",
        description="Compare two routing files by meaning (not text): ACL grants revoked "
        "and added first, then services, operations, upstreams, consumers and settings. "
        "Exits 0 if nothing changed, 1 if something did, 2 if a file is invalid.",
    )
    cmp.add_argument("old")
    cmp.add_argument("new")
    cmp.add_argument("--json", action="store_true", help="machine-readable report")
    cmp.set_defaults(handler=diff)

    sch = csub.add_parser(
        "schema",
        help="JSON Schema of routing.yaml (for editors)",
        description="Print the JSON Schema of routing.yaml, generated from the models. "
        "Editors with yaml-language-server use it through the "
        "'# yaml-language-server: $schema=…' line at the top of routing.yaml.",
    )
    sch.add_argument("-o", "--output", help="write to this file instead of stdout")
    sch.add_argument("--check", metavar="FILE", help="exit 1 if FILE is not the current schema")
    sch.set_defaults(handler=schema)
