"""``lgsp-bus report access|breach|dpia|subject|stats``: the data-protection reports.

Each command builds its report (:mod:`bus.report`), writes it as JSON, CSV or HTML
(``--format``, to stdout or ``--out``) and records itself in the audit trail as an admin
action ``report.<kind>`` (actor ``--actor``; parameters only, a subject's ID keyed-hashed).
Exit codes: 0 the report is certified; 1 an audit chain failed verification (the report
is written, marked not certified); 2 bad arguments, unreadable config, store or audit key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from adapters.base import load_routing
from bus.audit.observer import AuditKeyError, AuditUnavailable, load_subject_key, open_auditor
from bus.cli.audit import login_name, parse_time
from bus.cli.common import CONFIG_HELP, load_or_exit
from bus.config import ConfigError, RoutingConfig
from bus.report import (
    FORMATS,
    BreachSelector,
    Report,
    access_report,
    breach_report,
    dpia_report,
    render,
    stats_report,
    subject_report,
)
from bus.store import Store, open_store, store_url_from_env

__all__ = ["register"]


def _days(text: str) -> int:
    """Whole days, 0..366 (``--delay-days``)."""
    if not text.isdigit() or int(text) > 366:
        raise argparse.ArgumentTypeError("whole days, 0..366")
    return int(text)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _emit(args: argparse.Namespace, report: Report) -> int:
    text = render(report, args.format)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"report {report.kind}: written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    v = report.verification
    if not v.certified:
        for problem in v.problems:
            print(f"report {report.kind}: NOT CERTIFIED: {problem}", file=sys.stderr)
        return 1
    return 0


def _load(args: argparse.Namespace) -> RoutingConfig:
    return load_or_exit(args.config)


async def _recorded(
    args: argparse.Namespace,
    config: RoutingConfig,
    store: Store,
    report: Report,
    detail: dict[str, Any],
    subject_id: str | None = None,
) -> None:
    async with open_auditor(config, store) as auditor:
        await auditor.admin_action(
            f"report.{report.kind}",
            args.actor,
            {**detail, "certified": report.verification.certified},
            subject_id=subject_id,
        )


def _over_store(args: argparse.Namespace, build: Any) -> int:
    """Open the store, build the report (``build(config, store)`` → (report, detail,
    subject)), record it, write it."""
    config = _load(args)

    async def work() -> int:
        try:
            store = open_store(args.store or store_url_from_env())
            await store.connect()
        except (ValueError, OSError) as exc:
            print(f"report: cannot open the store: {exc}", file=sys.stderr)
            return 2
        try:
            report, detail, subject = await build(config, store)
            await _recorded(args, config, store, report, detail, subject)
        except (AuditKeyError, ValueError) as exc:
            print(f"report: {exc}", file=sys.stderr)
            return 2
        except AuditUnavailable as exc:
            print(f"report: the audit trail cannot record this report: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.aclose()
        return _emit(args, report)

    return asyncio.run(work())


def _access(args: argparse.Namespace) -> int:
    async def build(config: RoutingConfig, store: Store) -> Any:
        report = await access_report(
            store,
            config,
            since_us=args.since,
            until_us=args.until,
            consumer=args.consumer,
            service=args.service,
        )
        detail = {"from": args.since, "to": args.until, "consumer": args.consumer}
        return report, {**detail, "service": args.service}, None

    return _over_store(args, build)


def _breach(args: argparse.Namespace) -> int:
    if args.consumer is None and args.api_key_id is None and args.officer is None:
        print("report breach: give --consumer, --api-key-id or --officer", file=sys.stderr)
        return 2
    selector = BreachSelector(args.consumer, args.api_key_id, args.officer)

    async def build(config: RoutingConfig, store: Store) -> Any:
        report = await breach_report(
            store,
            config,
            selector,
            since_us=args.since,
            until_us=args.until,
            discovered_us=args.discovered_at if args.discovered_at is not None else _now_us(),
        )
        detail = {"from": args.since, "to": args.until, "subjects": len(report.subject_keys)}
        # The officer's ID is personal data: the admin record names only the consumer/key.
        return report, {**detail, "consumer": args.consumer, "api_key_id": args.api_key_id}, None

    return _over_store(args, build)


def _subject(args: argparse.Namespace) -> int:
    if args.subject != "-":
        print(
            "report subject: the ID number is read from stdin, never from the command "
            "line: pass --subject - and write the ID (one per line) to stdin",
            file=sys.stderr,
        )
        return 2
    ids = [line.strip() for line in sys.stdin if line.strip()]

    async def build(config: RoutingConfig, store: Store) -> Any:
        key = load_subject_key(config)
        if key is None:
            raise ValueError("the routing config has no audit.subject_key")
        report = await subject_report(
            store, config, key, ids, now_us=_now_us(), since_us=args.since, until_us=args.until
        )
        detail = {"subjects": len(ids), "found": len(report.accesses)}
        return report, detail, ids[0] if len(ids) == 1 else None

    return _over_store(args, build)


def _stats(args: argparse.Namespace) -> int:
    async def build(config: RoutingConfig, store: Store) -> Any:
        report = await stats_report(
            store, config, args.month, delay_days=args.delay_days, now_us=_now_us()
        )
        if not report.publishable:
            print(
                f"report stats: {args.month} may be published from "
                f"{report.to_dict()['publishable_from']} (--delay-days {args.delay_days})",
                file=sys.stderr,
            )
        return report, {"month": args.month, "delay_days": args.delay_days}, None

    return _over_store(args, build)


def _dpia(args: argparse.Namespace) -> int:
    config = _load(args)
    previous = None
    if args.previous:
        try:
            previous = load_routing(args.previous)
        except (ConfigError, OSError) as exc:
            print(f"report dpia: {args.previous}: {exc}", file=sys.stderr)
            return 2
    return _emit(args, dpia_report(config, previous))


def register(sub: Any) -> None:
    """Add the ``report`` command group."""
    report = sub.add_parser(
        "report",
        help="data-protection reports: access, breach scope, DPIA, a citizen's own, stats",
        description="Reports a data controller must file, from the audit trail and "
        "routing.yaml, as JSON, CSV or HTML (Vietnamese labels with English). Every report "
        "over the trail first verifies every audit chain and refuses to certify over a "
        "broken one. Dates without an offset are Vietnam time (+07:00); --to is exclusive "
        "for a date-time, inclusive for a bare date. Exit codes: 0 certified, 1 an audit "
        "chain failed verification (report marked NOT CERTIFIED), 2 bad arguments, config, "
        "store or audit key.",
    )
    rsub = report.add_subparsers(dest="report_command", required=True, metavar="REPORT")

    def common(p: argparse.ArgumentParser, *, store: bool = True) -> None:
        p.add_argument("--config", help=CONFIG_HELP)
        if store:
            p.add_argument(
                "--store", help="store URL (default: $LGSP_STORE_URL or the SQLite file)"
            )
            p.add_argument(
                "--actor", default=login_name(), help="who runs this (default: login name)"
            )
        p.add_argument("--format", choices=FORMATS, default="json", help="default json")
        p.add_argument("--out", help="write the report to this file (default: stdout)")

    def window(p: argparse.ArgumentParser, *, required: bool) -> None:
        p.add_argument("--from", dest="since", type=parse_time, required=required)
        p.add_argument(
            "--to",
            dest="until",
            type=lambda t: parse_time(t, end_of_day=True),
            required=required,
            help="a date (inclusive) or a date-time (exclusive)",
        )

    access = rsub.add_parser(
        "access",
        help="calls, distinct subjects, data categories, denials, officers per consumer × "
        "service × operation × legal basis",
    )
    common(access)
    window(access, required=True)
    access.add_argument("--consumer", help="only this consumer")
    access.add_argument("--service", help="only this service")
    access.set_defaults(handler=_access)

    breach = rsub.add_parser(
        "breach",
        help="scope of a suspected leak: subjects, records, categories, purposes; the "
        "72-hour notification pre-filled",
    )
    common(breach)
    breach.add_argument("--consumer", help="the suspect consumer")
    breach.add_argument(
        "--api-key-id", help="the suspect credential: the API key's label, key-<n> or cert-<n>"
    )
    breach.add_argument("--officer", help="the suspect officer's ID (caller.officer_id)")
    breach.add_argument("--from", dest="since", type=parse_time, required=True)
    breach.add_argument("--to", dest="until", type=lambda t: parse_time(t, end_of_day=True))
    breach.add_argument(
        "--discovered-at",
        type=parse_time,
        help="when the breach was discovered (default now): the 72 hours run from here",
    )
    breach.set_defaults(handler=_breach)

    dpia = rsub.add_parser(
        "dpia", help="impact-assessment skeleton from routing.yaml (and a diff with --previous)"
    )
    common(dpia, store=False)
    dpia.add_argument("--previous", help="the routing.yaml of the previous assessment")
    dpia.set_defaults(handler=_dpia)

    subject = rsub.add_parser("subject", help="a citizen's own access report, in plain Vietnamese")
    common(subject)
    subject.add_argument(
        "--subject",
        required=True,
        help="must be '-': the ID number(s) are read from stdin (one per line, e.g. CCCD "
        "and old CMND), never from the command line, and hashed with the audit key",
    )
    window(subject, required=False)
    subject.set_defaults(handler=_subject)

    stats = rsub.add_parser(
        "stats",
        help="monthly counts per service and consumer for publication (covert consumers "
        "left out, small counts suppressed: reports.k_anonymity)",
    )
    common(stats)
    stats.add_argument("--month", required=True, help="YYYY-MM (Vietnam time)")
    stats.add_argument(
        "--delay-days",
        type=_days,
        default=10,
        help="a month is publishable this many days after it ends (default 10)",
    )
    stats.set_defaults(handler=_stats)
