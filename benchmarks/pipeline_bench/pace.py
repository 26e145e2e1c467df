"""The providers' pace: a backlog drained against a provider that takes R requests a second,
the same backlog without the limit, a minute's worth of quiet-hour deferrals coming due at
once, and the provider down under a backlog with the circuit breaker on and off.

Everything runs as deployed, only smaller and on loopback:

- the provider is benchmarks/rate_limited_provider.py in its own process: a token bucket of
  R requests a second (burst R) that answers 429 with Retry-After above it, as GoHighLevel
  does behind n8n, verifying each request's Standard Webhooks signature;
- the delivery queue is pipeline_bench/sqs_standin.py in its own process (an in-memory SQS:
  visibility, delays, receive counts, the redrive to a dead-letter list), because moto's SQS
  slows down with depth;
- the deliver function runs as the template runs it: DeliverMaxConcurrency (5) worker
  processes, each an event source mapping of one: receive up to DeliverBatchSize (10)
  messages, invoke functions/deliver/app.py's lambda_handler (bound with `.with_services()`
  to the services `bootstrap.build` makes, with the queue stand-in as the delivery queue),
  delete what the response does not report failed; a reported failure comes back after the
  visibility the function set;
- the backlog is queued by the real evaluator (a child process) on the reference schema.

The pace and the circuit breaker live in PostgreSQL's now(), so every run is in real time,
sized for `make bench` (benchmarks/README.md, "The pace section").
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from proactive_delivery.bootstrap import build
from proactive_delivery.settings import Settings
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.sqs import free_port
from proactive_delivery_tools.local.template import load_yaml

from . import sqs_standin
from .common import (
    BENCH_SCRIPT,
    RECEIVER_DELAY,
    ROOT,
    SIGNING_SECRET,
    PaceSizes,
    Run,
    bench_environment,
    connect,
    lambda_handler,
    run_child,
    seed,
)
from .table import Table

# Targets (ratios and counts of this run).
MIN_OF_RATE = 0.95  # delivered msg/s / R
MAX_THROTTLED_PERCENT = 0.5  # 429s / requests, in percent
MAX_ATTEMPTS_PER_MESSAGE = 1.01  # attempt_log rows / messages

POLL_SECONDS = 0.1
RECEIVE_WAIT_SECONDS = 1.0  # the workers' long poll
START_TIMEOUT = 120  # for the worker processes to be built and waiting
# The fast retry schedule of the limit runs: a second apart, five attempts (the window is
# four one-second steps); maxReceiveCount follows from it as the template derives it.
FAST_RETRIES = {"RETRY_SCHEDULE_SECONDS": "1", "RETRY_WINDOW_HOURS": repr(4 / 3600)}
# Where the quiet-hour deferrals are: the default time zone (contractors without a
# preference of their own).
DEFER_ZONE = "America/New_York"
# Real seconds from the quiet hours being set to the local minute turning: the workers are
# built and evaluate (a child process) queues the deferrals within them.
DEFER_LEAD_SECONDS = 12.0


@dataclass(frozen=True)
class Deployment:
    """What template.yaml gives the deliver function and its queue."""

    concurrency: int  # DeliverMaxConcurrency
    batch_size: int  # DeliverBatchSize
    timeout: int  # the deliver function's Timeout
    visibility_timeout: int  # DeliveryQueue's VisibilityTimeout

    @classmethod
    def from_template(cls) -> Deployment:
        template = load_yaml(ROOT / "template.yaml")
        parameters, resources = template["Parameters"], template["Resources"]
        return cls(
            concurrency=int(parameters["DeliverMaxConcurrency"]["Default"]),
            batch_size=int(parameters["DeliverBatchSize"]["Default"]),
            timeout=int(resources["DeliverFunction"]["Properties"]["Timeout"]),
            visibility_timeout=int(resources["DeliveryQueue"]["Properties"]["VisibilityTimeout"]),
        )


# --------------------------------------------------------------------------------------
# Child modes: the queue, a deliver worker, evaluate
# --------------------------------------------------------------------------------------
def queue_child(args: Sequence[str]) -> None:
    """Child mode `pace-queue PORT AUTHKEY VISIBILITY MAX_RECEIVE_COUNT`: serves the queue
    stand-in until ended."""
    port, authkey, visibility, max_receives = args
    sqs_standin.serve(
        int(port),
        bytes.fromhex(authkey),
        visibility_timeout=int(visibility),
        max_receive_count=int(max_receives),
    )


def _clock(offset_seconds: float) -> Callable[[], datetime]:
    offset = timedelta(seconds=offset_seconds)
    return lambda: datetime.now(UTC) + offset


def worker_child(args: Sequence[str]) -> None:
    """Child mode `pace-worker PORT AUTHKEY ENV_JSON CLOCK_OFFSET BATCH TIMEOUT`: one deliver
    instance and its event source mapping. Built first (as a warm instance is), then it
    waits for the start and works the queue until the queue is stopped. A batch whose
    invocation raises is left alone (nothing deleted), as Lambda leaves it."""
    port, authkey, env_json, offset, batch_size, timeout = args
    queue = sqs_standin.connect(int(port), bytes.fromhex(authkey))
    services = build(
        Settings.from_env(json.loads(env_json)),
        queue=sqs_standin.StandInQueue(queue),
        clock=_clock(float(offset)),
    )
    function = lambda_handler("deliver").with_services(services)
    _ = services.deliverer, services.sqs_batch
    queue.ready()
    if not queue.wait_for_start(START_TIMEOUT):
        return
    try:
        while (batch := queue.receive(int(batch_size), RECEIVE_WAIT_SECONDS)) is not None:
            if not batch:
                continue
            queue.note("invocations")
            try:
                response = function(sqs_event(batch), LambdaContext("DeliverFunction", float(timeout)))
            except Exception:
                queue.note("handler_errors")
                traceback.print_exc(file=sys.stderr)
                continue
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            done = [m["receipt"] for m in batch if m["message_id"] not in failed]
            if done and (refused := queue.delete(done)):
                queue.note("delete_refused", len(refused))
    finally:
        services.close()


def sqs_event(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The event the SQS event source mapping builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["message_id"],
                "receiptHandle": m["receipt"],
                "body": m["body"],
                "attributes": {
                    "ApproximateReceiveCount": str(m["receive_count"]),
                    "SentTimestamp": str(int(m["sent_at"] * 1000)),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench-delivery",
                "awsRegion": "us-east-1",
            }
            for m in batch
        ]
    }


def evaluate_child(args: Sequence[str]) -> None:
    """Child mode `pace-evaluate PORT AUTHKEY ENV_JSON CLOCK_OFFSET`: one evaluate run over
    the proactive source onto the queue stand-in; prints its report."""
    port, authkey, env_json, offset = args
    queue = sqs_standin.connect(int(port), bytes.fromhex(authkey))
    services = build(
        Settings.from_env(json.loads(env_json)),
        queue=sqs_standin.StandInQueue(queue),
        clock=_clock(float(offset)),
    )
    try:
        report = services.evaluator.run(
            ["proactive"], LambdaContext("EvaluateFunction", 300).get_remaining_time_in_millis
        )
    finally:
        services.close()
    source = report.sources["proactive"]
    print(
        json.dumps(
            {"stopped_early": report.stopped_early, "enqueued": report.enqueued, "deferred": source.deferred}
        )
    )


# --------------------------------------------------------------------------------------
# The processes around a run
# --------------------------------------------------------------------------------------
def _spawn(args: Sequence[str], log: Any) -> subprocess.Popen[bytes]:
    # The workers' log lines go nowhere (Lambda ships them; writing them is paid here too);
    # errors go to a scratch file, shown if a process fails.
    return subprocess.Popen(
        [sys.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
    )


def _end(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _wait_until(condition: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]) -> None:
    """Until `condition()` holds (a connection refused or reset counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (OSError, EOFError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


class Provider:
    """benchmarks/rate_limited_provider.py in its own process, on `port` (a port given
    again after an outage)."""

    def __init__(self, port: int, rate: float, log: Any) -> None:
        self.port = port
        script = ROOT / "benchmarks" / "rate_limited_provider.py"
        self._proc = _spawn([str(script), str(port), SIGNING_SECRET, str(rate), str(RECEIVER_DELAY)], log)
        _wait_until(lambda: bool(self.stats()), 15, "the provider", lambda: self._proc.poll() is None)

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10).json())

    def close(self) -> None:
        _end(self._proc)


