"""SQL statements per deliver batch, for batch sizes 1, 5 and 10: the Database.statements
counter of the services the function runs on, cross-checked by the server's own
pg_stat_database.xact_commit delta (every statement runs in autocommit, so one statement is
one transaction), and by pg_stat_statements when it is preloaded. A count, not a rate: the
same on any machine, so it is a target."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg

from proactive_delivery.adapters.postgres.database import Database

from .common import RECEIVER_DELAY, Run, batches, connect, conninfo, queue_due_rows, seed
from .deliver import DeliverHarness, LocalReceiver
from .table import Table

MAX_PER_BATCH = 3.0
SIZES = (1, 5, 10)


class StatementCounter:
    """Server-side count of transactions in one database, read from a monitor connection
    to another database (so the monitor's own queries are not counted)."""

    def __init__(self, monitor: psycopg.Connection[Any], dbname: str) -> None:
        self.monitor = monitor
        self.dbname = dbname
        self.pgss_unavailable = self._try_pg_stat_statements()

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
        if self.pgss_unavailable is None:
            self.monitor.execute(
                "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = %s), 0)",
                (self.dbname,),
            )

    def pgss_calls(self) -> int | None:
        if self.pgss_unavailable is not None:
            return None
        row = self.monitor.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
            (self.dbname,),
        ).fetchone()
        return int(row[0]) if row else 0


@dataclass
class PerBatch:
    counter: float
    xact_commit: float
    pg_stat_statements: float | None
    failures: int


def run_statements(
    harness: DeliverHarness, url: str, counter: StatementCounter, sizes: Sequence[int], runs: int
) -> tuple[dict[int, PerBatch], int]:
    """`runs` batches of each size; returns the statements per batch by size and what one
    (re)connection adds to xact_commit, measured here."""
    seed(url, runs * sum(sizes) + 1)
    bodies = queue_due_rows(url)
    harness.use_database(url)
    database = harness.services_in_use.database
    # One uncounted batch first: a new container reads the platform's catalog once (which
    # columns its tables have), a statement per process, not per batch.
    harness.invoke(bodies[:1])

    # Calibration: what a connection costs in xact_commit with no statement at all.
    before = counter.xact_commit()
    probe = Database(lambda: url)
    probe.connection()
    probe.close()
    connect_cost = counter.xact_commit() - before

    results: dict[int, PerBatch] = {}
    position = 1
    for size in sizes:
        chunk = bodies[position : position + runs * size]
        position += runs * size
        database.close()
        xacts_before = counter.xact_commit()
        counter.pgss_reset()
        statements_before = database.statements
        failures = 0
        for batch in batches(chunk, size):
            failures += len(harness.invoke(batch).get("batchItemFailures", []))
        statements = database.statements - statements_before
        database.close()  # the backend exits and flushes its statistics
        xacts = counter.xact_commit() - xacts_before - connect_cost
        calls = counter.pgss_calls()
        results[size] = PerBatch(
            statements / runs, xacts / runs, None if calls is None else calls / runs, failures
        )
    return results, connect_cost


def measure(run: Run, table: Table) -> None:
    runs = run.sizes.statement_batches
    with ExitStack() as stack:
        receiver = LocalReceiver(RECEIVER_DELAY)
        stack.callback(receiver.close)
        harness = DeliverHarness(receiver.url)
        stack.callback(harness.close)
        monitor = connect(conninfo(run.dbs.create("mon")))
        stack.callback(monitor.close)
        url = run.dbs.new("stmts")
        counter = StatementCounter(monitor, url.rsplit("/", 1)[-1])
        results, connect_cost = run_statements(harness, url, counter, SIZES, runs)

    for size, per_batch in results.items():
        figures = [("counter", per_batch.counter)]
        if per_batch.pg_stat_statements is not None:
            figures.append(("pg_stat_statements", per_batch.pg_stat_statements))
        for source, value in figures:
            table.target(
                f"SQL statements/batch, size {size:>2} ({source})",
                value,
                "{:.2f}",
                MAX_PER_BATCH,
                at_least=False,
            )
        # The server's own count, a cross-check. It also counts, once per connection, the
        # server-side PREPARE psycopg sends on a statement's sixth execution
        # (prepare_threshold): three statements, 20 batches read 63, so it is information
        # here, where the target allows no slack.
        table.info(f"SQL transactions/batch, size {size:>2} (xact_commit)", f"{per_batch.xact_commit:.2f}")
    table.problems(
        "SQL statements: every batch delivered",
        [f"size {size}: {r.failures} batchItemFailures" for size, r in results.items() if r.failures],
        "no batchItemFailures",
    )
    run.notes.append(
        f"statements: {runs} batches per size; xact_commit delta less {connect_cost} "
        "for the (re)connection, measured in this run; it also counts autovacuum worker visits"
    )
    if counter.pgss_unavailable:
        run.notes.append(f"pg_stat_statements unavailable: {counter.pgss_unavailable}")
