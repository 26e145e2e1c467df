#!/usr/bin/env python
"""Pipeline benchmark: every figure in the table is measured in the same run.

1. baseline  - the old naive sender: SELECT 10 unsent rows (JOIN contractors), then per row
               one POST and one single-row UPDATE ... SET sent_at = now(), until none left.
2. deliver   - proactive_delivery.handlers.deliver (Powertools BatchProcessor included), one
               "Lambda instance" invoked with sequential SQS-shaped batches of 10. The real
               Deliverer is built by bootstrap from environment variables; only
               bootstrap.get_queue is replaced by an InMemoryQueue (ChangeMessageVisibility
               is never called on success, and no SQS endpoint is needed).
3. SQL per batch - statements per deliver batch for batch sizes 1, 5, 10: the
               Database.statements counter, cross-checked by the server's own
               pg_stat_database.xact_commit delta (every statement runs in autocommit, so one
               statement = one transaction), and pg_stat_statements when it is preloaded.
4. evaluate  - rows/s and peak memory for two backlog sizes, each in a fresh child process
               (tracemalloc peak, and the ru_maxrss growth of that process).

Both the baseline and deliver post to local.receiver.WebhookReceiver, which answers 200
after 50 ms. The baseline signs its requests too (the receiver rejects unsigned requests
at once, without the delay, which would flatter the baseline).

The receiver as shipped writes its response headers and body in two send() calls on a
keep-alive socket without TCP_NODELAY, so Nagle's algorithm and the client's delayed ACK
add about 40 ms to every request. The benchmark sets TCP_NODELAY on its receiver
(StreamRequestHandler.disable_nagle_algorithm) so the server answers after the intended
50 ms; --receiver-as-shipped leaves it alone. The table shows the receiver's bare round
trip both ways.

Usage: python benchmarks/bench_pipeline.py [--quick]
PostgreSQL is reached through PGHOST/PGPORT/PGUSER/PGPASSWORD (default 127.0.0.1:5432,
user postgres). Scratch databases are named pd_bench_<pid>_* and dropped at the end.
Exit status 1 when a target is missed (the whole table is printed either way).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# As in template.yaml; must be set before the package's loggers and metrics are created.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "proactive-delivery")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ProactiveDelivery")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import httpx
import psycopg
from standardwebhooks.webhooks import Webhook

from proactive_delivery import handlers
from proactive_delivery.adapters.channels.webhook import sign_headers
from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.bootstrap import Services, build
from proactive_delivery.core.content import e164
from proactive_delivery.settings import Settings
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.postgres import url_from_environment
from proactive_delivery_tools.local.receiver import Reply, WebhookReceiver
from proactive_delivery_tools.local.template import load_yaml
from proactive_delivery_tools.schema.migrate import apply_migrations

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_model

ROOT = Path(__file__).resolve().parents[1]

SIGNING_SECRET = "whsec_" + base64.b64encode(b"bench-signing-secret-32-bytes!!!").decode()
RECEIVER_DELAY = 0.05
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:bench-delivery"
CHILD_TIMEOUT = 900
DB_TIMEOUT = 10

# targets
DELIVER_MIN_RATE = 160.0
DELIVER_MIN_SPEEDUP = 8.0
DELIVER_MIN_OF_FLOOR = 0.9
ENQUEUE_MIN_SPEEDUP = 8.0
ENQUEUE_MIN_RATE = 5000.0
MAX_STATEMENTS_PER_BATCH = 3.0
MAX_MEMORY_RATIO = 1.5


# --------------------------------------------------------------------------------------
# PostgreSQL helpers
# --------------------------------------------------------------------------------------
def conninfo(dbname: str) -> str:
    return url_from_environment(dbname)


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(
        conninfo(os.environ.get("PGDATABASE", "postgres")), autocommit=True, connect_timeout=DB_TIMEOUT
    )


class Databases:
    """Scratch databases: a migrated template, cloned per section; all dropped in close()."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []
        self.template = self._create("tpl")
        apply_migrations(conninfo(self.template), reference_schema=True)

    def _create(self, suffix: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.names.append(name)
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def new(self, suffix: str) -> str:
        return conninfo(self._create(suffix, self.template))

    def drop(self, url_or_name: str) -> None:
        name = url_or_name.rsplit("/", 1)[-1]
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        errors = []
        for name in reversed(self.names):
            try:
                self.drop(name)
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            print("warning: could not drop " + "; ".join(errors), file=sys.stderr)


def seed(url: str, n: int, *, per_contractor: int = 1) -> None:
    """n due, unsent proactive messages (created a minute ago, naive UTC as the platform
    stores it), each contractor with a phone of its own (up to 8M), stored as people type it
    ("(312) 555-0142")."""
    contractors = max(1, -(-n // per_contractor))
    with psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT) as conn:
        conn.execute(
            "INSERT INTO contractors (first_name, phone, email) "
            "SELECT 'Ana', '(312) ' || (200 + (g / 10000) %% 800) || '-' || lpad((g %% 10000)::text, 4, '0'),"
            " 'contractor' || g || '@example.com' "
            "FROM generate_series(1, %s) g",
            (contractors,),
        )
        conn.execute(
            "INSERT INTO ai_proactive_messages "
            "(contractor_id, message_type, message_content, ai_reasoning, context_data, created_at,"
            " updated_at) SELECT lo.id + (g - 1) %% %s, 'check_in',"
            " 'Hi {first_name}, how did this week''s bids go? #' || g, "
            "'why', '{}'::jsonb, (now() AT TIME ZONE 'UTC') - interval '1 minute', now() AT TIME ZONE 'UTC' "
            "FROM generate_series(1, %s) g, (SELECT min(id) AS id FROM contractors) lo",
            (contractors, n),
        )
        conn.execute("ANALYZE contractors")
        conn.execute("ANALYZE ai_proactive_messages")


def bench_settings(database_url: str, receiver_url: str = "http://127.0.0.1:9/never-called") -> Settings:
    """The functions' settings for the benchmark (what the template's environment gives)."""
    return Settings.from_env(
        {
            "STAGE": "local",
            "DATABASE_URL": database_url,
            "DELIVERY_QUEUE_URL": "http://127.0.0.1:9/000000000000/bench-delivery",  # never contacted
            "N8N_OUTBOUND_WEBHOOK_URL": receiver_url,
            "WEBHOOK_SIGNING_SECRET": SIGNING_SECRET,
            # Throughput must not depend on the hour the benchmark runs at.
            "QUIET_HOURS": "none",
            "MAX_MESSAGES_PER_DAY": "1000",
        }
    )


def queue_all(url: str) -> list[Any]:
    """Record every due row as queued (the real Evaluator, as bootstrap builds it) and return
    the keys it sent."""
    queue = InMemoryQueue()
    services = build(bench_settings(url), queue=queue)
    try:
        report = services.evaluator.run(
            ["proactive"], LambdaContext("bench", 600).get_remaining_time_in_millis
        )
    finally:
        services.close()
    if report.stopped_early:
        raise RuntimeError("evaluate stopped early while queuing the benchmark rows")
    return list(queue.sent)


# --------------------------------------------------------------------------------------
# Results table
# --------------------------------------------------------------------------------------
class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.failed = False
        self.missed: list[str] = []

    def add(self, measure: str, value: str, target: str = "-", verdict: str = "-", ok: bool = True) -> None:
        self.rows.append((measure, value, target, verdict))
        if not ok:
            wanted = f" (target {target})" if target != "-" else ""
            self.missed.append(f"{measure}: {value}{wanted}")
        self.failed |= not ok

    def check(
        self, measure: str, value: float, fmt: str, target: float, *, at_least: bool, unit: str = ""
    ) -> None:
        ok = value >= target if at_least else value <= target
        ratio = value / target if target else float("inf")
        sign = ">=" if at_least else "<="
        self.add(
            measure,
            fmt.format(value) + unit,
            f"{sign} {target:g}{unit}",
            f"{ratio:.2f}x {'ok' if ok else 'MISS'}",
            ok,
        )

    def error(self, measure: str, exc: BaseException) -> None:
        self.add(measure, f"ERROR {type(exc).__name__}: {str(exc)[:80]}", "-", "MISS", ok=False)

    def render(self) -> str:
        head = ("measure", "value", "target", "ratio/ok")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]

        def line(r: Sequence[str]) -> str:
            return " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

        sep = "-+-".join("-" * w for w in widths)
        return "\n".join([line(head), sep, *(line(r) for r in self.rows)])


# --------------------------------------------------------------------------------------
# 1. Baseline: the old naive sender
# --------------------------------------------------------------------------------------
def run_baseline(url: str, receiver_url: str, n: int) -> tuple[float, int, int]:

    signer = Webhook(SIGNING_SECRET)
    sent = failed = 0
    max_loops = n // 10 + 10
    with (
        psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT) as conn,
        httpx.Client(timeout=10.0) as client,
    ):
        started = time.perf_counter()
        for _ in range(max_loops):
            rows = conn.execute(
                "SELECT m.id, m.contractor_id, m.message_type, m.message_content, c.phone "
                "FROM ai_proactive_messages m JOIN contractors c ON c.id = m.contractor_id "
                "WHERE m.sent_at IS NULL ORDER BY m.id LIMIT 10"
            ).fetchall()
            if not rows:
                break
            for msg_id, contractor_id, message_type, content, phone in rows:
                body = json.dumps(
                    {
                        "phone": phone,
                        "message": content,
                        "contractor_id": contractor_id,
                        "message_type": message_type,
                    },
                    separators=(",", ":"),
                )
                headers = sign_headers(signer, msg_id=f"baseline-{msg_id}", body=body, now=datetime.now(UTC))
                headers["content-type"] = "application/json"
                response = client.post(receiver_url, content=body.encode(), headers=headers)
                if response.status_code == 200:
                    sent += 1
                    conn.execute(
                        "UPDATE ai_proactive_messages SET sent_at = now() AT TIME ZONE 'UTC' WHERE id = %s",
                        (msg_id,),
                    )
                else:
                    failed += 1
        elapsed = time.perf_counter() - started
    return (sent / elapsed if elapsed else 0.0), sent, failed


