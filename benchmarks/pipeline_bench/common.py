"""What every section shares: scratch databases on the reference schema, due rows, the
functions' settings and handlers, and child processes."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from proactive_delivery.bootstrap import build
from proactive_delivery.settings import Settings
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.postgres import url_from_environment
from proactive_delivery_tools.schema.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[2]
BENCH_SCRIPT = ROOT / "benchmarks" / "bench_pipeline.py"

SIGNING_SECRET = "whsec_" + base64.b64encode(b"bench-signing-secret-32-bytes!!!").decode()
RECEIVER_DELAY = 0.05
CHILD_TIMEOUT = 900
DB_TIMEOUT = 10


# --------------------------------------------------------------------------------------
# The run: sizes, options, what one section hands to a later one
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaceSizes:
    """The pace section's runs (pipeline_bench/pace.py), sized to `make bench`'s budget."""

    rate: float  # R: the provider's requests/s, and the limit configured for it
    backlog: int  # drained at the limit
    unpaced: int  # the same backlog without the limit
    unpaced_seconds: float  # ... stopped after this long (draining it would take far longer)
    deferred: int  # quiet-hour deferrals coming due in the same minute
    outage_backlog: int
    outage_seconds: float
    cool_off: int  # CIRCUIT_COOL_OFF_SECONDS during the outage

    @classmethod
    def for_run(cls, *, quick: bool) -> PaceSizes:
        if quick:
            return cls(100, 500, 500, 5, 300, 100, 10, 2)
        return cls(150, 10_000, 10_000, 30, 5_000, 1_000, 60, 5)


@dataclass(frozen=True)
class Sizes:
    baseline: int
    deliver: int
    statement_batches: int  # batches per batch size
    evaluate: tuple[int, int]  # the small and the large backlog
    enqueue: int
    backlog: int  # 0 skips the backlog section
    inbound: int  # inbound events applied (a multiple of 10)
    pace: PaceSizes

    @classmethod
    def for_run(cls, *, quick: bool, backlog_rows: int | None) -> Sizes:
        backlog = backlog_rows if backlog_rows is not None else (20_000 if quick else 1_000_000)
        pace = PaceSizes.for_run(quick=quick)
        if quick:
            return cls(100, 300, 5, (2_000, 20_000), 2_000, backlog, 1_000, pace)
        return cls(300, 1000, 20, (10_000, 100_000), 10_000, backlog, 5_000, pace)


@dataclass
class DeliverRun:
    label: str
    rate: float  # messages/s
    timed: int  # messages in the timed batches
    problems: list[str]
    cpu_ms_per_message: float  # process CPU (every thread) / messages
    ms_per_batch: float  # wall time of one invocation
    log_bytes_per_message: float  # log and EMF bytes written to stdout
    visibility_calls_per_message: float


@dataclass
class Run:
    sizes: Sizes
    dbs: Databases
    queue_latency: float  # seconds a SendMessageBatch call of the evaluate rows takes
    notes: list[str] = field(default_factory=list)
    # Filled by the deliver and enqueue sections, read by the cost section.
    deliver_by_size: dict[int, DeliverRun] = field(default_factory=dict)
    enqueue_inputs: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------
def conninfo(dbname: str) -> str:
    return url_from_environment(dbname)


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(
        conninfo(os.environ.get("PGDATABASE", "postgres")), autocommit=True, connect_timeout=DB_TIMEOUT
    )


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT)


class Databases:
    """Scratch databases: a migrated template, cloned per section; all dropped in close()."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []
        self.template = self.create("tpl")
        apply_migrations(conninfo(self.template), reference_schema=True)

    def create(self, suffix: str, template: str | None = None) -> str:
        """An empty database (or a clone of `template`); returns its name."""
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
        """A clone of the migrated template; returns its URL."""
        return conninfo(self.create(suffix, self.template))

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


