"""`proactive-delivery prefs show|set` against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from proactive_delivery.cli import main


def test_prefs_set_then_show(database_url: str, capsys: Any) -> None:
    # GIVEN no preference row WHEN an operator sets channels, zone, window, cap and opts out
    code = main(
        [
            "--database-url",
            database_url,
            "prefs",
            "set",
            "42",
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
    assert main(["--database-url", database_url, "prefs", "set", "42", "--opt-in"]) == 0
    assert main(["--database-url", database_url, "prefs", "show", "42"]) == 0
    out = capsys.readouterr().out
    assert "opted out        no" in out and "Asia/Tokyo" in out


def test_prefs_show_without_a_row_prints_the_defaults(database_url: str, capsys: Any) -> None:
    assert main(["--database-url", database_url, "prefs", "show", "7"]) == 0
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