@dataclass
class Answers:
    """What the provider answered, from its /stats."""

    ok: int
    throttled: int
    bad_signatures: int
    ok_per_id: dict[str, int]
    first_request: float | None
    last_ok: float | None
    longest_pause: float  # the longest time between two accepted requests (s)

    @classmethod
    def of(cls, stats: dict[str, Any] | None) -> Answers:
        answers: dict[str, list[list[float]]] = (stats or {}).get("answers", {})
        ok_times = sorted(t for got in answers.values() for status, t in got if status == 200)
        all_times = [t for got in answers.values() for _, t in got]
        return cls(
            ok=len(ok_times),
            throttled=sum(1 for got in answers.values() for status, _ in got if status == 429),
            bad_signatures=int((stats or {}).get("bad_signatures", 0)),
            ok_per_id={i: sum(1 for s, _ in got if s == 200) for i, got in answers.items()},
            first_request=min(all_times, default=None),
            last_ok=max(ok_times, default=None),
            longest_pause=max((b - a for a, b in itertools.pairwise(ok_times)), default=0.0),
        )

    @property
    def requests(self) -> int:
        return self.ok + self.throttled

    def rate(self, end: float | None = None) -> float:
        """Delivered messages / seconds from the first request to the last one accepted (or
        to `end`, for a run stopped before it drained)."""
        last = end if end is not None else self.last_ok
        if self.first_request is None or last is None or last <= self.first_request:
            return 0.0
        return self.ok / (last - self.first_request)

    @property
    def throttled_percent(self) -> float:
        return 100.0 * self.throttled / self.requests if self.requests else 0.0


