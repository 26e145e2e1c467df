"""Evaluate: rows/s and peak memory for two backlog sizes; enqueue with 1 and with the
default number of SendMessageBatch calls in flight against a queue that answers after a
fixed latency; a large backlog in one invocation with the template's timeout, and the plan
of the due-row page statement. Evaluate runs through `Services.evaluator.run`, each
measurement in a child process of its own (memory and ru_maxrss are per process)."""

from __future__ import annotations

import dataclasses
import json
import resource
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from proactive_delivery.bootstrap import build
from proactive_delivery.settings import Settings
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.template import load_yaml

from .common import DB_TIMEOUT, ROOT, Run, bench_settings, kib, run_seeded_child
from .table import Table

# Targets: ratios of two figures measured in this run.
MAX_MEMORY_RATIO = 1.5  # tracemalloc peak, large backlog / small backlog
MIN_ENQUEUE_SPEEDUP = 8.0  # msg/s with the default calls in flight / with 1


# --------------------------------------------------------------------------------------
# Child modes
# --------------------------------------------------------------------------------------
def evaluate_child(args: Sequence[str]) -> None:
    """Child mode `evaluate URL ROWS`: one timed run into InMemoryQueue(keep=False), then
    the same run again under tracemalloc (which slows Python down, so it is not timed)."""
    url, rows = args
    n = int(rows)
    queue = InMemoryQueue(keep=False)
    services = build(bench_settings(url), queue=queue)
    db = services.database
    # Connection open, platform schema read and the page query rendered before the baseline.
    db.sql("enqueue_new_proactive")
    evaluator = services.evaluator

    def run() -> tuple[Any, int, float]:
        queue.count = 0
        started = time.perf_counter()
        report = evaluator.run(
            ["proactive"], LambdaContext("EvaluateFunction", 600).get_remaining_time_in_millis
        )
        return report, queue.count, time.perf_counter() - started

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report, sent, elapsed = run()
    rss_delta_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before

    db.fetch_all("TRUNCATE delivery.message_state CASCADE", {})
    tracemalloc.start()
    tracemalloc.reset_peak()
    traced_report, traced_sent, _ = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    services.close()
    print(
        json.dumps(
            {
                "rows": n,
                "sent": sent,
                "traced_sent": traced_sent,
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


def enqueue_child(args: Sequence[str]) -> None:
    """Child mode `enqueue URL ROWS CONCURRENCY LATENCY TIMEOUT`."""
    url, rows, concurrency, latency, timeout = args
    settings = dataclasses.replace(bench_settings(url), enqueue_concurrency=int(concurrency))
    print(json.dumps(evaluate_runs(settings, int(rows), float(latency), float(timeout))))


def due_row_plans(url: str, sql: str, page_size: int, after_ids: Sequence[int]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of evaluate's page statement, in a transaction rolled back: how the
    due rows of ai_proactive_messages are found."""
    plans = []
    with psycopg.connect(url, connect_timeout=DB_TIMEOUT) as conn:
        for after_id in after_ids:
            row = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql,
                {"source": "proactive", "run_id": None, "after_id": after_id, "page_size": page_size},
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


def backlog_child(args: Sequence[str]) -> None:
    """Child mode `backlog URL ROWS CONCURRENCY LATENCY TIMEOUT`: the due-row plans at this
    size, then evaluate as in enqueue_child (one invocation of the template's timeout; a
    second one if the first stopped early)."""
    url, rows, concurrency, latency, timeout = args
    n = int(rows)
    settings = dataclasses.replace(bench_settings(url), enqueue_concurrency=int(concurrency))
    probe = build(settings, queue=InMemoryQueue(keep=False))
    sql = probe.database.sql("enqueue_new_proactive")
    probe.close()
    plans = due_row_plans(url, sql, settings.evaluate_page_size, (0, n // 2))
    result = evaluate_runs(settings, n, float(latency), float(timeout))
    result["plans"] = plans
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------
def default_concurrency() -> int:
    return bench_settings("postgresql://unused").enqueue_concurrency


def evaluate_timeout() -> int:
    template = load_yaml(ROOT / "template.yaml")
    return int(template["Resources"]["EvaluateFunction"]["Properties"]["Timeout"])


def measure_evaluate(run: Run, table: Table) -> None:
    small_n, large_n = run.sizes.evaluate
    small = run_seeded_child(run.dbs, "evaluate", small_n)
    large = run_seeded_child(run.dbs, "evaluate", large_n)
    problems = []
    for result in (small, large):
        n = result["rows"]
        table.info(f"evaluate rows/s ({n} rows)", f"{result['rows_per_s']:.0f}")
        table.info(f"evaluate tracemalloc peak ({n} rows)", kib(result["tracemalloc_peak"]))
        table.info(f"evaluate ru_maxrss growth ({n} rows)", kib(result["maxrss_delta_kb"] * 1024))
        if result["sent"] != n or result["traced_sent"] != n:
            problems.append(f"{n} rows: queued {result['sent']}, traced {result['traced_sent']}")
        if result["stopped_early"]:
            problems.append(f"{n} rows: stopped early")
    table.problems("evaluate correctness (every due row queued)", problems, "all queued, both runs")
    table.target(
        f"evaluate memory {large_n // 1000}k / {small_n // 1000}k (tracemalloc peak)",
        large["tracemalloc_peak"] / max(1, small["tracemalloc_peak"]),
        "{:.2f}",
        MAX_MEMORY_RATIO,
        at_least=False,
    )


def measure_enqueue(run: Run, table: Table) -> None:
    n = run.sizes.enqueue
    latency = run.queue_latency
    concurrency = default_concurrency()
    seq = run_seeded_child(run.dbs, "enqueue", n, 1, latency, 300.0)
    conc = run_seeded_child(run.dbs, "enqueue", n, concurrency, latency, 300.0)
    ms = f"{latency * 1000:.0f} ms a call"
    problems = []
    for label, result in ((f"1 call in flight, {ms}", seq), (f"{concurrency} in flight, {ms}", conc)):
        table.info(f"enqueue msg/s, {label} ({n} rows)", f"{result['rows_per_s']:.0f}")
        if result["once"] != n:
            problems.append(
                f"{result['concurrency']} in flight: once {result['once']}, never {result['never']}, "
                f"more {result['more_than_once']}"
            )
    table.problems("enqueue correctness (every id queued once)", problems, "all once, both runs")
    table.target(
        f"enqueue, {concurrency} in flight / 1 (msg/s)",
        conc["rows_per_s"] / seq["rows_per_s"],
        "{:.1f}",
        MIN_ENQUEUE_SPEEDUP,
        at_least=True,
        unit="x",
    )
    run.enqueue_inputs.update(
        evaluate_ms_per_message=conc["runs"][0]["seconds"] * 1000 / n,
        sequential_evaluate_ms_per_message=seq["runs"][0]["seconds"] * 1000 / n,
        send_calls_per_message=conc["calls"] / n,
    )


def measure_backlog(run: Run, table: Table) -> None:
    n = run.sizes.backlog
    if not n:
        run.notes.append("backlog: not run (--backlog-rows 0)")
        return
    timeout = evaluate_timeout()
    result = run_seeded_child(run.dbs, "backlog", n, default_concurrency(), run.queue_latency, float(timeout))
    first, *rest = result["runs"]
    finished = first["enqueued"] == n or bool(first["stopped_early"] and rest)
    table.check(
        f"backlog {n:,} rows: run 1 queued (of {timeout} s timeout)",
        f"{first['enqueued']:,} in {first['seconds']:.0f} s",
        "all, or stopped cleanly",
        ok=finished,
    )
    if rest:
        table.info("backlog: run 2 queued the rest", f"{rest[0]['enqueued']:,}")
    once = result["once"] == n
    table.check(
        "backlog: every id sent exactly once",
        "ok"
        if once
        else f"once {result['once']:,}, never {result['never']:,}, more {result['more_than_once']:,}",
        "all once",
        ok=once,
    )
    table.info(
        "backlog: evaluate CPU s / wall s (run 1)", f"{first['cpu_seconds']:.0f} / {first['seconds']:.0f}"
    )
    table.info("backlog: peak RSS of the evaluate process (ru_maxrss)", kib(result["maxrss_kb"] * 1024))
    for plan in result["plans"]:
        table.check(
            f"EXPLAIN due-row page after id {plan['after_id']:,}",
            f"{plan['scan']} on {plan['index'] or 'the table'}, {plan['ms']:.1f} ms",
            "index scan",
            ok=plan["scan"] != "Seq Scan",
        )