# --------------------------------------------------------------------------------------
# 2./3. The deliver handler
# --------------------------------------------------------------------------------------
def sqs_event(keys: Sequence[Any]) -> dict[str, Any]:
    now_ms = str(int(time.time() * 1000))
    records = []
    for key in keys:
        body = key.to_body()
        records.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"bench-receipt-{uuid.uuid4().hex}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now_ms,
                    "SenderId": "BENCH",
                    "ApproximateFirstReceiveTimestamp": now_ms,
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


class ByteCount(io.TextIOBase):
    """A text sink that keeps only the number of characters written (log lines are ASCII
    JSON: characters = bytes)."""

    def __init__(self) -> None:
        self.chars = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


class DeliverHarness:
    """The deliver function as Lambda runs it (handlers.LambdaFunction: logger context,
    tracing, metrics flushed after each invocation) on the services bootstrap builds from the
    settings, with an InMemoryQueue as the delivery queue. Its log and EMF lines are written
    (the formatting cost is real) to a sink that counts their bytes instead of the terminal."""

    def __init__(self, receiver_url: str) -> None:
        self.receiver_url = receiver_url
        self.queue = InMemoryQueue()
        self.services: Services | None = None
        self.function: handlers.LambdaFunction | None = None
        self.log = ByteCount()
        self._streams: list[tuple[Any, Any]] = []
        for handler in handlers.logger._logger.handlers:  # the one StreamHandler to stdout
            if hasattr(handler, "setStream"):
                self._streams.append((handler, handler.setStream(self.log)))

    def use_database(self, url: str) -> None:
        if self.services is not None:
            self.services.close()
        self.services = build(bench_settings(url, self.receiver_url), queue=self.queue)
        self.function = handlers.LambdaFunction(handlers.deliver).with_services(self.services)

    def invoke(self, keys: Sequence[Any]) -> dict[str, Any]:
        assert self.function is not None
        event = sqs_event(keys)
        # The metrics are EMF lines printed to stdout (in Lambda they go to CloudWatch).
        with contextlib.redirect_stdout(self.log):
            return dict(self.function(event, LambdaContext("DeliverFunction", 60)))

    @property
    def database(self) -> Any:
        assert self.services is not None
        return self.services.database

    def close(self) -> None:
        try:
            if self.services is not None:
                self.services.close()
        finally:
            for handler, stream in self._streams:
                handler.setStream(stream)


