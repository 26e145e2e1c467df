"""Checks on template.yaml and the sample events that the linters do not make.

cfn-lint and `sam validate --lint` check each property against its schema, but
not the relations between them: queue visibility against function timeout,
batch size against batching window, the dead-letter queue's retention against
the source queue's, the lease against the timeout, or whether the events in
events/ match what the template wires up. These tests read the files only (no
network, no AWS account).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from proactive_delivery.core.pace import format_rate_limits

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
EVENTS_DIR = ROOT / "events"

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SQS_QUEUE = "AWS::SQS::Queue"
LOG_GROUP = "AWS::Logs::LogGroup"

RUNTIME = "python3.12"
# SQS event source limits: without a batching window at most 10 records per
# batch; with a window of at least one second, up to 10000.
SQS_MAX_BATCH_WITHOUT_WINDOW = 10
SQS_MAX_BATCH_WITH_WINDOW = 10_000
DLQ_RETENTION_SECONDS = 1_209_600  # 14 days, the SQS maximum
# X-Ray accepts trace data only on Resource "*" (the actions have no resource
# type), so these are the one legitimate use of a wildcard resource.
WILDCARD_RESOURCE_ACTIONS = frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"})
# Lambda checks its network interface permissions on "*" when it attaches a
# function to subnets: allowed on "*" only under the UseVpc condition.
VPC_WILDCARD_ACTIONS = frozenset(
    {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
)
# What the SQS event source mapping needs on its queue, plus the backoff's
# visibility change.
DELIVER_QUEUE_ACTIONS = frozenset(
    {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
)
# Parameter names that suggest a secret value rather than a reference to one.
SECRET_NAME = re.compile(r"secret|password|passwd|token|apikey|api_key|credential|privatekey", re.I)
SECRET_ARN_PATTERN = re.compile(r"^\^arn:aws\[a-z-\]\*:secretsmanager:")
SCHEDULE_SOURCES = frozenset({"proactive", "followup"})
SQS_RECORD_FIELDS = frozenset(
    {"messageId", "receiptHandle", "body", "attributes", "eventSource", "eventSourceARN", "awsRegion"}
)
# The functions that reach PostgreSQL (and so may need the VPC); the inbound edge never does.
DATABASE_FUNCTIONS = frozenset(
    {"EvaluateFunction", "DeliverFunction", "PurgeFunction", "InboundProcessorFunction"}
)

REQUIRED_ENVIRONMENT = frozenset(
    {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_LOG_LEVEL",
        "STAGE",
        "DATABASE_SECRET_ARN",
        "DELIVERY_QUEUE_URL",
        "N8N_OUTBOUND_WEBHOOK_URL",
        "WEBHOOK_SIGNING_SECRET_ARN",
        "RETRY_WINDOW_HOURS",
        "MAX_RECEIVE_COUNT",
        "LEASE_SECONDS",
        "RECONCILE_AFTER_SECONDS",
    }
)


# --------------------------------------------------------------------------- #
# Loading                                                                     #
# --------------------------------------------------------------------------- #


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form
    (!Ref X -> {"Ref": "X"}, !GetAtt A.B -> {"Fn::GetAtt": ["A", "B"]}, ...)."""


def _construct_short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_short_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=CloudFormationLoader)
    assert isinstance(loaded, dict)
    return loaded


def load_event(name: str) -> Any:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


# --------------------------------------------------------------------------- #
# Helpers                                                                     #
# --------------------------------------------------------------------------- #


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == resource_type}


