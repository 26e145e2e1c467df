"""`proactive-delivery status | show | replay-dlq | resend | pause | resume | purge`: argument
parsing and output for the operators' commands; the logic is in operations.py and switch.py,
and the purge's is the purge function's own (proactive_delivery.app.purge)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive_delivery.adapters import aws
from proactive_delivery.core.errors import ConfigError
from proactive_delivery.core.states import FAILED_REASONS

if TYPE_CHECKING:
    from proactive_delivery_tools.ops.switch import Stack

DatabaseUrl = Callable[[argparse.Namespace], str]


def _add_stack_options(parser: argparse.ArgumentParser, *, samconfig: bool) -> None:
    where = (
        "default: STACK_NAME, then stack_name in ./samconfig.toml"
        if samconfig
        else "default: STACK_NAME; shows the pause switch and finds the delivery queue"
    )
    parser.add_argument("--stack-name", help=f"the deployed stack ({where})")
    if samconfig:
        parser.add_argument(
            "--config-env", default="default", help="samconfig.toml environment for the stack name (default)"
        )


def register(sub: Any, database_url: DatabaseUrl) -> None:
    status = sub.add_parser(
        "status",
        help="backlog, failures, receipts, replies and opt-outs of the last 24 h, queue depths, the last"
        " evaluate run of each source, the pause switch",
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_stack_options(status, samconfig=False)
    status.set_defaults(func=lambda args: cmd_status(args, database_url))

    show = sub.add_parser(
        "show", help="one message's delivery state, attempt history, delivery receipt and replies"
    )
    show.add_argument("message", metavar="SOURCE:ID", help="e.g. proactive:42 or followup:7")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(func=lambda args: cmd_show(args, database_url))

    replay = sub.add_parser(
        "replay-dlq", help="move dead-lettered messages back to the delivery queue (safe to repeat)"
    )
    replay.add_argument("--dlq-url", help="DLQ to replay (default: the delivery queue's redrive target)")
    replay.add_argument("--dry-run", action="store_true", help="list what would move; change nothing")
    replay.add_argument("--max", type=int, dest="max_messages", help="move at most N messages")
    replay.add_argument("--source", help="only messages of this source (e.g. proactive)")
    replay.add_argument("--rate", type=float, default=10.0, help="messages per second (default 10)")
    replay.add_argument(
        "--include-malformed",
        action="store_true",
        help="move malformed messages too (left in the DLQ otherwise: the deliverer cannot read them)",
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_stack_options(replay, samconfig=False)
    replay.set_defaults(func=cmd_replay)

    resend = sub.add_parser("resend", help="put messages that ended failed back through the pipeline")
    resend.add_argument(
        "--failed-since", required=True, help="ISO 8601 timestamp; naive means UTC (2026-05-01T12:00Z)"
    )
    resend.add_argument(
        "--reason",
        help=f"only failures with this reason: {', '.join(sorted(FAILED_REASONS))}",
    )
    resend.add_argument("--dry-run", action="store_true", help="count what would be resent; change nothing")
    resend.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_stack_options(resend, samconfig=False)
    resend.set_defaults(func=lambda args: cmd_resend(args, database_url))

    purge = sub.add_parser(
        "purge",
        help="delete finished delivery rows and inbound events older than the retention, as the daily"
        " purge does",
        description="Delete this project's finished messages (and their attempt logs) and the inbound"
        " events it applied, older than the retention, except the messages the platform still has due"
        " and opt-outs from numbers nobody had yet; the platform's rows are never touched."
        " The same code as the purge function, in the same small batches.",
    )
    purge.add_argument(
        "--retention-days",
        type=int,
        help="keep this many days (default: RETENTION_DAYS; required without --dry-run when that is unset)",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="report what would be deleted (statements rolled back)"
    )
    purge.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="stop between batches after this long, as the function does (default 300)",
    )
    purge.add_argument("--json", action="store_true", help="print the report as JSON")
    purge.set_defaults(func=lambda args: cmd_purge(args, database_url))

    for name, enabled, text in (
        ("pause", False, "stop all sends: disable the schedules and the deliver event source"),
        ("resume", True, "undo pause: enable the deliver event source and the schedules"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        _add_stack_options(command, samconfig=True)
        command.add_argument(
            "--wait",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="wait this long for the event source mapping to settle (default 60)",
        )
        command.add_argument("--json", action="store_true", help="print the switch as JSON")
        command.set_defaults(func=cmd_switch, enabled=enabled)


# --------------------------------------------------------------------------- #
# AWS and the stack                                                           #
# --------------------------------------------------------------------------- #


def aws_client(service: str) -> Any:
    # Endpoint overrides come from boto3 itself (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>).
    return aws.client(service)


def sqs_client() -> Any:
    return aws_client("sqs")


def _named_stack(args: argparse.Namespace) -> str | None:
    name = str(getattr(args, "stack_name", None) or os.environ.get("STACK_NAME", "")).strip()
    return name or None


def stack_name(args: argparse.Namespace) -> str:
    """--stack-name, STACK_NAME, then samconfig.toml's stack_name (as `sam deploy` uses it)."""
    from proactive_delivery_tools.ops.switch import stack_name_from_samconfig

    name = _named_stack(args)
    if name:
        return name
    config_env = getattr(args, "config_env", "default")
    name = stack_name_from_samconfig(Path("samconfig.toml"), config_env)
    if name:
        return name
    raise ConfigError(
        f"which stack? give --stack-name or STACK_NAME (no stack_name for [{config_env}] in ./samconfig.toml)"
    )


