"""`proactive-delivery pause | resume | status` against a CloudFormation stack in moto.

The stack is what `sam deploy` makes of template.yaml, reduced to what the switch touches:
the two schedule rules and the SQS event source mapping under the logical ids SAM gives
them (<Function><Event>), the functions they point at (moto creates a Lambda function
without Docker as long as nothing invokes it) and the queues.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from proactive_delivery_tools import cli
from proactive_delivery_tools.ops.switch import PARTLY, PAUSED, RUNNING, Stack, Trigger, set_enabled

STACK = "pd-test"
REGION = "us-east-1"


def _function(role: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": "python3.12",
            "Handler": "app.lambda_handler",
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "Code": {"ZipFile": "def lambda_handler(event, context):\n    return None\n"},
        },
    }


def _schedule(expression: str, sources: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "ScheduleExpression": expression,
            "State": {"Fn::If": ["DeliveryIsEnabled", "ENABLED", "DISABLED"]},
            "Targets": [
                {
                    "Arn": {"Fn::GetAtt": ["EvaluateFunction", "Arn"]},
                    "Id": "EvaluateFunctionTarget",
                    "Input": json.dumps({"sources": [sources]}),
                }
            ],
        },
    }


# The daily purge's rule, as the template declares it: no State from DeliveryEnabled.
PURGE_SCHEDULE = {
    "Type": "AWS::Events::Rule",
    "Properties": {
        "ScheduleExpression": "cron(35 6 * * ? *)",
        "Targets": [
            {"Arn": {"Fn::GetAtt": ["PurgeFunction", "Arn"]}, "Id": "PurgeFunctionTarget", "Input": "{}"}
        ],
    },
}


STACK_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {
        "DeliveryEnabled": {"Type": "String", "Default": "true", "AllowedValues": ["true", "false"]}
    },
    "Conditions": {"DeliveryIsEnabled": {"Fn::Equals": [{"Ref": "DeliveryEnabled"}, "true"]}},
    "Resources": {
        "FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        },
        "DeliveryDLQ": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"{STACK}-DeliveryDLQ"}},
        "DeliveryQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": f"{STACK}-DeliveryQueue",
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["DeliveryDLQ", "Arn"]},
                    "maxReceiveCount": 5,
                },
            },
        },
        "EvaluateFunction": _function("FunctionRole"),
        "DeliverFunction": _function("FunctionRole"),
        "EvaluateFunctionProactiveSchedule": _schedule("rate(1 hour)", "proactive"),
        "EvaluateFunctionFollowupSchedule": _schedule("rate(5 minutes)", "followup"),
        "PurgeFunction": _function("FunctionRole"),
        "PurgeFunctionDailySchedule": PURGE_SCHEDULE,
        "DeliverFunctionDeliveryQueueEvent": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": {"Fn::GetAtt": ["DeliveryQueue", "Arn"]},
                "FunctionName": {"Ref": "DeliverFunction"},
                "BatchSize": 10,
                "Enabled": {"Fn::If": ["DeliveryIsEnabled", True, False]},
            },
        },
    },
}


class Aws:
    def __init__(self) -> None:
        self.cfn = boto3.client("cloudformation", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        self.lam = boto3.client("lambda", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)

    def physical(self, logical_id: str) -> str:
        resource = self.cfn.describe_stack_resource(StackName=STACK, LogicalResourceId=logical_id)
        return str(resource["StackResourceDetail"]["PhysicalResourceId"])

    def rule_states(self) -> dict[str, str]:
        return {
            name: self.events.describe_rule(Name=self.physical(name))["State"]
            for name in ("EvaluateFunctionProactiveSchedule", "EvaluateFunctionFollowupSchedule")
        }

    def purge_rule_state(self) -> str:
        return str(self.events.describe_rule(Name=self.physical("PurgeFunctionDailySchedule"))["State"])

    def mapping_state(self) -> str:
        uuid = self.physical("DeliverFunctionDeliveryQueueEvent")
        return str(self.lam.get_event_source_mapping(UUID=uuid)["State"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    for key, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    for name in ("STACK_NAME", "DELIVERY_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    # The tests run where no samconfig.toml is, unless one writes it.
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        clients = Aws()
        clients.cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(STACK_TEMPLATE))
        yield clients


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pause_disables_both_schedules_and_the_event_source_and_resume_enables_them(
    aws: Aws, capsys: Any
) -> None:
    # GIVEN a running stack
    assert aws.rule_states() == {
        "EvaluateFunctionProactiveSchedule": "ENABLED",
        "EvaluateFunctionFollowupSchedule": "ENABLED",
    }
    assert aws.mapping_state() == "Enabled"
    # WHEN the operator pauses it
    code, out, err = run(capsys, "pause", "--stack-name", STACK)
    # THEN every schedule rule and the deliver event source mapping are disabled
    assert (code, err) == (0, "")
    assert set(aws.rule_states().values()) == {"DISABLED"}
    assert aws.mapping_state() == "Disabled"
    assert f"Delivery switch: paused (stack {STACK})" in out
    assert "Nothing is queued or sent until `proactive-delivery resume`" in out
    # AND the stack was deployed with DeliveryEnabled=true, which a deploy would apply again
    assert "deploy with DeliveryEnabled=false to keep this state" in out
    # WHEN it resumes THEN all of them run again
    code, out, err = run(capsys, "resume", "--stack-name", STACK)
    assert (code, err) == (0, "")
    assert set(aws.rule_states().values()) == {"ENABLED"}
    assert aws.mapping_state() == "Enabled"
    assert f"Delivery switch: running (stack {STACK})" in out


def test_status_shows_running_paused_and_partly(aws: Aws, database_url: str, capsys: Any) -> None:
    def switch() -> dict[str, Any]:
        code, out, _ = run(capsys, "--database-url", database_url, "status", "--stack-name", STACK, "--json")
        assert code == 0
        return dict(json.loads(out)["switch"])

    # GIVEN the stack as deployed THEN status says running, naming each trigger
    state = switch()
    assert state["state"] == RUNNING
    assert [(t["kind"], t["logical_id"]) for t in state["triggers"]] == [
        ("event source", "DeliverFunctionDeliveryQueueEvent"),
        ("schedule", "EvaluateFunctionFollowupSchedule"),
        ("schedule", "EvaluateFunctionProactiveSchedule"),
        ("housekeeping", "PurgeFunctionDailySchedule"),
    ]
    assert state["deployed_delivery_enabled"] == "true"
    # WHEN only the follow-up schedule is disabled (by hand, in the console) THEN partly paused
    aws.events.disable_rule(Name=aws.physical("EvaluateFunctionFollowupSchedule"))
    assert switch()["state"] == PARTLY
    # WHEN pause runs THEN paused; the table form says so too
    assert run(capsys, "pause", "--stack-name", STACK)[0] == 0
    assert switch()["state"] == PAUSED
    code, out, _ = run(capsys, "--database-url", database_url, "status", "--stack-name", STACK)
    assert code == 0
    assert f"Delivery switch: paused (stack {STACK})" in out


def test_pause_and_resume_leave_the_daily_purge_alone(aws: Aws, database_url: str, capsys: Any) -> None:
    # GIVEN a running stack with its daily purge schedule
    assert aws.purge_rule_state() == "ENABLED"
    # WHEN the operator pauses it
    code, out, _ = run(capsys, "pause", "--stack-name", STACK)
    # THEN what queues and sends is off, the purge (which does neither) still runs, and the
    # stack reads as paused, the purge listed apart
    assert code == 0
    assert set(aws.rule_states().values()) == {"DISABLED"} and aws.mapping_state() == "Disabled"
    assert aws.purge_rule_state() == "ENABLED"
    assert f"Delivery switch: paused (stack {STACK})" in out
    [line] = [line for line in out.splitlines() if "PurgeFunctionDailySchedule" in line]
    assert "housekeeping" in line and "ENABLED" in line and "not switched" in line
    # WHEN the purge rule is disabled by hand and the stack resumed THEN resume does not
    # turn it on, and does not count it as a trigger still off
    aws.events.disable_rule(Name=aws.physical("PurgeFunctionDailySchedule"))
    code, out, _ = run(capsys, "resume", "--stack-name", STACK)
    assert code == 0
    assert aws.purge_rule_state() == "DISABLED"
    assert f"Delivery switch: running (stack {STACK})" in out
    assert "Deliveries and schedules run again" in out
    code, out, _ = run(capsys, "--database-url", database_url, "status", "--stack-name", STACK, "--json")
    assert json.loads(out)["switch"]["state"] == RUNNING


def test_status_finds_the_delivery_queue_from_the_stack(aws: Aws, database_url: str, capsys: Any) -> None:
    # GIVEN no DELIVERY_QUEUE_URL but a named stack WHEN status runs
    code, out, _ = run(capsys, "--database-url", database_url, "status", "--stack-name", STACK, "--json")
    # THEN the queues section is the stack's delivery queue and its DLQ
    status = json.loads(out)
    assert code == 0
    assert status["queues"]["delivery"]["url"].endswith(f"/{STACK}-DeliveryQueue")
    assert status["queues"]["dlq"]["url"].endswith(f"/{STACK}-DeliveryDLQ")


def test_stack_name_comes_from_the_environment_then_samconfig(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    # GIVEN samconfig.toml in the current directory naming the stack (as sam deploy reads it)
    (tmp_path / "samconfig.toml").write_text(
        f'version = 0.1\n[default.global.parameters]\nstack_name = "{STACK}"\n'
        '[prod.global.parameters]\nstack_name = "pd-prod"\n'
    )
    # WHEN pause runs without --stack-name THEN it pauses that stack
    code, out, _ = run(capsys, "pause")
    assert code == 0 and f"(stack {STACK})" in out
    assert aws.mapping_state() == "Disabled"
    # AND --config-env picks another environment's stack, which does not exist here
    code, _, err = run(capsys, "resume", "--config-env", "prod")
    assert code == 2
    assert "stack pd-prod: the stack does not exist" in err
    # AND STACK_NAME wins over samconfig.toml
    monkeypatch.setenv("STACK_NAME", "pd-other")
    code, _, err = run(capsys, "resume")
    assert code == 2 and "stack pd-other" in err
    assert aws.mapping_state() == "Disabled"


def test_no_stack_to_act_on_is_one_line(aws: Aws, capsys: Any) -> None:
    # GIVEN no --stack-name, no STACK_NAME and no samconfig.toml WHEN pause runs
    code, out, err = run(capsys, "pause")
    # THEN one line asks which stack, and nothing changed
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert "which stack? give --stack-name or STACK_NAME" in line
    assert aws.mapping_state() == "Enabled"


def test_a_stack_that_does_not_exist_is_one_line(aws: Aws, capsys: Any) -> None:
    code, _, err = run(capsys, "pause", "--stack-name", "no-such-stack")
    assert code == 2
    [line] = err.strip().splitlines()
    assert "stack no-such-stack: the stack does not exist in this account and region" in line
    assert "Traceback" not in err


def test_a_stack_without_triggers_is_refused(aws: Aws, capsys: Any) -> None:
    # GIVEN another application's stack (a queue, no schedule, no event source)
    aws.cfn.create_stack(
        StackName="unrelated",
        TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
    )
    code, _, err = run(capsys, "pause", "--stack-name", "unrelated")
    assert code == 2
    assert "has no schedule or event source mapping" in err


# --------------------------------------------------------------------------- #
# Order and waiting (fakes: what moto cannot show)                            #
# --------------------------------------------------------------------------- #


class FakeLambda:
    """An event source mapping that takes two reads to settle, as Lambda's does."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.states = ["Enabled"]

    def update_event_source_mapping(self, UUID: str, Enabled: bool) -> dict[str, Any]:
        self.calls.append(f"mapping {UUID} enabled={Enabled}")
        self.states = ["Disabling", "Disabling", "Disabled"] if not Enabled else ["Enabling", "Enabled"]
        return {}

    def get_event_source_mapping(self, UUID: str) -> dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"UUID": UUID, "State": state}


