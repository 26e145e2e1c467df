"""`proactive-delivery prefs show|set` against a real PostgreSQL."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from proactive_delivery.adapters.postgres import Database, PostgresStore
from proactive_delivery.app.verdict import judge
from proactive_delivery.core.policy import resolve
from proactive_delivery.settings import policy_defaults_from_env
from proactive_delivery_tools.cli import main
from tests.support.db import MINIMAL
from tests.support.policy import ALL_CHANNELS

POLICY_VARIABLES = ("DEFAULT_CHANNELS", "DEFAULT_TIMEZONE", "QUIET_HOURS", "MAX_MESSAGES_PER_DAY")


@pytest.fixture(autouse=True)
def no_policy_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This shell sets none of the policy's defaults unless a test does."""
    for name in POLICY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield


def show(database_url: str, contractor: int, capsys: Any) -> dict[str, str]:
    """`prefs show` as {label: the rest of the line}; a label printed twice keeps both lines."""
    assert main(["--database-url", database_url, "prefs", "show", str(contractor)]) == 0
    lines: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines()[1:]:
        match = re.match(r"^  (\S.{15}) (.*)$", line)
        if match:
            label, rest = match.group(1).strip(), match.group(2).strip()
            lines[label] = f"{lines[label]}\n{rest}" if label in lines else rest
    return lines


def pipeline_view(database_url: str, message: int) -> tuple[str, str | None]:
    """The time zone and the skip reason (if any) the pipeline's own verdict gives a message:
    the runtime's facts query, resolve and judge, every channel configured."""
    db = Database(lambda: database_url)
    try:
        [facts] = PostgresStore(db).policy_inputs("proactive", [message])
    finally:
        db.close()
    defaults = policy_defaults_from_env(os.environ)
    prefs = resolve(facts.preferences, defaults, facts.contractor_timezone, known=ALL_CHANNELS.names)
    decision = judge(facts, now=datetime.now(UTC), defaults=defaults, channels=ALL_CHANNELS).decision
    return prefs.zone.key, decision.reason if decision.action == "skip" else None


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


