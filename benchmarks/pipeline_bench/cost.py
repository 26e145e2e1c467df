"""What the pipeline costs, from this run's figures (benchmarks/cost_model.py, docs/cost.md):
a million deliveries per batch size, evaluate's GB-seconds per million queued, and a month
with nothing due (evaluate run warm and cold). Informational rows: prices times durations
measured on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cost_model

from proactive_delivery.bootstrap import build
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext

from .common import CHILD_TIMEOUT, ROOT, Databases, Run, StdoutBytes, bench_environment, bench_settings
from .common import lambda_handler as function_handler
from .table import Table


def run_idle_evaluate(dbs: Databases, runs: int = 15) -> float:
    """Median ms of one scheduled invocation of functions/evaluate/app.py's lambda_handler
    (every source, the backlog gauge and the run record included) with nothing due."""
    url = dbs.new("idle")
    services = build(bench_settings(url), queue=InMemoryQueue())
    function = function_handler("evaluate").with_services(services)
    output = StdoutBytes()  # its log and EMF lines are written, not shown
    timings = []
    try:
        for i in range(runs + 1):
            started = time.perf_counter()
            with output.capture():
                report = function({}, LambdaContext("EvaluateFunction", 300))
            if i:  # the first run opens the connection and reads the schema
                timings.append((time.perf_counter() - started) * 1000)
            if report["enqueued"]:
                raise RuntimeError(f"idle evaluate queued {report['enqueued']}")
    finally:
        services.close()
        output.close()
        dbs.drop(url)
    return sorted(timings)[len(timings) // 2]


def run_cold_evaluate(dbs: Databases, runs: int = 5) -> float:
    """Median wall ms of benchmarks/cold_evaluate.py: a new process that imports the evaluate
    function and runs it once with nothing due (the interpreter's own start and exit
    included; its log lines are captured, not printed)."""
    url = dbs.new("cold")
    env = {
        **os.environ,
        **bench_environment(url),
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


def measure(run: Run, table: Table) -> None:
    idle_ms = run_idle_evaluate(run.dbs)
    cold_ms = run_cold_evaluate(run.dbs)
    table.info("evaluate ms, one scheduled run with nothing due, warm (median)", f"{idle_ms:.1f}")
    table.info("evaluate ms, the same run cold: new interpreter, import, first run", f"{cold_ms:.0f}")
    template = cost_model.read_template(ROOT / "template.yaml")
    if run.deliver_by_size and run.enqueue_inputs:
        delivery_rows(run, table, template, idle_ms)
    else:
        run.notes.append("cost: no per-million rows (they need this run's deliver and enqueue figures)")
    runs = sum(cost_model.runs_per_month(e) for e in template.schedules.values())
    for label, ms in (("all warm", idle_ms), ("all cold", cold_ms)):
        idle = cost_model.idle_month(cost_model.Measured(0, 0, 0, ms, 0, 0, 0), template)
        table.info(
            f"idle month: {runs:,.0f} evaluate runs at {template.memory_mb} MB, {label}",
            f"${idle.total_usd:.4f}",
        )
    table.info("always-on worker (t4g.nano, a month)", f"${cost_model.always_on_month():.2f}")
    sms_rows(table)
    run.notes.append(
        f"cost: arm64 at {template.memory_mb} MB, prices in benchmarks/cost_model.py; "
        "SQS receive + delete are one call each per batch (the event source mapping), "
        "not measured here; docs/cost.md"
    )


def delivery_rows(run: Run, table: Table, template: cost_model.Template, idle_ms: float) -> None:
    """A million deliveries per batch size, and evaluate's GB-seconds per million queued."""
    inputs = run.enqueue_inputs
    for size, deliver_run in sorted(run.deliver_by_size.items()):
        measured = cost_model.Measured(
            deliver_ms_per_batch=deliver_run.ms_per_batch,
            deliver_cpu_ms_per_message=deliver_run.cpu_ms_per_message,
            evaluate_ms_per_message=inputs["evaluate_ms_per_message"],
            evaluate_idle_run_ms=idle_ms,
            send_calls_per_message=inputs["send_calls_per_message"],
            visibility_calls_per_message=deliver_run.visibility_calls_per_message,
            log_bytes_per_message=deliver_run.log_bytes_per_message,
        )
        cost = cost_model.per_million(measured, template, batch_size=size)
        table.info(
            f"cost per 1M deliveries, batches of {size}"
            + (" (template)" if size == template.batch_size else ""),
            f"${cost.total_usd:.2f}",
        )
        table.info(
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
    table.info(
        "evaluate GB-s per 1M queued: 1 call in flight / default",
        f"{sequential_gb_s:,.0f} / {concurrent_gb_s:,.0f}",
    )


def sms_rows(table: Table) -> None:
    """What an SMS costs is its segments: the demo's texts as typed (plain ASCII), and the same
    texts with the typography AI-written text is full of (a curly apostrophe, an em dash),
    counted by core/segments.py as deliver counts them."""
    from proactive_delivery.core.segments import sms_size
    from proactive_delivery_tools.local.seed import TEXTS

    plain = [t.format(name="Ana") for t in TEXTS]
    typographic = [t.replace("'", "\u2019").replace(" - ", " \u2014 ") for t in plain]
    sizes = {
        label: [sms_size(t) for t in texts]
        for label, texts in (("plain", plain), ("typographic", typographic))
    }
    per_message = {label: sum(s.segments for s in got) / len(got) for label, got in sizes.items()}
    ucs2 = {label: sum(s.encoding == "UCS-2" for s in got) for label, got in sizes.items()}
    table.info(
        "SMS segments per message, the demo's texts as typed / with curly quotes and dashes",
        f"{per_message['plain']:.2f} ({ucs2['plain']} of {len(plain)} UCS-2) / "
        f"{per_message['typographic']:.2f} ({ucs2['typographic']} of {len(plain)} UCS-2)",
    )
    table.info(
        f"SMS provider charge per 1M such messages (${cost_model.SMS_PER_SEGMENT} a segment)",
        f"${cost_model.sms_per_million(per_message['plain']):,.0f} / "
        f"${cost_model.sms_per_million(per_message['typographic']):,.0f}",
    )