class FakeEvents:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.state: dict[str, str] = {}

    def disable_rule(self, Name: str) -> None:
        self.calls.append(f"disable {Name}")
        self.state[Name] = "DISABLED"

    def enable_rule(self, Name: str) -> None:
        self.calls.append(f"enable {Name}")
        self.state[Name] = "ENABLED"

    def describe_rule(self, Name: str) -> dict[str, Any]:
        return {"Name": Name, "State": self.state.get(Name, "ENABLED")}


def _stack() -> Stack:
    return Stack(
        name="s",
        triggers=(
            Trigger("event source", "DeliverFunctionDeliveryQueueEvent", "uuid-1", "Enabled"),
            Trigger("schedule", "EvaluateFunctionFollowupSchedule", "rule-f", "ENABLED"),
            Trigger("schedule", "EvaluateFunctionProactiveSchedule", "rule-p", "ENABLED"),
        ),
        queues={},
        delivery_enabled_parameter="true",
    )


def test_pause_stops_the_sender_first_and_waits_until_it_is_disabled() -> None:
    calls: list[str] = []
    lam, events = FakeLambda(calls), FakeEvents(calls)
    slept: list[float] = []
    # WHEN the switch is turned off
    after = set_enabled(events, lam, _stack(), enabled=False, sleep=slept.append, poll_seconds=0.5)
    # THEN the event source mapping (what sends) went first, then the schedules
    assert calls == ["mapping uuid-1 enabled=False", "disable rule-f", "disable rule-p"]
    # AND it waited, by polling, until the mapping said Disabled: no new invocation after this
    assert slept == [0.5, 0.5]
    assert after.state == PAUSED
    assert [t.state for t in after.triggers] == ["Disabled", "DISABLED", "DISABLED"]


def test_waiting_for_the_mapping_is_bounded() -> None:
    calls: list[str] = []

    class NeverSettles(FakeLambda):
        def get_event_source_mapping(self, UUID: str) -> dict[str, Any]:
            return {"UUID": UUID, "State": "Disabling"}

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    # GIVEN a mapping that stays Disabling WHEN paused with a 10 s wait
    after = set_enabled(
        FakeEvents(calls), NeverSettles(calls), _stack(), enabled=False, wait_seconds=10, sleep=sleep,
        clock=lambda: now[0],
    )  # fmt: skip
    # THEN it gives up after about 10 s and reports what it saw
    assert 10 <= now[0] <= 12
    assert after.triggers[0].state == "Disabling"