@dataclass
class Outcome:
    """A run's result, from the provider, the queue and the database."""

    messages: int
    seconds: float  # from the start to drained (or to the end of the run)
    ended: float  # time.time() at the end of the run
    drained: bool
    answers: Answers
    counts: dict[str, int]  # the queue's and the workers' counts
    on_queue: int  # messages still on the queue at the end
    dead_letters: int
    states: dict[str, int]
    attempts: int  # attempt_log rows
    attempted: int  # messages with an attempt_log row
    platform_sent: int
    circuit_openings: int = 0
    problems: list[str] = field(default_factory=list)
    # Messages left waiting on purpose (the outage's probe messages, on their retry step).
    waiting: int = 0

    @property
    def rate(self) -> float:
        """Delivered msg/s: to the last accepted request, or to the end of a run stopped
        before it drained (the messages it did not deliver count against it)."""
        return self.answers.rate(None if self.drained else self.ended)

    @property
    def attempts_per_message(self) -> float:
        """attempt_log rows per message attempted (every message, once the run drained)."""
        return self.attempts / max(1, self.attempted)

    @property
    def unsent(self) -> int:
        return self.messages - self.states.get("sent", 0)

    @property
    def failed_or_dead(self) -> int:
        return self.states.get("failed", 0) + self.dead_letters

    def integrity_problems(self) -> list[str]:
        """Nothing failed, dead-lettered, sent twice or lost: each message accepted at most
        once by the provider, and `sent` in our state and on the platform exactly when it
        was; each one not sent still on the queue (a run stopped before it drained)."""
        problems = list(self.problems)
        sent = self.states.get("sent", 0)
        if self.failed_or_dead:
            problems.append(f"{self.states.get('failed', 0)} failed, {self.dead_letters} dead-lettered")
        twice = sum(1 for c in self.answers.ok_per_id.values() if c > 1)
        if twice or self.answers.ok != sent:
            problems.append(f"provider accepted {self.answers.ok} ({twice} ids more than once), {sent} sent")
        if self.platform_sent != sent:
            problems.append(f"platform sent_at set on {self.platform_sent}, {sent} sent")
        if self.unsent != self.on_queue:
            problems.append(f"{self.unsent} not sent but {self.on_queue} on the queue")
        if self.answers.bad_signatures:
            problems.append(f"{self.answers.bad_signatures} bad signatures")
        for kind in ("handler_errors", "delete_refused"):
            if self.counts.get(kind):
                problems.append(f"{self.counts[kind]} {kind.replace('_', ' ')}")
        return problems

    def delivery_problems(self) -> list[str]:
        """integrity_problems, and every message delivered (but those waiting on purpose)."""
        problems = self.integrity_problems()
        if not self.drained:
            problems.append(f"not drained after {self.seconds:.0f} s")
        if self.unsent != self.waiting:
            problems.append(f"states {dict(sorted(self.states.items()))}")
        return problems


