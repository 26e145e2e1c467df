"""Alarms that reach a person, and the pause switch, in template.yaml.

An alarm whose action cannot publish fails silently: the alarm turns red in the console and
the only trace of the failed notification is a line in its history. So the chain is checked
link by link: every alarm action is a topic of this template; that topic is unencrypted or
encrypted with a customer managed key of this template whose policy lets CloudWatch use it
(an AWS managed key such as alias/aws/sns cannot: its policy cannot be changed); the topic
policy lets CloudWatch publish for the alarm's name. Then every failure mode the runbook
names has an alarm that watches the right thing. No network, no AWS account.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Any

import pytest

from proactive_delivery.adapters import telemetry
from proactive_delivery.core.models import SOURCES
from tests.unit.test_template import ROOT, as_list, function_properties, load_template, ref_target

CLOUDWATCH = "cloudwatch.amazonaws.com"
KMS_PUBLISH_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey*")
STACK = "teststack"
ACCOUNT = "111122223333"
REGION = "eu-west-1"
PSEUDO = {
    "AWS::StackName": STACK,
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
}
Watched = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def substitute(value: Any) -> str:
    """A string or a !Sub of pseudo parameters only, as CloudFormation would render it."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in PSEUDO:
        return PSEUDO[value["Ref"]]
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    return re.sub(r"\$\{([^}]+)\}", lambda m: PSEUDO[m.group(1)], value["Fn::Sub"])


def alarm_arn(props: dict[str, Any]) -> str:
    return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{substitute(props['AlarmName'])}"


def arn_like(pattern: str, value: str) -> bool:
    # ArnLike: * and ? wildcards, per ARN segment; fnmatch is close enough for our patterns.
    return fnmatch.fnmatchcase(value, pattern)


def statement_conditions_hold(statement: dict[str, Any], *, source_arn: str) -> bool:
    """Whether the Condition block of a policy statement lets a request from `source_arn`
    (an alarm of account ACCOUNT) through. Only the operators the template uses."""
    for operator, tests in statement.get("Condition", {}).items():
        for key, expected in tests.items():
            actual = {"aws:SourceArn": source_arn, "aws:SourceAccount": ACCOUNT}.get(key)
            assert actual is not None, f"condition key {key} is not one this test models"
            patterns = [substitute(v) for v in as_list(expected)]
            if operator == "StringEquals":
                ok = actual in patterns
            elif operator == "ArnLike":
                ok = any(arn_like(p, actual) for p in patterns)
            else:
                raise AssertionError(f"condition operator {operator} is not one this test models")
            if not ok:
                return False
    return True


def grants(statement: dict[str, Any], actions: tuple[str, ...]) -> bool:
    given = as_list(statement.get("Action", []))
    return statement.get("Effect") == "Allow" and all(a in given or "kms:*" in given for a in actions)


def service_principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal", {})
    return [str(p) for p in as_list(principal.get("Service", []))] if isinstance(principal, dict) else []


def topic_key(template: dict[str, Any], topic: dict[str, Any]) -> dict[str, Any] | None:
    """The AWS::KMS::Key resource that encrypts a topic, None when it is unencrypted; fails
    for a key that is not a customer managed key of this template (alias/aws/sns)."""
    key_ref = topic["Properties"].get("KmsMasterKeyId")
    if key_ref is None:
        return None
    target = ref_target(key_ref)
    assert target is not None, f"the topic is encrypted with {key_ref!r}, a key this stack does not manage"
    resource = template["Resources"][target]
    if resource["Type"] == "AWS::KMS::Alias":
        target = ref_target(resource["Properties"]["TargetKeyId"])
        assert target is not None
        resource = template["Resources"][target]
    assert resource["Type"] == "AWS::KMS::Key", target
    return resource


