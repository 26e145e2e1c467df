"""The retention purge on the real PostgreSQL, on the platform's real tables: what goes (our
finished rows past RETENTION_DAYS that can never come back, with their attempt logs; the
inbound events applied before the horizon), what stays (recent rows, open rows, the
tombstones of messages the platform still has due, unmatched opt-outs and opt-ins, the
preferences, every platform row), small batches on a keyset cursor, the time budget, the dry
run and the index each batch reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import ClientCursor

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.retention import RETENTION_SQL, PostgresRetentionStore
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.app.purge import PURGED_TABLES, Purger, PurgeReport
from proactive_delivery.core.models import PurgeCursor, PurgePage
from tests.support.db import VARIANTS, plan_nodes
from tests.support.retention import (
    PLATFORM_TABLES,
    attempt_delivery_ids,
    delivery_ids,
    fingerprints,
    finished_row,
    inbound_event_ids,
    inbound_event_row,
)

OLD = 100.0  # days: past the default horizon of 90
RECENT = 10.0
ALWAYS_TIME = 10**9  # remaining milliseconds, for runs that are not about time


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(lambda: database_url)
    yield database
    database.close()


def purger(db: Database, *, batch_size: int = 1000, dry_run: bool = False, days: int = 90) -> Purger:
    return Purger(
        PostgresRetentionStore(db, dry_run=dry_run),
        retention_days=days,
        batch_size=batch_size,
        clock=lambda: datetime.now(UTC),
        safety_margin_ms=1_000,
    )


GONE = None  # the platform's row does not exist (any more)
DELETED, TOMBSTONE, KEPT = "deleted", "tombstone", "kept with its attempts"
PRO, FUP = "proactive", "followup"

# label: (source, the platform row's columns or GONE, our state, our reason, attempts, age in
# days, what the purge must do). "sent" stands for a sent_at 100 days back.
ROWS: dict[str, tuple[str, dict[str, Any] | None, str, str | None, int, float, str]] = {
    # Old, finished, and the platform will never hand them to evaluate again: they go.
    "sent by us": (PRO, {"sent_at": "sent"}, "sent", None, 2, OLD, DELETED),
    "platform row gone": (PRO, GONE, "failed", "source_row_missing", 1, OLD, DELETED),
    "sent elsewhere": (PRO, {"sent_at": "sent"}, "skipped", "sent_elsewhere", 0, OLD, DELETED),
    "follow-up sent": (FUP, {"status": "sent", "sent_at": "sent"}, "sent", None, 1, OLD, DELETED),
    "follow-up cancelled": (FUP, {"status": "cancelled"}, "skipped", "action_completed", 0, OLD, DELETED),
    "follow-up status NULL": (FUP, {"status": None}, "skipped", "cancelled", 0, OLD, DELETED),
    "follow-up scheduled, sent": (FUP, {"sent_at": "sent"}, "sent", None, 0, OLD, DELETED),
    "follow-up row gone": (FUP, GONE, "failed", "source_row_missing", 0, OLD, DELETED),
    # Old and finished, but the platform still has them due: without our row evaluate would
    # queue them again. They stay (their attempt logs go).
    "opted out": (PRO, {}, "skipped", "opted_out", 0, OLD, TOMBSTONE),
    "no created_at, no contact": (PRO, {"created_at": None}, "skipped", "no_contact", 0, OLD, TOMBSTONE),
    "attempts exhausted": (PRO, {}, "failed", "attempts_exhausted", 3, OLD, TOMBSTONE),
    "sent, platform sent_at NULL": (PRO, {}, "sent", None, 1, OLD, TOMBSTONE),
    "follow-up rejected": (FUP, {}, "failed", "rejected", 1, OLD, TOMBSTONE),
    "follow-up moved later": (FUP, {"scheduled_time": "later"}, "skipped", "expired", 0, OLD, TOMBSTONE),
    # Recent, or not finished however old: they stay with their attempt logs.
    "sent recently": (PRO, {"sent_at": "sent"}, "sent", None, 1, RECENT, KEPT),
    "follow-up sent recently": (FUP, {"status": "sent", "sent_at": "sent"}, "sent", None, 1, RECENT, KEPT),
    "old pending": (PRO, {}, "pending", None, 1, OLD, KEPT),
    "old queued": (PRO, {}, "queued", None, 1, OLD, KEPT),
    "old sending": (PRO, {}, "sending", None, 1, OLD, KEPT),
    "old deferred": (PRO, {}, "deferred", None, 1, OLD, KEPT),
    "old queued, sent elsewhere": (PRO, {"sent_at": "sent"}, "queued", None, 1, OLD, KEPT),
}  # fmt: skip

_PLATFORM_VALUES = {
    "sent": "(now() AT TIME ZONE 'UTC') - interval '100 days'",
    "later": "(now() AT TIME ZONE 'UTC') + interval '1 day'",
}


@dataclass
class Matrix:
    """Every kind of row of ours (ROWS), built: label -> delivery id and source id."""

    delivery_ids: dict[str, int]
    source_ids: dict[str, tuple[str, int]]

    def where(self, fate: str) -> dict[str, int]:
        return {label: self.delivery_ids[label] for label, row in ROWS.items() if row[-1] == fate}


@pytest.fixture
def matrix(
    conn: psycopg.Connection[Any], make_message: Callable[..., int], make_followup: Callable[..., int]
) -> Matrix:
    tables = {"proactive": "ai_proactive_messages", "followup": "contractor_followup_schedules"}
    gone = iter(range(9_000_000, 9_001_000))
    delivery: dict[str, int] = {}
    sources: dict[str, tuple[str, int]] = {}
    for label, (source, platform, state, reason, attempts, days, _fate) in ROWS.items():
        if platform is GONE:
            source_id = next(gone)
        else:
            source_id = make_message() if source == "proactive" else make_followup()
            for column, value in platform.items():
                # The platform's own writes: naive UTC timestamps, written explicitly.
                expression = _PLATFORM_VALUES.get(value, "%s") if isinstance(value, str) else "%s"
                query = f"UPDATE {tables[source]} SET {column} = {expression} WHERE id = %s"
                conn.execute(query, (value, source_id) if expression == "%s" else (source_id,))  # type: ignore[arg-type]
        sources[label] = (source, source_id)
        delivery[label] = finished_row(
            conn, source, source_id, state, days_ago=days, attempts=attempts, reason=reason
        )
    # Opt-outs are never purged, however old.
    conn.execute(
        "INSERT INTO delivery.contractor_preferences (contractor_id, opted_out, opted_out_at, created_at,"
        " updated_at) SELECT contractor_id, true, t, t, t"
        " FROM ai_proactive_messages, (SELECT now() - interval '400 days' AS t) w LIMIT 3"
    )
    return Matrix(delivery, sources)


def test_purge_deletes_old_finished_rows_that_cannot_come_back_and_keeps_everything_else(
    conn: psycopg.Connection[Any], db: Database, matrix: Matrix
) -> None:
    # GIVEN every kind of row of ours (the matrix), and the platform's tables and our
    # preferences as they are, system columns included
    untouched = [*PLATFORM_TABLES, "delivery.contractor_preferences"]
    before = fingerprints(conn, untouched)
    assert all(before[t] for t in untouched if t not in ("contractor_action_items", "events"))
    all_ids = delivery_ids(conn)
    # WHEN the purge runs with the default retention (90 days)
    report = purger(db).run(lambda: ALWAYS_TIME)
    # THEN exactly the old finished rows that can never come back are gone...
    deleted, tombstones, kept = (matrix.where(fate) for fate in (DELETED, TOMBSTONE, KEPT))
    assert delivery_ids(conn) == all_ids - set(deleted.values())
    # ...with every attempt log of theirs and of the tombstones; recent and open rows keep theirs
    assert attempt_delivery_ids(conn) == sorted(kept.values())
    # AND the report says so: rows deleted by table, the tombstones read and kept
    attempts_gone = sum(ROWS[label][4] for label in [*deleted, *tombstones])
    assert report.deleted == {"message_state": len(deleted), "attempt_log": attempts_gone, "inbound_event": 0}
    assert report.kept == {"message_state": len(tombstones), "inbound_event": 0}
    assert not report.stopped_early and not report.dry_run
    # AND not one platform row, nor one preference, was deleted, updated or even locked
    assert fingerprints(conn, untouched) == before


def test_after_a_purge_evaluate_queues_nothing_again(
    conn: psycopg.Connection[Any], db: Database, matrix: Matrix
) -> None:
    store = PostgresStore(db)

    def queued_by_evaluate() -> dict[str, list[int]]:
        """What evaluate's page statements record as new, per source."""
        run = store.start_evaluate_run(["proactive", "followup"], lease_seconds=300)
        return {
            source: store.enqueue_new(source, run, after_id=0, page_size=1000).queued_ids
            for source in ("proactive", "followup")
        }

    # GIVEN the purge has run over the matrix
    purger(db).run(lambda: ALWAYS_TIME)
    # WHEN evaluate's page statements run THEN they take nothing: no purged message comes back
    assert queued_by_evaluate() == {"proactive": [], "followup": []}
    # AND the tombstones are why: without them, evaluate would queue those messages again
    # (the follow-up moved to a later time too, once that time comes)
    tombstones = matrix.where(TOMBSTONE)
    conn.execute("DELETE FROM delivery.attempt_log WHERE delivery_id = ANY(%s)", (list(tombstones.values()),))
    conn.execute("DELETE FROM delivery.message_state WHERE id = ANY(%s)", (list(tombstones.values()),))
    again = queued_by_evaluate()
    expected: dict[str, list[int]] = {"proactive": [], "followup": []}
    for label in tombstones:
        source, source_id = matrix.source_ids[label]
        if label != "follow-up moved later":
            expected[source].append(source_id)
    assert again == {source: sorted(ids) for source, ids in expected.items()}