def batches(keys: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def run_httpx_floor(receiver_url: str, batches: int) -> tuple[float, float]:
    """The ceiling for any handler here: 10 signed POSTs at a time through one httpx.Client
    and 10 threads, exactly as the deliver handler sends, with no database, no claim and no
    bookkeeping. Measured in the same run against the same receiver."""
    from concurrent.futures import ThreadPoolExecutor

    signer = Webhook(SIGNING_SECRET)
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    body = json.dumps({"phone": "+15550100000", "message": "x" * 120}, separators=(",", ":"))

    def post(n: int) -> int:
        headers = sign_headers(signer, msg_id=f"floor-{n}", body=body, now=datetime.now(UTC))
        headers["content-type"] = "application/json"
        return client.post(receiver_url, content=body.encode(), headers=headers).status_code

    with httpx.Client(limits=limits, timeout=10) as client, ThreadPoolExecutor(10) as pool:
        list(pool.map(post, range(10)))  # open the connections, not timed
        started = time.perf_counter()
        cpu = time.process_time()
        for batch in range(batches):
            statuses = list(pool.map(post, range(batch * 10, batch * 10 + 10)))
            if any(status != 200 for status in statuses):
                raise RuntimeError(f"floor run got {statuses}")
        cpu = time.process_time() - cpu
        elapsed = time.perf_counter() - started
    return batches * 10 / elapsed, cpu * 1000 / (batches * 10)


class RemoteReceiver:
    """benchmarks/remote_receiver.py in its own process (as n8n is on its own machine)."""

    def __init__(self, delay: float) -> None:
        from proactive_delivery_tools.local.sqs import free_port

        self.port = free_port()
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "remote_receiver.py")
        self._proc = subprocess.Popen(
            [sys.executable, script, str(self.port), SIGNING_SECRET, str(delay)],
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        deadline = time.monotonic() + 15
        while True:
            try:
                self.stats()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.close()
                    raise RuntimeError("the receiver process did not start") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json())

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


@dataclasses.dataclass
class DeliverRun:
    rate: float  # messages/s
    timed: int  # messages in the timed batches
    problems: list[str]
    cpu_ms_per_message: float  # process CPU (every thread) / messages
    ms_per_batch: float  # wall time of one invocation
    log_bytes_per_message: float  # log and EMF lines written
    visibility_calls_per_message: float


def run_deliver(harness: DeliverHarness, receiver: Any, url: str, n: int, size: int = 10) -> DeliverRun:
    """n messages (plus one untimed cold-start batch) in sequential batches of `size`."""
    seed(url, n + size)
    keys = queue_all(url)
    with psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT) as conn:
        # What autovacuum does after evaluate's inserts (more than 10 % of the table changed):
        # without it the planner takes the just-filled table for empty.
        conn.execute("ANALYZE delivery.message_state")
    # queue_all parsed every phone in this process: the deliverer starts without them, as a
    # Lambda instance apart from evaluate's does.
    e164.cache_clear()
    problems: list[str] = []
    if len(keys) != n + size:
        problems.append(f"queued {len(keys)} of {n + size}")
    harness.use_database(url)
    warmup, timed = keys[:size], keys[size:]
    remote = isinstance(receiver, RemoteReceiver)
    before: dict[str, int] = receiver.stats()["by_id"] if remote else {}
    first_request = 0 if remote else len(receiver.requests)
    failures = 0
    failures += len(harness.invoke(warmup).get("batchItemFailures", []))  # cold start, not timed
    visibility_before = len(harness.queue.visibility)
    log_before = harness.log.chars
    invocations = 0
    started = time.perf_counter()
    cpu = time.process_time()
    for batch in batches(timed, size):
        failures += len(harness.invoke(batch).get("batchItemFailures", []))
        invocations += 1
    cpu = time.process_time() - cpu
    elapsed = time.perf_counter() - started
    log_chars = harness.log.chars - log_before
    visibility_calls = len(harness.queue.visibility) - visibility_before

    harness.database.close()
    with psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT) as conn:
        states: dict[str, int] = dict(
            conn.execute("SELECT state, count(*) FROM delivery.message_state GROUP BY state").fetchall()
        )
        platform_sent = conn.execute(
            "SELECT count(*) FROM ai_proactive_messages WHERE sent_at IS NOT NULL"
        ).fetchone()
    if remote:
        # POSTs accepted during this run, per webhook-id (the receiver counts over its life).
        after: dict[str, int] = receiver.stats()["by_id"]
        ids = [i for i, n in after.items() for _ in range(n - before.get(i, 0))]
    else:
        posts = receiver.requests[first_request:]
        ids = [r.webhook_id for r in posts if r.status == 200]
    if failures:
        problems.append(f"{failures} batchItemFailures")
    if states.get("sent", 0) != len(keys):
        problems.append(f"states {states}")
    if platform_sent is None or platform_sent[0] != len(keys):
        problems.append(f"platform sent_at set on {platform_sent and platform_sent[0]}")
    if len(ids) != len(keys) or len(set(ids)) != len(ids):
        problems.append(f"receiver: {len(ids)} accepted, {len(set(ids))} distinct of {len(keys)}")
    if visibility_calls:
        problems.append(f"{visibility_calls} visibility changes")
    messages = max(1, len(timed))
    return DeliverRun(
        rate=len(timed) / elapsed if elapsed else 0.0,
        timed=len(timed),
        problems=problems,
        cpu_ms_per_message=cpu * 1000 / messages,
        ms_per_batch=elapsed * 1000 / max(1, invocations),
        log_bytes_per_message=log_chars / messages,
        visibility_calls_per_message=visibility_calls / messages,
    )


