"""Deliver throughput against the old naive sender and against the httpx floor, the CPU and
the log and EMF bytes each delivered message costs, and the wall time of one invocation per
batch size.

The deliver function is driven only through its public surface: functions/deliver/app.py's
lambda_handler, bound with `.with_services()` to the services `bootstrap.build` makes from
the benchmark's settings, invoked with SQS event dicts. The rows it delivers are queued
first by the real evaluator in a child process.

The baseline, the httpx floor and the headline deliver run post to
benchmarks/remote_receiver.py, a signature-verifying receiver in its own process (as n8n is
on its own machine) that answers 200 after 50 ms. A second deliver run posts to the
in-process local.receiver.WebhookReceiver, which shares this process's GIL with the handler.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from proactive_delivery.adapters.channels.webhook import sign_headers
from proactive_delivery.bootstrap import Services, build
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.receiver import Reply, WebhookReceiver
from proactive_delivery_tools.local.sqs import free_port

from .common import (
    RECEIVER_DELAY,
    ROOT,
    SIGNING_SECRET,
    DeliverRun,
    Run,
    StdoutBytes,
    batches,
    bench_settings,
    connect,
    lambda_handler,
    queue_due_rows,
    seed,
)
from .table import Table

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:bench-delivery"
FLOOR_ID_PREFIX = "floor-"  # the floor's webhook-ids, told apart from the messages' at the receiver

# Targets: ratios of two figures measured in this run, and a size.
MIN_OF_BASELINE = 8.0  # deliver msg/s / baseline msg/s
MIN_OF_FLOOR = 0.9  # deliver msg/s / httpx floor msg/s
MAX_CPU_OF_FLOOR = 1.3  # deliver CPU per message / httpx floor CPU per message
MAX_LOG_BYTES = 300.0  # log + EMF bytes per delivered message


# --------------------------------------------------------------------------------------
# Receivers
# --------------------------------------------------------------------------------------
class RemoteReceiver:
    """benchmarks/remote_receiver.py in its own process (as n8n is on its own machine)."""

    def __init__(self, delay: float) -> None:
        self.port = free_port()
        receiver_args = [str(self.port), SIGNING_SECRET, str(delay)]
        self._proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "remote_receiver.py"), *receiver_args],
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        deadline = time.monotonic() + 15
        while True:
            try:
                self.accepted_by_id()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.close()
                    raise RuntimeError("the receiver process did not start") from None
                time.sleep(0.05)

    def accepted_by_id(self) -> dict[str, int]:
        """POSTs accepted over the receiver's life, per webhook-id."""
        stats = httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()
        return dict(stats["by_id"])

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


class LocalReceiver:
    """The in-process WebhookReceiver answering 200 after the delay, with the accepted-POST
    count the remote one reports."""

    def __init__(self, delay: float) -> None:
        self.receiver = WebhookReceiver(SIGNING_SECRET, plan=lambda _id, _n: Reply(200, delay=delay))
        self.receiver.__enter__()
        self.url = self.receiver.url

    def accepted_by_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in list(self.receiver.requests):
            if request.status == 200:
                counts[request.webhook_id] = counts.get(request.webhook_id, 0) + 1
        return counts

    def close(self) -> None:
        self.receiver.close()


Receiver = RemoteReceiver | LocalReceiver


def receiver_round_trip(requests: int = 21) -> float:
    """Median ms of a signed POST to an in-process receiver that answers at once."""
    signer = Webhook(SIGNING_SECRET)
    timings = []
    with WebhookReceiver(SIGNING_SECRET) as receiver, httpx.Client(timeout=10.0) as client:
        for i in range(requests):
            headers = sign_headers(signer, msg_id=f"rtt-{i}", body="{}", now=datetime.now(UTC))
            started = time.perf_counter()
            client.post(receiver.url, content=b"{}", headers=headers)
            timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2] * 1000