def test_purge_works_in_small_batches_and_resumes_when_time_ran_out(
    conn: psycopg.Connection[Any], db: Database, make_message: Callable[..., int]
) -> None:
    # GIVEN 15 tombstones older than 25 purgeable rows (the tombstones come first in the
    # purge's order), and a purge of 10 rows a batch
    for _ in range(15):
        finished_row(conn, "proactive", make_message(), "skipped", days_ago=OLD + 10, reason="opted_out")
    purgeable = [
        finished_row(conn, "proactive", 9_100_000 + n, "failed", days_ago=OLD, attempts=1) for n in range(25)
    ]
    pages: list[PurgePage] = []

    class Recorded(PostgresRetentionStore):
        def purge_page(
            self, statement: str, *, horizon: datetime, after: PurgeCursor, batch_size: int
        ) -> PurgePage:
            page = super().purge_page(statement, horizon=horizon, after=after, batch_size=batch_size)
            pages.append(page)
            return page

    def run(remaining: Callable[[], int]) -> PurgeReport:
        return Purger(
            Recorded(db),
            retention_days=90,
            batch_size=10,
            clock=lambda: datetime.now(UTC),
            safety_margin_ms=1_000,
        ).run(remaining)

    # WHEN a run's time runs out after two batches (the third check finds 0.5 s left)
    budget = iter([ALWAYS_TIME, ALWAYS_TIME, 500])
    first = run(lambda: next(budget))
    # THEN it stopped cleanly between batches, said so, and each batch read at most 10 rows
    assert first.stopped_early and first.batches == 2
    assert [p.scanned for p in pages] == [10, 10]
    assert first.deleted["message_state"] == 5 and first.kept["message_state"] == 15
    assert len(delivery_ids(conn) & set(purgeable)) == 20
    # WHEN the next run has time THEN it deletes the rest, still 10 rows a batch at most,
    # reading each tombstone once (a keyset cursor, not the same first page again)
    pages.clear()
    second = run(lambda: ALWAYS_TIME)
    assert not second.stopped_early
    assert [p.scanned for p in pages] == [10, 10, 10, 5, 0]  # the last: inbound_event's only page
    assert second.deleted == {"message_state": 20, "attempt_log": 20, "inbound_event": 0}
    assert second.kept == {"message_state": 15, "inbound_event": 0}
    assert delivery_ids(conn) & set(purgeable) == set()
    assert all(p.deleted.get("message_state", 0) <= 10 for p in pages)


