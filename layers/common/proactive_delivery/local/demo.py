"""`proactive-delivery demo`: the whole pipeline on this machine, once, with a summary.

PostgreSQL (DATABASE_URL, or PG* variables), SQS from moto's server mode, a local
signature-verifying webhook receiver, sample messages, one evaluate run, then the emulated
event source mapping invokes the deliver handler until the queue is drained.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

import boto3
import psycopg

from proactive_delivery import bootstrap
from proactive_delivery.local.esm import LambdaContext, SqsEventSourceMapping
from proactive_delivery.local.receiver import WebhookReceiver, random_faults
from proactive_delivery.local.seed import seed
from proactive_delivery.local.sqs import (
    LOCAL_CREDENTIALS,
    LOCAL_REGION,
    LocalSqsServer,
    create_queues,
    local_aws_environment,
)
from proactive_delivery.migrate import apply_migrations

DEMO_SENDER = "coach@example.com"


@dataclass(frozen=True)
class DemoOptions:
    database_url: str
    count: int = 100
    fail_rate: float = 0.1
    latency: float = 0.02
    reset: bool = True


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _reset_demo_tables(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS delivery CASCADE")
        conn.execute(
            "DROP TABLE IF EXISTS contractor_followup_schedules, ai_proactive_messages, contractors CASCADE"
        )


def run_demo(options: DemoOptions, out: TextIO) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if options.reset:
        _reset_demo_tables(options.database_url)
    apply_migrations(options.database_url, reference_schema=True)
    with psycopg.connect(options.database_url, autocommit=True) as conn:
        seeded = seed(conn, count=options.count)
    say(
        f"seeded {seeded.messages} messages for {seeded.contractors} contractors "
        f"({seeded.without_phone} without a phone), {seeded.followups} follow-ups, "
        f"{seeded.preferences} preference rows"
    )

    secret = new_signing_secret()
    with ExitStack() as stack:
        sqs = LocalSqsServer().start()
        stack.callback(sqs.stop)
        client = sqs.client()
        queues = create_queues(client, visibility_timeout=30, max_receive_count=5)
        receiver = stack.enter_context(
            WebhookReceiver(secret, plan=random_faults(options.fail_rate, 503, options.latency, seed=11))
        )
        env = {
            **local_aws_environment(sqs.endpoint),
            "STAGE": "local",
            "DATABASE_URL": options.database_url,
            "DELIVERY_QUEUE_URL": queues.queue_url,
            "N8N_OUTBOUND_WEBHOOK_URL": receiver.url,
            "WEBHOOK_SIGNING_SECRET": secret,
            # Email through moto's SES v2 on the same local server, web chat to the receiver.
            "AWS_ENDPOINT_URL_SESV2": sqs.endpoint,
            "EMAIL_FROM_ADDRESS": DEMO_SENDER,
            "WEB_CHAT_WEBHOOK_URL": receiver.url.replace("/webhook", "/chat"),
            # Retries come back after 1-2 s instead of minutes, so the demo finishes quickly.
            "RETRY_BASE_SECONDS": "1",
            "RETRY_MAX_SECONDS": "2",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            "POWERTOOLS_METRICS_NAMESPACE": "ProactiveDelivery",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        stack.callback(_restore_env, saved)
        bootstrap.reset()
        stack.callback(bootstrap.reset)

        from proactive_delivery.handlers import deliver, evaluate

        started = time.monotonic()
        boto3.client(
            "sesv2", endpoint_url=sqs.endpoint, region_name=LOCAL_REGION, **LOCAL_CREDENTIALS
        ).create_email_identity(EmailIdentity=DEMO_SENDER)
        report = evaluate({"sources": ["proactive"]}, LambdaContext("EvaluateFunction", 300))
        say(f"evaluate queued {report['enqueued']} messages")
        followups = evaluate({"sources": ["followup"]}, LambdaContext("EvaluateFunction", 300))
        say(f"evaluate queued {followups['enqueued']} follow-ups")
        mapping = SqsEventSourceMapping(
            client,
            queues.queue_url,
            "arn:aws:sqs:us-east-1:123456789012:delivery",
            deliver,
            batch_size=10,
            maximum_concurrency=2,
            function_timeout=60,
        )
        mapping.drain(timeout=180, idle_sleep=0.2)
        elapsed = time.monotonic() - started
        summary = summarize(options.database_url)
        summary["elapsed_seconds"] = round(elapsed, 2)
        summary["webhook_posts"] = len(receiver.requests)
        summary["signature_rejections"] = receiver.rejected_signatures
        summary["invocations"] = mapping.stats.invocations
    print_summary(summary, say)
    return summary


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def summarize(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT state, count(*) FROM delivery.message_state GROUP BY state").fetchall()
        states: dict[str, int] = {str(r[0]): int(r[1]) for r in rows}
        reasons = conn.execute(
            "SELECT state, reason, count(*) FROM delivery.message_state"
            " WHERE state IN ('skipped', 'failed', 'deferred') GROUP BY state, reason ORDER BY 1, 2"
        ).fetchall()
        channels = conn.execute(
            "SELECT source, channel, count(*) FROM delivery.message_state WHERE state = 'sent'"
            " GROUP BY source, channel ORDER BY 1, 2"
        ).fetchall()
        latency = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95])"
            " WITHIN GROUP (ORDER BY extract(epoch FROM s.sent_at - m.created_at)),"
            " max(extract(epoch FROM s.sent_at - m.created_at))"
            " FROM delivery.message_state s JOIN ai_proactive_messages m ON m.id = s.source_id"
            " WHERE s.source = 'proactive' AND s.state = 'sent'"
        ).fetchone()
        retries = conn.execute("SELECT count(*) FROM delivery.attempt_log WHERE outcome = 'retry'").fetchone()
        unsent = conn.execute("SELECT count(*) FROM ai_proactive_messages WHERE sent_at IS NULL").fetchone()
    p50, p95 = latency[0] if latency and latency[0] else [None, None]
    return {
        "states": states,
        "reasons": [{"state": s, "reason": r, "count": c} for s, r, c in reasons],
        "channels": [{"source": s, "channel": ch, "count": c} for s, ch, c in channels],
        "latency_p50_seconds": round(float(p50), 3) if p50 is not None else None,
        "latency_p95_seconds": round(float(p95), 3) if p95 is not None else None,
        "latency_max_seconds": round(float(latency[1]), 3) if latency and latency[1] is not None else None,
        "retried_attempts": retries[0] if retries else 0,
        "platform_unsent": unsent[0] if unsent else 0,
    }


def print_summary(summary: dict[str, Any], say: Any) -> None:
    states = summary["states"]
    say("")
    say("summary")
    say("-------")
    for state in ("sent", "skipped", "failed", "deferred", "queued", "pending", "sending"):
        if states.get(state):
            say(f"  {state:<9} {states[state]:>5}")
    for row in summary["reasons"]:
        say(f"    {row['state']}: {row['reason']} x{row['count']}")
    for row in summary.get("channels", []):
        say(f"    sent: {row['source']} via {row['channel']} x{row['count']}")
    say(f"  retried attempts      {summary['retried_attempts']}")
    say(
        f"  webhook POSTs         {summary['webhook_posts']}"
        f" (bad signatures: {summary['signature_rejections']})"
    )
    say(f"  deliver invocations   {summary['invocations']}")
    say(
        f"  due->sent latency     p50 {summary['latency_p50_seconds']} s,"
        f" p95 {summary['latency_p95_seconds']} s, "
        f"max {summary['latency_max_seconds']} s"
    )
    say(f"  platform rows unsent  {summary['platform_unsent']} (skipped/failed keep sent_at NULL)")
    say(f"  wall time             {summary['elapsed_seconds']} s")
