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
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
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
from proactive_delivery.settings import Settings
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.postgres import url_from_environment
from proactive_delivery_tools.local.receiver import Reply, WebhookReceiver
from proactive_delivery_tools.schema.migrate import apply_migrations

SIGNING_SECRET = "whsec_" + base64.b64encode(b"bench-signing-secret-32-bytes!!!").decode()
RECEIVER_DELAY = 0.05
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:bench-delivery"
CHILD_TIMEOUT = 900
DB_TIMEOUT = 10

# targets
DELIVER_MIN_RATE = 160.0
DELIVER_MIN_SPEEDUP = 8.0
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
    stores it), each contractor with a phone stored as people type it ("(312) 555-0142")."""
    contractors = max(1, -(-n // per_contractor))
    with psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT) as conn:
        conn.execute(
            "INSERT INTO contractors (first_name, phone, email) "
            "SELECT 'Ana', '(312) 555-' || lpad((g %% 10000)::text, 4, '0'),"
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


class DeliverHarness:
    """handlers.deliver on the services bootstrap builds from the settings, with an
    InMemoryQueue as the delivery queue; its log lines are written (the formatting cost is
    real) to /dev/null instead of the terminal."""

    def __init__(self, receiver_url: str) -> None:
        self.receiver_url = receiver_url
        self.queue = InMemoryQueue()
        self.services: Services | None = None
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        self._streams: list[tuple[Any, Any]] = []
        for handler in handlers.logger._logger.handlers:  # the one StreamHandler to stdout
            if hasattr(handler, "setStream"):
                self._streams.append((handler, handler.setStream(self._devnull)))

    def use_database(self, url: str) -> None:
        if self.services is not None:
            self.services.close()
        self.services = build(bench_settings(url, self.receiver_url), queue=self.queue)

    def invoke(self, keys: Sequence[Any]) -> dict[str, Any]:
        assert self.services is not None
        event = sqs_event(keys)
        try:
            # The per-dimension metrics are EMF lines printed as they are emitted (in Lambda
            # they go to CloudWatch): printed, so their cost is measured, but to /dev/null,
            # so the terminal shows the table only.
            with contextlib.redirect_stdout(self._devnull):
                return dict(handlers.deliver(event, LambdaContext("DeliverFunction", 60), self.services))
        finally:
            # What @metrics.log_metrics does after each invocation (without printing EMF).
            handlers.metrics.clear_metrics()

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
            self._devnull.close()


def batches(keys: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def run_httpx_floor(receiver_url: str, batches: int) -> float:
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
        for batch in range(batches):
            statuses = list(pool.map(post, range(batch * 10, batch * 10 + 10)))
            if any(status != 200 for status in statuses):
                raise RuntimeError(f"floor run got {statuses}")
        elapsed = time.perf_counter() - started
    return batches * 10 / elapsed


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


def run_deliver(harness: DeliverHarness, receiver: Any, url: str, n: int) -> tuple[float, int, list[str]]:
    seed(url, n + 10)
    keys = queue_all(url)
    problems: list[str] = []
    if len(keys) != n + 10:
        problems.append(f"queued {len(keys)} of {n + 10}")
    harness.use_database(url)
    warmup, timed = keys[:10], keys[10:]
    remote = isinstance(receiver, RemoteReceiver)
    before: dict[str, int] = receiver.stats()["by_id"] if remote else {}
    first_request = 0 if remote else len(receiver.requests)
    failures = 0
    failures += len(harness.invoke(warmup).get("batchItemFailures", []))  # cold start, not timed
    started = time.perf_counter()
    for batch in batches(timed, 10):
        failures += len(harness.invoke(batch).get("batchItemFailures", []))
    elapsed = time.perf_counter() - started

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
    if harness.queue.visibility:
        problems.append(f"{len(harness.queue.visibility)} visibility changes")
    return (len(timed) / elapsed if elapsed else 0.0), len(timed), problems


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


def run_evaluate(dbs: Databases, n: int) -> dict[str, Any]:
    url = dbs.new(f"eval_{n}")
    try:
        seed(url, n, per_contractor=5)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--evaluate-child", url, str(n)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"child exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        dbs.drop(url)


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
    args = parser.parse_args(argv)
    if args.evaluate_child:
        evaluate_child(args.evaluate_child[0], int(args.evaluate_child[1]))
        return 0

    baseline_n, deliver_n, stmt_runs = (100, 300, 5) if args.quick else (300, 1000, 20)
    eval_sizes = (2_000, 20_000) if args.quick else (10_000, 100_000)
    sizes = (1, 5, 10)

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
                rate, timed, problems = run_deliver(remote_harness, remote, url, deliver_n)
            finally:
                remote_harness.close()
            notes.append(
                "deliver: the receiver runs in its own process (as n8n does on its own machine); "
                "the in-process row shares this process's GIL with the handler under test"
            )
            table.check(
                f"deliver msg/s ({timed} msgs, batches of 10)",
                rate,
                "{:.1f}",
                DELIVER_MIN_RATE,
                at_least=True,
            )
            if baseline_rate:
                table.check(
                    "deliver / baseline",
                    rate / baseline_rate,
                    "{:.1f}",
                    DELIVER_MIN_SPEEDUP,
                    at_least=True,
                    unit="x",
                )
            floor = run_httpx_floor(remote.url, deliver_n // 10)
            table.add("httpx floor: 10 concurrent signed POSTs, no handler (msg/s)", f"{floor:.1f}")
            table.add("deliver / httpx floor", f"{rate / floor:.2f}")
            table.add(
                "deliver correctness (all sent once)",
                "ok" if not problems else "; ".join(problems),
                "no problem",
                "ok" if not problems else "MISS",
                not problems,
            )
            url = dbs.new("deliver_inproc")
            inproc_rate, inproc_timed, inproc_problems = run_deliver(harness, receiver, url, deliver_n)
            table.add(
                f"deliver msg/s, receiver in-process ({inproc_timed} msgs)",
                f"{inproc_rate:.1f}",
                "-",
                "ok" if not inproc_problems else "; ".join(inproc_problems),
                not inproc_problems,
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
