"""`proactive-delivery status | replay-dlq | resend`: argument parsing and output for the
operators' commands; the logic is in operations.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from proactive_delivery.errors import ConfigError

DatabaseUrl = Callable[[argparse.Namespace], str]


def register(sub: Any, database_url: DatabaseUrl) -> None:
    status = sub.add_parser("status", help="backlog, failures, queue depths and the last evaluate run")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(func=lambda args: cmd_status(args, database_url))

    replay = sub.add_parser(
        "replay-dlq", help="move dead-lettered messages back to the delivery queue (safe to repeat)"
    )
    replay.add_argument("--dlq-url", help="DLQ to replay (default: the delivery queue's redrive target)")
    replay.add_argument("--dry-run", action="store_true", help="list what would move; change nothing")
    replay.add_argument("--max", type=int, dest="max_messages", help="move at most N messages")
    replay.add_argument("--source", help="only messages of this source (e.g. proactive)")
    replay.add_argument("--rate", type=float, default=10.0, help="messages per second (default 10)")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(func=cmd_replay)

    resend = sub.add_parser("resend", help="put messages that ended failed back through the pipeline")
    resend.add_argument(
        "--failed-since", required=True, help="ISO 8601 timestamp; naive means UTC (2026-05-01T12:00Z)"
    )
    resend.add_argument("--reason", help="only failures with this reason (e.g. attempts_exhausted)")
    resend.add_argument("--dry-run", action="store_true", help="count what would be resent; change nothing")
    resend.add_argument("--json", action="store_true", help="print the report as JSON")
    resend.set_defaults(func=lambda args: cmd_resend(args, database_url))


def sqs_client() -> Any:
    import boto3
    from botocore.config import Config

    # Endpoint overrides come from boto3 itself (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS).
    return boto3.client("sqs", config=Config(retries={"mode": "standard", "max_attempts": 3}))


def _queue_url() -> str | None:
    return os.environ.get("DELIVERY_QUEUE_URL", "").strip() or None


@contextmanager
def _database(url: str) -> Iterator[Any]:
    from proactive_delivery.db import Database

    db = Database(lambda: url)
    try:
        yield db
    finally:
        db.close()


def cmd_status(args: argparse.Namespace, database_url: DatabaseUrl) -> int:
    from proactive_delivery.models import SOURCES
    from proactive_delivery.operations import collect_status, render_status
    from proactive_delivery.ops_store import OperationsStore

    queue_url = _queue_url()
    with _database(database_url(args)) as db:
        status = collect_status(OperationsStore(db), sqs_client() if queue_url else None, queue_url, SOURCES)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from proactive_delivery.operations import ReplayOptions, find_queues, replay_dlq

    sqs = sqs_client()
    queues = find_queues(sqs, _queue_url(), args.dlq_url)
    options = ReplayOptions(
        dry_run=args.dry_run, max_messages=args.max_messages, source=args.source, rate=args.rate
    )
    with _progress_bar(args.max_messages) as progress:
        report = replay_dlq(sqs, queues, options, progress=progress)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif args.dry_run:
        for item in report.listed:
            identity = item["message_id"] or "(malformed)"
            print(f"{item['sqs_message_id']}  {identity}  receives={item['receive_count']}")
        print(f"would move {len(report.listed)} message(s) from {queues.dlq_url}")
    else:
        print(f"moved {report.moved} message(s) with {report.method}; {report.left} left in the DLQ")
    return 0


def cmd_resend(args: argparse.Namespace, database_url: DatabaseUrl) -> int:
    from proactive_delivery.db import PostgresStore
    from proactive_delivery.evaluate import Enqueuer
    from proactive_delivery.operations import parse_timestamp, resend_failed
    from proactive_delivery.ops_store import OperationsStore
    from proactive_delivery.queue import SqsDeliveryQueue

    since = parse_timestamp(args.failed_since)
    queue_url = _queue_url()
    if queue_url is None and not args.dry_run:
        raise ConfigError("DELIVERY_QUEUE_URL is required: resend puts the messages on the delivery queue")
    with _database(database_url(args)) as db:
        enqueuer = Enqueuer(SqsDeliveryQueue(sqs_client(), queue_url or ""), concurrency=4)
        report = resend_failed(
            OperationsStore(db),
            enqueuer,
            PostgresStore(db),
            since=since,
            reason=args.reason,
            dry_run=args.dry_run,
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