# --------------------------------------------------------------------------------------
# The baseline: the old naive sender
# --------------------------------------------------------------------------------------
def run_baseline(url: str, receiver_url: str, n: int) -> tuple[float, int, int]:
    """SELECT 10 unsent rows (JOIN contractors), then per row one signed POST and one
    single-row UPDATE ... SET sent_at = now(), until none are left. It signs its requests
    too: the receiver rejects unsigned ones at once, without the delay, which would flatter
    it. Returns (msg/s, sent, failed)."""
    signer = Webhook(SIGNING_SECRET)
    sent = failed = 0
    with connect(url) as conn, httpx.Client(timeout=10.0) as client:
        started = time.perf_counter()
        for _ in range(n // 10 + 10):
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
# The httpx floor
# --------------------------------------------------------------------------------------
class HttpxFloor:
    """The ceiling for any handler here: 10 signed POSTs at a time through one httpx.Client
    and 10 threads, as the deliver function sends, with no database, no claim and no
    bookkeeping. Its batches run interleaved with the deliver run's (one after each
    invocation, against the same receiver), so both see the same machine at the same
    moments: a load that comes and goes moves both sides of the ratios."""

    def __init__(self, receiver_url: str) -> None:
        self.receiver_url = receiver_url
        self._signer = Webhook(SIGNING_SECRET)
        self._body = json.dumps({"phone": "+15550100000", "message": "x" * 120}, separators=(",", ":"))
        limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
        self._client = httpx.Client(limits=limits, timeout=10)
        self._pool = ThreadPoolExecutor(10)
        self._posted = 0
        self.messages = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # process CPU (every thread)
        self._post_ten()  # open the connections, not timed

    def _post(self, n: int) -> int:
        headers = sign_headers(
            self._signer, msg_id=f"{FLOOR_ID_PREFIX}{n}", body=self._body, now=datetime.now(UTC)
        )
        headers["content-type"] = "application/json"
        return self._client.post(self.receiver_url, content=self._body.encode(), headers=headers).status_code

    def _post_ten(self) -> None:
        statuses = list(self._pool.map(self._post, range(self._posted, self._posted + 10)))
        self._posted += 10
        if any(status != 200 for status in statuses):
            raise RuntimeError(f"floor batch got {statuses}")

    def batch(self) -> None:
        """One timed batch of 10."""
        started = time.perf_counter()
        cpu = time.process_time()
        self._post_ten()
        self.cpu_seconds += time.process_time() - cpu
        self.seconds += time.perf_counter() - started
        self.messages += 10

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.cpu_seconds * 1000 / self.messages

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


# --------------------------------------------------------------------------------------
# The deliver function
# --------------------------------------------------------------------------------------
def sqs_event(bodies: Sequence[str]) -> dict[str, Any]:
    """An SQS event as the event source mapping hands it to the function."""
    now_ms = str(int(time.time() * 1000))
    records = [
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
            "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN,
            "awsRegion": "us-east-1",
        }
        for body in bodies
    ]
    return {"Records": records}


class DeliverHarness:
    """The deliver function as Lambda runs it: functions/deliver/app.py's lambda_handler
    (logger context, tracing, metrics flushed after each invocation) with the services
    bootstrap builds from the settings, an InMemoryQueue as the delivery queue (no SQS
    endpoint; it records visibility changes). Its standard output is counted."""

    def __init__(self, receiver_url: str) -> None:
        self.receiver_url = receiver_url
        self.queue = InMemoryQueue()
        self.services: Services | None = None
        self.function: Any = None
        self.stdout = StdoutBytes()

    def use_database(self, url: str) -> None:
        self.release()
        self.services = build(bench_settings(url, self.receiver_url), queue=self.queue)
        self.function = lambda_handler("deliver").with_services(self.services)

    def invoke(self, bodies: Sequence[str] | dict[str, Any]) -> dict[str, Any]:
        """One invocation with these queue message bodies (or an event already built: the
        SQS event source mapping builds it, not the function)."""
        assert self.function is not None
        event = bodies if isinstance(bodies, dict) else sqs_event(bodies)
        with self.stdout.capture():
            return dict(self.function(event, LambdaContext("DeliverFunction", 60)))

    @property
    def services_in_use(self) -> Services:
        assert self.services is not None
        return self.services

    def release(self) -> None:
        """Close what the services opened (connection, HTTP client, send threads)."""
        if self.services is not None:
            self.services.close()
            self.services = None

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.stdout.close()


