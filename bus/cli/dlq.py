"""The ``lgsp-bus dlq`` command group; :mod:`bus.admin.deadletters` says what each action does."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bus.admin.deadletters import (
    Broker,
    Replayed,
    answer_keeper,
    detail,
    list_letters,
    purge,
    replay,
    summary,
)
from bus.admin.outbox import replay_outbox
from bus.audit.observer import audit_trail
from bus.broker import amqp_address
from bus.broker.amqp.broker import AmqpBroker
from bus.broker.deadletters import DeadLetterQueue
from bus.broker.outbox import outbox_specs
from bus.cli.common import CONFIG_HELP, load_or_exit
from bus.config import RoutingConfig
from bus.errors import BusError
from bus.store import dead_letter_keyring, store_url_from_env
from bus.store.base import Store

__all__ = ["register"]

log = structlog.get_logger("bus.admin.deadletters")

DESCRIPTION = """\
What is in the dead-letter queues lgsp.dlq.<service>, and why.

Dead letters are requests that could not be decoded (rejected), were delivered too often
without an answer (delivery_limit) or waited past their deadline (expired); they stay
broker.dlq_ttl_s (default 14 days).

  list                         id, reason, attempts, when, operation, request id, calling
                               system and last error of each dead letter
  show ID [--reveal]           one dead letter's headers and body; names, addresses, dates
                               of birth and ID numbers masked unless --reveal
  replay ID...|--all|--reason R
                               publish again with a fresh deadline (the operation's timeout
                               or --timeout-s) and wait for the answer; an async-mode caller
                               finds it at GET /v1/messages/{id}; undecodable letters cannot
                               be replayed (purge them)
  purge ID...|--all|--reason R delete for good

