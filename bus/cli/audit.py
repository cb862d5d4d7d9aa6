"""``lgsp-bus audit …``: verify the chains, answer "who accessed citizen X", export evidence,
prune by retention.

Every command reads the store at ``--store`` (default ``$LGSP_STORE_URL``, else the SQLite
file ``./lgsp-bus.sqlite3``). ``query``, ``export`` and ``prune`` are themselves recorded as
admin actions (``audit.query``/``audit.export``/``audit.prune``, actor ``--actor``): looking
up a citizen's accesses is an access too. Dates without an offset are Vietnam time (+07:00).
Exit codes: 0 OK, 1 verification failed (``verify``), 2 bad arguments or store unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bus.audit.accesses import accesses
from bus.audit.chain import PRUNE_ACTION, Pin
from bus.audit.evidence import evidence_bundle, record_json, show_time
from bus.audit.observer import (
    AuditKeyError,
    Auditor,
    ChainReport,
    load_subject_key,
    open_auditor,
    verify_store,
)
from bus.cli.common import CONFIG_HELP, load_or_exit
from bus.config import RoutingConfig
from bus.logs import mask_id
from bus.report.trail import parse_time as parse_moment
from bus.store import Store, open_store, store_url_from_env

__all__ = ["check_audit_key", "login_name", "parse_time", "register"]


def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """:func:`bus.report.trail.parse_time` for argparse (``ArgumentTypeError``)."""
    try:
        return parse_moment(text, end_of_day=end_of_day)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_show_time = show_time
_record_json = record_json


def _load(args: argparse.Namespace) -> RoutingConfig:
    return load_or_exit(args.config)


async def _with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]]) -> int:
    try:
        store = open_store(args.store or store_url_from_env())
        await store.connect()
    except (ValueError, OSError) as exc:
        print(f"audit: cannot open the store: {exc}", file=sys.stderr)
        return 2
    try:
        return await work(store)
    except AuditKeyError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.aclose()


def _run(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]]) -> int:
    return asyncio.run(_with_store(args, work))


# -- verify ----------------------------------------------------------------------------------


def _pin(text: str) -> Pin:
    try:
        chain, seq, digest = text.rsplit(":", 2)
        return Pin(chain, int(seq), digest.lower())
    except ValueError:
        raise argparse.ArgumentTypeError("a pin is CHAIN:SEQ:HASH") from None


def _verify(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        reports = await verify_store(store, args.pin or ())
        bad = [r for r in reports if r.problem is not None]
        if args.json:
            print(json.dumps([_report_json(r) for r in reports], indent=2))
        else:
            for r in reports:
                print(_report_line(r))
            print(
                f"audit verify: {len(reports)} chain(s), "
                f"{sum(r.checked for r in reports)} record(s) checked, "
                + (f"{len(bad)} FAILED" if bad else "all intact")
            )
        return 1 if bad else 0

    return _run(args, work)


def _report_json(r: ChainReport) -> dict[str, Any]:
    return {
        "chain": r.head.chain,
        "checked": r.checked,
        "anchor_seq": r.head.anchor_seq,
        "head_seq": r.head.head_seq,
        "head_hash": r.head.head_hash,
        "ok": r.problem is None,
        "problem": None
        if r.problem is None
        else {"seq": r.problem.seq, "kind": r.problem.kind, "message": r.problem.message},
    }


def _report_line(r: ChainReport) -> str:
    head = r.head
    span = f"seq {head.anchor_seq + 1}..{head.head_seq}" if head.head_seq else "empty"
    if r.problem is not None:
        return f"FAILED {head.chain}: {r.problem.kind} at seq {r.problem.seq}: {r.problem.message}"
    pin = f"{head.chain}:{head.head_seq}:{head.head_hash}"
    return f"ok     {head.chain}: {r.checked} record(s), {span}, pin {pin}"


# -- query -----------------------------------------------------------------------------------


def _subjects(values: list[str]) -> list[str]:
    ids: list[str] = []
    for value in values:
        # "-" reads IDs from stdin, keeping them out of shell history and `ps`.
        ids += [line.strip() for line in sys.stdin if line.strip()] if value == "-" else [value]
    return ids


def _query(args: argparse.Namespace) -> int:
    config = _load(args)
    ids = _subjects(args.subject)
    if not ids:
        print("audit query: no subject ID given", file=sys.stderr)
        return 2

    async def work(store: Store) -> int:
        async with open_auditor(config, store) as auditor:
            if auditor.key_id is None:
                print("audit query: routing config has no audit.subject_key", file=sys.stderr)
                return 2
            mine, other = await store.audit_key_use(auditor.key_id)
            if other and not mine:
                # Under a key the trail was not written with, every answer would be "0".
                print(
                    f"audit query: no access record is keyed under audit key id "
                    f"{auditor.key_id}, but records under another key exist: audit.subject_key "
                    "is not the key this trail was written with",
                    file=sys.stderr,
                )
                return 2
            keys = [k for k in (auditor.subject_key(i) for i in ids) if k is not None]
            records = await store.audit_find(
                subject_keys=keys, since_us=args.since, until_us=args.until, limit=args.limit
            )
            records = accesses(r for r in records if r.kind == "exchange")
            await auditor.admin_action(
                "audit.query",
                args.actor,
                {"subjects": len(ids), "found": len(records), "from": args.since, "to": args.until},
                subject_id=ids[0] if len(ids) == 1 else None,
            )
        if args.json:
            print(json.dumps([_record_json(r) for r in records], indent=2, ensure_ascii=False))
            return 0
        masked = ", ".join(mask_id(i) for i in ids)
        print(f"{len(records)} access(es) to {masked} (audit key id {auditor.key_id})")
        for r in records:
            p = r.purpose
            print(
                f"{_show_time(r.time_us)}  {r.consumer or '-'}  unit={r.unit or '-'}  "
                f"officer={r.officer or '-'}  {r.service}.{r.operation}  "
                f"procedure={p.get('procedure_code', '-')}  dossier={p.get('dossier_id', '-')}  "
                f"basis={p.get('legal_basis', '-')}  outcome={r.outcome}  "
                f"fields={','.join(r.fields) or '-'}  request_id={r.request_id}"
            )
        return 0

    return _run(args, work)


# -- export ----------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    config = _load(args)

    async def work(store: Store) -> int:
        bundle = await evidence_bundle(store, args.request_id)
        if bundle is None:
            print(f"audit export: no record of request {args.request_id}", file=sys.stderr)
            return 1
        records = bundle["evidence"]
        # An export names a request, not a citizen: its record needs no subject key, so the
        # export runs without LGSP_AUDIT_KEY.
        async with Auditor(store, node=config.node, key=None, settings=config.audit) as auditor:
            await auditor.admin_action(
                "audit.export", args.actor, {"request_id": args.request_id, "records": len(records)}
            )
        text = json.dumps(bundle, indent=2, ensure_ascii=False)
        if args.out:
            await asyncio.to_thread(Path(args.out).write_text, text + "\n", encoding="utf-8")
            print(f"audit export: {len(records)} record(s) → {args.out}")
        else:
            print(text)
        return 0

    return _run(args, work)


# -- prune -----------------------------------------------------------------------------------


def _prune(args: argparse.Namespace) -> int:
    config = _load(args)
    limit_us = int((time.time() - config.audit.retention_days * 86_400) * 1_000_000)
    if args.before > limit_us and not args.force:
        print(
            f"audit prune: {_show_time(args.before)} is within the retention of "
            f"{config.audit.retention_days} days (audit.retention_days); "
            "use --force to prune anyway",
            file=sys.stderr,
        )
        return 2

    async def work(store: Store) -> int:
        plan = await store.audit_prune_plan(args.before)
        if not plan:
            print("audit prune: no records to prune")
            return 0
        for chain, (seq, _) in sorted(plan.items()):
            print(f"{chain}: records up to seq {seq} go; seq {seq} becomes the anchor")
        if args.dry_run:
            return 0
        anchors: dict[str, list[int | str]] = {
            h.chain: [h.anchor_seq, h.anchor_hash]
            for h in await store.audit_chains()
            if h.anchor_seq > 0
        }
        anchors.update({c: [seq, digest] for c, (seq, digest) in plan.items()})
        # The witness is written before the deletion: should the deletion then fail, the
        # old anchors are still named by the previous prune record, so verify still passes.
        async with open_auditor(config, store) as auditor:
            await auditor.admin_action(
                PRUNE_ACTION,
                args.actor,
                {"before": _show_time(args.before), "anchors": anchors},
            )
        deleted = await store.audit_prune(plan)
        print(f"audit prune: {deleted} record(s) deleted; chains stay verifiable from the anchors")
        return 0

    return _run(args, work)


def check_audit_key(config: RoutingConfig, role: str) -> None:
    """For ``run``/``gateway`` start-up: exit 2 with a plain message if the configured
    audit key cannot be used (rather than a traceback from inside the server)."""
    try:
        load_subject_key(config)
    except AuditKeyError as exc:
        print(f"lgsp-bus {role}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def login_name() -> str:
    """The login name of whoever runs the command (the default ``--actor``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def register(sub: Any) -> None:
    """Add the ``audit`` command group."""
    audit = sub.add_parser(
        "audit",
        help="verify, query, export and prune the audit trail",
        description="Verify the hash chains, answer 'who accessed citizen X', export "
        "evidence, prune by retention. The store is --store, else $LGSP_STORE_URL, else "
        "./lgsp-bus.sqlite3. query, export and prune are recorded as admin actions (actor "
        "--actor). Dates without an offset are Vietnam time (+07:00). Exit codes: 0 OK, "
        "1 verification failed or nothing found, 2 bad arguments or store unreachable.",
    )
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
        p.add_argument("--store", help="store URL (default: $LGSP_STORE_URL or the SQLite file)")
        if config:
            p.add_argument("--config", help=CONFIG_HELP)
            p.add_argument(
                "--actor", default=login_name(), help="who runs this (default: login name)"
            )

    verify = asub.add_parser(
        "verify",
        help="check every hash chain; exit 1 naming the first bad record of each chain",
    )
    common(verify, config=False)
    verify.add_argument(
        "--pin",
        action="append",
        type=_pin,
        help="CHAIN:SEQ:HASH from an earlier verify or an audit.checkpoint log line; the "
        "record must still have that hash and the chain must still exist (repeatable)",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(handler=_verify)

    query = asub.add_parser(
        "query", help="who accessed a citizen's data, when, for which procedure"
    )
    common(query)
    query.add_argument(
        "--subject",
        action="append",
        required=True,
        help="the citizen's ID number (repeatable, e.g. CCCD and old CMND; '-' reads IDs "
        "from stdin); it is hashed with the audit key before the lookup",
    )
    query.add_argument("--from", dest="since", type=parse_time, help="from this date/time")
    query.add_argument(
        "--to",
        dest="until",
        type=lambda t: parse_time(t, end_of_day=True),
        help="to this date (inclusive) or date-time (exclusive)",
    )
    query.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    query.add_argument("--json", action="store_true", help="full records as JSON")
    query.set_defaults(handler=_query)

    export = asub.add_parser(
        "export", help="evidence bundle of one request: records, chain neighbours, hashes"
    )
    common(export)
    export.add_argument("--request-id", required=True, help="the request's request_id")
    export.add_argument("--out", help="write the bundle to this file (default: stdout)")
    export.set_defaults(handler=_export)

    prune = asub.add_parser(
        "prune", help="delete records older than a date; chains stay verifiable (anchors)"
    )
    common(prune)
    prune.add_argument(
        "--before", required=True, type=parse_time, help="delete records older than this"
    )
    prune.add_argument(
        "--force", action="store_true", help="allow a date within audit.retention_days"
    )
    prune.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")
    prune.set_defaults(handler=_prune)