def load_stack(name: str) -> Stack:
    from proactive_delivery_tools.ops.switch import load_stack as load

    return load(aws_client("cloudformation"), aws_client("events"), aws_client("lambda"), name)


def _queue_url(stack: Stack | None = None) -> str | None:
    """DELIVERY_QUEUE_URL, else the named stack's delivery queue."""
    url = os.environ.get("DELIVERY_QUEUE_URL", "").strip()
    if url:
        return url
    if stack is not None:
        return stack.queues.get("DeliveryQueue")
    return None


def _stack_for_queue(args: argparse.Namespace) -> Stack | None:
    """The named stack, only to find the delivery queue when DELIVERY_QUEUE_URL is unset."""
    name = _named_stack(args)
    if name is None or os.environ.get("DELIVERY_QUEUE_URL", "").strip():
        return None
    return load_stack(name)


@contextmanager
def _database(url: str) -> Iterator[Any]:
    from proactive_delivery.adapters.postgres.database import Database

    # The functions' PLATFORM_TIMEZONE, so status and show read the platform's naive
    # timestamps as the functions do.
    zone = os.environ.get("PLATFORM_TIMEZONE", "").strip() or "UTC"
    db = Database(lambda: url, platform_timezone=zone)
    try:
        yield db
    finally:
        db.close()


# --------------------------------------------------------------------------- #
# Commands                                                                    #
# --------------------------------------------------------------------------- #


def cmd_status(args: argparse.Namespace, database_url: DatabaseUrl) -> int:
    from proactive_delivery.core.models import SOURCES
    from proactive_delivery_tools.ops.status import collect_status
    from proactive_delivery_tools.ops.store import OperationsStore
    from proactive_delivery_tools.ops.switch import render_switch

    name = _named_stack(args)
    stack = load_stack(name) if name else None
    queue_url = _queue_url(stack)
    with _database(database_url(args)) as db:
        status = collect_status(OperationsStore(db), sqs_client() if queue_url else None, queue_url, SOURCES)
    status["switch"] = stack.as_dict() if stack is not None else None
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    lines = [render_status(status)]
    if stack is not None:
        lines += render_switch(stack)
    else:
        lines.append("Delivery switch: not shown (give --stack-name or STACK_NAME)")
    print("\n".join(lines))
    return 0