def run_deliver(
    harness: DeliverHarness,
    receiver: Receiver,
    url: str,
    n: int,
    size: int,
    *,
    label: str,
    phones_from: int,
    floor: HttpxFloor | None = None,
) -> DeliverRun:
    """n messages (plus one untimed cold-start batch) in sequential batches of `size`, then
    the checks: every message sent once, recorded sent on both sides, no visibility change.
    With a floor, one floor batch runs after each invocation (timed apart from it)."""
    seed(url, n + size, phones_from=phones_from)
    bodies = queue_due_rows(url)
    with connect(url) as conn:
        # What autovacuum does after evaluate's inserts (more than 10 % of the table changed):
        # without it the planner takes the just-filled table for empty.
        conn.execute("ANALYZE delivery.message_state")
    problems: list[str] = []
    if len(bodies) != n + size:
        problems.append(f"queued {len(bodies)} of {n + size}")
    harness.use_database(url)
    before = receiver.accepted_by_id()
    warmup, timed = bodies[:size], bodies[size:]
    failures = len(harness.invoke(warmup).get("batchItemFailures", []))  # cold start, not timed
    visibility_before = len(harness.queue.visibility)
    log_before = harness.stdout.bytes
    invocations = 0
    elapsed = cpu = 0.0
    for batch in batches(timed, size):
        event = sqs_event(batch)
        started = time.perf_counter()
        cpu_started = time.process_time()
        failures += len(harness.invoke(event).get("batchItemFailures", []))
        cpu += time.process_time() - cpu_started
        elapsed += time.perf_counter() - started
        invocations += 1
        if floor is not None:
            floor.batch()
    log_bytes = harness.stdout.bytes - log_before
    visibility_calls = len(harness.queue.visibility) - visibility_before
    harness.release()

    with connect(url) as conn:
        states: dict[str, int] = dict(
            conn.execute("SELECT state, count(*) FROM delivery.message_state GROUP BY state").fetchall()
        )
        platform_sent = conn.execute(
            "SELECT count(*) FROM ai_proactive_messages WHERE sent_at IS NOT NULL"
        ).fetchone()
    after = receiver.accepted_by_id()
    accepted = {
        i: c - before.get(i, 0)
        for i, c in after.items()
        if c > before.get(i, 0) and not i.startswith(FLOOR_ID_PREFIX)
    }
    if failures:
        problems.append(f"{failures} batchItemFailures")
    if states.get("sent", 0) != len(bodies):
        problems.append(f"states {states}")
    if platform_sent is None or platform_sent[0] != len(bodies):
        problems.append(f"platform sent_at set on {platform_sent and platform_sent[0]}")
    if len(accepted) != len(bodies) or any(c != 1 for c in accepted.values()):
        problems.append(
            f"receiver: {sum(accepted.values())} accepted, {len(accepted)} distinct of {len(bodies)}"
        )
    if visibility_calls:
        problems.append(f"{visibility_calls} visibility changes")
    if not log_bytes:
        # Every invocation flushes its metrics as an EMF line: nothing seen means the count
        # missed the function's output, and "0 bytes" would pass its target.
        problems.append("no log or EMF byte counted")
    messages = max(1, len(timed))
    return DeliverRun(
        label=label,
        rate=len(timed) / elapsed if elapsed else 0.0,
        timed=len(timed),
        problems=problems,
        cpu_ms_per_message=cpu * 1000 / messages,
        ms_per_batch=elapsed * 1000 / max(1, invocations),
        log_bytes_per_message=log_bytes / messages,
        visibility_calls_per_message=visibility_calls / messages,
    )


# --------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------
def measure(run: Run, table: Table) -> None:
    """The receiver's round trip, the baseline, deliver (batches of 10, 5, 1; in-process), the
    httpx floor; each part its own section of the table, one receiver process for all."""
    with table.section("receiver round trip"):
        table.info("in-process receiver round trip, no delay (ms, median)", f"{receiver_round_trip():.1f}")
    with ExitStack() as stack:
        remote = RemoteReceiver(RECEIVER_DELAY)
        stack.callback(remote.close)
        baseline_rate: float | None = None
        with table.section("baseline"):
            baseline_rate = baseline(run, table, remote)
        with table.section("deliver"):
            deliver(run, table, remote, baseline_rate, stack)