class StatementCounter:
    """Server-side count of transactions in one database, read from a monitor connection
    to another database (so the monitor's own queries are not counted)."""

    def __init__(self, monitor: psycopg.Connection[Any], dbname: str) -> None:
        self.monitor = monitor
        self.dbname = dbname
        self.pgss = self._try_pg_stat_statements()

    def _try_pg_stat_statements(self) -> str | None:
        """Returns None when usable, else why not."""
        try:
            self.monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.monitor.execute("SELECT 1 FROM pg_stat_statements LIMIT 1").fetchall()
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0][:90]
        return None

    def xact_commit(self) -> int:
        """Committed transactions, once the statistics stop moving (a backend flushes its
        counters when it exits or goes idle)."""
        last = -1
        for _ in range(100):
            self.monitor.execute("SELECT pg_stat_clear_snapshot()")
            row = self.monitor.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.dbname,)
            ).fetchone()
            value = int(row[0]) if row else 0
            if value == last:
                return value
            last = value
            time.sleep(0.1)
        return last

    def pgss_reset(self) -> None:
        if self.pgss is None:
            self.monitor.execute(
                "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = %s), 0)",
                (self.dbname,),
            )

    def pgss_calls(self) -> int | None:
        if self.pgss is not None:
            return None
        row = self.monitor.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
            (self.dbname,),
        ).fetchone()
        return int(row[0]) if row else 0


def run_statements(
    harness: DeliverHarness, url: str, monitor: psycopg.Connection[Any], sizes: Sequence[int], runs: int
) -> tuple[dict[int, tuple[float, float, float | None, int]], str | None, int]:
    seed(url, runs * sum(sizes))
    keys = queue_all(url)
    counter = StatementCounter(monitor, url.rsplit("/", 1)[-1])
    harness.use_database(url)

    # Calibration: what a connection costs in xact_commit with no statement at all.
    before = counter.xact_commit()
    probe = Database(lambda: url)
    probe.connection()
    probe.close()
    connect_cost = counter.xact_commit() - before

    results: dict[int, tuple[float, float, float | None, int]] = {}
    position = 0
    for size in sizes:
        chunk = keys[position : position + runs * size]
        position += runs * size
        harness.database.close()
        xacts_before = counter.xact_commit()
        counter.pgss_reset()
        statements_before = harness.database.statements
        failures = 0
        for batch in batches(chunk, size):
            failures += len(harness.invoke(batch).get("batchItemFailures", []))
        statements = harness.database.statements - statements_before
        harness.database.close()  # the backend exits and flushes its statistics
        xacts = counter.xact_commit() - xacts_before - connect_cost
        calls = counter.pgss_calls()
        results[size] = (statements / runs, xacts / runs, None if calls is None else calls / runs, failures)
    return results, counter.pgss, connect_cost


# --------------------------------------------------------------------------------------
# 4. evaluate, in a child process per backlog size
# --------------------------------------------------------------------------------------
def evaluate_child(url: str, n: int) -> None:
    queue = InMemoryQueue(keep=False)
    services = build(bench_settings(url), queue=queue)
    db = services.database
    # Connection open, platform schema read and the page query rendered before the baseline.
    db.sql("enqueue_new_proactive")
    evaluator = services.evaluator

    def run() -> tuple[Any, InMemoryQueue, float]:
        queue.count = 0
        started = time.perf_counter()
        report = evaluator.run(
            ["proactive"], LambdaContext("EvaluateFunction", 600).get_remaining_time_in_millis
        )
        return report, queue, time.perf_counter() - started

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report, queue, elapsed = run()
    rss_delta_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before

    # Same work again under tracemalloc (which slows Python down, so it is not timed).
    db.fetch_all("TRUNCATE delivery.message_state CASCADE", {})
    tracemalloc.start()
    tracemalloc.reset_peak()
    traced_report, traced_queue, _ = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    services.close()
    print(
        json.dumps(
            {
                "rows": n,
                "enqueued": report.enqueued,
                "sent": queue.count,
                "traced_sent": traced_queue.count,
                "stopped_early": report.stopped_early or traced_report.stopped_early,
                "seconds": elapsed,
                "rows_per_s": n / elapsed if elapsed else 0.0,
                "tracemalloc_peak": peak,
                "maxrss_delta_kb": rss_delta_kb,
            }
        )
    )


class LatencyQueue:
    """The delivery queue as evaluate meets it in production: every SendMessageBatch call
    answers after `latency` seconds (real SQS: 10-30 ms), wherever it is sent from. It counts
    how often each id was sent (a byte per id up to `capacity`), the calls, and the most calls
    that were ever in flight at once."""

    def __init__(self, latency: float, capacity: int) -> None:
        self.latency = latency
        self.times_sent = bytearray(capacity + 1)
        self.out_of_range = 0
        self.count = 0
        self.calls = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()

    def send_keys(self, keys: Sequence[Any], *, delay_seconds: int = 0) -> list[Any]:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        time.sleep(self.latency)
        with self._lock:
            self.in_flight -= 1
            self.calls += 1
            self.count += len(keys)
            for key in keys:
                if 0 < key.source_id < len(self.times_sent):
                    self.times_sent[key.source_id] = min(255, self.times_sent[key.source_id] + 1)
                else:
                    self.out_of_range += 1
        return []

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        raise AssertionError("evaluate never changes a message's visibility")

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        raise AssertionError("evaluate never dead-letters")

    def sent_once(self, n: int) -> tuple[int, int, int]:
        """(ids 1..n sent exactly once, never sent, sent more than once)."""
        counts = self.times_sent[1 : n + 1]
        never = counts.count(0)
        once = counts.count(1)
        return once, never, n - once - never


