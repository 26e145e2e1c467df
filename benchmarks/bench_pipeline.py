#!/usr/bin/env python
"""Pipeline benchmark: one table, every figure in it measured in the same run.

Sections (benchmarks/pipeline_bench/, one module each):
  deliver     the old naive sender (baseline), the deliver function as Lambda runs it
              (functions/deliver/app.py with SQS events), the httpx floor; msg/s, CPU and
              log + EMF bytes per delivered message, ms per invocation by batch size
  statements  SQL statements per deliver batch (batch sizes 1, 5, 10)
  evaluate    evaluate rows/s and peak memory; enqueue with 1 and with the default calls in
              flight; a large backlog in one run and the EXPLAIN of its due-row page
  cost        evaluate with nothing due (warm, cold); the cost of a million deliveries
  inbound     the inbound processor: events/s at batches of 10, SQL statements per batch
              (sizes 1, 5, 10), each event applied once and a replay changing nothing
  pace        a backlog drained against a provider that takes R requests/s (429 above it),
              with and without the limit; quiet-hour deferrals due in the same minute; the
              provider down under a backlog, with and without the circuit breaker

Rows are informational (absolute rates: they depend on the machine), targets (ratios of
two figures of this run, counts, sizes) or checks (correctness). The exit status is 1 when
a target is missed, a check fails or a section fails to run, each named on a `result:`
line; absolute rates never fail the run. benchmarks/README.md lists every row.

Usage: python benchmarks/bench_pipeline.py [--quick] [--backlog-rows N] [--only SECTION]...
PostgreSQL is reached through PGHOST/PGPORT/PGUSER/PGPASSWORD (default 127.0.0.1:5432,
user postgres). Scratch databases are named pd_bench_<pid>_* and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

# As in template.yaml; must be set before the package's loggers and metrics are created.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "proactive-delivery")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ProactiveDelivery")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_bench import common, cost, deliver, evaluate, inbound, pace, statements
from pipeline_bench.common import RECEIVER_DELAY, Databases, Run, Sizes
from pipeline_bench.table import Table

# In order; each adds its rows to the table, and a section that raises adds an ERROR row.
SECTIONS: list[tuple[str, Callable[[Run, Table], None]]] = [
    ("deliver", deliver.measure),
    ("statements", statements.measure),
    ("evaluate", evaluate.measure_evaluate),
    ("enqueue", evaluate.measure_enqueue),
    ("backlog", evaluate.measure_backlog),
    ("cost", cost.measure),
    ("inbound", inbound.measure),
    ("pace", pace.measure),
]

# bench_pipeline.py --child MODE ARGS...: a measurement that needs a process of its own.
CHILDREN: dict[str, common.ChildMode] = {
    "queue": common.queue_child,
    "evaluate": evaluate.evaluate_child,
    "enqueue": evaluate.enqueue_child,
    "backlog": evaluate.backlog_child,
    "pace-queue": pace.queue_child,
    "pace-worker": pace.worker_child,
    "pace-evaluate": pace.evaluate_child,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
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
    parser.add_argument(
        "--only",
        action="append",
        choices=[name for name, _ in SECTIONS],
        help="run this section only (repeatable; the cost per million needs deliver and enqueue)",
    )
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        mode, *child_args = args.child
        CHILDREN[mode](child_args)
        return 0

    sizes = Sizes.for_run(quick=args.quick, backlog_rows=args.backlog_rows)
    table = Table()
    run: Run | None = None
    try:
        run = Run(sizes, Databases(f"pd_bench_{os.getpid()}"), args.queue_latency)
        for name, measure in SECTIONS:
            if args.only and name not in args.only:
                continue
            with table.section(name):
                measure(run, table)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        table.error("setup", exc)
    finally:
        if run is not None:
            run.dbs.close()

    print(
        f"proactive-delivery pipeline benchmark ({'quick' if args.quick else 'full'}; "
        f"receiver answers 200 after {RECEIVER_DELAY * 1000:.0f} ms; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    print(table.render())
    for note in run.notes if run else []:
        print(f"note: {note}")
    for line in table.results():
        print(line)
    if table.failed:
        print(
            f"bench: {len(table.missed)} target(s) missed, {len(table.failed_checks)} check(s) failed, "
            f"{len(table.errors)} section(s) failed",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
