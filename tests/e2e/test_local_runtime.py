"""Faithfulness of `proactive-delivery local`: what the template declares is what the local
runtime does (a changed copy of template.yaml changes its behaviour, no code change), and a
run with injected faults leaves the ledger balanced."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proactive_delivery_tools import cli
from proactive_delivery_tools.local.runtime import LocalRuntime, RunResult, RuntimeOptions
from proactive_delivery_tools.local.schedule import (
    ScheduleClock,
    ScheduledTarget,
    ScheduleExpression,
    Scheduler,
)
from proactive_delivery_tools.local.seed import seed
from proactive_delivery_tools.local.template import LocalTemplate
from tests.pipeline import retry_env

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = (ROOT / "template.yaml").read_text()


def template_copy(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """template.yaml with some text replaced, next to the real functions/ (CodeUri)."""
    text = TEMPLATE
    for old, new in replacements:
        assert old in text, f"{old!r} is not in template.yaml"
        text = text.replace(old, new)
    (tmp_path / "functions").symlink_to(ROOT / "functions")
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


def run(tmp_path: Path, database_url: str, template: Path, **options: Any) -> RunResult:
    defaults: dict[str, Any] = {
        "template": template,
        "env_vars": ROOT / "events" / "env.local.json",
        "once": True,
        "count": 0,
        "live": False,
        "latency": 0.0,
        "database_url": database_url,
        "max_wait": 120,
        "run_dir": tmp_path / "run",
    }
    defaults.update(options)
    return LocalRuntime(RuntimeOptions(**defaults), out=io.StringIO()).run()


def seed_messages(database_url: str, count: int, contractors: int = 10) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed(conn, count=count, contractors=contractors)


def test_batch_size_in_the_template_sets_the_invocation_batch_size(tmp_path: Path, database_url: str) -> None:
    # GIVEN a template whose SQS event declares BatchSize 3 (the shipped one says 10)
    template = template_copy(tmp_path, ("BatchSize: !Ref DeliverBatchSize", "BatchSize: 3"))
    seed_messages(database_url, 30)
    # WHEN the local runtime runs one pass
    result = run(tmp_path, database_url, template)
    # THEN no invocation got more than 3 records, some got exactly 3, every sent message
    # came through one of them, and the ledger balances
    sizes = result.summary["batch_sizes"]["DeliverFunction"]
    assert max(sizes) == 3
    assert result.summary["states"]["sent"] >= 20
    assert sum(sizes) >= result.summary["states"]["sent"]
    assert not result.summary["unbalanced"]
    assert result.exit_code == 0


def test_batch_size_parameter_default_is_honoured(tmp_path: Path, database_url: str) -> None:
    # GIVEN the shipped template (BatchSize 10, MaximumConcurrency 5) and 60 messages
    template = template_copy(tmp_path)
    seed_messages(database_url, 60)
    # WHEN the runtime runs one pass
    result = run(tmp_path, database_url, template)
    # THEN batches of up to 10 were invoked, never above, with several invocations at once
    assert max(result.summary["batch_sizes"]["DeliverFunction"]) == 10
    assert result.summary["peak_concurrency"] >= 2
    assert result.exit_code == 0


@pytest.mark.parametrize("max_receive_count", [2, 3])
def test_the_templates_retry_budget_is_the_queues_and_the_functions(
    tmp_path: Path, database_url: str, max_receive_count: int
) -> None:
    # GIVEN a template whose RetryBudget row for the default window says `max_receive_count`,
    # an env file whose retry window (1-second steps) allows that many attempts, and a
    # webhook that always 503s
    template = template_copy(
        tmp_path,
        (
            '"24": {Attempts: 8, MaxReceiveCount: 18}',
            f'"24": {{Attempts: {max_receive_count}, MaxReceiveCount: {max_receive_count}}}',
        ),
    )
    env_file = tmp_path / "env.json"
    parameters = json.loads((ROOT / "events" / "env.local.json").read_text())["Parameters"]
    parameters.update(retry_env(max_receive_count))
    parameters.pop("MAX_RECEIVE_COUNT")  # the template's mapping decides it
    # The retry budget alone: an always-failing provider would otherwise open its circuit
    # (tests/e2e/test_pace.py) and its messages would wait instead of spending attempts.
    parameters["CIRCUIT_BREAKER"] = "off"
    env_file.write_text(json.dumps({"Parameters": parameters}))
    seed_messages(database_url, 4, contractors=4)
    # WHEN the runtime runs one pass
    runtime = LocalRuntime(
        RuntimeOptions(
            template=template,
            env_vars=env_file,
            once=True,
            count=0,
            live=False,
            fail_rate=1.0,
            status=503,
            latency=0.0,
            database_url=database_url,
            max_wait=120,
            run_dir=tmp_path / "run",
        ),
        out=io.StringIO(),
    )
    result = runtime.run()
    # THEN each reachable message was POSTed exactly max_receive_count times (to the webhook
    # receiver, or for SMS to the Twilio stand-in), then failed with its last error, and its
    # queue message went to the DLQ
    assert runtime.receiver is not None and runtime.twilio is not None
    posts = Counter(r.webhook_id for r in runtime.receiver.requests)
    posts.update(r.idempotency_key for r in runtime.twilio.requests)
    assert posts and set(posts.values()) == {max_receive_count}
    assert result.summary["states"].get("failed") == len(posts)
    assert result.summary["dlq_messages"] == len(posts)
    assert all(r["reason"] for r in result.summary["reasons"])
    assert not result.summary["unbalanced"]


class ManualClock(ScheduleClock):
    def __init__(self, start: datetime) -> None:
        super().__init__(1.0, start=start)
        self.current = start

    def now(self) -> datetime:
        return self.current


@pytest.mark.parametrize(("expression", "fires"), [("rate(1 hour)", 3), ("rate(10 minutes)", 18)])
def test_schedule_in_the_template_sets_how_often_evaluate_runs(
    tmp_path: Path, expression: str, fires: int
) -> None:
    # GIVEN a template whose evaluate schedule is `expression`
    template = LocalTemplate(
        template_copy(tmp_path, ("Schedule: !Ref ProactiveScheduleExpression", f"Schedule: {expression}"))
    )
    (schedule,) = [
        s for s in template.functions["EvaluateFunction"].schedules if s.input == {"sources": ["proactive"]}
    ]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = ManualClock(start)
    scheduler = Scheduler(
        [ScheduledTarget("EvaluateFunction", schedule.name, ScheduleExpression.parse(schedule.expression),
                         schedule.input, start)],
        clock,
    )  # fmt: skip
    # WHEN three scheduled hours pass, a minute at a time
    fired = []
    for minute in range(1, 181):
        clock.current = start + timedelta(minutes=minute)
        fired += scheduler.due()
    # THEN evaluate fired as often as the expression says, with the schedule's Input
    assert len(fired) == fires
    assert fired[0].input == {"sources": ["proactive"]}


def test_the_daily_purge_fires_once_a_day_and_once_in_a_single_pass(
    tmp_path: Path, database_url: str
) -> None:
    # GIVEN the shipped template: its purge runs on its own daily schedule (06:35 UTC)
    path = template_copy(tmp_path)
    template = LocalTemplate(path)
    (schedule,) = template.functions["PurgeFunction"].schedules
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = ManualClock(start)
    target = ScheduledTarget(
        "PurgeFunction", schedule.name, ScheduleExpression.parse(schedule.expression), schedule.input, start
    )
    scheduler = Scheduler([target], clock)
    fired = []
    for hour in range(1, 3 * 24 + 1):
        clock.current = start + timedelta(hours=hour)
        fired += [(clock.current, t.name) for t in scheduler.due()]
    # THEN it fires once a day, in the hour after 06:35 UTC
    assert [at.hour for at, _ in fired] == [7, 7, 7]
    # WHEN the local runtime makes one pass over fresh sample data (as `make demo` does)
    seed_messages(database_url, 20)
    runtime = LocalRuntime(
        RuntimeOptions(
            template=path,
            env_vars=ROOT / "events" / "env.local.json",
            once=True,
            count=0,
            live=False,
            latency=0.0,
            database_url=database_url,
            max_wait=120,
            run_dir=tmp_path / "run",
        ),
        out=io.StringIO(),
    )
    result = runtime.run()
    # THEN the purge ran once among the schedules, without an error, and deleted nothing
    assert result.summary["invocations"]["PurgeFunction"] == 1
    assert result.summary["function_errors"]["PurgeFunction"] == 0
    report = runtime.functions["PurgeFunction"].last_result
    assert (report["deleted"], report["stopped_early"]) == (
        {"message_state": 0, "attempt_log": 0, "inbound_event": 0},
        False,
    )
    assert result.summary["states"]["sent"] >= 15 and not result.summary["unbalanced"]
    assert result.exit_code == 0


def test_speed_compresses_scheduled_time_in_a_running_runtime(tmp_path: Path, database_url: str) -> None:
    # GIVEN a template firing evaluate every 10 minutes for proactive messages (and hourly
    # for follow-ups), and time running 600x faster
    template = template_copy(
        tmp_path,
        ("Schedule: !Ref ProactiveScheduleExpression", "Schedule: rate(10 minutes)"),
        ("Schedule: !Ref FollowupScheduleExpression", "Schedule: rate(1 hour)"),
    )
    # WHEN the runtime runs (not --once) for 3.5 real seconds = 35 scheduled minutes
    runtime = LocalRuntime(
        RuntimeOptions(
            template=template,
            env_vars=ROOT / "events" / "env.local.json",
            once=False,
            speed=600,
            count=0,
            live=False,
            database_url=database_url,
            run_for=3.5,
            run_dir=tmp_path / "run",
        ),
        out=io.StringIO(),
    )
    result = runtime.run()
    # THEN evaluate ran on the schedule: at scheduled minutes 10, 20 and 30
    assert result.summary["invocations"]["EvaluateFunction"] == 3
    assert result.exit_code == 0


@pytest.mark.parametrize(("status", "outcome"), [(429, "sent"), (500, "sent"), (400, "failed")])
def test_local_once_with_injected_faults_leaves_the_ledger_balanced(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    outcome: str,
) -> None:
    # GIVEN sample data seeded through the command line
    monkeypatch.chdir(ROOT)
    assert cli.main(["--database-url", database_url, "seed", "--count", "40", "--contractors", "10"]) == 0
    # WHEN `proactive-delivery local --once` runs with 30% of webhook calls answered `status`
    code = cli.main(
        ["--database-url", database_url, "local", "--once", "--count", "0", "--no-live",
         "--fail-rate", "0.3", "--status", str(status), "--latency", "0"]
    )  # fmt: skip
    output = capsys.readouterr().out
    # THEN every seeded message is sent, skipped or failed with a reason, or deferred with a time
    assert code == 0, output
    assert "unaccounted for" in output
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT m.id, s.state, coalesce(s.reason, s.last_error), s.next_attempt_at, m.sent_at "
            "FROM ai_proactive_messages m LEFT JOIN delivery.message_state s "
            "ON s.source = 'proactive' AND s.source_id = m.id"
        ).fetchall()
    # (40 seeded, and the next messages the platform writes once the scenario's STOP and
    # landline came back, when they did)
    assert len(rows) == 40 + next_messages(output)
    for message_id, state, reason, next_attempt_at, sent_at in rows:
        assert state in ("sent", "skipped", "failed", "deferred"), (message_id, state)
        if state == "sent":
            assert sent_at is not None
        if state in ("skipped", "failed"):
            assert reason, message_id
        if state == "deferred":
            assert next_attempt_at is not None
    states = Counter(r[1] for r in rows)
    # ... transient faults are retried until sent; a permanent 400 fails at once
    assert states[outcome] > 0
    if outcome == "failed":
        # nothing is waiting for a retry: a 400 is final at once
        assert states["failed"] + states["sent"] + states["skipped"] + states["deferred"] == len(rows)
        rejected = [r for r in rows if r[1] == "failed" and r[2] == "rejected"]
        assert rejected
    # ... and the receiver showed deliveries without a full phone number
    assert "+1312555" not in output and "+1415555" not in output


def _postgres_processes_under(directory: Path) -> list[str]:
    """PostgreSQL processes whose data directory is inside `directory`: only the cluster
    this test's own command started (others on this machine are none of its business)."""
    ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if str(directory) in line]