def test_the_dry_run_reports_what_a_purge_would_delete_and_changes_nothing(
    conn: psycopg.Connection[Any], db: Database, matrix: Matrix
) -> None:
    # GIVEN the matrix, every table of ours as it is
    ours = ["delivery.message_state", "delivery.attempt_log"]
    rows_before = {t: sorted(r.split("|", 3)[3] for r in fingerprints(conn, [t])[t]) for t in ours}
    # WHEN a dry run runs, in small batches
    dry = purger(db, dry_run=True, batch_size=4).run(lambda: ALWAYS_TIME)
    # THEN nothing changed, and it reported what the purge then deletes
    assert {t: sorted(r.split("|", 3)[3] for r in fingerprints(conn, [t])[t]) for t in ours} == rows_before
    real = purger(db).run(lambda: ALWAYS_TIME)
    assert dry.dry_run and not real.dry_run
    assert (dry.deleted, dry.kept) == (real.deleted, real.kept)


def test_a_longer_retention_keeps_more(conn: psycopg.Connection[Any], db: Database, matrix: Matrix) -> None:
    # GIVEN the matrix's rows are 100 days old WHEN the purge keeps 120 days THEN nothing goes
    report = purger(db, days=120).run(lambda: ALWAYS_TIME)
    assert report.deleted == {"message_state": 0, "attempt_log": 0, "inbound_event": 0}
    assert report.horizon < datetime.now(UTC) - timedelta(days=119)