def test_prefs_show_says_sms_is_opted_out_when_the_platform_says_so(
    database_url: str, capsys: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor without a preference row whose platform row has sms_opt_in = false
    contractor = make_contractor(sms_opt_in=False)
    # WHEN prefs show runs
    lines = show(database_url, contractor, capsys)
    # THEN sms reads opted out, from the platform's column, and no channel is left open
    assert lines["opted out"].startswith("sms ")
    assert "from contractors.sms_opt_in = false" in lines["opted out"]
    assert lines["channels"].startswith("sms ") and "DEFAULT_CHANNELS is not set" in lines["channels"]
    assert lines["open channels"] == "none: every message is skipped (opted_out)"
    # AND that is what the pipeline decides for the contractor's messages
    assert pipeline_view(database_url, make_message(contractor))[1] == "opted_out"


def test_prefs_show_takes_the_time_zone_from_the_platform_without_one_of_ours(
    database_url: str, capsys: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor whose platform time zone is Asia/Tokyo, and no preference row
    contractor = make_contractor(timezone="Asia/Tokyo")
    # WHEN prefs show runs THEN the zone in effect is Tokyo, from the platform's column
    lines = show(database_url, contractor, capsys)
    assert re.fullmatch(r"Asia/Tokyo +from contractors\.timezone \(the platform's\)", lines["timezone"])
    assert lines["opted out"] == "no"
    # AND the pipeline resolves the same zone and skips nothing as opted out
    assert pipeline_view(database_url, make_message(contractor))[0] == "Asia/Tokyo"
    # AND a zone of our own wins over the platform's
    assert (
        main(["--database-url", database_url, "prefs", "set", str(contractor), "--timezone", "Europe/London"])
        == 0
    )
    capsys.readouterr()
    lines = show(database_url, contractor, capsys)
    assert re.fullmatch(r"Europe/London +from delivery\.contractor_preferences", lines["timezone"])
    assert pipeline_view(database_url, make_message(contractor))[0] == "Europe/London"


def test_prefs_show_falls_back_to_the_default_for_a_platform_zone_that_is_not_one(
    database_url: str, capsys: Any, make_contractor: Any, make_message: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN DEFAULT_TIMEZONE set in this shell and a platform time zone that is not a zone name
    monkeypatch.setenv("DEFAULT_TIMEZONE", "America/Chicago")
    contractor = make_contractor(timezone="Central Time")
    # WHEN prefs show runs THEN the default is in effect, and the line says why
    lines = show(database_url, contractor, capsys)
    assert lines["timezone"].startswith("America/Chicago ")
    assert "from DEFAULT_TIMEZONE as set in this shell" in lines["timezone"]
    assert "contractors.timezone 'Central Time' is not an IANA zone" in lines["timezone"]
    assert pipeline_view(database_url, make_message(contractor))[0] == "America/Chicago"


@pytest.mark.parametrize("window", ["none", "00:00-00:00"])
def test_quiet_hours_that_start_when_they_end_read_none(
    database_url: str, capsys: Any, make_contractor: Any, window: str
) -> None:
    contractor = str(make_contractor())
    assert main(["--database-url", database_url, "prefs", "set", contractor, "--quiet-hours", window]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  quiet hours +none +from delivery\.contractor_preferences$", out, re.MULTILINE), out
    assert "00:00-00:00" not in out


def test_default_quiet_hours_of_none_from_this_shell_read_none(
    database_url: str, capsys: Any, make_contractor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIET_HOURS", "00:00-00:00")
    lines = show(database_url, make_contractor(), capsys)
    assert re.fullmatch(r"none +from QUIET_HOURS as set in this shell", lines["quiet hours"])
    assert re.fullmatch(
        r"3 +from the built-in default \(MAX_MESSAGES_PER_DAY is not set in this shell\)",
        lines["max per day"],
    )


def test_a_channel_opted_out_in_our_row_is_named_with_its_source_and_the_rest_stay_open(
    database_url: str, capsys: Any, conn: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN email then sms preferred, email opted out at the provider, and SMS off on the platform too
    contractor = make_contractor(sms_opt_in=False)
    conn.execute(
        "INSERT INTO delivery.contractor_preferences (contractor_id, channels, opted_out_channels,"
        " opted_out_at, opt_out_source)"
        " VALUES (%s, '{email,sms,web_chat}', '{email}', '2026-05-01 12:00:00+00', 'twilio')",
        (contractor,),
    )
    # WHEN prefs show runs THEN each blocked channel is named with where its opt-out comes from
    lines = show(database_url, contractor, capsys)
    email, sms = lines["opted out"].splitlines()
    assert (
        email.startswith("email ")
        and "delivery.contractor_preferences, changed 2026-05-01 12:00:00 UTC by twilio (opted_out_channels)"
        in email
    )
    assert sms.startswith("sms ") and "contractors.sms_opt_in = false" in sms
    assert (
        lines["channels"].startswith("email,sms,web_chat ")
        and "from delivery.contractor_preferences" in lines["channels"]
    )
    assert lines["open channels"].startswith("web_chat ")
    # AND the pipeline does not skip the contractor's messages as opted out (web chat is open)
    assert pipeline_view(database_url, make_message(contractor))[1] is None


def test_a_bad_default_in_this_shell_is_one_line_and_changes_nothing(
    database_url: str, capsys: Any, conn: Any, make_contractor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_TIMEZONE", "Mars/Base")
    contractor = str(make_contractor())
    assert main(["--database-url", database_url, "prefs", "set", contractor, "--max-per-day", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DEFAULT_TIMEZONE" in err[0]
    assert conn.execute("SELECT count(*) FROM delivery.contractor_preferences").fetchone()[0] == 0


def test_prefs_show_on_a_platform_without_the_contact_rule_columns(
    platform_database: Any, capsys: Any
) -> None:
    # GIVEN the seed document's platform tables (no contractors.timezone, no sms_opt_in)
    url = platform_database(MINIMAL)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO contractors (first_name) VALUES ('Ana') RETURNING id").fetchone()
    assert row is not None
    # WHEN prefs show runs THEN the defaults are in effect and nothing is opted out
    lines = show(url, int(row[0]), capsys)
    assert lines["opted out"] == "no"
    assert lines["timezone"].startswith("America/New_York ") and "DEFAULT_TIMEZONE" in lines["timezone"]
    assert lines["quiet hours"].startswith("21:00-08:00 ")


def test_a_keyword_opt_out_and_a_suppression_are_shown_and_opt_in_lifts_both(
    database_url: str, capsys: Any, conn: Any, make_contractor: Any
) -> None:
    # GIVEN SMS opted out by a keyword STOP (the processor's per-channel entry) and e-mail
    # suppressed after a permanent bounce, web chat last in the order
    contractor = make_contractor()
    conn.execute(
        "INSERT INTO delivery.contractor_preferences (contractor_id, channels, opted_out_channels,"
        " opted_out_at, opt_out_source, opt_out_sources, suppressed_channels)"
        " VALUES (%s, '{sms,email,web_chat}', '{sms}',"
        " '2026-05-01 12:00:00+00', 'keyword',"
        """ '{"sms": {"opted_out": true, "source": "keyword", "at": "2026-05-01T08:00:00-04:00"}}',"""
        """ '{"email": {"reason": "bounced", "code": "Permanent:General"}}')""",
        (contractor,),
    )
    # WHEN prefs show runs
    lines = show(database_url, contractor, capsys)
    # THEN SMS names the keyword and its time (in UTC), e-mail its suppression, web chat is open
    assert lines["opted out"].startswith("sms ")
    assert "changed 2026-05-01 12:00:00 UTC by keyword (opted_out_channels)" in lines["opted out"]
    assert lines["suppressed"].startswith("email ") and "bounced" in lines["suppressed"]
    assert lines["open channels"].startswith("web_chat ")
    # WHEN the operator opts the contractor in
    assert main(["--database-url", database_url, "prefs", "set", str(contractor), "--opt-in"]) == 0
    capsys.readouterr()
    # THEN both are lifted, and the SMS entry says the operator opted in (an older STOP
    # processed late cannot undo it)
    row = conn.execute(
        "SELECT opted_out_channels, suppressed_channels, opt_out_sources -> 'sms' ->> 'source',"
        " (opt_out_sources -> 'sms' ->> 'opted_out')::boolean FROM delivery.contractor_preferences"
        " WHERE contractor_id = %s",
        (contractor,),
    ).fetchone()
    assert row == ([], {}, "operator", False)
    assert "suppressed" not in show(database_url, contractor, capsys)