def test_local_once_without_database_url_starts_and_stops_its_own_postgres(tmp_path: Path) -> None:
    # GIVEN no DATABASE_URL, and a temporary directory of this test's own for the command's
    # throwaway cluster (the postgres user, which runs the cluster when we are root, must be
    # able to reach it, which pytest's private tmp_path does not allow)
    scratch = Path(tempfile.mkdtemp(prefix="pd-test-local-pg-"))
    scratch.chmod(0o755)
    try:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["TMPDIR"] = str(scratch)
        command = [
            sys.executable,
            "-m",
            "proactive_delivery_tools.cli",
            "local",
            "--once",
            "--count",
            "20",
            "--no-live",
        ]
        # WHEN `proactive-delivery local --once` runs to the end as its own process
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
        )
        # THEN it delivered the sample from a cluster it started in that directory ...
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "throwaway PostgreSQL" in proc.stdout
        assert "unaccounted for" in proc.stdout
        # ... said what it seeded, follow-ups included, and the ledger holds exactly that
        seeded = re.search(r"seeded (\d+) sample messages and (\d+) follow-ups into ", proc.stdout)
        assert seeded is not None, proc.stdout
        messages, followups = int(seeded[1]), int(seeded[2])
        assert messages == 20 and followups > 0
        total, _buckets, unaccounted = parse_ledger(proc.stdout)
        assert (total, unaccounted) == (messages + followups + next_messages(proc.stdout), 0)
        # ... and neither that cluster nor its data is left (moto and the receiver are
        # threads of the command's process, gone with it)
        assert _postgres_processes_under(scratch) == []
        assert [p.name for p in scratch.iterdir() if p.name.startswith("proactive-delivery-pg-")] == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def next_messages(output: str) -> int:
    """How many messages the platform wrote after the first pass, as the run printed it (the
    way-back scenario: to the contractor whose STOP was applied, to the landline's)."""
    found = re.search(r"the platform wrote (\d+) more messages", output)
    return int(found[1]) if found else 0