def test_a_row_resent_meanwhile_is_not_purged(conn: psycopg.Connection[Any], db: Database) -> None:
    # GIVEN an old failed row whose platform row is gone, locked by a resend in progress
    row = finished_row(conn, "proactive", 9_200_000, "failed", days_ago=OLD, reason="source_row_missing")
    with psycopg.connect(conn.info.dsn) as resend:
        resend.execute(
            "UPDATE delivery.message_state SET state = 'queued', updated_at = now() WHERE id = %s", (row,)
        )
        # WHEN the purge runs while that transaction is open THEN it skips the row, without waiting
        report = purger(db).run(lambda: ALWAYS_TIME)
        assert report.deleted["message_state"] == 0
        resend.commit()
    # AND once the resend committed, the row is queued and recent: the purge leaves it
    purger(db).run(lambda: ALWAYS_TIME)
    assert row in delivery_ids(conn)


def test_each_batch_finds_old_finished_rows_on_the_index(database_url: str, db: Database) -> None:
    # GIVEN a table of 50,000 messages where most rows are recent or open (a deployment's
    # usual shape), 2,000 of them finished long ago, each with an attempt, fresh statistics,
    # and batches small against the table (1:250 here; in a deployment the default 1,000
    # against 90 days of messages). A table not much bigger than a batch is cheaper to read
    # whole, and the planner then does so; that is not what this is about.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO delivery.message_state (source, source_id, state, updated_at)"
            " SELECT 'proactive', g, CASE WHEN g % 10 = 0 THEN 'queued' ELSE 'sent' END,"
            " now() - make_interval(days => CASE WHEN g % 25 = 1 THEN 100 ELSE 5 END)"
            " FROM generate_series(1, 50000) g"
        )
        conn.execute(
            "INSERT INTO delivery.attempt_log (delivery_id, attempt, started_at, finished_at, outcome)"
            " SELECT id, 1, updated_at, updated_at, 'delivered' FROM delivery.message_state"
        )
        conn.execute("ANALYZE delivery.message_state")
        conn.execute("ANALYZE delivery.attempt_log")
    statement = db.sql(PURGED_TABLES[0].statement, RETENTION_SQL)
    params = {
        "horizon": datetime.now(UTC) - timedelta(days=90),
        "after_at": None,
        "after_id": 0,
        "batch_size": 200,
    }
    # WHEN the planner plans a batch
    with psycopg.connect(database_url, cursor_factory=ClientCursor) as conn:
        [(explained,)] = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchall()
    scans = [n for n in plan_nodes(explained[0]["Plan"]) if n["Node Type"].endswith("Scan")]
    # THEN the page is read on the partial index of finished rows, from the cursor on...
    [page] = [n for n in scans if n.get("Index Name") == "message_state_finished_idx"]
    assert "ROW(updated_at, id) >" in page["Index Cond"] and "updated_at <" in page["Index Cond"]
    # ...its rows and their attempts are found by key, and no table of ours is read whole
    ours = {"message_state", "attempt_log"}
    assert {n["Index Name"] for n in scans if n.get("Relation Name") in ours} == {
        "message_state_finished_idx",
        "message_state_pkey",
        "attempt_log_delivery_idx",
    }
    assert [n for n in scans if n.get("Relation Name") in ours and "Index Name" not in n] == []