class CircuitWatch:
    """Reads the provider's circuit (delivery.provider_pace) every poll: each opening (its
    time and its cool-off, as PostgreSQL recorded them) and when it was seen closed again."""

    def __init__(self, url: str, provider: str = "n8n") -> None:
        self._conn = connect(url)
        self._provider = provider
        self.openings: dict[datetime, datetime] = {}  # opened_at -> open_until
        self.closed_seen: float | None = None

    def poll(self) -> None:
        row = self._conn.execute(
            "SELECT circuit, opened_at, open_until FROM delivery.provider_pace WHERE provider = %s",
            (self._provider,),
        ).fetchone()
        if row is None:
            return
        circuit, opened_at, open_until = row
        if opened_at is not None and open_until is not None:
            self.openings[opened_at] = open_until
        if circuit == "closed" and self.openings:
            self.closed_seen = self.closed_seen or time.time()
        elif circuit != "closed":
            self.closed_seen = None

    @property
    def first_opened(self) -> datetime | None:
        return min(self.openings, default=None)

    def cool_offs(self) -> list[float]:
        return [(until - at).total_seconds() for at, until in sorted(self.openings.items())]

    def ended_before(self, moment: datetime) -> int:
        """Cool-offs over before `moment`: each lets one probe through."""
        return sum(1 for until in self.openings.values() if until <= moment)

    def close(self) -> None:
        self._conn.close()


