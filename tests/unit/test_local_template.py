"""Reading template.yaml and schedule expressions for the local runtime (no network, no DB)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proactive_delivery.core.errors import ConfigError
from proactive_delivery_tools.local.schedule import ScheduleExpression
from proactive_delivery_tools.local.template import LocalTemplate, load_env_file

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_template_is_read_as_deployed() -> None:
    # GIVEN the shipped template WHEN it is read locally
    template = LocalTemplate(ROOT / "template.yaml")
    # THEN queues, redrive, schedule and event source come out with the declared values
    queue = template.queues["DeliveryQueue"]
    assert (queue.name, queue.visibility_timeout, queue.retention_seconds) == (
        "local-DeliveryQueue",
        360,
        345600,
    )
    assert (queue.dead_letter_target, queue.max_receive_count) == ("DeliveryDLQ", 18)
    evaluate = template.functions["EvaluateFunction"]
    assert evaluate.timeout == 300 and evaluate.memory_mb == 512
    assert evaluate.module_file == ROOT / "functions" / "evaluate" / "app.py"
    schedules = {(s.expression, str(s.input)) for s in evaluate.schedules}
    assert schedules == {
        ("cron(5 * * * ? *)", str({"sources": ["proactive"]})),
        ("rate(5 minutes)", str({"sources": ["followup"]})),
    }
    (event,) = template.functions["DeliverFunction"].sqs_events
    assert (event.queue, event.batch_size, event.batching_window) == ("DeliveryQueue", 10, 0)
    assert event.maximum_concurrency == 5 and event.report_batch_item_failures


def test_environment_resolves_parameters_and_local_queue_urls() -> None:
    # GIVEN the template with a parameter override and a bound local queue
    template = LocalTemplate(ROOT / "template.yaml", {"RetryWindowHours": "4", "Stage": "local"})
    template.bind_queue("DeliveryQueue", "http://127.0.0.1:1/123456789012/q", "arn:aws:sqs:us-east-1:1:q")
    # WHEN the deliver function's environment is resolved
    env = template.function_environment("DeliverFunction")
    # THEN Globals are in it, with parameters and the queue URL filled in
    # (the retry window's row of the RetryBudget mapping, Fn::FindInMap resolved)
    assert env["MAX_RECEIVE_COUNT"] == "16"
    assert env["RETRY_WINDOW_HOURS"] == "4"
    assert env["STAGE"] == "local"
    assert env["DELIVERY_QUEUE_URL"] == "http://127.0.0.1:1/123456789012/q"
    assert env["DATABASE_SECRET_ARN"] == ""  # deployed-only: the env file supplies DATABASE_URL
    assert template.queues["DeliveryQueue"].max_receive_count == 16


def test_unknown_parameter_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="undeclared parameter"):
        LocalTemplate(ROOT / "template.yaml", {"NoSuchParameter": "1"})


def test_template_without_resources_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Parameters: {}\n")
    with pytest.raises(ConfigError, match="no Resources"):
        LocalTemplate(path)


def test_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        LocalTemplate(path)


def test_env_file_in_sam_format_is_read_and_bad_ones_refused(tmp_path: Path) -> None:
    good = tmp_path / "env.json"
    good.write_text(json.dumps({"Parameters": {"A": "1"}, "DeliverFunction": {"B": None}}))
    assert load_env_file(good) == {"Parameters": {"A": "1"}, "DeliverFunction": {"B": ""}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Parameters": "A=1"}))
    with pytest.raises(ConfigError, match="must map"):
        load_env_file(bad)
    with pytest.raises(ConfigError, match="cannot read env file"):
        load_env_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("rate(5 minutes)", "2030-01-01T00:00:00", "2030-01-01T00:05:00"),
        ("rate(1 hour)", "2030-01-01T00:00:00", "2030-01-01T01:00:00"),
        ("cron(0/15 * * * ? *)", "2030-01-01T00:07:00", "2030-01-01T00:15:00"),
        ("cron(0 9 ? * MON-FRI *)", "2030-01-05T10:00:00", "2030-01-07T09:00:00"),  # Sat -> Mon
        ("cron(30 6 1 JAN ? *)", "2030-01-01T07:00:00", "2031-01-01T06:30:00"),
    ],
)
def test_schedule_expressions_fire_when_eventbridge_would(expression: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    fire = ScheduleExpression.parse(expression).next_after(start, anchor=start)
    assert fire == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(0 minutes)", "at least 1"),
        ("rate(1 minutes)", "EventBridge wants"),
        ("rate(5 minute)", "EventBridge wants"),
        ("cron(0 9 * * *)", "six fields"),
        ("cron(0 9 * * MON *)", "exactly one"),
        ("cron(0 9 L * ? *)", "not supported"),
        ("cron(61 * * * ? *)", "outside"),
        ("every hour", "not a rate"),
    ],
)
def test_bad_schedule_expressions_are_clear_errors(expression: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ScheduleExpression.parse(expression)


@pytest.mark.parametrize(("value", "enabled"), [("true", True), ("false", False)])
def test_delivery_enabled_parameter_switches_schedules_and_event_source_locally(
    value: str, enabled: bool
) -> None:
    # GIVEN the shipped template with DeliveryEnabled overridden
    template = LocalTemplate(ROOT / "template.yaml", {"DeliveryEnabled": value})
    # WHEN the schedules and the SQS event source are read
    schedules = template.functions["EvaluateFunction"].schedules
    (event,) = template.functions["DeliverFunction"].sqs_events
    # THEN all of them follow the switch (the local runtime skips what is disabled)
    assert len(schedules) == 2
    assert {s.enabled for s in schedules} == {enabled}
    assert event.enabled is enabled