def test_a_purge_with_nothing_old_deletes_nothing(
    conn: psycopg.Connection[Any], db: Database, make_message: Callable[..., int]
) -> None:
    # GIVEN only recent rows
    kept = finished_row(conn, "proactive", make_message(), "sent", days_ago=RECENT, attempts=1)
    # WHEN the purge runs THEN it says 0 for each table and one batch was enough
    report = purger(db).run(lambda: ALWAYS_TIME)
    assert report.as_dict()["deleted"] == {"message_state": 0, "attempt_log": 0, "inbound_event": 0}
    assert report.batches == 2  # one per table
    assert delivery_ids(conn) == {kept}


def test_the_cursor_of_an_empty_page_stays_where_it_was(db: Database) -> None:
    store = PostgresRetentionStore(db)
    after = PurgeCursor(datetime(2020, 1, 1, tzinfo=UTC), 7)
    page = store.purge_page("purge_message_state", horizon=datetime.now(UTC), after=after, batch_size=10)
    assert (page.scanned, page.cursor) == (0, after)
    with pytest.raises(TypeError, match="naive"):
        store.purge_page("purge_message_state", horizon=datetime(2020, 1, 1), after=after, batch_size=10)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_purge_runs_on_every_platform_variant(
    platform_database: Callable[[str], str], variant: str
) -> None:
    # GIVEN a database of one platform variant (timestamptz columns, no follow-up table, no
    # proactive table...), and for each source it has: an old message sent on the platform and
    # an old one skipped that the platform still has due; plus an old follow-up of a table this
    # database does not have (such a message can never come back)
    ddl, sources = VARIANTS[variant]
    url = platform_database(ddl)
    expected_gone, expected_kept = set(), set()
    with psycopg.connect(url, autocommit=True) as conn:
        [(contractor,)] = conn.execute(
            "INSERT INTO contractors (first_name, phone, email)"
            " VALUES ('Ana', '+13125550101', 'a@example.com') RETURNING id"
        ).fetchall()
        for source in sources:
            for sent in (True, False):
                if source == "proactive":
                    insert = (
                        "INSERT INTO ai_proactive_messages (contractor_id, message_type,"
                        " message_content, ai_reasoning, sent_at)"
                        " VALUES (%s, 'check_in', 'Hi', 'why', CASE WHEN %s THEN now() END) RETURNING id"
                    )
                else:
                    insert = (
                        "INSERT INTO contractor_followup_schedules (contractor_id, scheduled_time,"
                        " followup_type, message_template, status, sent_at, created_at)"
                        " VALUES (%s, now(), 'check_in', 'Hi',"
                        " CASE WHEN %s THEN 'sent' ELSE 'scheduled' END, CASE WHEN %s THEN now() END, now())"
                        " RETURNING id"
                    )
                params = (contractor, sent) if source == "proactive" else (contractor, sent, sent)
                [(source_id,)] = conn.execute(insert, params).fetchall()  # type: ignore[arg-type]
                row = finished_row(conn, source, source_id, "sent" if sent else "skipped", days_ago=OLD)
                (expected_gone if sent else expected_kept).add(row)
        for absent in {"proactive", "followup"} - set(sources):
            expected_gone.add(finished_row(conn, absent, 7, "sent", days_ago=OLD, attempts=1))
        # WHEN the purge runs
        database = Database(lambda: url)
        try:
            report = purger(database).run(lambda: ALWAYS_TIME)
        finally:
            database.close()
        # THEN what can never come back went, what the platform still has due stayed
        assert delivery_ids(conn) == expected_kept
        assert report.deleted["message_state"] == len(expected_gone)