def evaluate_runs(settings: Settings, n: int, latency: float, timeout: float) -> dict[str, Any]:
    """Evaluate (as bootstrap builds it) into a LatencyQueue: one invocation of `timeout`
    seconds and, if it stopped early, the next one. Ids 1..n are the due rows."""
    queue = LatencyQueue(latency, n)
    services = build(settings, queue=queue)
    services.database.sql("enqueue_new_proactive")
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        cpu = time.process_time()
        report = services.evaluator.run(
            ["proactive"], LambdaContext("EvaluateFunction", timeout).get_remaining_time_in_millis
        )
        runs.append(
            {
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu,
                "enqueued": report.enqueued,
                "stopped_early": report.stopped_early,
            }
        )
        if not report.stopped_early:
            break
    services.close()
    once, never, twice = queue.sent_once(n)
    return {
        "rows": n,
        "concurrency": settings.enqueue_concurrency,
        "runs": runs,
        "calls": queue.calls,
        "peak_in_flight": queue.peak_in_flight,
        "once": once,
        "never": never,
        "more_than_once": twice + queue.out_of_range,
        "rows_per_s": runs[0]["enqueued"] / runs[0]["seconds"],
    }


def enqueue_child(url: str, n: int, concurrency: int, latency: float, timeout: float) -> None:
    settings = dataclasses.replace(bench_settings(url), enqueue_concurrency=concurrency)
    print(json.dumps(evaluate_runs(settings, n, latency, timeout)))