show, replay and purge are recorded in the audit trail (actor: --actor) before they act,
and refused if that record cannot be written. Needs LGSP_AMQP_URL (the in-memory broker of
'lgsp-bus run' keeps its DLQ inside its own process). Exit codes: 0 done, 1 letters not
found or not replayed, 2 bad arguments or nothing reachable.
"""

# -- the command ----------------------------------------------------------------------------


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _config(args: argparse.Namespace) -> RoutingConfig:
    return load_or_exit(args.config)


def _services(args: argparse.Namespace, config: RoutingConfig) -> list[str]:
    if args.outbox:  # sends and subscriptions: every partition of each stream named
        keys = [s.key for s in outbox_specs(config)]
        chosen = [k for k in keys if any(k.startswith(f"{o}.") for o in args.outbox)]
        missing = [o for o in args.outbox if not any(k.startswith(f"{o}.") for k in keys)]
        if missing:
            print(f"dlq: unknown outbox stream(s): {', '.join(missing)}", file=sys.stderr)
            raise SystemExit(2)
        return chosen
    unknown = [s for s in args.service or () if s not in config.services]
    if unknown:
        print(f"dlq: unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        raise SystemExit(2)
    return list(args.service or config.services)


def _selection(args: argparse.Namespace) -> tuple[set[str] | None, str | None]:
    ids = set(args.ids) if args.ids else None
    if ids is None and not args.all and args.reason is None:
        print(f"dlq {args.dlq_command}: name dead-letter IDs, or --all / --reason", file=sys.stderr)
        raise SystemExit(2)
    return ids, args.reason


async def _command(args: argparse.Namespace) -> int:
    config = _config(args)
    services = _services(args, config)
    url = amqp_address(config, os.environ)
    if not url:
        print(
            "dlq: set LGSP_AMQP_URL or broker.urls (the RabbitMQ whose DLQs to work on)",
            file=sys.stderr,
        )
        return 2
    broker = AmqpBroker(url, name="lgsp-bus-dlq")
    broker.keyring = dead_letter_keyring(
        config, getattr(args, "store", None) or store_url_from_env(), make=False
    )
    try:
        await broker.connect()
    except BusError as exc:
        print(f"dlq: {exc.message}", file=sys.stderr)
        return 2
    try:
        if args.dlq_command == "list":
            return await _list(args, broker, services)
        return await _audited(args, config, broker, services)
    finally:
        await broker.aclose()


async def _list(args: argparse.Namespace, broker: DeadLetterQueue, services: list[str]) -> int:
    rows: list[dict[str, Any]] = []
    for service in services:
        try:
            letters = await list_letters(broker, service, args.limit)
        except BusError as exc:
            print(f"dlq: {service}: {exc.message}", file=sys.stderr)
            continue
        found = [summary(letter) for letter in letters]
        rows += found
        if args.json:
            continue
        more = " (the first; --limit for more)" if len(letters) == args.limit else ""
        print(f"{service}: {len(letters)} dead letter(s){more}")
        for r in found:
            print(
                f"  {r['id']}  {r['reason']}  attempts={r['attempts']}  {r['dead_at']}  "
                f"{r['operation'] or '-'}  request_id={r['request_id'] or '-'}  "
                f"consumer={r['consumer'] or '-'}  error={r['last_error'][:100]}"
            )
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    log.info("dlq.listed", actor=args.actor, services=services, letters=len(rows))
    return 0


async def _audited(
    args: argparse.Namespace, config: RoutingConfig, broker: Broker, services: list[str]
) -> int:
    """``show``/``replay``/``purge``: each recorded in the audit trail before it acts."""
    try:
        async with audit_trail(config, args.store) as auditor:
            action = {"show": _show, "replay": _replay, "purge": _purge}[args.dlq_command]

            async def record(detail: dict[str, Any]) -> None:
                await auditor.admin_action(f"dlq.{args.dlq_command}", args.actor, detail)

            return await action(args, config, broker, services, record, auditor.store)
    except BusError as exc:  # the audit record could not be written: nothing was done
        print(f"dlq: refused, the audit trail is unavailable: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"dlq: cannot open the store for the audit trail: {exc}", file=sys.stderr)
        return 2


Record = Callable[[dict[str, Any]], Awaitable[None]]


async def _show(
    args: argparse.Namespace,
    config: RoutingConfig,
    broker: Broker,
    services: list[str],
    record: Record,
    store: Store,
) -> int:
    for service in services:
        async with broker.dead_letters_claim(service) as held:
            match = next((c.letter for c in held if c.letter.id == args.id), None)
        if match is not None:
            await record({"service": service, "id": match.id, "reveal": args.reveal})
            log.info("dlq.shown", actor=args.actor, service=service, id=match.id)
            shown = detail(match, reveal=args.reveal)
            print(json.dumps(shown, indent=2, ensure_ascii=False, default=str))
            return 0
    print(f"dlq show: no dead letter {args.id} in {', '.join(services)}", file=sys.stderr)
    return 1


async def _purge(
    args: argparse.Namespace,
    config: RoutingConfig,
    broker: Broker,
    services: list[str],
    record: Record,
    store: Store,
) -> int:
    ids, reason = _selection(args)
    await record({"services": services, "ids": sorted(ids or ()), "reason": reason})
    total = 0
    for service in services:
        gone = await purge(broker, service, ids, reason)
        total += len(gone)
        log.info("dlq.purged", actor=args.actor, service=service, letters=len(gone))
        print(f"{service}: purged {len(gone)} dead letter(s)")
    return 1 if ids is not None and total < len(ids) else 0


async def _replay(
    args: argparse.Namespace,
    config: RoutingConfig,
    broker: Broker,
    services: list[str],
    record: Record,
    store: Store,
) -> int:
    ids, reason = _selection(args)
    await record({"services": services, "ids": sorted(ids or ()), "reason": reason})
    if args.outbox:
        count = 0
        for key in services:
            assert isinstance(broker, AmqpBroker)  # the command's broker (publish + DLQ)
            replayed = await replay_outbox(broker, key, ids, reason)
            count += len(replayed)
            log.info("dlq.replayed", actor=args.actor, outbox=key, letters=len(replayed))
            print(f"{key}: {len(replayed)} back in the queue")
        return 1 if ids is not None and count < len(ids) else 0

    done: list[Replayed] = []
    for service in services:
        results = await replay(
            broker,
            service,
            ids,
            reason=reason,
            timeout_s=_timeouts(args, config, service),
            on_answer=answer_keeper(config, store),
        )
        done += results
        outcomes = Counter(r.outcome for r in results)
        log.info("dlq.replayed", actor=args.actor, service=service, outcomes=dict(outcomes))
        print(f"{service}: replayed {sum(r.left_dlq for r in results)} of {len(results)}")
        for r in results:
            where = "left the DLQ" if r.left_dlq else "still in the DLQ"
            print(f"  {r.id}  request_id={r.request_id or '-'}  {r.outcome}  ({where})")
    missing = len(ids) - len(done) if ids is not None else 0
    return 1 if missing > 0 or not all(r.left_dlq for r in done) else 0


def _timeouts(args: argparse.Namespace, config: RoutingConfig, service: str) -> Any:
    ops = config.services[service].operations

    def timeout(operation: str) -> float:
        if args.timeout_s is not None:
            return float(args.timeout_s)
        op = ops.get(operation)
        return op.timeout_s if op is not None else 10.0

    return timeout


def _handler(args: argparse.Namespace) -> int:
    return asyncio.run(_command(args))


def register(sub: Any) -> None:
    """Add the ``dlq`` command group."""
    dlq = sub.add_parser(
        "dlq",
        help="list, show, replay and purge dead letters (needs LGSP_AMQP_URL)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument(
            "--service", action="append", help="this service's DLQ (repeatable; default all)"
        )
        p.add_argument("--actor", default=_login(), help="who runs this (default: login name)")
        p.add_argument("--store", help="store of the audit trail (default: $LGSP_STORE_URL)")
        p.add_argument(
            "--outbox",
            action="append",
            metavar="STREAM",
            help="a send route (send.<service>.<operation>) or subscription "
            "(sub.<consumer>.<name>) instead of services: every partition's DLQ (repeatable)",
        )
        p.set_defaults(handler=_handler)

    ls = dsub.add_parser("list", help="what is in the DLQs, and why")
    common(ls)
    ls.add_argument("--limit", type=int, default=100, help="per service (default 100)")
    ls.add_argument("--json", action="store_true", help="machine-readable")

    show = dsub.add_parser("show", help="one dead letter's headers and (masked) body")
    common(show)
    show.add_argument("id", help="the ID that list printed")
    show.add_argument("--reveal", action="store_true", help="unmasked personal data (audited)")

    for name, text in (
        ("replay", "publish again with a fresh deadline and wait for the answers"),
        ("purge", "delete for good"),
    ):
        p = dsub.add_parser(name, help=text)
        common(p)
        p.add_argument("ids", nargs="*", help="dead-letter IDs (from list)")
        p.add_argument("--all", action="store_true", help="every dead letter selected")
        p.add_argument(
            "--reason",
            choices=["rejected", "delivery_limit", "expired", "refused", "deliver_within"],
            help="only these (refused, deliver_within: outbox dead letters)",
        )
        if name == "replay":
            p.add_argument(
                "--timeout-s", type=float, help="the fresh deadline (default: the operation's)"
            )