# --- delivery.inbound_event ------------------------------------------------------------------------
# label: (action, outcome, kind, age in days, kept?)
EVENTS: dict[str, tuple[str, str, str, float, bool]] = {
    "old linked reply": ("reply", "linked", "sms.received", OLD, False),
    "old reply nobody's": ("reply", "unmatched", "sms.received", OLD, False),
    "old reply outside the window": ("reply", "outside_window", "sms.received", OLD, False),
    "old receipt": ("receipt", "recorded", "message.status", OLD, False),
    "old receipt, message unknown": ("receipt", "unknown_message", "message.status", OLD, False),
    "old STOP applied": ("opt_out", "opted_out", "sms.received", OLD, False),
    "old START kept operator's": ("opt_in", "kept_operator_opt_out", "sms.received", OLD, False),
    "old HELP": ("help", "help", "sms.received", OLD, False),
    "old DND opt-out applied": ("opt_out", "opted_out", "contact.dnd", OLD, False),
    # What a later `inbound backfill-phones` applies: never lost to age.
    "old STOP nobody's": ("opt_out", "unmatched", "sms.received", OLD + 200, True),
    "old START nobody's": ("opt_in", "unmatched", "sms.received", OLD, True),
    "old DND opt-out nobody's": ("opt_out", "unmatched", "contact.dnd", OLD, True),
    "recent reply": ("reply", "linked", "sms.received", RECENT, True),
    "recent receipt": ("receipt", "recorded", "message.status", RECENT, True),
    "recent STOP": ("opt_out", "opted_out", "sms.received", RECENT, True),
}  # fmt: skip


def test_old_inbound_events_go_unmatched_opt_outs_and_recent_ones_stay(
    conn: psycopg.Connection[Any], db: Database
) -> None:
    # GIVEN every kind of inbound event, old and recent, and the tables the purge must not
    # touch as they are (the platform's, our preferences and phone directory)
    ids = {
        label: inbound_event_row(conn, days_ago=days, action=action, outcome=outcome, kind=kind)
        for label, (action, outcome, kind, days, _kept) in EVENTS.items()
    }
    conn.execute(
        "INSERT INTO delivery.contractor_phone (phone_hash, contractor_id, source, recorded_at)"
        " VALUES ('\\x01', 1, 'send', now() - interval '400 days')"
    )
    untouched = [*PLATFORM_TABLES, "delivery.contractor_preferences", "delivery.contractor_phone"]
    before = fingerprints(conn, untouched)
    # WHEN the purge runs with the default retention
    report = purger(db).run(lambda: ALWAYS_TIME)
    # THEN the old events went, except opt-outs and opt-ins from numbers nobody had yet
    kept = {ids[label] for label, row in EVENTS.items() if row[-1]}
    assert inbound_event_ids(conn) == kept
    old_kept = sum(1 for row in EVENTS.values() if row[-1] and row[3] >= OLD)
    assert report.deleted["inbound_event"] == len(EVENTS) - len(kept)
    assert report.kept["inbound_event"] == old_kept
    # AND nothing else changed, not even a lock
    assert fingerprints(conn, untouched) == before
    # AND what backfill-phones reads is still there: the latest of each unknown number
    assert {
        r[0]
        for r in conn.execute(
            "SELECT action FROM delivery.inbound_event WHERE outcome = 'unmatched'"
        ).fetchall()
    } == {"opt_out", "opt_in"}


def test_a_message_and_its_inbound_events_are_purged_in_either_order(
    conn: psycopg.Connection[Any], db: Database, make_message: Callable[..., int]
) -> None:
    # GIVEN an old message that can go, with a receipt recorded for it recently (a late one),
    # and a tombstone (the platform still has it due) with an old reply linked to it
    gone = finished_row(conn, "proactive", 9_300_000, "failed", days_ago=OLD, attempts=1)
    late_receipt = inbound_event_row(
        conn, days_ago=RECENT, action="receipt", outcome="recorded", kind="message.status",
        delivery_id=gone, status="undelivered",
    )  # fmt: skip
    tombstone = finished_row(conn, "proactive", make_message(), "skipped", days_ago=OLD, reason="opted_out")
    old_reply = inbound_event_row(conn, days_ago=OLD, delivery_id=tombstone)
    # WHEN the purge runs
    report = purger(db).run(lambda: ALWAYS_TIME)
    # THEN the message went although an event still names it (no foreign key ties them), the
    # event stays until its own time; the tombstone stays, its old reply went
    assert delivery_ids(conn) == {tombstone}
    assert inbound_event_ids(conn) == {late_receipt}
    assert old_reply not in inbound_event_ids(conn)
    assert report.deleted == {"message_state": 1, "attempt_log": 1, "inbound_event": 1}