def parse_ledger(output: str) -> tuple[int, list[tuple[str, int, list[tuple[str, int]]]], int]:
    """The summary's ledger as printed (plain lines: two spaces per outline level):
    (total, [(line, count, [(sub-line, count), ...]), ...], unaccounted)."""
    lines = output[output.rindex("\nsummary\n") + len("\nsummary\n") :].splitlines()
    # Labels and values have single spaces inside; the column between them has two or more.
    pattern = re.compile(r"^(?P<indent> *)(?P<label>\S.*?) {2,}(?P<value>\S.*)$")
    rows = [(len(m["indent"]), m["label"], m["value"]) for m in map(pattern.match, lines) if m]
    assert rows[0][:2] == (2, "messages in the ledger"), rows[0]
    total = int(rows[0][2])
    buckets: list[tuple[str, int, list[tuple[str, int]]]] = []
    unaccounted = None
    for indent, label, value in rows[1:]:
        if indent == 2:
            assert label == "unaccounted for", f"the ledger ends with its verdict, not {label!r}"
            unaccounted = int(value)
            break
        if indent == 4:
            buckets.append((label, int(value), []))
        else:
            assert indent == 6, (indent, label)
            buckets[-1][2].append((label, int(value)))
    assert unaccounted is not None
    return total, buckets, unaccounted


