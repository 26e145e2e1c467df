"""The dashboard and alarms in template.yaml against the metrics the code emits.

"Emitted by the code" is proactive_delivery.adapters.telemetry.METRICS: the handlers emit only
through it and it refuses anything unregistered (tested below), so the registry is the
code's own list, not a copy.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proactive_delivery.adapters import telemetry
from proactive_delivery.adapters.sqs_batch import BatchReport
from proactive_delivery.core.models import MessageKey, Outcome
from tests.unit.test_template import load_template

_SUB_VARIABLE = re.compile(r"\$\{[^}]+\}")
_SEARCH = re.compile(r"\{ProactiveDelivery,([^}]*)\}\s+MetricName=\"(\w+)\"")
Metric = tuple[str, frozenset[str]]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    [resource] = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    body = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    # Every ${...} sits inside a JSON string; a placeholder keeps the JSON valid.
    parsed: dict[str, Any] = json.loads(_SUB_VARIABLE.sub("X", body))
    return parsed


def widget_metrics(board: dict[str, Any]) -> list[list[Any] | dict[str, Any]]:
    return [m for w in board["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]


def custom_metrics_on(board: dict[str, Any]) -> set[Metric]:
    found: set[Metric] = set()
    for metric in widget_metrics(board):
        if isinstance(metric, dict):
            for dims, name in _SEARCH.findall(metric["expression"]):
                found.add((name, frozenset(dims.split(","))))
        elif metric[0] == telemetry.NAMESPACE:
            parts = [p for p in metric if not isinstance(p, dict)]
            found.add((parts[1], frozenset(parts[2::2])))
    return found


def registry() -> set[Metric]:
    return {(m.name, frozenset(m.all_dimensions)) for m in telemetry.METRICS}


def test_every_custom_metric_on_the_dashboard_is_emitted_and_every_emitted_one_is_shown(
    template: dict[str, Any],
) -> None:
    # GIVEN the dashboard's widgets and the code's metric registry
    shown = custom_metrics_on(dashboard(template))
    emitted = registry()
    # WHEN they are compared by name and dimension set
    # THEN no widget shows a metric the code does not emit
    assert shown - emitted == set()
    # AND every metric the code emits has a widget
    assert emitted - shown == set()


def test_dashboard_shows_queues_and_each_function(template: dict[str, Any]) -> None:
    # GIVEN the AWS metrics on the dashboard
    pairs = {
        (m[1], m[3])
        for m in widget_metrics(dashboard(template))
        if isinstance(m, list) and m[0] != "ProactiveDelivery"
    }
    body = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # THEN both queues' visible messages and oldest age are there
    for metric in ("ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"):
        assert {(metric, "X")} <= pairs
        assert f'"{metric}", "QueueName", "${{DeliveryQueue.QueueName}}"' in body
        assert f'"{metric}", "QueueName", "${{DeliveryDLQ.QueueName}}"' in body
    # AND each function's invocations, errors, duration and throttles
    for metric in ("Invocations", "Errors", "Duration", "Throttles"):
        for function in ("EvaluateFunction", "DeliverFunction", "InboundFunction"):
            assert f'"{metric}", "FunctionName", "${{{function}}}"' in body
    # AND the inbound queues, and how close the inbound function runs to its concurrency cap
    assert '"ApproximateNumberOfMessagesVisible", "QueueName", "${InboundQueue.QueueName}"' in body
    assert '"ApproximateNumberOfMessagesVisible", "QueueName", "${InboundDLQ.QueueName}"' in body
    assert '"ApproximateAgeOfOldestMessage", "QueueName", "${InboundQueue.QueueName}"' in body
    assert '"ConcurrentExecutions", "FunctionName", "${InboundFunction}"' in body


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_the_alarms_the_runbook_describes_exist_and_notify_the_topic(template: dict[str, Any]) -> None:
    # GIVEN the alarms in the template
    found = alarms(template)
    # THEN the twelve alarms of docs/operations.md exist
    assert set(found) == {
        "DlqNotEmptyAlarm",
        "OldestUnsentAlarm",
        "EvaluateErrorsAlarm",
        "DeliverErrorRateAlarm",
        "DeliveryQueueAgeAlarm",
        "MessagesFailedAlarm",
        "StalledDeliveryAlarm",
        "ProviderCircuitOpenAlarm",
        "InboundSignatureRejectionsAlarm",
        "InboundDlqNotEmptyAlarm",
        "InboundProcessorErrorsAlarm",
        "UndeliveredRateAlarm",
    }
    for name, props in found.items():
        # AND each notifies the alarm topic and links its runbook section
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        anchor = props["AlarmDescription"].split("docs/operations.md#")[1]
        assert f'<a id="{anchor}"></a>' in (template_root() / "docs" / "operations.md").read_text(), name
    # AND the thresholds are parameters
    assert found["OldestUnsentAlarm"]["Threshold"] == {"Ref": "OldestUnsentThresholdSeconds"}
    assert found["DeliveryQueueAgeAlarm"]["Threshold"] == {"Ref": "DeliveryQueueAgeThresholdSeconds"}
    # AND the custom metric an alarm watches is one the code emits
    oldest = found["OldestUnsentAlarm"]
    dims = frozenset(d["Name"] for d in oldest["Dimensions"])
    assert (oldest["MetricName"], dims) in registry()
    assert oldest["Namespace"] == telemetry.NAMESPACE


def test_the_dashboard_shows_every_alarm(template: dict[str, Any]) -> None:
    # GIVEN the dashboard's alarm status widget
    board = dashboard(template)
    body = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    [widget] = [w for w in board["widgets"] if w["type"] == "alarm"]
    # THEN it lists each alarm of the template once, by its ARN
    assert len(widget["properties"]["alarms"]) == len(alarms(template))
    for name in alarms(template):
        assert body.count(f"${{{name}.Arn}}") == 1, name


def template_root() -> Any:
    from tests.unit.test_template import ROOT

    return ROOT


def test_alarm_email_subscription_only_when_an_address_is_given(template: dict[str, Any]) -> None:
    # GIVEN the subscription resource WHEN its condition is read
    subscription = template["Resources"]["AlarmEmailSubscription"]
    # THEN it depends on the AlarmEmail parameter, empty by default
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }


# --------------------------------------------------------------------------- #
# The registry is what the code emits                                         #
# --------------------------------------------------------------------------- #


def test_emitting_an_unregistered_metric_is_refused() -> None:
    # GIVEN a metric name or dimension set that is not in the registry
    # WHEN it is emitted THEN it is refused before anything is printed
    with pytest.raises(telemetry.UnregisteredMetricError):
        telemetry.emit_dimensioned("MessagesFailed", 1, source="proactive")
    with pytest.raises(telemetry.UnregisteredMetricError):
        telemetry.check_registered("SomethingNew", ())


def test_deliver_metrics_by_reason_class_reason_channel_and_latency(capsys: Any) -> None:
    from aws_lambda_powertools import Metrics

    from tests.support.telemetry import emf_metrics

    # GIVEN a batch with one delivered (due 90 s before it was sent), two failed, one skipped
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    result = BatchReport(counts=Counter({"delivered": 1, "failed": 2, "skipped": 1}))
    sent = MessageKey("proactive", 1)
    result.outcomes = [
        (sent, Outcome(1, "sent", "delivered", True, channel="sms", finished_at=now)),
        (MessageKey("proactive", 2), Outcome(2, "failed", "failed", True, reason="attempts_exhausted")),
        (MessageKey("proactive", 3), Outcome(3, "failed", "rejected", True, reason="rejected")),
        (MessageKey("proactive", 4), Outcome(4, "skipped", "skipped", False, reason="no_contact")),
    ]
    result.due_at[sent] = now - timedelta(seconds=90)
    metrics = Metrics(service="proactive-delivery", namespace=telemetry.NAMESPACE)
    # WHEN the deliver metrics are emitted and flushed
    telemetry.emit_deliver(metrics, result)
    metrics.flush_metrics()
    out = capsys.readouterr().out
    # THEN the totals, the classes, the reasons and the latency are all there
    assert emf_metrics(out)["MessagesFailed"] == 2
    assert emf_metrics(out, frozenset({"service", "reason_class"}))["MessagesFailed"] == 2
    assert emf_metrics(out, frozenset({"service", "reason"}))["MessagesSkipped"] == 1
    assert emf_metrics(out, frozenset({"service", "source", "channel"})) == {
        "MessagesDelivered": 1,
        "DeliveryLatency": 90.0,
    }
    classes = {json.loads(line).get("reason_class") for line in out.splitlines() if "reason_class" in line}
    assert classes == {"exhausted", "permanent"}


def test_purge_metrics_by_table_zeros_included(capsys: Any) -> None:
    from collections import Counter

    from aws_lambda_powertools import Metrics

    from proactive_delivery.app.purge import PurgeReport
    from tests.support.telemetry import emf_metrics

    # GIVEN a purge run that deleted rows of two tables, kept 4 tombstones and ran out of time
    report = PurgeReport(90, datetime(2026, 5, 1, tzinfo=UTC), stopped_early=True)
    report.deleted = Counter({"message_state": 12, "attempt_log": 0})
    report.kept = Counter({"message_state": 4})
    metrics = Metrics(service="proactive-delivery", namespace=telemetry.NAMESPACE)
    # WHEN its metrics are emitted and flushed
    telemetry.emit_purge(metrics, report)
    metrics.flush_metrics()
    out = capsys.readouterr().out
    # THEN each table has its own line, a 0 too, and the run's total says it stopped early
    assert emf_metrics(out) == {"PurgeStoppedEarly": 1}
    by_table = frozenset({"service", "table"})
    lines = [line for line in out.splitlines() if '"table"' in line]
    seen = [(json.loads(line)["table"], *emf_metrics(line, by_table).items()) for line in lines]
    assert sorted(seen) == [
        ("attempt_log", ("RowsPurged", 0)),
        ("message_state", ("RowsPurged", 12)),
        ("message_state", ("RowsRetained", 4)),
    ]