def test_inbound_events_are_purged_in_small_batches_on_the_keyset_through_shared_times(
    conn: psycopg.Connection[Any], db: Database
) -> None:
    # GIVEN 25 old events applied by one processor batch (one applied_at for all), 15 older
    # unmatched STOPs (kept: read first, every run), and a purge of 10 rows a batch
    for _ in range(15):
        inbound_event_row(conn, days_ago=OLD + 10, action="opt_out", outcome="unmatched")
    [(shared,)] = conn.execute("SELECT now() - interval '100 days'").fetchall()
    batch = [inbound_event_row(conn, days_ago=0, applied_at=shared) for _ in range(25)]
    pages: list[PurgePage] = []

    class Recorded(PostgresRetentionStore):
        def purge_page(
            self, statement: str, *, horizon: datetime, after: PurgeCursor, batch_size: int
        ) -> PurgePage:
            page = super().purge_page(statement, horizon=horizon, after=after, batch_size=batch_size)
            if statement == "purge_inbound_event":
                pages.append(page)
            return page

    store = Recorded(db)
    report = Purger(
        store, retention_days=90, batch_size=10, clock=lambda: datetime.now(UTC), safety_margin_ms=0
    ).run(lambda: ALWAYS_TIME)
    # THEN each row was read once, 10 at most a batch, the keyset passing the rows of the
    # shared time it had read by id
    assert [p.scanned for p in pages] == [10, 10, 10, 10, 0]
    assert report.deleted["inbound_event"] == 25 and report.kept["inbound_event"] == 15
    assert inbound_event_ids(conn).isdisjoint(batch) and len(inbound_event_ids(conn)) == 15
    assert all(p.deleted["inbound_event"] <= 10 for p in pages)


def test_an_inbound_event_another_transaction_holds_is_skipped_not_waited_for(
    conn: psycopg.Connection[Any], db: Database
) -> None:
    # GIVEN two old events, one of them locked by an open transaction
    held = inbound_event_row(conn, days_ago=OLD)
    inbound_event_row(conn, days_ago=OLD)
    with psycopg.connect(conn.info.dsn) as other:
        other.execute("SELECT 1 FROM delivery.inbound_event WHERE id = %s FOR UPDATE", (held,))
        # WHEN the purge runs meanwhile THEN it deletes the other one and passes the held one by
        report = purger(db).run(lambda: ALWAYS_TIME)
        assert report.deleted["inbound_event"] == 1
        assert inbound_event_ids(conn) == {held}
    # AND the next run, the lock gone, takes it
    purger(db).run(lambda: ALWAYS_TIME)
    assert inbound_event_ids(conn) == set()


def test_each_inbound_batch_reads_old_events_on_the_applied_at_index(database_url: str, db: Database) -> None:
    # GIVEN 50,000 inbound events, most of them recent, 2,000 applied long ago, in batches of
    # ten sharing one applied_at as the processor writes them, and fresh statistics
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO delivery.inbound_event (identity, kind, received_at, occurred_at, applied_at,"
            " action, outcome)"
            " SELECT 'test:' || g, 'sms.received', t, t, t, 'reply', 'linked'"
            " FROM generate_series(1, 50000) g,"
            " LATERAL (SELECT now() - make_interval(days => CASE WHEN (g / 10) % 25 = 1 THEN 100 ELSE 5 END,"
            " secs => g / 10) AS t) w"
        )
        conn.execute("ANALYZE delivery.inbound_event")
    [entry] = [t for t in PURGED_TABLES if t.table == "inbound_event"]
    statement = db.sql(entry.statement, RETENTION_SQL)
    for after_at in (None, datetime.now(UTC) - timedelta(days=100)):
        params = {
            "horizon": datetime.now(UTC) - timedelta(days=90),
            "after_at": after_at,
            "after_id": 0 if after_at is None else 25_000,
            "batch_size": 200,
        }
        # WHEN the planner plans a batch (the first, and one from a cursor)
        with psycopg.connect(database_url, cursor_factory=ClientCursor) as conn:
            [(explained,)] = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchall()
        scans = [n for n in plan_nodes(explained[0]["Plan"]) if n["Node Type"].endswith("Scan")]
        # THEN the page is an index range scan on applied_at from the cursor, the deletes find
        # their rows by key, and the table is never read whole
        [page] = [n for n in scans if n.get("Index Name") == "inbound_event_applied_idx"]
        assert "applied_at <" in page["Index Cond"] and "applied_at >=" in page["Index Cond"]
        assert {n.get("Index Name") for n in scans if n.get("Relation Name") == "inbound_event"} == {
            "inbound_event_applied_idx",
            "inbound_event_pkey",
        }