def test_the_summary_adds_up_every_ledger_row_in_exactly_one_line(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the demo's sample (every channel, an opted-out contractor, one in quiet hours, a
    # follow-up cancelled on the platform) and a webhook that refuses 30% of the calls (400)
    monkeypatch.chdir(ROOT)
    assert cli.main(["--database-url", database_url, "seed", "--count", "60", "--contractors", "12"]) == 0
    # WHEN the pipeline runs once and prints its summary
    code = cli.main(
        ["--database-url", database_url, "local", "--once", "--count", "0", "--no-live",
         "--fail-rate", "0.3", "--status", "400", "--latency", "0"]
    )  # fmt: skip
    output = capsys.readouterr().out
    assert code == 0, output
    total, buckets, unaccounted = parse_ledger(output)
    # THEN the total is the sum of its lines, and each line the sum of its breakdown
    assert total == sum(count for _, count, _ in buckets), output
    for label, count, breakdown in buckets:
        if breakdown:
            assert count == sum(n for _, n in breakdown), (label, output)
    # AND the total is every due message of the platform's two tables, each counted once
    with psycopg.connect(database_url) as conn:
        due = conn.execute(
            "SELECT (SELECT count(*) FROM ai_proactive_messages)"
            " + (SELECT count(*) FROM contractor_followup_schedules"
            "    WHERE scheduled_time <= (now() AT TIME ZONE 'UTC'))"
        ).fetchone()
        by_state = conn.execute("SELECT state, count(*) FROM delivery.message_state GROUP BY 1")
        states = dict(by_state.fetchall())
    assert due is not None and total == due[0]
    lines = {label: count for label, count, _ in buckets}
    assert {k: v for k, v in lines.items() if k in states} == states
    # AND the cancelled follow-up is a line of its own, the failures have their reason, and
    # nothing is unaccounted for
    assert lines.get("cancelled on the platform", 0) >= 1
    failed = [b for b in buckets if b[0] == "failed"]
    assert failed and failed[0][2] and all(reason for reason, _ in failed[0][2])
    assert unaccounted == 0


def way_back_lines(output: str) -> dict[str, int]:
    """The summary's lines after the ledger's verdict (two spaces of indentation): what came
    back, as printed."""
    lines = output[output.rindex("\nsummary\n") :].splitlines()
    pattern = re.compile(r"^  (?P<label>\S.*?) {2,}(?P<value>\d+)$")
    found = {m["label"]: int(m["value"]) for m in map(pattern.match, lines) if m}
    return found


def test_the_demo_brings_back_receipts_a_stop_a_reply_and_a_landline(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the demo's sample seeded through the command line: among it the way-back
    # scenario, a contractor whose handset replies STOP, one who answers a check-in and one
    # whose number is a landline (seed.INBOUND_SCENARIO)
    monkeypatch.chdir(ROOT)
    assert cli.main(["--database-url", database_url, "seed", "--count", "30", "--contractors", "10"]) == 0
    # WHEN the local runtime makes its pass, as `make demo` does (SMS through the Twilio
    # stand-in, which calls the inbound edge's Function URL back)
    out = io.StringIO()
    runtime = LocalRuntime(
        RuntimeOptions(
            template=ROOT / "template.yaml",
            env_vars=ROOT / "events" / "env.local.json",
            once=True,
            count=0,
            live=False,
            latency=0.0,
            database_url=database_url,
            max_wait=120,
            run_dir=tmp_path / "run",
        ),
        out=out,
    )
    result = runtime.run()
    output = out.getvalue()
    assert result.exit_code == 0, output
    twilio, edge = runtime.twilio, runtime.function_urls["InboundFunction"]
    assert twilio is not None
    texted = Counter(r.form["To"] for r in twilio.delivered())
    # THEN every status callback (sent, then delivered or undelivered) and both replies were
    # signed as Twilio signs and accepted by the edge: nothing refused
    posted = twilio.callback_log.posted
    assert sum(1 for c, _ in posted if c.kind == "status") == 2 * sum(texted.values())
    assert sorted(c.params["Body"] for c, _ in posted if c.kind == "incoming") == [
        "4 - two bids out, one signed",
        "STOP",
    ]
    assert {status for _, status in posted} <= {200, 204}
    assert set(edge.statuses) <= {200, 204} and edge.requests == len(posted)
    with psycopg.connect(database_url) as conn:

        def contractor(key: str) -> int:
            row = conn.execute("SELECT id FROM contractors WHERE email LIKE %s", (f"%.{key}@example.com",))
            return int(row.fetchone()[0])  # type: ignore[index]

        def messages(contractor_id: int) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT s.state, s.channel, coalesce(s.reason, s.last_error), s.delivery_status,"
                " s.delivery_error_code, m.contractor_response, m.response_received_at"
                " FROM ai_proactive_messages m JOIN delivery.message_state s"
                " ON s.source = 'proactive' AND s.source_id = m.id WHERE m.contractor_id = %s ORDER BY m.id",
                (contractor_id,),
            ).fetchall()

        stop, check_in, landline = contractor("stop"), contractor("check_in"), contractor("landline")
        # ... the contractor who replied STOP is opted out of SMS (ours and the platform's
        # sms_opt_in) and receives nothing after: their next message is skipped opted_out,
        # and Twilio was asked to text them once
        stop_messages = messages(stop)
        assert [m[:3] for m in stop_messages] == [("sent", "sms", None), ("skipped", None, "opted_out")]
        assert texted["+14155550181"] == 1
        opt_out = conn.execute(
            "SELECT keyword, outcome FROM delivery.inbound_event"
            " WHERE action = 'opt_out' AND %s = ANY(contractor_ids)",
            (stop,),
        ).fetchall()
        assert opt_out == [("STOP", "opted_out")]
        sms_opt_in = conn.execute("SELECT sms_opt_in FROM contractors WHERE id = %s", (stop,)).fetchone()
        assert sms_opt_in == (False,)
        # ... the check-in's answer is in the platform's own response columns
        ((state, channel, _, delivered, _, response, received_at),) = messages(check_in)
        assert (state, channel, delivered) == ("sent", "sms", "delivered")
        assert response == "4 - two bids out, one signed" and received_at is not None
        # ... the landline came back undelivered (30006), SMS is suppressed for that number,
        # and the contractor's next message went by e-mail, the next channel of their order
        first, following = messages(landline)
        assert first[:5] == ("sent", "sms", None, "undelivered", "30006")
        assert following[:2] == ("sent", "email")
        assert texted["+14155550183"] == 1
        suppressed = conn.execute(
            "SELECT suppressed_channels -> 'sms' ->> 'reason' FROM delivery.contractor_preferences"
            " WHERE contractor_id = %s",
            (landline,),
        ).fetchone()
        assert suppressed == ("landline_or_unreachable_carrier",)
        # ... and the four counts the summary prints are the database's
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM delivery.message_state"
            "  WHERE delivery_status IN ('delivered', 'read')),"
            " (SELECT count(*) FROM delivery.message_state"
            "  WHERE delivery_status IN ('undelivered', 'failed')),"
            " (SELECT count(DISTINCT delivery_id) FROM delivery.inbound_event"
            "  WHERE action = 'reply' AND outcome = 'linked'),"
            " (SELECT count(DISTINCT c) FROM delivery.inbound_event, unnest(contractor_ids) AS c"
            "  WHERE action = 'opt_out' AND outcome = 'opted_out')"
        ).fetchone()
    printed = way_back_lines(output)
    assert counts is not None
    assert (printed["delivered"], printed["undelivered"], printed["replied"], printed["opted out"]) == counts
    # every SMS Twilio accepted was delivered but the landline's; one reply, one STOP
    assert counts == (sum(texted.values()) - 1, 1, 1, 1)
    assert "+1415555" not in output and "+1312555" not in output
