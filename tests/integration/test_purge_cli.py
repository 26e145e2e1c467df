"""`proactive-delivery purge [--dry-run]`: the purge function's code from an operator's shell,
with the retention in effect printed and a real run refused until a retention is named."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from proactive_delivery_tools import cli
from tests.support.retention import attempt_delivery_ids, delivery_ids, finished_row


@pytest.fixture
def old_rows(conn: psycopg.Connection[Any], make_message: Callable[..., int]) -> dict[str, int]:
    """A message sent 100 days ago (the platform's row sent), one skipped 100 days ago that
    the platform still has due, one sent yesterday."""
    sent = make_message()
    conn.execute(
        "UPDATE ai_proactive_messages SET sent_at = (now() AT TIME ZONE 'UTC') - interval '100 days'"
        " WHERE id = %s",
        (sent,),
    )
    return {
        "sent": sent,
        "sent row": finished_row(conn, "proactive", sent, "sent", days_ago=100, attempts=2),
        "tombstone": finished_row(
            conn, "proactive", make_message(), "skipped", days_ago=100, reason="opted_out"
        ),
        "recent": finished_row(conn, "proactive", make_message(), "sent", days_ago=1, attempts=1),
    }


@pytest.fixture(autouse=True)
def _no_retention_in_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETENTION_DAYS", raising=False)
    monkeypatch.delenv("PURGE_BATCH_SIZE", raising=False)


def run(capsys: Any, database_url: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--database-url", database_url, "purge", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_real_purge_needs_a_retention_named_and_changes_nothing_without_one(
    conn: psycopg.Connection[Any], database_url: str, old_rows: dict[str, int], capsys: Any
) -> None:
    before = delivery_ids(conn)
    # WHEN the operator runs purge with neither --retention-days nor RETENTION_DAYS
    code, out, err = run(capsys, database_url)
    # THEN it refuses in one line (the stack may keep more than the default) and deletes nothing
    assert (code, out) == (2, "")
    [line] = err.strip().splitlines()
    assert "--retention-days N or RETENTION_DAYS" in line and "--dry-run" in line
    assert delivery_ids(conn) == before


def test_the_dry_run_prints_the_retention_in_effect_and_what_would_go(
    conn: psycopg.Connection[Any], database_url: str, old_rows: dict[str, int], capsys: Any
) -> None:
    before = (delivery_ids(conn), attempt_delivery_ids(conn))
    # WHEN a dry run runs without a retention named
    code, out, _ = run(capsys, database_url, "--dry-run")
    # THEN it says which retention it used and where from, what a purge would delete and
    # what it keeps, and nothing changed
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("retention 90 days (the default): finished rows older than 20")
    assert lines[1] == (
        "would delete: attempt_log 2, inbound_event 0, message_state 1 (in 2 batches, rolled back)"
    )
    assert lines[2].startswith("kept past the horizon: message_state 1 (messages the platform still has due")
    assert (delivery_ids(conn), attempt_delivery_ids(conn)) == before


def test_a_purge_by_hand_deletes_what_the_function_would(
    conn: psycopg.Connection[Any],
    database_url: str,
    old_rows: dict[str, int],
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN RETENTION_DAYS in the shell, as the stack's functions have it
    monkeypatch.setenv("RETENTION_DAYS", "90")
    # WHEN purge runs, as JSON
    code, out, _ = run(capsys, database_url, "--json")
    report = json.loads(out)
    # THEN the old sent row went with its attempts; the tombstone and the recent row stay
    assert code == 0
    assert report["deleted"] == {"message_state": 1, "attempt_log": 2, "inbound_event": 0}
    assert report["kept"] == {"message_state": 1, "inbound_event": 0}
    assert (report["retention_days"], report["retention_source"], report["dry_run"]) == (
        90,
        "RETENTION_DAYS",
        False,
    )
    assert delivery_ids(conn) == {old_rows["tombstone"], old_rows["recent"]}
    # AND `show` of the purged message says why there is no state, instead of "not seen yet"
    assert cli.main(["--database-url", database_url, "show", f"proactive:{old_rows['sent']}"]) == 0
    shown = capsys.readouterr().out
    assert "none: sent on the platform at" in shown and "purged RETENTION_DAYS after it ended" in shown
    # WHEN it runs again with a longer retention named on the command line THEN it says so
    code, out, _ = run(capsys, database_url, "--retention-days", "120")
    assert code == 0 and out.startswith("retention 120 days (--retention-days)")
    assert "deleted: attempt_log 0, inbound_event 0, message_state 0" in out


@pytest.mark.parametrize(
    ("argv", "environ", "said"),
    [
        (["--retention-days", "10"], {}, "--retention-days must be at least 30, got 10"),
        ([], {"RETENTION_DAYS": "7"}, "RETENTION_DAYS must be at least 30, got 7"),
        (["--dry-run"], {"RETENTION_DAYS": "soon"}, "RETENTION_DAYS must be an integer, got 'soon'"),
        (["--retention-days", "90", "--max-seconds", "0"], {}, "--max-seconds must be > 0"),
    ],
)
def test_a_bad_retention_is_one_line_naming_where_it_came_from(
    conn: psycopg.Connection[Any],
    database_url: str,
    old_rows: dict[str, int],
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    environ: dict[str, str],
    said: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    before = delivery_ids(conn)
    code, out, err = run(capsys, database_url, *argv)
    assert (code, out) == (2, "")
    [line] = err.strip().splitlines()
    assert said in line
    assert delivery_ids(conn) == before


def test_a_purge_out_of_time_stops_between_batches_and_says_so(
    conn: psycopg.Connection[Any], database_url: str, old_rows: dict[str, int], capsys: Any
) -> None:
    before = delivery_ids(conn)
    code, out, _ = run(capsys, database_url, "--retention-days", "90", "--max-seconds", "0.000001")
    assert code == 0
    assert "deleted: message_state 0 (in 0 batches)" in out
    assert out.strip().endswith("stopped after --max-seconds 1e-06: run it again to go on")
    assert delivery_ids(conn) == before