def baseline(run: Run, table: Table, remote: RemoteReceiver) -> float:
    n = run.sizes.baseline
    url = run.dbs.new("baseline")
    seed(url, n)
    # The same out-of-process receiver as the headline deliver run: a like-for-like ratio.
    rate, sent, failed = run_baseline(url, remote.url, n)
    table.info(f"baseline naive sender msg/s ({sent} msgs)", f"{rate:.1f}")
    problems = [] if sent == n else [f"sent {sent} of {n}"]
    problems += [f"{failed} failed"] if failed else []
    table.problems("baseline correctness (all sent)", problems, "every row sent")
    return rate


def deliver(
    run: Run, table: Table, remote: RemoteReceiver, baseline_rate: float | None, stack: ExitStack
) -> None:
    n = run.sizes.deliver
    harness = DeliverHarness(remote.url)
    stack.callback(harness.close)
    floor = HttpxFloor(remote.url)
    stack.callback(floor.close)
    # Each run's phones are its own: the function must parse them as a fresh instance would.
    headline = run_deliver(
        harness, remote, run.dbs.new("deliver"), n, 10, label="batches of 10", phones_from=1, floor=floor
    )
    runs = [headline]
    run.deliver_by_size[10] = headline

    table.info(f"deliver msg/s ({headline.timed} msgs, batches of 10)", f"{headline.rate:.1f}")
    table.info(
        f"httpx floor: 10 concurrent signed POSTs, no handler ({floor.messages} msgs, msg/s)",
        f"{floor.rate:.1f}",
    )
    if baseline_rate:
        table.target(
            "deliver / baseline (msg/s)",
            headline.rate / baseline_rate,
            "{:.1f}",
            MIN_OF_BASELINE,
            at_least=True,
            unit="x",
        )
    table.target(
        "deliver / httpx floor (msg/s)", headline.rate / floor.rate, "{:.2f}", MIN_OF_FLOOR, at_least=True
    )
    table.info(
        "deliver CPU ms per delivered message (process CPU / msgs)", f"{headline.cpu_ms_per_message:.2f}"
    )
    table.info("httpx floor CPU ms per message", f"{floor.cpu_ms_per_message:.2f}")
    table.target(
        "CPU per delivered message: deliver / floor",
        headline.cpu_ms_per_message / floor.cpu_ms_per_message,
        "{:.2f}",
        MAX_CPU_OF_FLOOR,
        at_least=False,
    )
    table.target(
        "log + EMF bytes per delivered message",
        headline.log_bytes_per_message,
        "{:.0f}",
        MAX_LOG_BYTES,
        at_least=False,
    )
    try:
        for size, phones_from in ((5, 100_001), (1, 200_001)):
            sized = run_deliver(
                harness,
                remote,
                run.dbs.new(f"deliver_{size}"),
                n // (10 // size),
                size,
                label=f"batches of {size}",
                phones_from=phones_from,
            )
            runs.append(sized)
            run.deliver_by_size[size] = sized
        for size, timed_run in sorted(run.deliver_by_size.items()):
            table.info(f"deliver ms per invocation, batches of {size}", f"{timed_run.ms_per_batch:.1f}")

        local = LocalReceiver(RECEIVER_DELAY)
        stack.callback(local.close)
        local_harness = DeliverHarness(local.url)
        stack.callback(local_harness.close)
        inproc = run_deliver(
            local_harness,
            local,
            run.dbs.new("deliver_inproc"),
            n,
            10,
            label="receiver in-process",
            phones_from=300_001,
        )
        runs.append(inproc)
        table.info(f"deliver msg/s, receiver in-process ({inproc.timed} msgs)", f"{inproc.rate:.1f}")
    finally:
        table.problems(
            "deliver correctness (all sent once)",
            [f"{r.label}: {p}" for r in runs for p in r.problems],
            f"each message once ({len(runs)} runs)",
        )
    run.notes.append(
        "deliver: the headline run's receiver is its own process (as n8n is on its own machine); "
        "the in-process row shares this process's GIL with the function"
    )