def cmd_show(args: argparse.Namespace, database_url: DatabaseUrl) -> int:
    from proactive_delivery.core.models import SOURCES
    from proactive_delivery_tools.ops.show import message_report, parse_message_ref
    from proactive_delivery_tools.ops.store import OperationsStore

    key = parse_message_ref(args.message, SOURCES)
    with _database(database_url(args)) as db:
        report = message_report(OperationsStore(db), key)
    print(json.dumps(report, indent=2) if args.json else render_message(report))
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    from proactive_delivery_tools.ops.switch import (
        PAUSED,
        RUNNING,
        SETTLED_STATES,
        render_switch,
        set_enabled,
    )

    if args.wait < 0:
        raise ConfigError("--wait must be >= 0")
    stack = load_stack(stack_name(args))
    after = set_enabled(
        aws_client("events"), aws_client("lambda"), stack, enabled=args.enabled, wait_seconds=args.wait
    )
    if args.json:
        print(json.dumps(after.as_dict(), indent=2))
        return 0
    lines = render_switch(after)
    wanted = RUNNING if args.enabled else PAUSED
    unsettled = [t.logical_id for t in after.switched if t.state not in SETTLED_STATES]
    if after.state == wanted and not unsettled:
        lines.append(
            "Nothing is queued or sent until `proactive-delivery resume`; due messages wait in the database "
            "and on the queue."
            if not args.enabled
            else "Deliveries and schedules run again; what waited is sent now."
        )
    else:
        settling = unsettled or [t.logical_id for t in after.switched if t.off == args.enabled]
        lines.append(
            f"not {wanted} yet after {args.wait:g} s: {', '.join(settling)}; "
            f"check again with `proactive-delivery status --stack-name {after.name}`"
        )
    print("\n".join(lines))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from proactive_delivery_tools.ops.queues import find_queues
    from proactive_delivery_tools.ops.replay import ReplayOptions, replay_dlq

    sqs = sqs_client()
    queues = find_queues(sqs, _queue_url(_stack_for_queue(args)), args.dlq_url)
    options = ReplayOptions(
        dry_run=args.dry_run,
        max_messages=args.max_messages,
        source=args.source,
        rate=args.rate,
        include_malformed=args.include_malformed,
    )
    with _progress_bar(args.max_messages) as progress:
        report = replay_dlq(sqs, queues, options, progress=progress)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif args.dry_run:
        for item in report.listed:
            identity = item["message_id"] or "(malformed)"
            print(f"{item['sqs_message_id']}  {identity}  receives={item['receive_count']}")
        for sqs_id in report.malformed_kept:
            print(f"{sqs_id}  (malformed: stays in the DLQ)")
        print(
            f"would move {len(report.listed)} message(s) from {queues.dlq_url}" + _kept(report, "would stay")
        )
    else:
        print(
            f"moved {report.moved} message(s) with {report.method}; {report.left} left in the DLQ"
            + _kept(report, "kept")
        )
    return 0


def _kept(report: Any, verb: str) -> str:
    """What the report says of the malformed messages it left in the DLQ."""
    n = len(report.malformed_kept)
    if not n:
        return ""
    return f"; {n} malformed {verb} (the deliverer cannot read them; --include-malformed moves them too)"


def cmd_resend(args: argparse.Namespace, database_url: DatabaseUrl) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from proactive_delivery.adapters.postgres.store import PostgresStore
    from proactive_delivery.adapters.sqs import SqsDeliveryQueue
    from proactive_delivery.app.evaluate import Enqueuer
    from proactive_delivery_tools.ops.resend import (
        check_reason,
        count_failed,
        parse_timestamp,
        resend_failed,
    )
    from proactive_delivery_tools.ops.store import OperationsStore

    since = parse_timestamp(args.failed_since)
    check_reason(args.reason)
    if args.dry_run:
        # It only counts rows: no queue, no stack, no AWS.
        with _database(database_url(args)) as db:
            report = count_failed(OperationsStore(db), since=since, reason=args.reason)
    else:
        queue_url = _queue_url(_stack_for_queue(args))
        if queue_url is None:
            raise ConfigError(
                "DELIVERY_QUEUE_URL is required: resend puts the messages on the delivery queue"
            )
        with _database(database_url(args)) as db, ThreadPoolExecutor(4, thread_name_prefix="enqueue") as pool:
            enqueuer = Enqueuer(SqsDeliveryQueue(sqs_client(), queue_url), concurrency=4, executor=pool)
            report = resend_failed(
                OperationsStore(db), enqueuer, PostgresStore(db), since=since, reason=args.reason
            )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif args.dry_run:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(report.by_reason.items())) or "none"
        print(f"would resend {report.matched} failed message(s): {reasons}")
    else:
        print(
            f"reset {report.matched} failed message(s) to queued; {report.queued} on the delivery queue"
            + (
                f", {report.returned_to_pending} left for the next evaluate run"
                if report.returned_to_pending
                else ""
            )
        )
    return 0