def watched(props: dict[str, Any]) -> list[Watched]:
    """(namespace, metric, dimensions) of every metric an alarm reads."""
    if "MetricName" in props:
        dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
        return [(props["Namespace"], props["MetricName"], dims)]
    found = []
    for query in props["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            found.append((metric["Namespace"], metric["MetricName"], dims))
    return found


def expression(props: dict[str, Any]) -> str:
    [returned] = [q for q in props.get("Metrics", []) if q.get("ReturnData", True)]
    return str(returned["Expression"])


def custom_metrics(props: dict[str, Any]) -> Iterator[tuple[str, frozenset[str]]]:
    for namespace, name, dims in watched(props):
        if namespace == telemetry.NAMESPACE:
            yield name, frozenset(dims)


# --------------------------------------------------------------------------- #
# Every alarm can reach a person                                              #
# --------------------------------------------------------------------------- #


def test_every_alarm_action_topic_is_publishable_by_cloudwatch(template: dict[str, Any]) -> None:
    found = alarms(template)
    assert found, "expected the alarms of docs/operations.md"
    for name, props in found.items():
        # GIVEN an alarm and the topics its actions publish to
        actions = [*props.get("AlarmActions", []), *props.get("OKActions", [])]
        assert props.get("AlarmActions"), f"{name} notifies nobody"
        for action in actions:
            topic_id = ref_target(action)
            assert topic_id is not None, f"{name}: action {action!r} is not a topic of this template"
            topic = template["Resources"][topic_id]
            assert topic["Type"] == "AWS::SNS::Topic", name
            # WHEN the topic's key is followed
            key = topic_key(template, topic)
            # THEN the topic is unencrypted, or its key's policy lets this alarm use it
            if key is not None:
                statements = key["Properties"]["KeyPolicy"]["Statement"]
                assert any(
                    CLOUDWATCH in service_principals(s)
                    and grants(s, KMS_PUBLISH_ACTIONS)
                    and statement_conditions_hold(s, source_arn=alarm_arn(props))
                    for s in statements
                ), f"{name}: the key of {topic_id} does not let CloudWatch publish for this alarm"
            # AND a topic policy lets CloudWatch publish to it for this alarm
            policies = [
                r["Properties"]
                for r in template["Resources"].values()
                if r["Type"] == "AWS::SNS::TopicPolicy" and action in r["Properties"]["Topics"]
            ]
            assert any(
                CLOUDWATCH in service_principals(s)
                and "sns:Publish" in as_list(s["Action"])
                and s["Effect"] == "Allow"
                and s["Resource"] == action
                and statement_conditions_hold(s, source_arn=alarm_arn(props))
                for policy in policies
                for s in policy["PolicyDocument"]["Statement"]
            ), f"{name}: no topic policy lets CloudWatch publish to {topic_id}"


def test_the_alarm_key_is_rotated_and_administered_by_the_account(template: dict[str, Any]) -> None:
    # GIVEN the key of the alarm topic
    key = topic_key(template, template["Resources"]["AlarmTopic"])
    assert key is not None, "the alarm topic is encrypted (docs/security.md says why with a stack key)"
    props = key["Properties"]
    # THEN it rotates, and the account root administers it (so IAM policies apply to it)
    assert props["EnableKeyRotation"] is True
    statements = props["KeyPolicy"]["Statement"]
    admin = [s for s in statements if s.get("Principal", {}).get("AWS")]
    assert [substitute(s["Principal"]["AWS"]) for s in admin] == [f"arn:aws:iam::{ACCOUNT}:root"]
    # AND the service principal gets only what a publisher needs, never kms:*
    [cloudwatch] = [s for s in statements if CLOUDWATCH in service_principals(s)]
    assert sorted(as_list(cloudwatch["Action"])) == sorted(KMS_PUBLISH_ACTIONS)
    assert set(cloudwatch["Condition"]) == {"StringEquals", "ArnLike"}


def test_a_topic_under_the_aws_managed_key_is_refused_by_the_check(template: dict[str, Any]) -> None:
    # GIVEN the alarm topic as it was: encrypted with alias/aws/sns
    topic = {"Type": "AWS::SNS::Topic", "Properties": {"KmsMasterKeyId": "alias/aws/sns"}}
    # WHEN its key is looked up THEN the check fails: CloudWatch cannot use that key
    with pytest.raises(AssertionError, match="a key this stack does not manage"):
        topic_key(template, topic)


def test_a_key_policy_without_the_cloudwatch_grant_fails_the_check() -> None:
    # GIVEN a key policy that only lets the account administer the key
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
        "Action": "kms:*",
        "Resource": "*",
    }
    # THEN it does not count as letting CloudWatch publish (kms:* for root is not for services)
    assert not (CLOUDWATCH in service_principals(statement) and grants(statement, KMS_PUBLISH_ACTIONS))
    # AND a grant scoped to another stack's alarms does not let this stack's alarms through
    scoped = {
        "Effect": "Allow",
        "Principal": {"Service": CLOUDWATCH},
        "Action": list(KMS_PUBLISH_ACTIONS),
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:other-*"}},
    }
    assert not statement_conditions_hold(scoped, source_arn=f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:x")


def test_every_alarm_links_a_runbook_section(template: dict[str, Any]) -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for name, props in alarms(template).items():
        # GIVEN an alarm's description WHEN its runbook anchor is read THEN the section exists
        anchor = props["AlarmDescription"].split("docs/operations.md#")[1].split()[0]
        assert f'<a id="{anchor}"></a>' in runbook, name


def test_every_custom_metric_an_alarm_reads_is_emitted_by_the_code(template: dict[str, Any]) -> None:
    emitted = {(m.name, frozenset(m.all_dimensions)) for m in telemetry.METRICS}
    for name, props in alarms(template).items():
        for metric in custom_metrics(props):
            # GIVEN a custom metric an alarm reads THEN it is in the registry (name and dimensions)
            assert metric in emitted, f"{name} reads {metric}, which nothing emits"
        for namespace, _, dims in watched(props):
            if namespace == telemetry.NAMESPACE:
                # AND it is the service's metric, not another deployment's
                assert dims["service"] == "proactive-delivery", name


# --------------------------------------------------------------------------- #
# Each failure mode has an alarm                                              #
# --------------------------------------------------------------------------- #


def _only(template: dict[str, Any], predicate: Any, what: str) -> dict[str, Any]:
    matching = [props for props in alarms(template).values() if predicate(props)]
    assert len(matching) == 1, f"expected one alarm for {what}, found {len(matching)}"
    return matching[0]


def _reads(props: dict[str, Any], namespace: str, metric: str, **dims: Any) -> bool:
    return any(
        (ns, name) == (namespace, metric) and all(d.get(k) == v for k, v in dims.items())
        for ns, name, d in watched(props)
    )


def test_each_failure_mode_has_an_alarm(template: dict[str, Any]) -> None:
    dlq_name = {"Fn::GetAtt": ["DeliveryDLQ", "QueueName"]}
    queue_name = {"Fn::GetAtt": ["DeliveryQueue", "QueueName"]}
    # DLQ not empty: any visible message in the dead-letter queue
    dlq = _only(
        template,
        lambda p: _reads(p, "AWS/SQS", "ApproximateNumberOfMessagesVisible", QueueName=dlq_name),
        "a non-empty DLQ",
    )
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    # An old unsent message, and evaluate not reporting at all counts as one
    oldest = _only(template, lambda p: _reads(p, "ProactiveDelivery", "OldestUnsentAgeSeconds"), "old unsent")
    assert oldest["Threshold"] == {"Ref": "OldestUnsentThresholdSeconds"}
    assert oldest["TreatMissingData"] == "breaching"
    # Evaluate errors
    evaluate = {"Ref": "EvaluateFunction"}
    _only(template, lambda p: _reads(p, "AWS/Lambda", "Errors", FunctionName=evaluate), "evaluate errors")
    # Deliver error rate: errors over invocations of the deliver function
    deliver = {"Ref": "DeliverFunction"}
    rate = _only(
        template, lambda p: _reads(p, "AWS/Lambda", "Errors", FunctionName=deliver), "deliver errors"
    )
    assert _reads(rate, "AWS/Lambda", "Invocations", FunctionName=deliver)
    assert rate["Threshold"] == {"Ref": "DeliverErrorRatePercent"}
    # Queue age
    age = _only(
        template,
        lambda p: _reads(p, "AWS/SQS", "ApproximateAgeOfOldestMessage", QueueName=queue_name),
        "delivery queue age",
    )
    assert age["Threshold"] == {"Ref": "DeliveryQueueAgeThresholdSeconds"}
    # Messages failed (any reason): the per-invocation total over 15 minutes
    failed = _only(template, lambda p: _reads(p, "ProactiveDelivery", "MessagesFailed"), "messages failed")
    assert set(watched(failed)[0][2]) == {"service"}  # every reason class, not one of them
    assert (failed["Statistic"], failed["Period"], failed["EvaluationPeriods"]) == ("Sum", 900, 1)
    assert failed["Threshold"] == {"Ref": "FailedMessagesThreshold"}
    assert failed["ComparisonOperator"] == "GreaterThanThreshold"
    assert failed["TreatMissingData"] == "notBreaching"
    # Stalled delivery: backlog of every source, nothing delivered, for N minutes in a row
    stalled = _only(template, lambda p: _reads(p, "ProactiveDelivery", "UnsentBacklog"), "stalled delivery")
    sources = {d["source"] for _, name, d in watched(stalled) if name == "UnsentBacklog"}
    assert sources == set(SOURCES)
    assert _reads(stalled, "ProactiveDelivery", "MessagesDelivered")
    text = expression(stalled)
    # ... missing readings are filled (a gauge between runs, no delivery = 0 delivered)
    for query in stalled["Metrics"]:
        if "MetricStat" in query:
            assert f"FILL({query['Id']}, 0)" in text or f"FILL(FILL({query['Id']}, REPEAT), 0)" in text
    assert {q["MetricStat"]["Period"] for q in stalled["Metrics"] if "MetricStat" in q} == {60}
    assert stalled["EvaluationPeriods"] == stalled["DatapointsToAlarm"] == {"Ref": "StalledDeliveryMinutes"}
    parameter = template["Parameters"]["StalledDeliveryMinutes"]
    # EvaluationPeriods x Period may not exceed one day
    assert int(parameter["MaxValue"]) * 60 <= 86_400
    assert 1 <= int(parameter["MinValue"]) <= int(parameter["Default"])


def test_the_inbound_edge_has_its_alarms(template: dict[str, Any]) -> None:
    # A spike of refused signatures: the per-request total of 401s, over 5 minutes
    spike = _only(
        template, lambda p: _reads(p, "ProactiveDelivery", "InboundSignatureRejections"), "refused signatures"
    )
    assert set(watched(spike)[0][2]) == {"service"}
    assert (spike["Statistic"], spike["Period"], spike["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert spike["Threshold"] == {"Ref": "InboundRejectedSignaturesThreshold"}
    assert template["Parameters"]["InboundRejectedSignaturesThreshold"]["Default"] == 25  # docs/inbound.md
    assert spike["ComparisonOperator"] == "GreaterThanThreshold"
    assert spike["TreatMissingData"] == "notBreaching"
    # Inbound DLQ not empty: any visible message in the inbound dead-letter queue
    dlq = _only(
        template,
        lambda p: _reads(
            p,
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            QueueName={"Fn::GetAtt": ["InboundDLQ", "QueueName"]},
        ),
        "a non-empty inbound DLQ",
    )
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")


# --------------------------------------------------------------------------- #
# The pause switch                                                            #
# --------------------------------------------------------------------------- #


def test_delivery_enabled_switches_both_schedules_and_the_event_source(template: dict[str, Any]) -> None:
    # GIVEN the DeliveryEnabled parameter and its condition
    parameter = template["Parameters"]["DeliveryEnabled"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("true", ["true", "false"])
    assert template["Conditions"]["DeliveryIsEnabled"] == {"Fn::Equals": [{"Ref": "DeliveryEnabled"}, "true"]}
    # WHEN the evaluate schedules and the deliver event source are read
    evaluate = function_properties(template, "EvaluateFunction")["Events"]
    deliver = function_properties(template, "DeliverFunction")["Events"]
    schedules = {name: e["Properties"] for name, e in evaluate.items() if e["Type"] == "Schedule"}
    # THEN every schedule and the SQS event source follow it
    assert set(schedules) == {"ProactiveSchedule", "FollowupSchedule"}
    for name, props in schedules.items():
        assert props["State"] == {"Fn::If": ["DeliveryIsEnabled", "ENABLED", "DISABLED"]}, name
        assert "Enabled" not in props, name  # State and Enabled together are ambiguous
    [sqs] = [e["Properties"] for e in deliver.values() if e["Type"] == "SQS"]
    assert sqs["Enabled"] == {"Fn::If": ["DeliveryIsEnabled", True, False]}


def test_outputs_name_what_the_pause_switch_flips(template: dict[str, Any]) -> None:
    # GIVEN the stack outputs WHEN the switch's targets are looked up
    outputs = template["Outputs"]
    # THEN they name SAM's generated rules and mapping (<Function><Event>)
    assert outputs["ProactiveScheduleRuleName"]["Value"] == {"Ref": "EvaluateFunctionProactiveSchedule"}
    assert outputs["FollowupScheduleRuleName"]["Value"] == {"Ref": "EvaluateFunctionFollowupSchedule"}
    assert outputs["DeliverEventSourceMappingId"]["Value"] == {"Ref": "DeliverFunctionDeliveryQueueEvent"}
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}
