"""The retention purge: our own rows older than RETENTION_DAYS are deleted, a small batch per
statement, until none is left or the invocation's time is; what is left waits for the next
run (the schedule is daily). The platform's rows are never deleted, updated or locked.

What goes is decided by each table's statement in adapters/postgres/sql/retention.sql; its
contract (one short transaction a batch, SKIP LOCKED, a keyset cursor, rows past the
horizon only) is written at the top of that file. A finished message whose platform row is
still due is kept, however old: it is the tombstone that stops evaluate from queuing, and
sending, that message a second time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from proactive_delivery.app.ports import RetentionStore
from proactive_delivery.core.models import PurgeCursor, PurgePage


@dataclass(frozen=True)
class PurgedTable:
    """A table the purge keeps bounded, and the statement of retention.sql that deletes one
    batch of it (with the rows of other tables that hang on those rows)."""

    table: str
    statement: str


# Every table the purge keeps bounded, in the order the purge works them. Adding one is one
# entry here, with its statement in retention.sql. attempt_log goes with message_state, in
# the same statement: an attempt hangs on its message by a foreign key. inbound_event has
# its own statement: an event names its message (delivery_id) without a foreign key, so
# either can go first. contractor_preferences and contractor_phone are never purged (they
# hold opt-outs and whose number is whose), evaluate_run is pruned by the statement that
# starts a run.
PURGED_TABLES: Final = (
    PurgedTable("message_state", "purge_message_state"),
    PurgedTable("inbound_event", "purge_inbound_event"),
)


@dataclass
class PurgeReport:
    retention_days: int
    horizon: datetime
    dry_run: bool = False
    # Rows deleted, by table (a dry run: rows a purge would have deleted).
    deleted: Counter[str] = field(default_factory=Counter)
    # Rows past the horizon a table's pages read and kept, by table: for message_state, the
    # messages the platform still has due; for inbound_event, opt-outs and opt-ins from
    # numbers nobody had yet (rows another transaction holds are not read).
    kept: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    # Time ran out before every table was done; the next run goes on.
    stopped_early: bool = False

    def add(self, entry: PurgedTable, page: PurgePage) -> None:
        self.batches += 1
        self.deleted.update(page.deleted)
        self.kept[entry.table] += page.scanned - page.deleted.get(entry.table, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "retention_days": self.retention_days,
            "horizon": self.horizon.isoformat(timespec="seconds"),
            "dry_run": self.dry_run,
            "deleted": dict(self.deleted),
            "kept": dict(self.kept),
            "batches": self.batches,
            "stopped_early": self.stopped_early,
        }


class Purger:
    def __init__(
        self,
        store: RetentionStore,
        *,
        retention_days: int,
        batch_size: int,
        clock: Callable[[], datetime],
        tables: Sequence[PurgedTable] = PURGED_TABLES,
        safety_margin_ms: int = 10_000,
    ) -> None:
        self._store = store
        self._retention_days = retention_days
        self._batch_size = batch_size
        self._clock = clock
        self._tables = tuple(tables)
        # A batch is a short statement; this leaves room for the last one and the report.
        self._safety_margin_ms = safety_margin_ms

    def run(self, remaining_ms: Callable[[], int]) -> PurgeReport:
        # From the clock, as an aware time: no session's or process's time zone, nor a day
        # that is 23 or 25 hours long in one, moves it.
        horizon = self._clock() - timedelta(days=self._retention_days)
        report = PurgeReport(self._retention_days, horizon, dry_run=self._store.dry_run)
        for entry in self._tables:
            # Each table is in the report (and its metrics) every run, 0 included.
            report.deleted[entry.table] += 0
            report.kept[entry.table] += 0
            if not self._purge(entry, horizon, report, remaining_ms):
                report.stopped_early = True
                break
        return report

    def _purge(
        self, entry: PurgedTable, horizon: datetime, report: PurgeReport, remaining_ms: Callable[[], int]
    ) -> bool:
        """Batch after batch of one table, each starting where the last page ended. False
        when time ran out first."""
        cursor = PurgeCursor()
        while True:
            if remaining_ms() < self._safety_margin_ms:
                return False
            page = self._store.purge_page(
                entry.statement, horizon=horizon, after=cursor, batch_size=self._batch_size
            )
            report.add(entry, page)
            if page.scanned < self._batch_size:
                return True
            cursor = page.cursor