def run_child(*args: Any) -> dict[str, Any]:
    """This script in a child process (one of its --*-child modes); its last line is JSON."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_seeded_child(dbs: Databases, mode: str, n: int, *args: Any) -> dict[str, Any]:
    """A scratch database with n due rows (5 a contractor), this script's child `mode` on it,
    and the database dropped again."""
    url = dbs.new(f"{mode}_{n}")
    try:
        seed(url, n, per_contractor=5)
        return run_child(f"--{mode}-child", url, n, *args)
    finally:
        dbs.drop(url)


def run_enqueue(
    dbs: Databases, n: int, concurrency: int, latency: float, timeout: float = 300.0
) -> dict[str, Any]:
    return run_seeded_child(dbs, "enqueue", n, concurrency, latency, timeout)


def due_row_plans(url: str, sql: str, page_size: int, after_ids: Sequence[int]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of evaluate's page statement, in a transaction rolled back: how the
    due rows of ai_proactive_messages are found."""
    plans = []
    with psycopg.connect(url, connect_timeout=DB_TIMEOUT) as conn:
        for after_id in after_ids:
            row = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql,
                {"run_id": None, "after_id": after_id, "page_size": page_size},
            ).fetchone()
            conn.rollback()
            assert row is not None
            plan = row[0][0]
            scans = [
                node
                for node in _plan_nodes(plan["Plan"])
                if node.get("Relation Name") == "ai_proactive_messages"
            ]
            plans.append(
                {
                    "after_id": after_id,
                    "scan": scans[0]["Node Type"] if scans else "none",
                    "index": scans[0].get("Index Name") if scans else None,
                    "ms": float(plan["Execution Time"]),
                }
            )
    return plans


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def backlog_child(url: str, n: int, concurrency: int, latency: float, timeout: float) -> None:
    """The due-row plans at this size, then evaluate as in enqueue_child (one invocation of
    the template's timeout; a second one if the first stopped early)."""
    settings = dataclasses.replace(bench_settings(url), enqueue_concurrency=concurrency)
    probe = build(settings, queue=InMemoryQueue(keep=False))
    sql = probe.database.sql("enqueue_new_proactive")
    probe.close()
    plans = due_row_plans(url, sql, settings.evaluate_page_size, (0, n // 2))
    result = evaluate_runs(settings, n, latency, timeout)
    result["plans"] = plans
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


def run_backlog(dbs: Databases, n: int, concurrency: int, latency: float, timeout: float) -> dict[str, Any]:
    return run_seeded_child(dbs, "backlog", n, concurrency, latency, timeout)


def run_idle_evaluate(dbs: Databases, runs: int = 15) -> float:
    """Median ms of one scheduled evaluate invocation (the Lambda-wrapped handler, every
    source, the backlog gauge and the run record included) with nothing due."""
    url = dbs.new("idle")
    services = build(bench_settings(url), queue=InMemoryQueue())
    function = handlers.LambdaFunction(handlers.evaluate).with_services(services)
    timings = []
    try:
        with contextlib.redirect_stdout(ByteCount()):
            for i in range(runs + 1):
                started = time.perf_counter()
                report = function({}, LambdaContext("EvaluateFunction", 300))
                if i:  # the first run opens the connection and reads the schema
                    timings.append((time.perf_counter() - started) * 1000)
                if report["enqueued"]:
                    raise RuntimeError(f"idle evaluate queued {report['enqueued']}")
    finally:
        services.close()
        dbs.drop(url)
    return sorted(timings)[len(timings) // 2]


def run_cold_evaluate(dbs: Databases, runs: int = 5) -> float:
    """Median wall ms of benchmarks/cold_evaluate.py: a new process that imports the evaluate
    function and runs it once with nothing due (the interpreter's own start and exit
    included; its log lines are captured, not printed)."""
    url = dbs.new("cold")
    env = {
        **os.environ,
        "STAGE": "local",
        "DATABASE_URL": url,
        "DELIVERY_QUEUE_URL": "http://127.0.0.1:9/000000000000/bench-delivery",  # never contacted
        "N8N_OUTBOUND_WEBHOOK_URL": "http://127.0.0.1:9/never-called",
        "WEBHOOK_SIGNING_SECRET": SIGNING_SECRET,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",  # nosec B105 - never used: nothing is sent
    }
    timings = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, str(ROOT / "benchmarks" / "cold_evaluate.py")],
                env=env,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
            )
            timings.append((time.perf_counter() - started) * 1000)
            if proc.returncode != 0:
                raise RuntimeError(f"cold child exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    finally:
        dbs.drop(url)
    return sorted(timings)[len(timings) // 2]


def cost_rows(
    table: Table,
    notes: list[str],
    by_size: dict[int, DeliverRun],
    inputs: dict[str, float],
    idle_ms: float,
    cold_ms: float,
) -> None:
    """Cost of a million deliveries from this run's figures (benchmarks/cost_model.py)."""
    template = cost_model.read_template(ROOT / "template.yaml")
    for size, run in sorted(by_size.items()):
        measured = cost_model.Measured(
            deliver_ms_per_batch=run.ms_per_batch,
            deliver_cpu_ms_per_message=run.cpu_ms_per_message,
            evaluate_ms_per_message=inputs["evaluate_ms_per_message"],
            evaluate_idle_run_ms=idle_ms,
            send_calls_per_message=inputs["send_calls_per_message"],
            visibility_calls_per_message=run.visibility_calls_per_message,
            log_bytes_per_message=run.log_bytes_per_message,
        )
        cost = cost_model.per_million(measured, template, batch_size=size)
        table.add(
            f"cost per 1M deliveries, batches of {size}"
            + (" (template)" if size == template.batch_size else ""),
            f"${cost.total_usd:.2f}",
        )
        table.add(
            f"  Lambda {cost.deliver_gb_s + cost.evaluate_gb_s:,.0f} GB-s + {cost.lambda_requests:,.0f} "
            f"requests; SQS {cost.sqs_requests / cost_model.MILLION:.2f} requests/msg; "
            f"logs {cost.log_gb:.2f} GB",
            f"${cost.lambda_duration_usd:.2f} + ${cost.lambda_requests_usd:.2f} + "
            f"${cost.sqs_usd:.2f} + ${cost.logs_usd:.2f}",
        )
    sequential_gb_s = (
        cost_model.MILLION * inputs["sequential_evaluate_ms_per_message"] / 1000 * template.memory_gb
    )
    concurrent_gb_s = cost_model.MILLION * inputs["evaluate_ms_per_message"] / 1000 * template.memory_gb
    table.add(
        "evaluate GB-s per 1M queued: 1 call in flight / default",
        f"{sequential_gb_s:,.0f} / {concurrent_gb_s:,.0f}",
    )
    runs = sum(cost_model.runs_per_month(e) for e in template.schedules.values())
    for label, ms in (("all warm", idle_ms), ("all cold", cold_ms)):
        idle = cost_model.idle_month(cost_model.Measured(0, 0, 0, ms, 0, 0, 0), template)
        table.add(
            f"idle month: {runs:,.0f} evaluate runs at {template.memory_mb} MB, {label}",
            f"${idle.total_usd:.4f}",
        )
    table.add("always-on worker (t4g.nano, a month)", f"${cost_model.always_on_month():.2f}")
    notes.append(
        f"cost: arm64 at {template.memory_mb} MB, prices in benchmarks/cost_model.py; "
        "SQS receive + delete are one call each per batch (the event source mapping), "
        "not measured here; docs/cost.md"
    )


def run_evaluate(dbs: Databases, n: int) -> dict[str, Any]:
    return run_seeded_child(dbs, "evaluate", n)


# --------------------------------------------------------------------------------------
def receiver_round_trip(nodelay: bool, requests: int = 21) -> float:
    """Median ms of a signed POST to a receiver that answers at once."""
    signer = Webhook(SIGNING_SECRET)
    timings = []
    with WebhookReceiver(SIGNING_SECRET) as receiver, httpx.Client(timeout=10.0) as client:
        if nodelay:
            set_nodelay(receiver)
        for i in range(requests):
            headers = sign_headers(signer, msg_id=f"rtt-{i}", body="{}", now=datetime.now(UTC))
            started = time.perf_counter()
            client.post(receiver.url, content=b"{}", headers=headers)
            timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2] * 1000


def set_nodelay(receiver: Any) -> None:
    # _handler_class() builds a class per receiver, so this touches only this instance.
    receiver._server.RequestHandlerClass.disable_nagle_algorithm = True


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


@contextmanager
def section(table: Table, name: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        table.error(name, exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
    parser.add_argument(
        "--receiver-as-shipped", action="store_true", help="do not set TCP_NODELAY on the local receiver"
    )
    parser.add_argument("--evaluate-child", nargs=2, metavar=("URL", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--queue-latency",
        type=float,
        default=0.02,
        metavar="S",
        help="seconds each SendMessageBatch call of the evaluate rows takes (default 0.02)",
    )
    parser.add_argument(
        "--backlog-rows",
        type=int,
        metavar="N",
        help="rows of the one-evaluate-run backlog (default 1,000,000; --quick 20,000; 0 skips it)",
    )
    parser.add_argument("--enqueue-child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--backlog-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag, child in (("enqueue_child", enqueue_child), ("backlog_child", backlog_child)):
        if getattr(args, flag):
            url, rows, concurrency, latency, timeout = getattr(args, flag)
            child(url, int(rows), int(concurrency), float(latency), float(timeout))
            return 0
    if args.evaluate_child:
        evaluate_child(args.evaluate_child[0], int(args.evaluate_child[1]))
        return 0

    baseline_n, deliver_n, stmt_runs = (100, 300, 5) if args.quick else (300, 1000, 20)
    eval_sizes = (2_000, 20_000) if args.quick else (10_000, 100_000)
    enqueue_n = 2_000 if args.quick else 10_000
    backlog_n = args.backlog_rows if args.backlog_rows is not None else (20_000 if args.quick else 1_000_000)
    template = load_yaml(ROOT / "template.yaml")
    evaluate_timeout = int(template["Resources"]["EvaluateFunction"]["Properties"]["Timeout"])
    concurrency = bench_settings("postgresql://unused").enqueue_concurrency
    sizes = (1, 5, 10)
    by_size: dict[int, DeliverRun] = {}
    cost_inputs: dict[str, float] = {}

    table = Table()
    baseline_rate: float | None = None
    dbs: Databases | None = None
    harness: DeliverHarness | None = None
    receiver: WebhookReceiver | None = None
    remote: RemoteReceiver | None = None
    monitor: psycopg.Connection[Any] | None = None
    notes: list[str] = []
    try:
        dbs = Databases(f"pd_bench_{os.getpid()}")
        receiver = WebhookReceiver(SIGNING_SECRET, plan=lambda _id, _n: Reply(200, delay=RECEIVER_DELAY))
        if not args.receiver_as_shipped:
            set_nodelay(receiver)
        receiver.__enter__()
        harness = DeliverHarness(receiver.url)
        remote = RemoteReceiver(RECEIVER_DELAY)

        with section(table, "receiver round trip"):
            table.add("receiver round trip, as shipped (ms, median)", f"{receiver_round_trip(False):.1f}")
            table.add("receiver round trip, TCP_NODELAY (ms, median)", f"{receiver_round_trip(True):.1f}")
            notes.append(
                "baseline/deliver receiver: "
                + (
                    "as shipped (Nagle + delayed ACK)"
                    if args.receiver_as_shipped
                    else "TCP_NODELAY set; replies after the 50 ms delay"
                )
            )

        with section(table, "baseline msg/s"):
            url = dbs.new("baseline")
            seed(url, baseline_n)
            # The same out-of-process receiver as the deliver row below: a like-for-like ratio.
            baseline_rate, sent, failed = run_baseline(url, remote.url, baseline_n)
            ok = sent == baseline_n and failed == 0
            table.add(
                f"baseline naive sender msg/s ({sent} msgs)",
                f"{baseline_rate:.1f}",
                "-",
                "ok" if ok else f"MISS {failed} failed",
                ok,
            )

        with section(table, "deliver msg/s"):
            url = dbs.new("deliver")
            assert remote is not None
            remote_harness = DeliverHarness(remote.url)
            try:
                run = run_deliver(remote_harness, remote, url, deliver_n)
                for size in (1, 5):
                    url = dbs.new(f"deliver_{size}")
                    by_size[size] = run_deliver(remote_harness, remote, url, deliver_n // (10 // size), size)
            finally:
                remote_harness.close()
            by_size[10] = run
            notes.append(
                "deliver: the receiver runs in its own process (as n8n does on its own machine); "
                "the in-process row shares this process's GIL with the handler under test"
            )
            table.check(
                f"deliver msg/s ({run.timed} msgs, batches of 10)",
                run.rate,
                "{:.1f}",
                DELIVER_MIN_RATE,
                at_least=True,
            )
            if baseline_rate:
                table.check(
                    "deliver / baseline",
                    run.rate / baseline_rate,
                    "{:.1f}",
                    DELIVER_MIN_SPEEDUP,
                    at_least=True,
                    unit="x",
                )
            floor_rate, floor_cpu = run_httpx_floor(remote.url, deliver_n // 10)
            table.add("httpx floor: 10 concurrent signed POSTs, no handler (msg/s)", f"{floor_rate:.1f}")
            table.check(
                "deliver / httpx floor (msg/s)",
                run.rate / floor_rate,
                "{:.2f}",
                DELIVER_MIN_OF_FLOOR,
                at_least=True,
            )
            table.add(
                "deliver CPU ms per delivered message (process CPU / msgs)", f"{run.cpu_ms_per_message:.2f}"
            )
            table.add("httpx floor CPU ms per message", f"{floor_cpu:.2f}")
            table.add("deliver log + EMF bytes per message", f"{run.log_bytes_per_message:.0f}")
            for size in (1, 5):
                table.add(
                    f"deliver ms per invocation, batches of {size}",
                    f"{by_size[size].ms_per_batch:.1f}",
                    "-",
                    "ok" if not by_size[size].problems else "; ".join(by_size[size].problems),
                    not by_size[size].problems,
                )
            table.add("deliver ms per invocation, batches of 10", f"{run.ms_per_batch:.1f}")
            table.add(
                "deliver correctness (all sent once)",
                "ok" if not run.problems else "; ".join(run.problems),
                "no problem",
                "ok" if not run.problems else "MISS",
                not run.problems,
            )
            url = dbs.new("deliver_inproc")
            inproc = run_deliver(harness, receiver, url, deliver_n)
            table.add(
                f"deliver msg/s, receiver in-process ({inproc.timed} msgs)",
                f"{inproc.rate:.1f}",
                "-",
                "ok" if not inproc.problems else "; ".join(inproc.problems),
                not inproc.problems,
            )

        with section(table, "SQL statements per batch"):
            url = dbs.new("stmts")
            monitor = psycopg.connect(
                conninfo(dbs._create("mon")), autocommit=True, connect_timeout=DB_TIMEOUT
            )
            results, pgss_unavailable, connect_cost = run_statements(harness, url, monitor, sizes, stmt_runs)
            for size, (per_batch, xacts, pgss, failures) in results.items():
                table.check(
                    f"SQL statements/batch, size {size:>2} (counter)",
                    per_batch,
                    "{:.2f}",
                    MAX_STATEMENTS_PER_BATCH,
                    at_least=False,
                )
                table.check(
                    f"SQL statements/batch, size {size:>2} (xact_commit)",
                    xacts,
                    "{:.2f}",
                    MAX_STATEMENTS_PER_BATCH,
                    at_least=False,
                )
                if pgss is not None:
                    table.check(
                        f"SQL statements/batch, size {size:>2} (pg_stat_statements)",
                        pgss,
                        "{:.2f}",
                        MAX_STATEMENTS_PER_BATCH,
                        at_least=False,
                    )
                if failures:
                    table.add(f"  size {size} batchItemFailures", str(failures), "0", "MISS", ok=False)
            notes.append(
                f"statements: {stmt_runs} batches per size; xact_commit delta less {connect_cost} "
                "for the (re)connection, measured in this run; it also counts autovacuum worker visits"
            )
            if pgss_unavailable:
                notes.append(f"pg_stat_statements unavailable: {pgss_unavailable}")

        with section(table, "evaluate"):
            small_n, large_n = eval_sizes
            small = run_evaluate(dbs, small_n)
            large = run_evaluate(dbs, large_n)
            for result in (small, large):
                n = result["rows"]
                ok = result["sent"] == n and result["traced_sent"] == n and not result["stopped_early"]
                table.add(
                    f"evaluate rows/s ({n} rows)",
                    f"{result['rows_per_s']:.0f}",
                    "-",
                    "ok" if ok else f"MISS sent {result['sent']}",
                    ok,
                )
                table.add(f"evaluate tracemalloc peak ({n} rows)", kib(result["tracemalloc_peak"]))
                table.add(f"evaluate ru_maxrss growth ({n} rows)", kib(result["maxrss_delta_kb"] * 1024))
            ratio = large["tracemalloc_peak"] / max(1, small["tracemalloc_peak"])
            table.check(
                f"evaluate memory {large_n // 1000}k / {small_n // 1000}k (tracemalloc)",
                ratio,
                "{:.2f}",
                MAX_MEMORY_RATIO,
                at_least=False,
            )
        with section(table, "enqueue"):
            seq = run_enqueue(dbs, enqueue_n, 1, args.queue_latency)
            conc = run_enqueue(dbs, enqueue_n, concurrency, args.queue_latency)
            ms = f"{args.queue_latency * 1000:.0f} ms a call"
            for label, result in ((f"1 call in flight, {ms}", seq), (f"{concurrency} in flight, {ms}", conc)):
                ok = result["once"] == enqueue_n
                table.add(
                    f"enqueue msg/s, {label} ({enqueue_n} rows)",
                    f"{result['rows_per_s']:.0f}",
                    "-",
                    "ok" if ok else f"MISS once {result['once']}, never {result['never']}",
                    ok,
                )
            table.check(
                f"enqueue, {concurrency} in flight / 1",
                conc["rows_per_s"] / seq["rows_per_s"],
                "{:.1f}",
                ENQUEUE_MIN_SPEEDUP,
                at_least=True,
                unit="x",
            )
            table.check(
                f"enqueue msg/s, {concurrency} in flight",
                conc["rows_per_s"],
                "{:.0f}",
                ENQUEUE_MIN_RATE,
                at_least=True,
            )
            cost_inputs["evaluate_ms_per_message"] = conc["runs"][0]["seconds"] * 1000 / enqueue_n
            cost_inputs["sequential_evaluate_ms_per_message"] = seq["runs"][0]["seconds"] * 1000 / enqueue_n
            cost_inputs["send_calls_per_message"] = conc["calls"] / enqueue_n

        if backlog_n:
            with section(table, "backlog"):
                result = run_backlog(dbs, backlog_n, concurrency, args.queue_latency, evaluate_timeout)
                first, *rest = result["runs"]
                once = result["once"] == backlog_n
                table.add(
                    f"backlog {backlog_n:,} rows: run 1 queued (of {evaluate_timeout} s timeout)",
                    f"{first['enqueued']:,} in {first['seconds']:.0f} s",
                    "all, or stopped cleanly",
                    "ok" if first["enqueued"] == backlog_n or (first["stopped_early"] and rest) else "MISS",
                    first["enqueued"] == backlog_n or bool(first["stopped_early"] and rest),
                )
                if rest:
                    table.add("backlog: run 2 queued the rest", f"{rest[0]['enqueued']:,}")
                table.add(
                    "backlog: every id sent exactly once",
                    "ok"
                    if once
                    else f"once {result['once']:,}, never {result['never']:,}, "
                    f"more {result['more_than_once']:,}",
                    "all once",
                    "ok" if once else "MISS",
                    once,
                )
                table.add(
                    "backlog: evaluate CPU s / wall s (run 1)",
                    f"{first['cpu_seconds']:.0f} / {first['seconds']:.0f}",
                )
                table.add(
                    "backlog: peak RSS of the evaluate process (ru_maxrss)", kib(result["maxrss_kb"] * 1024)
                )
                for plan in result["plans"]:
                    ok = plan["scan"] != "Seq Scan"
                    table.add(
                        f"EXPLAIN due-row page after id {plan['after_id']:,}",
                        f"{plan['scan']} on {plan['index'] or 'the table'}, {plan['ms']:.1f} ms",
                        "index scan",
                        "ok" if ok else "MISS",
                        ok,
                    )

        with section(table, "cost"):
            idle_ms = run_idle_evaluate(dbs)
            cold_ms = run_cold_evaluate(dbs)
            table.add("evaluate ms, one scheduled run with nothing due, warm (median)", f"{idle_ms:.1f}")
            table.add("evaluate ms, the same run cold: new interpreter, import, first run", f"{cold_ms:.0f}")
            cost_rows(table, notes, by_size, cost_inputs, idle_ms, cold_ms)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        table.error("setup", exc)
    finally:
        for resource_ in (harness, receiver, remote, monitor, dbs):
            try:
                if resource_ is not None:
                    resource_.close()
            except Exception:
                traceback.print_exc(file=sys.stderr)

    print(
        f"proactive-delivery pipeline benchmark ({'quick' if args.quick else 'full'}; "
        f"receiver answers 200 after {RECEIVER_DELAY * 1000:.0f} ms; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    print(table.render())
    for note in notes:
        print(f"note: {note}")
    if table.failed:
        for missed in table.missed:
            print(f"result: TARGET MISSED: {missed}")
        print(f"bench: {len(table.missed)} target(s) missed", file=sys.stderr)
        return 1
    print("result: all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