def _retention(args: argparse.Namespace) -> tuple[Any, str]:
    """The retention in effect and where it comes from: --retention-days, RETENTION_DAYS, or
    (for a dry run only) the functions' default. A purge by hand that quietly used the default
    could delete what the stack's RetentionDays keeps."""
    from proactive_delivery.settings import retention_from_env

    environ = dict(os.environ)
    source = "RETENTION_DAYS" if environ.get("RETENTION_DAYS", "").strip() else "the default"
    if args.retention_days is not None:
        environ["RETENTION_DAYS"] = str(args.retention_days)
        source = "--retention-days"
    elif source == "the default" and not args.dry_run:
        raise ConfigError(
            "purge deletes rows: say how many days to keep with --retention-days N or RETENTION_DAYS"
            " (the stack's RetentionDays, default 90), or look first with --dry-run"
        )
    try:
        return retention_from_env(environ), source
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("RETENTION_DAYS", source, 1)) from None


def cmd_purge(args: argparse.Namespace, database_url: DatabaseUrl) -> int:
    import math
    import time
    from datetime import UTC, datetime

    from proactive_delivery.adapters.postgres.retention import PostgresRetentionStore
    from proactive_delivery.app.purge import Purger

    if args.max_seconds <= 0:
        raise ConfigError("--max-seconds must be > 0")
    retention, source = _retention(args)
    deadline = time.monotonic() + args.max_seconds
    with _database(database_url(args)) as db:
        report = Purger(
            PostgresRetentionStore(db, dry_run=args.dry_run),
            retention_days=retention.days,
            batch_size=retention.batch_size,
            clock=lambda: datetime.now(UTC),
            safety_margin_ms=0,
        ).run(lambda: math.floor((deadline - time.monotonic()) * 1000))
    if args.json:
        print(json.dumps({**report.as_dict(), "retention_source": source}, indent=2))
        return 0
    print(render_purge(report, source, args.max_seconds))
    return 0


# Why a table's old rows were read and kept (PurgeReport.kept), in the order the purge works.
_KEPT_BECAUSE = {
    "message_state": "messages the platform still has due: without them evaluate would queue those"
    " messages again",
    "inbound_event": "opt-outs and opt-ins from numbers nobody had yet: `inbound backfill-phones`"
    " applies them once it knows whose number it is",
}
_KEPT_ORDER = {table: n for n, table in enumerate(_KEPT_BECAUSE)}


def render_purge(report: Any, source: str, max_seconds: float) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    counts = ", ".join(f"{table} {n}" for table, n in sorted(report.deleted.items()))
    lines = [
        f"retention {report.retention_days} days ({source}): finished rows older than"
        f" {report.horizon.isoformat(timespec='seconds')}",
        f"{verb}: {counts} (in {report.batches} batch{'es' if report.batches != 1 else ''}"
        f"{', rolled back' if report.dry_run else ''})",
    ]
    kept = "; ".join(
        f"{table} {n} ({_KEPT_BECAUSE.get(table, 'kept by its statement')})"
        for table, n in sorted(report.kept.items(), key=lambda item: _KEPT_ORDER.get(item[0], 9))
        if n
    )
    if kept:
        lines.append(f"kept past the horizon: {kept}")
    if report.stopped_early:
        lines.append(f"stopped after --max-seconds {max_seconds:g}: run it again to go on")
    return "\n".join(lines)