class PaceRun:
    """One run: a scratch database with `n` due messages (a contractor and a phone each),
    a queue stand-in, the deliver workers, the functions' settings (the environment the
    benchmark gives them, and `env`) and the provider's port. The provider is started by
    the caller (an outage starts without it)."""

    def __init__(
        self,
        run: Run,
        name: str,
        n: int,
        rate: float,
        env: dict[str, str],
        deployment: Deployment,
        stack: ExitStack,
        *,
        phones_from: int,
    ) -> None:
        self.name = name
        self.n = n
        self.rate = rate
        self.deployment = deployment
        self._stack = stack
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the stack
        stack.callback(self._log.close)
        self.url = run.dbs.new(f"pace_{name}")
        stack.callback(run.dbs.drop, self.url)
        seed(self.url, n, phones_from=phones_from)
        self.provider_port = free_port()
        self.env = {
            **bench_environment(self.url, f"http://127.0.0.1:{self.provider_port}/webhook"),
            **env,
        }
        self.clock_offset = 0.0
        self._authkey = secrets.token_hex(16)
        self._queue_port = free_port()
        queue_proc = _spawn(
            [
                str(BENCH_SCRIPT),
                "--child",
                "pace-queue",
                str(self._queue_port),
                self._authkey,
                str(deployment.visibility_timeout),
                # The queue's maxReceiveCount: what the retry window gives, as the template derives it.
                str(Settings.from_env(self.env).receive_budget),
            ],
            self._log,
        )
        stack.callback(_end, queue_proc)
        self.queue: Any = None

        def connected() -> bool:
            self.queue = sqs_standin.connect(self._queue_port, bytes.fromhex(self._authkey))
            return True

        _wait_until(connected, 30, "the queue stand-in", lambda: queue_proc.poll() is None)
        self._workers: list[subprocess.Popen[bytes]] = []
        stack.callback(self.stop_workers)
        self.watch = CircuitWatch(self.url)
        stack.callback(self.watch.close)
        self.started_at = 0.0

    def child_args(self) -> list[str]:
        return [str(self._queue_port), self._authkey, json.dumps(self.env), repr(self.clock_offset)]

    def start_provider(self) -> Provider:
        provider = Provider(self.provider_port, self.rate, self._log)
        self._stack.callback(provider.close)
        return provider

    def evaluate(self) -> dict[str, Any]:
        """The real evaluator queues every due row (in a child process)."""
        report = run_child("pace-evaluate", *self.child_args())
        with connect(self.url) as conn:
            # What autovacuum does after evaluate's inserts.
            conn.execute("ANALYZE delivery.message_state")
        return report

    def start_workers(self) -> None:
        """The deliver workers, built and waiting for the start."""
        d = self.deployment
        for _ in range(d.concurrency):
            args = ["--child", "pace-worker", *self.child_args(), str(d.batch_size), str(d.timeout)]
            self._workers.append(_spawn([str(BENCH_SCRIPT), *args], self._log))
        _wait_until(
            lambda: self.queue.ready_workers() >= d.concurrency,
            START_TIMEOUT,
            "the deliver workers",
            lambda: all(w.poll() is None for w in self._workers),
        )

    def go(self) -> float:
        """Lets the workers go; returns the time (time.time())."""
        self.started_at = float(self.queue.start())
        return self.started_at

    def stop_workers(self) -> None:
        if not self._workers:
            return
        with suppress(OSError, EOFError):
            self.queue.stop()
        # Each worker ends once its invocation has finished and recorded its outcomes (a
        # worker ended in the middle would leave its claimed messages `sending`).
        deadline = time.monotonic() + self.deployment.timeout
        for worker in self._workers:
            with suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            _end(worker)
        self._workers = []

    def wait_drained(self, timeout: float, drained: Callable[[], bool] | None = None) -> bool:
        """Until nothing is left on the queue (or `drained()`), or `timeout` seconds; the
        circuit is read all along."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch.poll()
            if drained() if drained else self.queue.size() == 0:
                return True
            if any(w.poll() is not None for w in self._workers):
                raise RuntimeError(f"a deliver worker exited: {self.errors()}")
            time.sleep(POLL_SECONDS)
        return False

    def errors(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-500:]

    def outcome(self, provider: Provider | None, *, drained: bool) -> Outcome:
        """The workers stopped, then what the provider, the queue and the database say."""
        end = time.time()
        self.stop_workers()
        self.watch.poll()
        with connect(self.url) as conn:
            states = dict(
                conn.execute("SELECT state, count(*) FROM delivery.message_state GROUP BY state").fetchall()
            )
            attempts, attempted = conn.execute(
                "SELECT count(*), count(DISTINCT delivery_id) FROM delivery.attempt_log"
            ).fetchone() or (0, 0)
            [platform_sent] = conn.execute(
                "SELECT count(*) FROM ai_proactive_messages WHERE sent_at IS NOT NULL"
            ).fetchone() or [0]
        counts = dict(self.queue.counts())
        problems = [f"worker errors: {self.errors()[-200:]}"] if counts.get("handler_errors") else []
        return Outcome(
            messages=self.n,
            seconds=end - self.started_at,
            ended=end,
            drained=drained,
            answers=Answers.of(provider.stats() if provider else None),
            counts=counts,
            on_queue=int(self.queue.size()),
            dead_letters=len(self.queue.dead_letters()),
            states={str(k): int(v) for k, v in states.items()},
            attempts=int(attempts),
            attempted=int(attempted),
            platform_sent=int(platform_sent),
            circuit_openings=len(self.watch.openings),
            problems=problems,
        )


def limit_env(rate: float, *, limited: bool) -> dict[str, str]:
    """The limit as an operator would set it for the provider: its published rate."""
    return {"PROVIDER_RATE_LIMITS": f"n8n={rate:g}/s" if limited else "none"}


def drain(
    run: Run,
    name: str,
    n: int,
    rate: float,
    env: dict[str, str],
    deployment: Deployment,
    *,
    phones_from: int,
    timeout: float,
) -> Outcome:
    """A backlog of n queued by evaluate, then drained by the workers against the provider
    (or for `timeout` seconds, then stopped)."""
    with ExitStack() as stack:
        pace_run = PaceRun(run, name, n, rate, env, deployment, stack, phones_from=phones_from)
        provider = pace_run.start_provider()
        report = pace_run.evaluate()
        pace_run.start_workers()
        pace_run.go()
        drained = pace_run.wait_drained(timeout)
        outcome = pace_run.outcome(provider, drained=drained)
    if report["enqueued"] != n or report["stopped_early"]:
        outcome.problems.append(f"evaluate queued {report['enqueued']} of {n}")
    return outcome


def _drain_timeout(n: int, rate: float) -> float:
    """Half as long again as the backlog takes at the limit, and 45 s (a circuit opened on
    the way cools off for 30 s); a run that takes longer is stopped."""
    return 1.5 * n / rate + 45


# --------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------
def measure(run: Run, table: Table) -> None:
    sizes = run.sizes.pace
    deployment = Deployment.from_template()
    table.info("pace: provider stand-in R (requests/s, burst R; 429 + Retry-After above)", f"{sizes.rate:g}")
    with table.section("pace: limit"):
        backlog(run, table, sizes, deployment)
    with table.section("pace: quiet hours"):
        quiet_hours(run, table, sizes, deployment)
    with table.section("pace: outage"):
        outage(run, table, sizes, deployment)


def _n(value: int) -> str:
    return f"{value:,}"


def _rate_rows(table: Table, prefix: str, outcome: Outcome, rate: float) -> None:
    """What a drain at the limit is held to: the provider's rate reached, hardly a 429, no
    message failed or lost; and what explains a miss."""
    a = outcome.answers
    table.info(
        f"{prefix}: delivered msg/s (first request to last accepted, or to the stop)", f"{outcome.rate:.1f}"
    )
    table.target(f"{prefix}: delivered msg/s / R", outcome.rate / rate, "{:.3f}", MIN_OF_RATE, at_least=True)
    table.target(
        f"{prefix}: 429s / requests ({_n(a.throttled)} of {_n(a.requests)})",
        a.throttled_percent,
        "{:.2f}",
        MAX_THROTTLED_PERCENT,
        at_least=False,
        unit="%",
    )
    table.check(
        f"{prefix}: messages failed or dead-lettered",
        _n(outcome.failed_or_dead),
        "0",
        ok=not outcome.failed_or_dead,
    )
    table.problems(
        f"{prefix}: every message delivered once, none lost", outcome.integrity_problems(), "one 200 each"
    )
    invocations = outcome.counts.get("invocations", 0)
    requeued = outcome.counts.get("requeued", 0)
    table.info(
        f"{prefix}: deliver invocations / holds re-queued (per message)",
        f"{_n(invocations)} / {_n(requeued)} ({invocations / outcome.messages:.2f}"
        f" / {requeued / outcome.messages:.2f})",
    )
    table.info(
        f"{prefix}: longest pause between accepted requests (s) / circuit openings",
        f"{a.longest_pause:.1f} / {outcome.circuit_openings}",
    )
    if not outcome.drained:
        table.info(f"{prefix}: not delivered when the run was stopped", f"{_n(outcome.unsent)}")


def backlog(run: Run, table: Table, sizes: PaceSizes, deployment: Deployment) -> None:
    """The backlog drained at the limit, and without it."""
    rate = sizes.rate
    n = sizes.backlog
    limited = drain(
        run,
        "limit",
        n,
        rate,
        {**limit_env(rate, limited=True), **FAST_RETRIES},
        deployment,
        phones_from=1,
        timeout=_drain_timeout(n, rate),
    )
    table.info(
        f"pace: backlog of {_n(n)} at n8n={rate:g}/s ({deployment.concurrency} deliver processes"
        f" x batches of {deployment.batch_size})",
        f"{limited.seconds:.1f} s" + ("" if limited.drained else " (stopped)"),
    )
    _rate_rows(table, "pace", limited, rate)
    table.target(
        "pace: attempts per message (attempt_log)",
        limited.attempts_per_message,
        "{:.3f}",
        MAX_ATTEMPTS_PER_MESSAGE,
        at_least=False,
    )

    # Without the limit the backlog takes far longer (the breaker opens on the 429s and
    # cools off 30 s at a time): the run is stopped after `unpaced_seconds`, one cool-off.
    m = sizes.unpaced
    unpaced = drain(
        run,
        "nolimit",
        m,
        rate,
        {**limit_env(rate, limited=False), **FAST_RETRIES},
        deployment,
        phones_from=1_000_001,
        timeout=sizes.unpaced_seconds,
    )
    u = unpaced.answers
    table.info(
        f"pace, no limit (PROVIDER_RATE_LIMITS=none; {'the same backlog' if m == n else f'{_n(m)}'},"
        f" stopped after {sizes.unpaced_seconds:g} s)",
        f"{_n(u.ok)} delivered, {_n(unpaced.unsent)} not; circuit openings {unpaced.circuit_openings}",
    )
    table.info("pace, no limit: delivered msg/s / R (first request to the end)", f"{unpaced.rate / rate:.3f}")
    table.info(
        "pace, no limit: 429s / requests",
        f"{u.throttled_percent:.1f}% ({_n(u.throttled)} of {_n(u.requests)})",
    )
    table.info(
        "pace, no limit: attempts per message attempted (attempt_log)",
        f"{unpaced.attempts_per_message:.2f} ({_n(unpaced.attempted)} attempted)",
    )
    table.info(
        "pace, no limit: messages failed or dead-lettered",
        f"{_n(unpaced.failed_or_dead)} ({_n(unpaced.dead_letters)} dead-lettered)",
    )
    table.problems("pace, no limit: none sent twice or lost", unpaced.integrity_problems(), "none")


def quiet_hours(run: Run, table: Table, sizes: PaceSizes, deployment: Deployment) -> None:
    """Every deferral of a time zone comes due at the end of its quiet hours, in the same
    minute. Evaluate defers them (a deferral of up to 15 minutes rides on SQS DelaySeconds,
    so they all become visible in the same second); the workers, already polling, meet them
    all at once.

    The functions' clock runs up to a minute ahead of the real one, so that the local minute
    turns DEFER_LEAD_SECONDS after the run starts instead of at a time the benchmark would
    wait for; every process of the run has the same clock. The pace and the breaker live in
    PostgreSQL's now(), which is not moved."""
    rate = sizes.rate
    n = sizes.deferred
    zone = ZoneInfo(DEFER_ZONE)
    with ExitStack() as stack:
        pace_run = PaceRun(
            run,
            "quiet",
            n,
            rate,
            {**limit_env(rate, limited=True), **FAST_RETRIES, "DEFAULT_TIMEZONE": DEFER_ZONE},
            deployment,
            stack,
            phones_from=2_000_001,
        )
        provider = pace_run.start_provider()
        # The local minute turns DEFER_LEAD_SECONDS from now on the functions' clock: time
        # for the workers to be built and for evaluate to queue the deferrals.
        turn_real = time.time() + DEFER_LEAD_SECONDS
        pace_run.clock_offset = math.ceil(turn_real / 60) * 60 - turn_real
        turn = datetime.fromtimestamp(turn_real + pace_run.clock_offset, UTC).astimezone(zone)
        pace_run.env["QUIET_HOURS"] = f"{turn - timedelta(hours=2):%H:%M}-{turn:%H:%M}"
        pace_run.start_workers()
        pace_run.go()
        report = pace_run.evaluate()
        evaluated = time.time()
        drained = pace_run.wait_drained(_drain_timeout(n, rate))
        outcome = pace_run.outcome(provider, drained=drained)
    if report["deferred"] != n or report["stopped_early"]:
        outcome.problems.append(f"evaluate deferred {report['deferred']} of {n}")
    if evaluated > turn_real:
        outcome.problems.append(f"evaluate finished {evaluated - turn_real:.1f} s after the minute turned")
    a = outcome.answers
    first = f"{a.first_request - turn_real:+.1f}" if a.first_request else "-"
    last = f"{a.last_ok - turn_real:+.1f}" if a.last_ok else "-"
    table.info(
        f"quiet hours: {_n(n)} deferred to {turn:%H:%M} local ({DEFER_ZONE}) at n8n={rate:g}/s",
        f"first request {first} s, last accepted {last} s after the minute turned",
    )
    _rate_rows(table, "quiet hours", outcome, rate)