def seed(url: str, n: int, *, per_contractor: int = 1, phones_from: int = 1) -> None:
    """n due, unsent proactive messages (created a minute ago, naive UTC as the platform
    stores it), each contractor with a phone of its own (up to 8M), stored as people type it
    ("(312) 555-0142"). Phones are numbered from `phones_from`: runs in one process that
    must not share parsed phones get ranges apart."""
    contractors = max(1, -(-n // per_contractor))
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO contractors (first_name, phone, email) "
            "SELECT 'Ana', '(312) ' || (200 + (p / 10000) %% 800) || '-' || lpad((p %% 10000)::text, 4, '0'),"
            " 'contractor' || g || '@example.com' "
            "FROM generate_series(1, %s) g, LATERAL (SELECT g + %s - 1 AS p) phone",
            (contractors, phones_from),
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


# --------------------------------------------------------------------------------------
# The functions as Lambda runs them
# --------------------------------------------------------------------------------------
def bench_environment(
    database_url: str, receiver_url: str = "http://127.0.0.1:9/never-called"
) -> dict[str, str]:
    """The functions' environment for the benchmark (what the template gives them)."""
    return {
        "STAGE": "local",
        "DATABASE_URL": database_url,
        "DELIVERY_QUEUE_URL": "http://127.0.0.1:9/000000000000/bench-delivery",  # never contacted
        "N8N_OUTBOUND_WEBHOOK_URL": receiver_url,
        "WEBHOOK_SIGNING_SECRET": SIGNING_SECRET,
        # Throughput must not depend on the hour the benchmark runs at.
        "QUIET_HOURS": "none",
        "MAX_MESSAGES_PER_DAY": "1000",
        # The handler's own cost is measured here; the providers' pace has its own section
        # (the pace statement still runs every batch: the circuit breaker is on).
        "PROVIDER_RATE_LIMITS": "none",
    }


def bench_settings(database_url: str, receiver_url: str = "http://127.0.0.1:9/never-called") -> Settings:
    return Settings.from_env(bench_environment(database_url, receiver_url))


_FUNCTIONS: dict[str, ModuleType] = {}
_FUNCTIONS_LOCK = threading.Lock()


def lambda_handler(function: str) -> Any:
    """functions/<function>/app.py's lambda_handler, imported as Lambda imports it (once, under
    a name of its own: both functions' modules are called app)."""
    with _FUNCTIONS_LOCK:
        module = _FUNCTIONS.get(function)
        if module is None:
            name = f"_bench_{function}_app"
            spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _FUNCTIONS[function] = sys.modules[name] = module
    return module.lambda_handler


def queue_child(args: Sequence[str]) -> None:
    """Child mode `queue URL`: the real evaluator (as bootstrap builds it) records every due
    row of URL as queued; prints the SQS message bodies it sent. A child of its own, so the
    deliver process starts without what evaluate cached (parsed phones), as a deliver
    instance apart from evaluate's does."""
    (url,) = args
    queue = InMemoryQueue()
    services = build(bench_settings(url), queue=queue)
    try:
        report = services.evaluator.run(
            ["proactive"], LambdaContext("EvaluateFunction", 600).get_remaining_time_in_millis
        )
    finally:
        services.close()
    print(json.dumps({"stopped_early": report.stopped_early, "bodies": [k.to_body() for k in queue.sent]}))


def queue_due_rows(url: str) -> list[str]:
    """Every due row of `url` queued by evaluate (in a child process): the message bodies,
    in the order sent."""
    result = run_child("queue", url)
    if result["stopped_early"]:
        raise RuntimeError("evaluate stopped early while queuing the benchmark rows")
    return list(result["bodies"])


class StdoutBytes:
    """Counts what this process writes to its standard output (file descriptor 1) while
    capturing: the function's log lines and the EMF lines its metrics flush, which Lambda
    ships to CloudWatch Logs. The lines are written, as in Lambda (the formatting and the
    write are paid), to a scratch file instead of the terminal; its size is the count."""

    def __init__(self) -> None:
        self._sink = tempfile.TemporaryFile()  # noqa: SIM115 - open for the object's life
        self.bytes = 0

    @contextmanager
    def capture(self) -> Iterator[None]:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(self._sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            self.bytes = os.fstat(self._sink.fileno()).st_size

    def close(self) -> None:
        self._sink.close()


# --------------------------------------------------------------------------------------
# Child processes: bench_pipeline.py --child MODE ARGS...
# --------------------------------------------------------------------------------------
ChildMode = Callable[[Sequence[str]], None]


def run_child(mode: str, *args: Any) -> dict[str, Any]:
    """bench_pipeline.py in a child process in one of its child modes; its last line is JSON."""
    proc = subprocess.run(
        [sys.executable, str(BENCH_SCRIPT), "--child", mode, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_seeded_child(dbs: Databases, mode: str, n: int, *args: Any) -> dict[str, Any]:
    """A scratch database with n due rows (5 a contractor), child `mode` on it, and the
    database dropped again."""
    url = dbs.new(f"{mode}_{n}")
    try:
        seed(url, n, per_contractor=5)
        return run_child(mode, url, n, *args)
    finally:
        dbs.drop(url)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"