def function_properties(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A function's properties with Globals.Function applied, as SAM does
    (the function wins; environment variables are merged by name)."""
    global_props = dict(template.get("Globals", {}).get("Function", {}))
    own = template["Resources"][name]["Properties"]
    merged = {**global_props, **own}
    variables = {
        **global_props.get("Environment", {}).get("Variables", {}),
        **own.get("Environment", {}).get("Variables", {}),
    }
    merged["Environment"] = {"Variables": variables}
    return merged


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: function_properties(template, name) for name in resources_of_type(template, SERVERLESS_FUNCTION)
    }


def events_of_type(props: dict[str, Any], event_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: event.get("Properties", {})
        for name, event in props.get("Events", {}).items()
        if event["Type"] == event_type
    }


def sqs_events(template: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for fn_name, props in functions(template).items():
        for event_name, event in events_of_type(props, "SQS").items():
            yield fn_name, event_name, event


def ref_target(value: Any) -> str | None:
    """The logical id a {"Ref": X} or {"Fn::GetAtt": [X, ...]} points at."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return str(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return str(value["Fn::GetAtt"][0])
    return None


def number_range(template: dict[str, Any], value: Any) -> tuple[int, int]:
    """(smallest, largest) value a property can take at deploy time: a literal,
    or a parameter's MinValue/MaxValue (or AllowedValues)."""
    name = ref_target(value)
    if name is None:
        return int(value), int(value)
    param = template["Parameters"][name]
    assert param["Type"] == "Number", f"parameter {name} must be a Number"
    if "AllowedValues" in param:
        allowed = [int(v) for v in param["AllowedValues"]]
        return min(allowed), max(allowed)
    assert "MinValue" in param, f"parameter {name} needs MinValue"
    assert "MaxValue" in param, f"parameter {name} needs MaxValue"
    return int(param["MinValue"]), int(param["MaxValue"])


def default_of(template: dict[str, Any], value: Any) -> Any:
    name = ref_target(value)
    if name is None:
        return value
    return template["Parameters"][name]["Default"]


def deliver_timeout(template: dict[str, Any]) -> int:
    props = function_properties(template, "DeliverFunction")
    return int(props.get("Timeout", 3))  # 3 s is Lambda's default


def deliver_sqs_event(template: dict[str, Any]) -> dict[str, Any]:
    [event] = [event for fn_name, _, event in sqs_events(template) if fn_name == "DeliverFunction"]
    return event


def delivery_queue_name(template: dict[str, Any]) -> str:
    event = deliver_sqs_event(template)
    name = ref_target(event["Queue"])
    assert name is not None, "the SQS event must reference a queue of this template"
    return name


def iam_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every inline IAM statement in the template, with the resource it belongs to
    (a conditional statement, !If [condition, statement, AWS::NoValue], counts as its
    statement)."""
    for owner, statement, _ in conditional_iam_statements(template):
        yield owner, statement


def conditional_iam_statements(
    template: dict[str, Any],
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(owner, statement, condition or None) for every inline IAM statement."""
    for fn_name, props in functions(template).items():
        for policy in props.get("Policies", []):
            if isinstance(policy, dict) and "Statement" in policy:
                for statement in policy["Statement"]:
                    yield fn_name, statement, None
    for name, res in template["Resources"].items():
        if not res["Type"].startswith("AWS::IAM::"):
            continue
        res_props = res.get("Properties", {})
        documents = [p["PolicyDocument"] for p in res_props.get("Policies", [])]
        if "PolicyDocument" in res_props:
            documents.append(res_props["PolicyDocument"])
        for document in documents:
            for statement in document["Statement"]:
                if set(statement) == {"Fn::If"}:
                    condition, when_true, when_false = statement["Fn::If"]
                    assert when_false == {"Ref": "AWS::NoValue"}, f"{name}: {statement}"
                    yield name, when_true, str(condition)
                else:
                    yield name, statement, None


def role_of(template: dict[str, Any], function_name: str) -> str:
    """The logical id of the AWS::IAM::Role a function runs with."""
    role = ref_target(function_properties(template, function_name).get("Role"))
    assert role is not None, f"{function_name} must run with a role of this template"
    assert template["Resources"][role]["Type"] == "AWS::IAM::Role"
    return role


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- #
# Functions                                                                   #
# --------------------------------------------------------------------------- #


def test_functions_and_layer_use_the_same_supported_python(template: dict[str, Any]) -> None:
    # GIVEN the functions and the shared layer
    layers = resources_of_type(template, "AWS::Serverless::LayerVersion")
    # WHEN their runtimes are compared
    runtimes = {name: props.get("Runtime") for name, props in functions(template).items()}
    # THEN every function runs python3.12, the runtime the layer is built for
    assert set(runtimes) == {
        "EvaluateFunction",
        "DeliverFunction",
        "PurgeFunction",
        "InboundFunction",
        "InboundProcessorFunction",
    }
    assert set(runtimes.values()) == {RUNTIME}, runtimes
    assert set(layers) == {"CommonLayer", "TracingLayer"}
    # AND the common layer is built by SAM's pip builder for that runtime, the tracing
    # layer by its Makefile (pip --no-deps, so without the runtime's botocore)
    assert layers["CommonLayer"]["Metadata"]["BuildMethod"] == RUNTIME
    assert layers["TracingLayer"]["Metadata"]["BuildMethod"] == "makefile"
    architectures = function_properties(template, "EvaluateFunction")["Architectures"]
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == [RUNTIME]
        # AND each layer is built for the same architecture the functions run on
        assert layer["Properties"]["CompatibleArchitectures"] == architectures
        assert as_list(layer["Metadata"]["BuildArchitecture"]) == architectures


def test_every_function_uses_the_layer_and_a_handler_that_exists(template: dict[str, Any]) -> None:
    for name, props in functions(template).items():
        # GIVEN a function's code location and handler
        code_dir = ROOT / props["CodeUri"]
        module, _, attribute = props["Handler"].rpartition(".")
        # WHEN the handler's module is looked up
        module_file = code_dir / f"{module.replace('.', '/')}.py"
        # THEN it exists and defines the handler, and the shared layer is attached
        assert module_file.is_file(), f"{name}: {module_file} missing"
        assert re.search(
            rf"^(def {attribute}\(|{attribute} = )", module_file.read_text(encoding="utf-8"), re.M
        ), name
        assert props["Layers"] == [{"Ref": "CommonLayer"}, {"Ref": "TracingLayer"}], name


def test_every_function_has_the_shared_environment(template: dict[str, Any]) -> None:
    for name, props in functions(template).items():
        # GIVEN a function's effective environment
        variables = props["Environment"]["Variables"]
        # WHEN it is compared with the settings the package reads
        missing = REQUIRED_ENVIRONMENT - set(variables)
        # THEN nothing is missing
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_lease_outlives_a_deliver_invocation_but_not_the_visibility_timeout(template: dict[str, Any]) -> None:
    # GIVEN the claim lease, the deliver timeout and the queue's visibility timeout
    lease = int(function_properties(template, "DeliverFunction")["Environment"]["Variables"]["LEASE_SECONDS"])
    timeout = deliver_timeout(template)
    queue = template["Resources"][delivery_queue_name(template)]["Properties"]
    # WHEN they are compared
    # THEN a lease expires only after its holder is certainly dead (2x timeout)
    assert lease == 2 * timeout
    # AND a redelivered message finds an expired lease rather than a live one
    assert lease < queue["VisibilityTimeout"]


def test_vpc_attachment_is_conditional(template: dict[str, Any]) -> None:
    # GIVEN the optional VPC parameters
    assert template["Parameters"]["SubnetIds"]["Type"] == "CommaDelimitedList"
    assert template["Parameters"]["SecurityGroupIds"]["Type"] == "CommaDelimitedList"
    assert "UseVpc" in template["Conditions"]
    for name, props in functions(template).items():
        # WHEN a function's VpcConfig is read
        vpc = props["VpcConfig"]
        if name not in DATABASE_FUNCTIONS:
            # THEN a function that never reaches the database stays outside the VPC
            assert vpc == {"Ref": "AWS::NoValue"}, name
            continue
        # THEN it is set only under UseVpc and removed otherwise
        condition, when_true, when_false = vpc["Fn::If"]
        assert condition == "UseVpc", name
        assert when_true == {
            "SubnetIds": {"Ref": "SubnetIds"},
            "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
        }
        assert when_false == {"Ref": "AWS::NoValue"}, name


# --------------------------------------------------------------------------- #
# Event sources                                                               #
# --------------------------------------------------------------------------- #

_RATE = re.compile(r"^rate\((?P<value>[1-9][0-9]*) (?P<unit>minutes?|hours?|days?)\)$")
_CRON = re.compile(r"^cron\((?P<fields>[^()]+)\)$")


def schedule_expression_is_valid(expression: str) -> bool:
    """EventBridge accepts rate(1 unit) / rate(N units) and six-field cron."""
    if rate := _RATE.match(expression):
        singular = int(rate["value"]) == 1
        return singular != rate["unit"].endswith("s")
    if cron := _CRON.match(expression):
        fields = cron["fields"].split()
        # Exactly one of day-of-month / day-of-week must be "?".
        return len(fields) == 6 and (fields[2] == "?") != (fields[4] == "?")
    return False


@pytest.mark.parametrize(
    ("expression", "valid"),
    [
        ("rate(1 hour)", True),
        ("rate(5 minutes)", True),
        ("rate(1 hours)", False),
        ("rate(5 minute)", False),
        ("rate(0 minutes)", False),
        ("cron(0/5 * * * ? *)", True),
        ("cron(0/5 * * * *)", False),
        ("cron(0 12 * * * *)", False),
    ],
)
def test_schedule_expression_checker(expression: str, valid: bool) -> None:
    # GIVEN a schedule expression WHEN it is checked THEN the verdict matches EventBridge's rules
    assert schedule_expression_is_valid(expression) is valid


def test_schedules_parse_and_send_the_documented_input(template: dict[str, Any]) -> None:
    # GIVEN the evaluate function's schedule events
    schedules = events_of_type(function_properties(template, "EvaluateFunction"), "Schedule")
    assert "ProactiveSchedule" in schedules
    for name, schedule in schedules.items():
        # WHEN the expression and the input are parsed
        payload = json.loads(schedule["Input"])
        # THEN the expression (a parameter's default) is valid and the input names known sources
        expression = default_of(template, schedule["Schedule"])
        assert schedule_expression_is_valid(expression), f"{name}: {expression}"
        assert payload["sources"], name
        assert set(payload["sources"]) <= SCHEDULE_SOURCES, name
    # Proactive: hourly at minute 5, after the platform's own hourly run at minute 0.
    assert schedules["ProactiveSchedule"]["Schedule"] == {"Ref": "ProactiveScheduleExpression"}
    assert default_of(template, schedules["ProactiveSchedule"]["Schedule"]) == "cron(5 * * * ? *)"
    assert json.loads(schedules["ProactiveSchedule"]["Input"]) == {"sources": ["proactive"]}
    assert default_of(template, schedules["FollowupSchedule"]["Schedule"]) == "rate(5 minutes)"
    assert json.loads(schedules["FollowupSchedule"]["Input"]) == {"sources": ["followup"]}


def test_the_purge_runs_daily_on_its_own_schedule_outside_the_pause_switch(template: dict[str, Any]) -> None:
    from proactive_delivery.settings import MIN_RETENTION_DAYS

    # GIVEN the purge function and its schedule
    props = function_properties(template, "PurgeFunction")
    [(name, schedule)] = events_of_type(props, "Schedule").items()
    # THEN it fires once a day (a parameter whose default is a valid daily cron)...
    expression = default_of(template, schedule["Schedule"])
    assert schedule["Schedule"] == {"Ref": "PurgeScheduleExpression"}
    assert schedule_expression_is_valid(expression)
    minute, hour, day, month, weekday, year = expression.removeprefix("cron(").removesuffix(")").split()
    assert (day, month, weekday, year) == ("*", "*", "?", "*") and minute.isdigit() and hour.isdigit()
    # ...away from the hourly evaluate run's minute
    assert not template["Parameters"]["ProactiveScheduleExpression"]["Default"].startswith(f"cron({minute} ")
    # ...and inside the default quiet hours (21:00-08:00) of every zone of the contiguous US,
    # winter and summer, when least is sent
    assert template["Parameters"]["QuietHours"]["Default"] == "21:00-08:00"
    for zone in (
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Phoenix",
        "America/Los_Angeles",
    ):
        for month in (1, 7):
            local = datetime(2026, month, 15, int(hour), int(minute), tzinfo=UTC).astimezone(ZoneInfo(zone))
            assert local.hour >= 21 or local.hour < 8, (zone, month, local)
    # AND it is not one of the pause switch's triggers: no State from DeliveryEnabled, and the
    # operators' switch leaves its rule (SAM names it <Function><Event>) alone
    from proactive_delivery_tools.ops.switch import HOUSEKEEPING_RULES

    assert "State" not in schedule and "Enabled" not in schedule
    assert f"PurgeFunction{name}" in HOUSEKEEPING_RULES
    assert template["Outputs"]["PurgeScheduleRuleName"]["Value"] == {"Ref": f"PurgeFunction{name}"}
    for event_name, event in events_of_type(
        function_properties(template, "EvaluateFunction"), "Schedule"
    ).items():
        assert f"EvaluateFunction{event_name}" not in HOUSEKEEPING_RULES
        assert event["State"] == {"Fn::If": ["DeliveryIsEnabled", "ENABLED", "DISABLED"]}
    # AND RetentionDays cannot go below what the code accepts, and its timeout leaves room
    parameter = template["Parameters"]["RetentionDays"]
    assert int(parameter["MinValue"]) == MIN_RETENTION_DAYS
    assert props["Environment"]["Variables"]["RETENTION_DAYS"] == {"Ref": "RetentionDays"}
    assert int(props["Timeout"]) >= 60


def test_followup_event_is_what_its_schedule_delivers(template: dict[str, Any]) -> None:
    # GIVEN the sample event for the follow-up schedule
    event = load_event("evaluate-followups.json")
    # WHEN it is compared with the schedule's Input
    schedule = events_of_type(function_properties(template, "EvaluateFunction"), "Schedule")[
        "FollowupSchedule"
    ]
    # THEN they are the same document
    assert event == json.loads(schedule["Input"])


def test_optional_channel_permissions_are_conditional_and_scoped(template: dict[str, Any]) -> None:
    # GIVEN the optional channel policies
    for name, parameter in (
        ("DeliverSendEmailPolicy", "EmailIdentityArn"),
        ("DeliverTwilioSecretPolicy", "TwilioSecretArn"),
    ):
        policy = template["Resources"][name]
        # THEN each exists only when its parameter is set, and names that one resource
        assert policy["Condition"] in template["Conditions"], name
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert as_list(statement["Resource"])[0] == {"Ref": parameter}, name
        assert len(statement["Action"]) == 1, name
    # AND sending e-mail is allowed as the identity with the stack's configuration set only
    [send] = template["Resources"]["DeliverSendEmailPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    _, configuration_set = send["Resource"]
    assert configuration_set["Fn::Sub"].endswith(":configuration-set/${SesConfigurationSet}")


def test_sqs_batch_size_is_valid_for_every_allowed_parameter_value(template: dict[str, Any]) -> None:
    events = list(sqs_events(template))
    assert events, "DeliverFunction must consume the delivery queue"
    for fn_name, event_name, event in events:
        # GIVEN the range each batching setting can take at deploy time
        smallest_batch, largest_batch = number_range(template, event.get("BatchSize", 10))
        smallest_window, _ = number_range(template, event.get("MaximumBatchingWindowInSeconds", 0))
        # WHEN the window can be zero
        limit = SQS_MAX_BATCH_WITHOUT_WINDOW if smallest_window == 0 else SQS_MAX_BATCH_WITH_WINDOW
        # THEN every allowed batch size is within the SQS limit for that case
        assert 1 <= smallest_batch <= largest_batch <= limit, f"{fn_name}.{event_name}"


def test_sqs_events_report_partial_batch_failures(template: dict[str, Any]) -> None:
    for fn_name, event_name, event in sqs_events(template):
        # GIVEN an SQS event source WHEN its response types are read
        response_types = event.get("FunctionResponseTypes", [])
        # THEN failed records are reported one by one, not by failing the batch
        assert "ReportBatchItemFailures" in response_types, f"{fn_name}.{event_name}"


def test_deliver_concurrency_is_capped_at_the_event_source(template: dict[str, Any]) -> None:
    for fn_name, _, event in sqs_events(template):
        # GIVEN an SQS event source's scaling config (deliver's, the inbound processor's)
        smallest, _ = number_range(template, event["ScalingConfig"]["MaximumConcurrency"])
        # WHEN its lowest allowed value is read
        # THEN it respects the service minimum of 2
        assert smallest >= 2, fn_name


# --------------------------------------------------------------------------- #
# Queues                                                                      #
# --------------------------------------------------------------------------- #


def test_visibility_timeout_is_at_least_six_times_the_deliver_timeout(template: dict[str, Any]) -> None:
    # GIVEN the queue the deliver function consumes
    queue = template["Resources"][delivery_queue_name(template)]["Properties"]
    # WHEN its visibility timeout is compared with the function timeout
    # THEN it leaves room for Lambda's throttle retries (the AWS guidance of 6x)
    assert queue["VisibilityTimeout"] >= 6 * deliver_timeout(template)


def test_redrive_and_the_function_take_the_budget_from_the_retry_window(template: dict[str, Any]) -> None:
    # GIVEN the delivery queue's redrive policy and the deliver function's environment
    redrive = template["Resources"][delivery_queue_name(template)]["Properties"]["RedrivePolicy"]
    env = function_properties(template, "DeliverFunction")["Environment"]["Variables"]
    # THEN both read the same row of the RetryBudget mapping, keyed by RetryWindowHours
    budget = {"Fn::FindInMap": ["RetryBudget", {"Ref": "RetryWindowHours"}, "MaxReceiveCount"]}
    assert redrive["maxReceiveCount"] == budget
    assert env["MAX_RECEIVE_COUNT"] == budget
    assert env["RETRY_WINDOW_HOURS"] == {"Ref": "RetryWindowHours"}
    assert str(template["Parameters"]["RetryWindowHours"]["Default"]) == "24"


def test_every_retry_window_row_is_what_the_code_derives(template: dict[str, Any]) -> None:
    from proactive_delivery.core.retry import RetryPolicy

    # GIVEN every window the parameter allows
    allowed = [str(v) for v in template["Parameters"]["RetryWindowHours"]["AllowedValues"]]
    mapping = template["Mappings"]["RetryBudget"]
    assert sorted(mapping, key=int) == sorted(allowed, key=int)
    for hours in allowed:
        # WHEN the code derives the attempts and the queue's maxReceiveCount for it
        policy = RetryPolicy(timedelta(hours=int(hours)))
        # THEN the template's row says the same
        assert mapping[hours] == {"Attempts": policy.attempts, "MaxReceiveCount": policy.max_receive_count}


def test_the_queue_keeps_a_message_longer_than_its_retry_window(template: dict[str, Any]) -> None:
    queue = template["Resources"][delivery_queue_name(template)]["Properties"]
    longest = max(int(v) for v in template["Parameters"]["RetryWindowHours"]["AllowedValues"])
    # A day of slack: a message can wait up to 12 h (the visibility limit) past its last step.
    assert int(queue["MessageRetentionPeriod"]) >= (longest + 24) * 3600


def test_dead_letter_queue_keeps_messages_longer_than_the_source(template: dict[str, Any]) -> None:
    # GIVEN the delivery queue and the dead-letter queue it redrives to
    source_name = delivery_queue_name(template)
    source = template["Resources"][source_name]["Properties"]
    dlq_name = ref_target(source["RedrivePolicy"]["deadLetterTargetArn"])
    assert dlq_name is not None
    dlq = template["Resources"][dlq_name]["Properties"]
    # WHEN the retention periods are compared
    # THEN the DLQ keeps messages for the SQS maximum, at least as long as the source
    assert dlq["MessageRetentionPeriod"] == DLQ_RETENTION_SECONDS
    assert dlq["MessageRetentionPeriod"] >= source.get("MessageRetentionPeriod", 345_600)
    # AND it accepts redrive from the delivery queue only
    allow = dlq["RedriveAllowPolicy"]
    assert allow["redrivePermission"] == "byQueue"
    [source_arn] = allow["sourceQueueArns"]
    assert source_arn["Fn::Sub"].endswith(source["QueueName"]["Fn::Sub"])


def test_every_queue_is_encrypted(template: dict[str, Any]) -> None:
    queues = resources_of_type(template, SQS_QUEUE)
    assert set(queues) >= {"DeliveryQueue", "DeliveryDLQ"}
    for name, queue in queues.items():
        # GIVEN a queue WHEN its encryption settings are read
        props = queue["Properties"]
        # THEN server-side encryption is on (KMS or SQS-managed)
        assert props.get("KmsMasterKeyId") or props.get("SqsManagedSseEnabled") is True, name


# --------------------------------------------------------------------------- #
# Logs and permissions                                                        #
# --------------------------------------------------------------------------- #


def test_every_function_has_a_log_group_with_retention(template: dict[str, Any]) -> None:
    for name, props in functions(template).items():
        # GIVEN the log group a function writes to
        group_name = ref_target(props.get("LoggingConfig", {}).get("LogGroup"))
        assert group_name is not None, f"{name} must log to a log group of this template"
        group = template["Resources"][group_name]
        # WHEN its retention is resolved
        retention = default_of(template, group["Properties"].get("RetentionInDays"))
        # THEN it is a log group whose logs expire
        assert group["Type"] == LOG_GROUP, name
        assert isinstance(retention, int), f"{group_name} needs RetentionInDays"
        assert retention > 0


def test_no_iam_statement_uses_wildcards(template: dict[str, Any]) -> None:
    statements = list(conditional_iam_statements(template))
    assert statements, "expected the functions' roles"
    for owner, statement, condition in statements:
        # GIVEN an inline IAM statement
        actions = [str(a) for a in as_list(statement.get("Action", []))]
        resources = as_list(statement.get("Resource", []))
        # WHEN its actions and resources are read
        # THEN no action is a service-wide or global wildcard
        assert not [a for a in actions if a == "*" or a.endswith(":*")], f"{owner}: {actions}"
        # AND "*" as resource appears only for actions that have no resource type,
        # or for the network interface actions, and those only when in a VPC
        if "*" in resources:
            allowed = WILDCARD_RESOURCE_ACTIONS | (VPC_WILDCARD_ACTIONS if condition == "UseVpc" else set())
            assert set(actions) <= allowed, f"{owner}: {actions} on * (condition {condition})"
        # AND no statement is a Deny or NotAction trick that hides a broad grant
        assert statement["Effect"] == "Allow", owner
        assert "NotAction" not in statement and "NotResource" not in statement, owner


def test_functions_run_with_explicit_roles_and_no_sam_policies(template: dict[str, Any]) -> None:
    for name, props in functions(template).items():
        # GIVEN a function
        role = role_of(template, name)
        role_props = template["Resources"][role]["Properties"]
        # WHEN its role and SAM permission properties are read
        # THEN SAM adds nothing: no Policies (SAM ignores them once Role is set, so a
        # permission added there would silently not exist) and no managed policies
        # (their resources are "*")
        assert "Policies" not in props, f"{name}: put permissions into {role}"
        assert "ManagedPolicyArns" not in role_props, role
        # AND only Lambda can assume the role
        [trust] = role_props["AssumeRolePolicyDocument"]["Statement"]
        assert trust == {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    # AND every role belongs to exactly one function
    roles = [role_of(template, name) for name in functions(template)]
    assert sorted(roles) == sorted(set(roles)) == sorted(resources_of_type(template, "AWS::IAM::Role"))


def test_each_function_writes_logs_only_to_its_own_log_group(template: dict[str, Any]) -> None:
    for name, props in functions(template).items():
        # GIVEN a function's role and log group
        role = role_of(template, name)
        log_group = ref_target(props["LoggingConfig"]["LogGroup"])
        # WHEN the statements granting logs actions are found
        logs = [s for owner, s in iam_statements(template) if owner == role and "logs:" in json.dumps(s)]
        # THEN there is one, for stream creation and writes, on that log group only
        [statement] = logs
        assert sorted(as_list(statement["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
        assert statement["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}, name


def test_secrets_are_readable_only_by_arn_and_only_where_needed(template: dict[str, Any]) -> None:
    expected = {
        # Evaluate and the purge never sign a webhook; every function that judges a message or
        # matches a sender reads the phone hash key.
        "EvaluateFunction": [{"Ref": "DatabaseSecretArn"}, {"Ref": "PhoneHashKey"}],
        "DeliverFunction": [
            {"Ref": "DatabaseSecretArn"},
            {"Ref": "WebhookSigningSecretArn"},
            {"Ref": "PhoneHashKey"},
        ],
        "PurgeFunction": [{"Ref": "DatabaseSecretArn"}],
        "InboundProcessorFunction": [{"Ref": "DatabaseSecretArn"}, {"Ref": "PhoneHashKey"}],
    }
    for name, secrets in expected.items():
        # GIVEN a function's role
        role = role_of(template, name)
        # WHEN the statements that mention Secrets Manager are found
        statements = [
            s for owner, s in iam_statements(template) if owner == role and "secretsmanager" in json.dumps(s)
        ]
        # THEN one grants GetSecretValue, and only on the secret ARN parameters it needs
        [statement] = statements
        assert as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"], name
        assert as_list(statement["Resource"]) == secrets, name


def test_only_evaluate_sends_and_only_deliver_consumes(template: dict[str, Any]) -> None:
    queue = {"Fn::GetAtt": [delivery_queue_name(template), "Arn"]}
    sqs = {
        name: [s for owner, s in iam_statements(template) if owner == role_of(template, name)]
        for name in ("EvaluateFunction", "DeliverFunction")
    }
    # GIVEN the SQS statements of both roles
    evaluate = [s for s in sqs["EvaluateFunction"] if "sqs:" in json.dumps(s)]
    deliver = [s for s in sqs["DeliverFunction"] if "sqs:" in json.dumps(s)]
    # WHEN their actions and resources are read
    # THEN evaluate can only send to the delivery queue; deliver can only consume it, and
    # send to the DLQ (a message whose retry window is spent)
    [send] = evaluate
    assert as_list(send["Action"]) == ["sqs:SendMessage"]
    # AND the purge touches no queue at all
    purge = [s for owner, s in iam_statements(template) if owner == role_of(template, "PurgeFunction")]
    assert purge and not [s for s in purge if "sqs:" in json.dumps(s)]
    assert send["Resource"] == queue
    consume, dead_letter = deliver
    assert set(as_list(consume["Action"])) == DELIVER_QUEUE_ACTIONS
    assert consume["Resource"] == queue
    assert as_list(dead_letter["Action"]) == ["sqs:SendMessage"]
    assert dead_letter["Resource"] == {"Fn::GetAtt": ["DeliveryDLQ", "Arn"]}


def test_network_interface_permissions_exist_only_in_a_vpc(template: dict[str, Any]) -> None:
    # GIVEN the statements that mention ec2 actions
    ec2 = [(owner, c) for owner, s, c in conditional_iam_statements(template) if "ec2:" in json.dumps(s)]
    # WHEN their conditions are read
    # THEN each role of a function that reaches the database has one, and it applies only
    # when the functions are attached to a VPC
    assert sorted(owner for owner, _ in ec2) == sorted(role_of(template, name) for name in DATABASE_FUNCTIONS)
    assert {c for _, c in ec2} == {"UseVpc"}


def test_no_parameter_carries_a_plain_secret(template: dict[str, Any]) -> None:
    secretish = {name: p for name, p in template["Parameters"].items() if SECRET_NAME.search(name)}
    assert set(secretish) >= {"DatabaseSecretArn", "WebhookSigningSecretArn"}
    for name, param in secretish.items():
        # GIVEN a parameter whose name suggests a secret
        # WHEN its constraints are read
        # An optional secret (empty = the channel is off) allows "" as its only alternative.
        pattern = param.get("AllowedPattern", "").removeprefix("^$|")
        is_arn = name.endswith("Arn") and bool(SECRET_ARN_PATTERN.match(pattern))
        # THEN it only accepts a Secrets Manager ARN, or at least is never echoed back
        assert is_arn or param.get("NoEcho") is True, f"{name} would hold a secret in plain text"
    # AND no function environment carries a secret value in a deployed stage
    for fn_name, props in functions(template).items():
        variables = props["Environment"]["Variables"]
        for var in ("DATABASE_URL", "WEBHOOK_SIGNING_SECRET"):
            assert variables.get(var, "") == "", f"{fn_name}.{var} must stay empty (local runs only)"


def test_deliver_reserved_concurrency_is_optional_and_off_by_default(template: dict[str, Any]) -> None:
    # GIVEN the reserved concurrency parameter and condition
    param = template["Parameters"]["DeliverReservedConcurrency"]
    condition = template["Conditions"]["ReserveDeliverConcurrency"]
    # WHEN the deliver function's ReservedConcurrentExecutions is read
    reserved = function_properties(template, "DeliverFunction")["ReservedConcurrentExecutions"]
    # THEN 0 (the default) removes it, and any other value reserves exactly that much
    assert param["Type"] == "Number"
    assert int(param["Default"]) == 0
    assert int(param["MinValue"]) == 0
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DeliverReservedConcurrency"}, 0]}]}
    when_reserved = {"Ref": "DeliverReservedConcurrency"}
    assert reserved == {"Fn::If": ["ReserveDeliverConcurrency", when_reserved, {"Ref": "AWS::NoValue"}]}
    # AND the evaluate function reserves nothing (overlapping runs are safe by design)
    assert "ReservedConcurrentExecutions" not in function_properties(template, "EvaluateFunction")


def test_tracing_is_active_on_every_function(template: dict[str, Any]) -> None:
    for name, props in functions(template).items():
        # GIVEN a function WHEN its tracing mode is read THEN X-Ray tracing is active
        assert props.get("Tracing") == "Active", name


def test_deliver_can_only_change_visibility_on_its_own_queue(template: dict[str, Any]) -> None:
    # GIVEN the deliver function's role statements
    role = role_of(template, "DeliverFunction")
    statements = [s for owner, s in iam_statements(template) if owner == role]
    # WHEN the one granting ChangeMessageVisibility is found
    [statement] = [s for s in statements if "sqs:ChangeMessageVisibility" in as_list(s["Action"])]
    # THEN it is scoped to the delivery queue
    assert statement["Resource"] == {"Fn::GetAtt": [delivery_queue_name(template), "Arn"]}


def test_outputs_name_the_queues_and_functions(template: dict[str, Any]) -> None:
    # GIVEN the stack outputs WHEN they are listed THEN operators find what they need
    assert set(template["Outputs"]) >= {
        "DeliveryQueueUrl",
        "DeliveryDLQUrl",
        "DeliveryDLQArn",
        "EvaluateFunctionName",
        "DeliverFunctionName",
    }


# --------------------------------------------------------------------------- #
# Sample events                                                               #
# --------------------------------------------------------------------------- #


def test_evaluate_event_is_what_the_schedule_delivers(template: dict[str, Any]) -> None:
    # GIVEN the sample event for the evaluate function
    event = load_event("evaluate-proactive.json")
    # WHEN it is compared with the schedule's Input (EventBridge sends Input verbatim)
    schedules = events_of_type(function_properties(template, "EvaluateFunction"), "Schedule")
    schedule = schedules["ProactiveSchedule"]
    # THEN they are the same document
    assert event == json.loads(schedule["Input"])


def test_purge_event_is_what_its_schedule_delivers(template: dict[str, Any]) -> None:
    [schedule] = events_of_type(function_properties(template, "PurgeFunction"), "Schedule").values()
    assert load_event("purge-schedule.json") == json.loads(schedule["Input"]) == {}


def test_the_purge_stops_with_the_runbooks_time_left() -> None:
    import inspect

    from proactive_delivery.app.purge import Purger

    # The runbook: "stops between batches when less than 10 s of its 300 s are left".
    timeout = function_properties(load_template(), "PurgeFunction")["Timeout"]
    margin = inspect.signature(Purger).parameters["safety_margin_ms"].default
    assert (timeout, margin) == (300, 10_000)
    runbook = " ".join((ROOT / "docs" / "operations.md").read_text(encoding="utf-8").split())
    assert f"less than {margin // 1000} s of its {timeout} s are left" in runbook


def test_deliver_event_is_a_well_formed_sqs_batch(template: dict[str, Any]) -> None:
    # GIVEN the sample SQS batch
    records = load_event("deliver-batch.json")["Records"]
    assert len(records) == 3
    queue_name = template["Resources"][delivery_queue_name(template)]["Properties"]["QueueName"]["Fn::Sub"]
    expected_queue = queue_name.replace("${AWS::StackName}", "proactive-delivery")
    for record in records:
        # WHEN each record is read
        body = json.loads(record["body"])
        # THEN it carries the fields Lambda's SQS event has
        assert set(record) >= SQS_RECORD_FIELDS
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"].split(":")[:3] == ["arn", "aws", "sqs"]
        assert record["eventSourceARN"].endswith(f":{expected_queue}")
        assert int(record["attributes"]["ApproximateReceiveCount"]) >= 1
        assert record["attributes"]["SentTimestamp"].isdigit()
        # AND a body the evaluate function would have sent: {source, id}
        assert set(body) == {"source", "id"}
        assert body["source"] in SCHEDULE_SOURCES
        assert isinstance(body["id"], int)
    assert [json.loads(r["body"])["id"] for r in records] == [1, 2, 3]
    assert len({r["messageId"] for r in records}) == len(records)


def test_env_file_only_sets_variables_the_template_declares(template: dict[str, Any]) -> None:
    # GIVEN the sam local --env-vars example
    env_file = load_event("env.json")
    assert set(env_file) == {
        "EvaluateFunction",
        "DeliverFunction",
        "PurgeFunction",
        "InboundFunction",
        "InboundProcessorFunction",
    }
    for name, overrides in env_file.items():
        # WHEN its variables are compared with the function's declared environment
        declared = set(function_properties(template, name)["Environment"]["Variables"])
        # THEN each is declared (sam local silently drops the others)
        assert set(overrides) <= declared, f"{name}: {sorted(set(overrides) - declared)}"
        # AND the values are local-only settings, all strings
        assert overrides["STAGE"] == "local"
        assert all(isinstance(v, str) for v in overrides.values())
        if name in DATABASE_FUNCTIONS:
            assert overrides["DATABASE_URL"].startswith("postgresql://")
            assert overrides["WEBHOOK_SIGNING_SECRET"].startswith("whsec_")
    # AND the inbound edge has its own events key, not the outbound one
    inbound = env_file["InboundFunction"]
    assert inbound["INBOUND_SIGNING_SECRET"].startswith("whsec_")
    assert inbound["INBOUND_SIGNING_SECRET"] != env_file["DeliverFunction"]["WEBHOOK_SIGNING_SECRET"]


# Tuning knobs the template leaves at the code's defaults (set them on the function to change).
CODE_DEFAULT_ONLY = frozenset(
    {
        "ENQUEUE_CONCURRENCY",
        "EVALUATE_PAGE_SIZE",
        "HTTP_CONNECT_TIMEOUT_SECONDS",
        "HTTP_READ_TIMEOUT_SECONDS",
        "PURGE_BATCH_SIZE",
        "SECRET_MAX_AGE_SECONDS",
        "SEND_CONCURRENCY",
        "CIRCUIT_WINDOW",
        "CIRCUIT_MIN_ATTEMPTS",
        "CIRCUIT_FAILURE_SHARE",
        "INBOUND_MAX_BODY_BYTES",
    }
)


def settings_read() -> set[str]:
    """Every environment variable Settings.from_env reads."""
    source = (ROOT / "layers" / "common" / "proactive_delivery" / "settings.py").read_text(encoding="utf-8")
    return set(
        re.findall(r'reader\.(?:text|optional|integer|number|boolean|parsed)\(\s*"([A-Z0-9_]+)"', source)
    )


def test_every_setting_is_in_the_template_and_in_the_readme(template: dict[str, Any]) -> None:
    # GIVEN every variable the settings object reads
    names = settings_read()
    assert {"PLATFORM_TIMEZONE", "N8N_PAYLOAD_FORMAT", "EMAIL_PROVIDER", "DEFAULT_PHONE_REGION"} <= names
    # THEN each is declared in the functions' environment (a template parameter sets it),
    # except the tuning knobs left at the code's defaults
    env = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for props in functions(template).values():
        env |= set(props["Environment"]["Variables"])
    assert sorted(names - env - CODE_DEFAULT_ONLY) == []
    # AND each has a row in the README's configuration table
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Configuration") : readme.index("## Deploying")]
    assert sorted(n for n in names if f"`{n}`" not in table) == []


# Every tunable the template exposes as a parameter, with the code's value without it.
PARAMETER_DEFAULTS: dict[str, tuple[str, Any]] = {
    "PLATFORM_TIMEZONE": ("PlatformTimezone", lambda s: s.platform_timezone),
    "DEFAULT_PHONE_REGION": ("DefaultPhoneRegion", lambda s: s.policy.phone_region),
    "N8N_PAYLOAD_FORMAT": ("N8nPayloadFormat", lambda s: s.n8n_payload_format),
    "SMS_FROM_NAME": ("SmsFromName", lambda s: s.sms_from_name),
    "SMS_TAGS": ("SmsTags", lambda s: ",".join(s.sms_tags)),
    "FOLLOWUP_SENT_BY": ("FollowupSentBy", lambda s: s.followup_sent_by),
    "EMAIL_PROVIDER": ("EmailProvider", lambda s: s.email_provider),
    "N8N_EMAIL_WEBHOOK_URL": ("N8nEmailWebhookUrl", lambda s: s.n8n_email_webhook_url or ""),
    "EMAIL_FROM_NAME": ("EmailFromName", lambda s: s.email_from_name),
    "RETRY_WINDOW_HOURS": ("RetryWindowHours", lambda s: f"{s.retry_window_hours:g}"),
    "RECONCILE_AFTER_SECONDS": ("ReconcileAfterSeconds", lambda s: str(s.reconcile_after_seconds)),
    "SMS_PROVIDER": ("SmsProvider", lambda s: s.sms_provider),
    "DEFAULT_CHANNELS": ("DefaultChannels", lambda s: ",".join(s.policy.channels)),
    "DEFAULT_TIMEZONE": ("DefaultTimezone", lambda s: s.policy.timezone),
    "QUIET_HOURS": ("QuietHours", lambda s: str(s.policy.quiet_hours)),
    "MAX_MESSAGES_PER_DAY": ("MaxMessagesPerDay", lambda s: str(s.policy.max_per_day)),
    "MESSAGE_MAX_AGE_HOURS": ("MessageMaxAgeHours", lambda s: f"{s.policy.max_age.total_seconds() / 3600:g}"),
    "PROVIDER_RATE_LIMITS": ("ProviderRateLimits", lambda s: format_rate_limits(s.provider_rate_limits)),
    "CIRCUIT_COOL_OFF_SECONDS": ("CircuitCoolOffSeconds", lambda s: str(s.circuit.cool_off_seconds)),
    "RETENTION_DAYS": ("RetentionDays", lambda s: str(s.retention.days)),
}


@pytest.mark.parametrize("variable", sorted(PARAMETER_DEFAULTS))
def test_template_parameters_default_to_what_the_code_does(template: dict[str, Any], variable: str) -> None:
    from proactive_delivery.settings import Settings

    parameter, code_value = PARAMETER_DEFAULTS[variable]
    # GIVEN the variable the template passes the functions
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env[variable] == {"Ref": parameter}
    # WHEN the code reads an environment without it
    defaults = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://127.0.0.1/x",
            "DELIVERY_QUEUE_URL": "http://127.0.0.1:1/q",
            "N8N_OUTBOUND_WEBHOOK_URL": "http://127.0.0.1:1/w",
            "WEBHOOK_SIGNING_SECRET": "whsec_dGVzdA==",
        }
    )
    # THEN the parameter's default is the same value: the two cannot drift apart
    assert str(template["Parameters"][parameter]["Default"]) == code_value(defaults)


def test_env_file_for_sam_local_reaches_the_host_from_inside_docker() -> None:
    # GIVEN the env file of `sam local invoke`, which runs each function in a container
    env_file = load_event("env.json")
    for name, overrides in env_file.items():
        urls = {k: v for k, v in overrides.items() if "://" in v}
        needed = (
            {"DATABASE_URL", "DELIVERY_QUEUE_URL", "N8N_OUTBOUND_WEBHOOK_URL"}
            if name in DATABASE_FUNCTIONS
            else {"INBOUND_QUEUE_URL", "AWS_ENDPOINT_URL_SQS"}
        )
        assert needed <= set(urls), name
        for key, url in urls.items():
            # WHEN a URL's host is read
            host = re.sub(r"^[a-z]+://(?:[^@/]*@)?", "", url).split("/")[0].rsplit(":", 1)[0]
            # THEN it is the Docker host, never the container's own loopback
            assert host == "host.docker.internal", f"{name}.{key} = {url}"


# --------------------------------------------------------------------------- #
# The inbound edge                                                            #
# --------------------------------------------------------------------------- #


def statements_of(template: dict[str, Any], function_name: str) -> list[dict[str, Any]]:
    role = role_of(template, function_name)
    return [s for owner, s in iam_statements(template) if owner == role]


def test_inbound_function_is_behind_a_public_function_url(template: dict[str, Any]) -> None:
    # GIVEN the inbound function
    props = function_properties(template, "InboundFunction")
    # WHEN its Function URL and outputs are read
    url = props["FunctionUrlConfig"]
    # THEN it has a public Function URL (Twilio and n8n cannot sign SigV4; the code verifies),
    # answered when the function returns
    assert url == {"AuthType": "NONE", "InvokeMode": "BUFFERED"}
    # AND the stack output is that URL (SAM names the generated resource <Function>Url)
    outputs = template["Outputs"]
    assert outputs["InboundFunctionUrl"]["Value"] == {"Fn::GetAtt": ["InboundFunctionUrl", "FunctionUrl"]}
    assert outputs["InboundQueueUrl"]["Value"] == {"Ref": "InboundQueue"}
    # AND the function is reached only over HTTP: no schedule, no queue event source
    assert not props.get("Events")
    # AND it stores on the inbound queue of this template
    assert props["Environment"]["Variables"]["INBOUND_QUEUE_URL"] == {"Ref": "InboundQueue"}


def test_inbound_role_stores_on_the_inbound_queue_and_nothing_else(template: dict[str, Any]) -> None:
    # GIVEN the inbound function's role
    statements = statements_of(template, "InboundFunction")
    text = json.dumps(statements)
    # WHEN its SQS, KMS, secret and database permissions are read
    [send] = [s for s in statements if "sqs:" in json.dumps(s)]
    [kms] = [s for s in statements if "kms:" in json.dumps(s)]
    # THEN it can send to the inbound queue only, with the data key of that queue's key
    assert as_list(send["Action"]) == ["sqs:SendMessage"]
    assert send["Resource"] == {"Fn::GetAtt": ["InboundQueue", "Arn"]}
    assert sorted(as_list(kms["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == {"Fn::GetAtt": ["InboundQueueKey", "Arn"]}
    # AND it holds nothing of the delivery side: no database secret, no delivery queue
    assert "DatabaseSecretArn" not in text and "DeliveryQueue" not in text and "secretsmanager" not in text
    # AND no other function can put anything on the inbound queue
    for other in ("EvaluateFunction", "DeliverFunction"):
        assert "InboundQueue" not in json.dumps(statements_of(template, other)), other


def test_inbound_secrets_are_readable_only_when_set(template: dict[str, Any]) -> None:
    for name, condition, parameter in (
        ("InboundSigningSecretPolicy", "HasInboundSigningSecret", "InboundSigningSecretArn"),
        ("InboundTwilioSecretPolicy", "HasTwilioSecret", "TwilioSecretArn"),
    ):
        # GIVEN a policy that lets the edge read a secret that verifies requests
        policy = template["Resources"][name]
        # THEN it exists only when its parameter is set, belongs to the inbound role only,
        # and grants GetSecretValue on that one secret
        assert policy["Condition"] == condition
        assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
        assert policy["Properties"]["Roles"] == [{"Ref": "InboundRole"}], name
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"], name
        assert statement["Resource"] == {"Ref": parameter}, name
    # AND the events key is its own parameter, optional, and never the outbound one
    parameter = template["Parameters"]["InboundSigningSecretArn"]
    assert parameter["Default"] == ""
    variables = function_properties(template, "InboundFunction")["Environment"]["Variables"]
    assert variables["INBOUND_SIGNING_SECRET_ARN"] == {"Ref": "InboundSigningSecretArn"}
    assert variables["INBOUND_SIGNING_SECRET"] == ""


def test_inbound_concurrency_cap_is_optional_like_the_deliver_one(template: dict[str, Any]) -> None:
    # GIVEN the inbound reservation parameter and condition
    param = template["Parameters"]["InboundReservedConcurrency"]
    condition = template["Conditions"]["ReserveInboundConcurrency"]
    reserved = function_properties(template, "InboundFunction")["ReservedConcurrentExecutions"]
    # THEN 0 (the default: accounts at the default quota cannot reserve) removes it, and any
    # other value caps the function at exactly that
    assert (param["Type"], int(param["Default"]), int(param["MinValue"])) == ("Number", 0, 0)
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "InboundReservedConcurrency"}, 0]}]}
    assert reserved == {
        "Fn::If": [
            "ReserveInboundConcurrency",
            {"Ref": "InboundReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    # AND the trade-off is written where the parameter is set
    assert "default quota" in param["Description"]


def test_inbound_queue_has_a_dlq_and_a_key_eventbridge_can_use(template: dict[str, Any]) -> None:
    from proactive_delivery.app.ports import QUEUE_MESSAGE_LIMIT_BYTES
    from proactive_delivery.settings import INBOUND_MAX_BODY_BYTES_LIMIT

    resources = template["Resources"]
    queue = resources["InboundQueue"]["Properties"]
    dlq = resources["InboundDLQ"]["Properties"]
    # GIVEN the inbound queue and its dead-letter queue
    # THEN the queue redrives to the DLQ, which keeps messages as long and takes them from it only
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["InboundDLQ", "Arn"]}
    # (docs/inbound.md: 14 days on the queue, the DLQ after 10 receives)
    assert (queue["MessageRetentionPeriod"], queue["RedrivePolicy"]["maxReceiveCount"]) == (1_209_600, 10)
    assert dlq["MessageRetentionPeriod"] == DLQ_RETENTION_SECONDS >= queue["MessageRetentionPeriod"]
    [source_arn] = dlq["RedriveAllowPolicy"]["sourceQueueArns"]
    assert source_arn["Fn::Sub"].endswith(queue["QueueName"]["Fn::Sub"])
    # AND both are encrypted with the stack's own rotated key (EventBridge cannot use
    # alias/aws/sqs), whose policy the account administers
    key = {"Fn::GetAtt": ["InboundQueueKey", "Arn"]}
    assert queue["KmsMasterKeyId"] == dlq["KmsMasterKeyId"] == key
    key_props = resources["InboundQueueKey"]["Properties"]
    assert key_props["EnableKeyRotation"] is True
    # AND the queue takes every message the edge lets through (it checks against the same limit)
    assert queue["MaximumMessageSize"] == QUEUE_MESSAGE_LIMIT_BYTES == INBOUND_MAX_BODY_BYTES_LIMIT


def test_inbound_sample_events_are_function_url_requests_to_the_edges_routes() -> None:
    from urllib.parse import parse_qsl

    from standardwebhooks.webhooks import Webhook
    from twilio.request_validator import RequestValidator

    from proactive_delivery.adapters.function_url import request_from_event
    from proactive_delivery.app.inbound_edge import Route, signed_url

    env = load_event("env.json")["InboundFunction"]
    names = sorted(p.name for p in EVENTS_DIR.glob("inbound-*.json"))
    assert names == ["inbound-events.json", "inbound-twilio-message.json", "inbound-twilio-status.json"]
    for name in names:
        # GIVEN a sample event WHEN it is read as the edge reads a Function URL request
        event = load_event(name)
        request = request_from_event(event)
        # THEN it is a payload format 2.0 POST to one of the edge's routes
        assert event["version"] == "2.0"
        assert request.method == "POST"
        assert Route(request.path)
        headers = request.headers
        if request.path.startswith("/twilio/"):
            # AND a Twilio sample is signed as Twilio signs, with the env file's auth token
            # (checked by Twilio's own RequestValidator over the URL the edge reconstructs)
            params = dict(parse_qsl(request.body().decode(), keep_blank_values=True))
            validator = RequestValidator(env["TWILIO_AUTH_TOKEN"])
            assert validator.validate(signed_url(request), params, headers["x-twilio-signature"]), name
        else:
            # AND the events sample is signed with the env file's inbound key, at the time it says
            signer = Webhook(env["INBOUND_SIGNING_SECRET"])
            at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
            signature = signer.sign(msg_id=headers["webhook-id"], timestamp=at, data=request.body().decode())
            assert headers["webhook-signature"] == signature, name


def test_ses_events_reach_the_inbound_queue_when_the_stack_sends_through_ses(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    names = ("SesConfigurationSet", "SesEventsToEventBridge", "InboundSesEventsRule", "InboundQueuePolicy")
    # GIVEN the SES -> EventBridge -> inbound queue wiring
    # THEN all of it exists only when the stack has an SES identity to send as
    for name in names:
        assert resources[name]["Condition"] == "HasEmailIdentity", name
    # AND the configuration set publishes delivery, bounce, complaint and reject to the default bus
    destination = resources["SesEventsToEventBridge"]["Properties"]
    assert destination["ConfigurationSetName"] == {"Ref": "SesConfigurationSet"}
    published = destination["EventDestination"]
    assert published["Enabled"] is True
    assert sorted(published["MatchingEventTypes"]) == ["bounce", "complaint", "delivery", "reject"]
    assert published["EventBridgeDestination"]["EventBusArn"]["Fn::Sub"].endswith(":event-bus/default")
    # AND the rule takes those events of this configuration set only, to the inbound queue,
    # with what it cannot deliver on the inbound DLQ
    rule = resources["InboundSesEventsRule"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ses"]
    assert sorted(pattern["detail-type"]) == [
        "Email Bounced",
        "Email Complaint Received",
        "Email Delivered",
        "Email Rejected",
    ]
    assert pattern["detail"]["mail"]["tags"]["ses:configuration-set"] == [{"Ref": "SesConfigurationSet"}]
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["InboundQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["InboundDLQ", "Arn"]}
    # AND the queues let EventBridge send for that rule only
    policy = resources["InboundQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "InboundQueue"}, {"Ref": "InboundDLQ"}]
    [allow] = policy["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert as_list(allow["Action"]) == ["sqs:SendMessage"]
    assert allow["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["InboundSesEventsRule", "Arn"]}}
    }
    # AND the queues' key lets EventBridge encrypt for that same rule, named as the rule is
    statements = resources["InboundQueueKey"]["Properties"]["KeyPolicy"]["Statement"]
    [conditional] = [st for st in statements if "Fn::If" in st]
    condition, events, absent = conditional["Fn::If"]
    assert (condition, absent) == ("HasEmailIdentity", {"Ref": "AWS::NoValue"})
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(as_list(events["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    source_arn = events["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source_arn.endswith(":rule/" + rule["Name"]["Fn::Sub"])
    # AND every e-mail the deliver function sends names the configuration set
    env = function_properties(template, "DeliverFunction")["Environment"]["Variables"]
    assert env["SES_CONFIGURATION_SET"] == {
        "Fn::If": ["HasEmailIdentity", {"Ref": "SesConfigurationSet"}, ""]
    }