def _attempts_between(url: str, start: datetime, end: datetime) -> tuple[int, list[int]]:
    """attempt_log rows started in [start, end), and the messages they were for."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT delivery_id FROM delivery.attempt_log WHERE started_at >= %s AND started_at < %s",
            (start, end),
        ).fetchall()
    return len(rows), sorted({int(r[0]) for r in rows})


def _waiting_on_retry(url: str, ids: Sequence[int]) -> list[float]:
    """Of these messages, those still queued for a later attempt: seconds until it."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM next_attempt_at - now()) FROM delivery.message_state"
            " WHERE id = ANY(%s) AND state = 'queued' AND next_attempt_at > now()",
            (list(ids),),
        ).fetchall()
    return [float(r[0]) for r in rows]


def _unsent_but(url: str, ids: Sequence[int]) -> int:
    """Messages not sent, other than these messages waiting on their retry step."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM delivery.message_state WHERE state <> 'sent'"
            " AND NOT (id = ANY(%s) AND state = 'queued' AND next_attempt_at > now())",
            (list(ids),),
        ).fetchone()
    return int(row[0]) if row else -1


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def outage(run: Run, table: Table, sizes: PaceSizes, deployment: Deployment) -> None:
    """The provider refuses connections for `outage_seconds` under a backlog while the
    workers run: once with the circuit breaker (as deployed, the cool-off shortened), once
    without, side by side on the same clock, both on the deployed retry schedule (5 s,
    5 min, 30 min, ...). The run without the breaker stops when the provider returns: its
    attempts during the outage are what the outage cost it.

    With the breaker, the attempts of the outage are of two kinds. Those started before its
    first cool-off ended were let through before the circuit opened: the invocations in
    flight when the first failures were recorded (at most DeliverMaxConcurrency x
    DeliverBatchSize), since no probe goes before a cool-off has ended. The rest are probes,
    one allowed per cool-off. A failed probe is an attempt like any other: its message waits
    for its next retry step (5 min after its second attempt), not for the circuit."""
    rate = sizes.rate
    n = sizes.outage_backlog
    env = {**limit_env(rate, limited=True), "CIRCUIT_COOL_OFF_SECONDS": str(sizes.cool_off)}
    in_flight = deployment.concurrency * deployment.batch_size
    with ExitStack() as stack:
        on, off = (
            PaceRun(
                run, f"outage_{b}", n, rate, {**env, "CIRCUIT_BREAKER": b}, deployment, stack, phones_from=p
            )
            for b, p in (("on", 3_000_001), ("off", 4_000_001))
        )
        reports = [r.evaluate() for r in (on, off)]
        for pace_run in (on, off):
            pace_run.start_workers()
        started = on.go()
        off.go()
        while time.time() < started + sizes.outage_seconds:
            on.watch.poll()
            time.sleep(POLL_SECONDS)
        outage_end = time.time()
        provider = on.start_provider()  # back, on the same port
        recovered = time.time()
        off.stop_workers()
        first_opened = on.watch.first_opened
        first_cool_off_end = on.watch.openings[first_opened] if first_opened else _utc(started)

        def probed() -> list[int]:
            return _attempts_between(on.url, first_cool_off_end, _utc(recovered))[1]

        drained = on.wait_drained(
            # The circuit's last cool-off (it doubles: up to the outage again), then the backlog.
            2 * sizes.outage_seconds + _drain_timeout(n, rate),
            drained=lambda: _unsent_but(on.url, probed()) == 0,
        )
        drained_at = time.time()
        before, _ = _attempts_between(on.url, _utc(started), first_cool_off_end)
        probes, probe_messages = _attempts_between(on.url, first_cool_off_end, _utc(recovered))
        waiting = _waiting_on_retry(on.url, probe_messages)
        result = on.outcome(provider, drained=drained)
        result.waiting = len(waiting)
        off_result = off.outcome(None, drained=False)
        off_attempts, _ = _attempts_between(off.url, _utc(started), _utc(outage_end))
    for report in reports:
        if report["enqueued"] != n or report["stopped_early"]:
            result.problems.append(f"evaluate queued {report['enqueued']} of {n}")
    if first_opened is None:
        result.problems.append("the circuit never opened")
    opened_in = (first_opened - _utc(started)).total_seconds() if first_opened else float("nan")
    cool_offs_ended = on.watch.ended_before(_utc(recovered))

    cool_offs = ", ".join(f"{c:g}" for c in on.watch.cool_offs())
    table.info(
        f"outage: backlog of {_n(n)}, provider refusing connections for {recovered - started:.0f} s"
        f" (n8n={rate:g}/s, CIRCUIT_COOL_OFF_SECONDS={sizes.cool_off})",
        f"circuit opened {opened_in:.1f} s in; cool-offs {cool_offs} s",
    )
    table.target(
        "outage: attempts before its first cool-off ended (in flight as it opened)",
        before,
        "{:.0f}",
        in_flight,
        at_least=False,
    )
    table.target(
        f"outage: attempts after that, until the provider returned ({cool_offs_ended} cool-offs ended)",
        probes,
        "{:.0f}",
        cool_offs_ended,
        at_least=False,
        unit=" probes",
    )
    table.problems(
        "outage: every message delivered once after it returned (probe messages: after their retry step)",
        result.delivery_problems(),
        "one 200 each",
    )
    closed = on.watch.closed_seen
    table.info(
        "outage: provider back to circuit closed / to backlog drained (but the probe messages)",
        f"{closed - recovered:.1f} / {drained_at - recovered:.1f} s"
        if closed
        else f"- / {drained_at - recovered:.1f} s",
    )
    table.info(
        "outage: probe messages waiting on their retry step when the rest had drained",
        f"{len(waiting)}" + (f" (next attempt in {min(waiting):.0f} s or more)" if waiting else ""),
    )
    table.info(
        "outage: attempts per message during the outage, breaker on / off",
        f"{(before + probes) / n:.3f} / {off_attempts / n:.2f}",
    )
    waiting_off = off_result.states.get("queued", 0) + off_result.states.get("sending", 0)
    table.info(
        "outage, breaker off: failed or dead-lettered / waiting on the retry schedule as it returned",
        f"{_n(off_result.failed_or_dead)} / {_n(waiting_off)}",
    )
    table.problems("outage, breaker off: none sent twice or lost", off_result.integrity_problems(), "none")
