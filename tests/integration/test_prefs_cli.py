"""`proactive-delivery prefs show|set` against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from proactive_delivery_tools.cli import main


def test_prefs_set_then_show(database_url: str, capsys: Any, make_contractor: Any) -> None:
    # GIVEN a contractor without a preference row
    contractor = str(make_contractor())
    # WHEN an operator sets channels, zone, window, cap and opts out
    code = main(
        [
            "--database-url",
            database_url,
            "prefs",
            "set",
            contractor,
            "--channels",
            "email,sms",
            "--timezone",
            "Asia/Tokyo",
            "--quiet-hours",
            "22:00-07:30",
            "--max-per-day",
            "2",
            "--opt-out",
        ]
    )
    # THEN it succeeds and shows the values in effect
    out = capsys.readouterr().out
    assert code == 0
    assert "email,sms" in out and "Asia/Tokyo" in out and "22:00-07:30" in out
    assert "all channels" in out and "by operator" in out
    # AND opting back in keeps the rest
    assert main(["--database-url", database_url, "prefs", "set", contractor, "--opt-in"]) == 0
    assert main(["--database-url", database_url, "prefs", "show", contractor]) == 0
    out = capsys.readouterr().out
    assert "opted out        no" in out and "Asia/Tokyo" in out


def test_prefs_show_without_a_row_prints_the_defaults(
    database_url: str, capsys: Any, make_contractor: Any
) -> None:
    assert main(["--database-url", database_url, "prefs", "show", str(make_contractor())]) == 0
    out = capsys.readouterr().out
    assert "the defaults apply" in out and "21:00-08:00" in out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--channels", "sms,fax", "unknown_channel"),
        ("--timezone", "Mars/Base", "invalid_timezone"),
        ("--quiet-hours", "9pm-8am", "invalid_quiet_hours"),
    ],
)
def test_prefs_set_rejects_bad_values_and_writes_nothing(
    database_url: str, capsys: Any, conn: Any, option: str, value: str, message: str
) -> None:
    # GIVEN a bad value WHEN set THEN a clear error, exit code 2, and no row written
    assert main(["--database-url", database_url, "prefs", "set", "9", option, value]) == 2
    assert message in capsys.readouterr().err
    assert conn.execute("SELECT count(*) FROM delivery.contractor_preferences").fetchone()[0] == 0


def test_prefs_set_without_changes_is_an_error(database_url: str, capsys: Any) -> None:
    assert main(["--database-url", database_url, "prefs", "set", "9"]) == 2
    assert "nothing to change" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["show"], ["set", "--max-per-day", "2"], ["set", "--opt-out"]])
def test_prefs_for_a_contractor_the_platform_does_not_have_is_an_error_and_writes_nothing(
    database_url: str, capsys: Any, conn: Any, make_contractor: Any, command: list[str]
) -> None:
    # GIVEN a contractor id that is not in the platform's contractors table
    missing = make_contractor() + 1000
    # WHEN prefs show / set runs for it
    action, *options = command
    code = main(["--database-url", database_url, "prefs", action, str(missing), *options])
    # THEN one line on stderr naming the cause, exit 2, no traceback, and no row written
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in captured.err
    assert f"contractor {missing} does not exist in the platform's contractors table" in err[0]
    assert captured.out == ""
    assert conn.execute("SELECT count(*) FROM delivery.contractor_preferences").fetchone()[0] == 0


def test_prefs_set_does_not_touch_a_stale_row_of_a_contractor_the_platform_removed(
    database_url: str, capsys: Any, conn: Any
) -> None:
    # GIVEN a preference row left behind for a contractor who is no longer on the platform
    conn.execute(
        "INSERT INTO delivery.contractor_preferences (contractor_id, max_per_day) VALUES (987654, 1)"
    )
    # WHEN an operator changes it THEN it is refused and the row keeps its value
    assert main(["--database-url", database_url, "prefs", "set", "987654", "--max-per-day", "9"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert conn.execute("SELECT max_per_day FROM delivery.contractor_preferences").fetchone() == (1,)