@contextmanager
def _progress_bar(total: int | None) -> Iterator[Any]:
    """A rich progress bar on stderr (rich is an optional dependency of the CLI only)."""
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:  # pragma: no cover - rich is installed with the package
        yield None
        return
    with Progress(console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("replaying", total=total)

        class _Advance:
            def advance(self, n: int) -> None:
                bar.advance(task, n)

        yield _Advance()


# --------------------------------------------------------------------------- #
# Rendering                                                                   #
# --------------------------------------------------------------------------- #


def render_status(status: dict[str, Any]) -> str:
    lines: list[str] = []
    others = {s: o for s, o in status.get("sent_by_others_24h", {}).items() if o["messages"]}
    if others:
        what = ", ".join(f"{n['messages']} {s} (last {n['last_sent_at']})" for s, n in others.items())
        lines.append(
            f"WARNING: another sender is still running: the platform shows {what} sent in the"
            " last 24 h that this pipeline did not send (docs/cutover.md)"
        )
    lines.extend(_provider_lines(status.get("providers", [])))
    lines.append("Unsent backlog (due and waiting: not sent, skipped, failed or deferred to later)")
    for source, b in status["backlog"].items():
        lines.append(f"  {source:<12} {b['unsent']:>8}   oldest {_age(b['oldest_unsent_age_seconds'])}")
    lines.append("Messages by state (open: all; final: last 24 h)")
    if not status["states"]:
        lines.append("  (none)")
    for source, counts in status["states"].items():
        lines.append(f"  {source:<12} " + "  ".join(f"{s}={n}" for s, n in sorted(counts.items())))
    lines.append("Failures in the last 24 h by reason")
    if not status["failures_24h"]:
        lines.append("  (none)")
    for f in status["failures_24h"]:
        lines.append(f"  {f['source']:<12} {f['reason']:<28} {f['messages']:>6}")
    lines.extend(_way_back_lines(status.get("way_back_24h")))
    lines.append("Queues (visible / in flight / delayed)")
    if status["queues"] is None:
        lines.append("  DELIVERY_QUEUE_URL is not set")
    else:
        for name, q in status["queues"].items():
            lines.append(f"  {name:<12} {q['visible']:>6} / {q['in_flight']:>6} / {q['delayed']:>6}")
    lines.append("Last evaluate run by source")
    runs = status["last_evaluate_run_by_source"]
    if not runs:
        lines.append("  (no source table found)")
    for source, run in runs.items():
        if run is None:
            lines.append(f"  {source:<12} never")
            continue
        shared = f" (a run of {','.join(run['sources'])})" if run["sources"] != [source] else ""
        lines.append(
            f"  {source:<12} {run['finished_at']} ({_age(run['age_seconds'])} ago): "
            f"enqueued {run['enqueued']}{shared}{', stopped early' if run['stopped_early'] else ''}"
        )
    return "\n".join(lines)


def _way_back_lines(back: dict[str, Any] | None) -> list[str]:
    if back is None:
        return []
    codes = ", ".join(f"{code} {n}" for code, n in back["undelivered_by_code"].items())
    unlinked = back["replies_not_linked"]
    return [
        "The way back, last 24 h (what the inbound processor applied)",
        f"  delivered    {back['delivered']:>8}   messages whose receipt now says delivered or read",
        f"  undelivered  {back['undelivered']:>8}   undelivered or failed"
        + (f" (by code: {codes})" if codes else ""),
        f"  replied      {back['replied']:>8}   replies linked to a message; {unlinked} linked to none"
        " (unmatched, ambiguous, outside the window)",
        f"  opted out    {back['opted_out']:>8}   keyword {back['opted_out_keyword']},"
        f" DND {back['opted_out_dnd']}; opted in {back['opted_in']}",
    ]


def _provider_lines(providers: list[dict[str, Any]]) -> list[str]:
    lines = ["Providers (the limit in effect, the circuit, attempts a second over the last minute)"]
    if not providers:
        lines.append("  (none sent to yet)")
    for p in providers:
        limit = f"{p['rate_limit_per_second']:g}/s" if p["rate_limit_per_second"] is not None else "no limit"
        circuit = {
            "open": f"OPEN since {p['opened_at']}, probe after {p['open_until']}",
            "half_open": f"HALF-OPEN: a probe is out (until {p['probe_until']})",
        }.get(p["circuit"], p["circuit"])
        held = f", held by a 429 until {p['blocked_until']}" if p["blocked_until"] else ""
        lines.append(
            f"  {p['provider']:<12} limit {limit:<10} circuit {circuit}{held};"
            f" {p['attempts_per_second_last_minute']:g} attempts/s"
        )
    return lines


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def render_message(report: dict[str, Any]) -> str:
    lines = [f"{report['source']}:{report['source_id']} (message id {report['message_id']})"]
    platform = report["platform"]
    if platform is None:
        lines.append("  platform row     gone (the platform deleted it)")
    else:
        status = f", status {platform['status']}" if platform["status"] else ""
        lines.append(f"  contractor       {platform['contractor_id']}")
        lines.append(f"  due at           {platform['due_at']}{status}")
    state = report["state"]
    if state is None:
        label = "  state            "
        if platform is not None and platform["sent_at"] is not None:
            # Sent on the platform and no row of ours: sent by someone else, or sent (or ended)
            # here and purged RETENTION_DAYS later; either way it is never queued again.
            lines.append(f"{label}none: sent on the platform at {platform['sent_at']} (a finished")
            lines.append(" " * len(label) + "message's row is purged RETENTION_DAYS after it ended)")
        elif platform is not None and platform["status"] not in (None, "scheduled"):
            lines.append(f"{label}none: not due on the platform (status {platform['status']})")
        else:
            lines.append(f"{label}not seen by evaluate yet (the next run of its schedule queues it)")
        return "\n".join(lines)
    rows = [
        ("state", state["state"] + (f" ({state['reason']})" if state["reason"] else "")),
        ("attempts", str(state["attempts"])),
        ("channel", state["channel"]),
        ("provider ref", state["provider_ref"]),
        ("queued at", state["queued_at"]),
        ("sent at", state["sent_at"]),
        (
            "next attempt",
            state["next_attempt_at"] if state["state"] not in ("sent", "skipped", "failed") else None,
        ),
        ("lease until", state["lease_expires_at"] if state["state"] == "sending" else None),
        ("last error", state["last_error"]),
        ("updated at", state["updated_at"]),
        ("receipt", _receipt(report["delivery_status"], sent=state["state"] == "sent")),
    ]
    lines += [f"  {label:<16} {value}" for label, value in rows if value not in (None, "")]
    lines.append("Attempts" if report["attempts"] else "Attempts: none")
    for a in report["attempts"]:
        status = a["http_status"] if a["http_status"] is not None else "-"
        latency = f"{a['latency_ms']} ms" if a["latency_ms"] is not None else "-"
        lines.append(
            f"  #{a['attempt']:<3} {a['outcome']:<10} {a['channel'] or '-':<9} http {status:<4} {latency:>9}"
            f"  {a['started_at']} .. {a['finished_at']}" + (f"  {a['error']}" if a["error"] else "")
        )
    if report["replies"]:
        where = report["reply_text_column"]
        lines.append(
            f"Replies (text not kept here: the first one's goes to {where}, where still empty,"
            " unless PLATFORM_WRITE_RESPONSES=false)"
            if where
            else "Replies (text not kept here, and this platform's table has no column for it)"
        )
    else:
        lines.append("Replies: none linked")
    for r in report["replies"]:
        keyword = f" {r['keyword']}" if r["keyword"] else ""
        lines.append(
            f"  {r['occurred_at']}  {r['action']}{keyword} {r['outcome']}"
            f" ({r['kind']}, {r['provider'] or '-'}; applied {r['applied_at']})  {r['event']}"
        )
    lines.append("Receipts" if report["receipts"] else "Receipts: none")
    for r in report["receipts"]:
        code = f" error {r['error_code']}" if r["error_code"] else ""
        lines.append(
            f"  {r['occurred_at']}  {r['status'] or '-'}{code} ({r['provider'] or '-'};"
            f" applied {r['applied_at']})  {r['event']}"
        )
    return "\n".join(lines)


def _receipt(status: dict[str, Any] | None, *, sent: bool) -> str | None:
    """The latest receipt in one line; "none yet" for a sent message no receipt reached."""
    if status is None or status["status"] is None:
        return "none yet (sent, no receipt recorded)" if sent else None
    code = f", error {status['error_code']}" if status["error_code"] else ""
    return f"{status['status']}{code} at {status['at']}"
