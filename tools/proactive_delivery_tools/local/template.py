"""Read template.yaml the way the local runtime needs it: the queues, the functions, their
environment, their schedules and their SQS event sources, with the intrinsic functions
(!Ref, !GetAtt, !Sub, !If, !Join, ...) resolved against the parameters' defaults, the
overrides given on the command line, and the local queue URLs once the queues exist.

Only what the runtime emulates is read; everything else (IAM policies, log groups, the
layer, VPC settings) is ignored on purpose: on one machine it has no meaning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proactive_delivery.core.errors import ConfigError
from proactive_delivery_tools.local.sqs import LOCAL_REGION

LOCAL_ACCOUNT = "123456789012"
LOCAL_STACK_NAME = "local"

_SCALAR_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "GetAtt": "Fn::GetAtt",
    "Sub": "Fn::Sub",
    "If": "Fn::If",
    "Join": "Fn::Join",
    "Equals": "Fn::Equals",
    "Not": "Fn::Not",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "FindInMap": "Fn::FindInMap",
    "Base64": "Fn::Base64",
    "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue",
}


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that understands CloudFormation's short-form tags."""


def _construct(full_name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if full_name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {full_name: value}

    return construct


for _tag, _name in _SCALAR_TAGS.items():
    _CfnLoader.add_constructor(f"!{_tag}", _construct(_name))


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read template {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass  # nosec B506
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise ConfigError(f"{path} has no Resources section: is it a SAM template?")
    return data


# -------------------------------------------------------------------------------------------
# What the runtime emulates
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    visibility_timeout: int = 30
    retention_seconds: int = 345600
    dead_letter_target: str | None = None  # logical id of the DLQ
    max_receive_count: int | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    expression: str
    input: dict[str, Any]
    enabled: bool = True


@dataclass(frozen=True)
class SqsEventSpec:
    name: str
    queue: str  # logical id
    batch_size: int = 10
    batching_window: float = 0
    maximum_concurrency: int | None = None
    report_batch_item_failures: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    memory_mb: int
    environment: dict[str, Any]  # unresolved: queue refs need the local queue URLs
    schedules: list[ScheduleSpec] = field(default_factory=list)
    sqs_events: list[SqsEventSpec] = field(default_factory=list)
    # FunctionUrlConfig: called over HTTP (the local runtime serves it on loopback).
    function_url: bool = False

    @property
    def module_file(self) -> Path:
        module, _, _function = self.handler.rpartition(".")
        return self.code_uri / (module.replace(".", "/") + ".py")

    @property
    def function_name(self) -> str:
        return self.handler.rpartition(".")[2]


class _NoValue:
    """AWS::NoValue: the property disappears."""


NO_VALUE = _NoValue()


class LocalTemplate:
    def __init__(self, path: Path | str, parameter_overrides: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.root = self.path.resolve().parent
        self.data = load_yaml(self.path)
        self.parameters = self._parameters(parameter_overrides or {})
        # Logical id -> what !Ref / !GetAtt return, filled in as local resources appear.
        self.refs: dict[str, str] = {}
        self.attributes: dict[tuple[str, str], str] = {}
        self._conditions: dict[str, bool] = {}
        self.queues = self._queues()
        for spec in self.queues.values():
            arn = f"arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{spec.name}"
            self.attributes[(spec.logical_id, "Arn")] = arn
            self.attributes[(spec.logical_id, "QueueName")] = spec.name
        self.functions = self._functions()

    @property
    def dead_letter_queues(self) -> frozenset[str]:
        """The queues some queue's redrive policy names as its dead-letter target."""
        return frozenset(s.dead_letter_target for s in self.queues.values() if s.dead_letter_target)

    # Parameters ---------------------------------------------------------------------------
    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, str | None]:
        declared: dict[str, Any] = self.data.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise ConfigError(f"parameter override for undeclared parameter(s): {', '.join(unknown)}")
        values: dict[str, str | None] = {}
        for name, spec in declared.items():
            if name in overrides:
                values[name] = str(overrides[name])
            elif isinstance(spec, dict) and "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                # Deployed-only values (secret ARNs, the https webhook URL): the env file
                # overrides what the functions read from them.
                values[name] = None
        return values

    # Intrinsic functions -------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
                return self._evaluate_condition(value)
            intrinsic = self._intrinsics().get(key)
            if intrinsic is not None:
                return intrinsic(arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _intrinsics(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": lambda arg: self._ref(str(arg)),
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::If": self._if,
            "Fn::Join": self._join,
            "Fn::Select": lambda arg: self.resolve(arg[1])[int(self.resolve(arg[0]))],
            "Fn::Split": lambda arg: str(self.resolve(arg[1])).split(str(arg[0])),
            "Fn::FindInMap": self._find_in_map,
        }

    def _if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _join(self, arg: Any) -> str:
        sep, items = arg
        parts = self.resolve(items)
        return str(sep).join(str(p) for p in (parts if isinstance(parts, list) else [parts]))

    def _find_in_map(self, arg: Any) -> Any:
        mapping, first, second = (str(self.resolve(a)) for a in arg)
        try:
            return (self.data.get("Mappings") or {})[mapping][first][second]
        except KeyError:
            raise ConfigError(f"Fn::FindInMap: no {mapping}.{first}.{second} in the template") from None

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": LOCAL_STACK_NAME,
            "AWS::Region": LOCAL_REGION,
            "AWS::AccountId": LOCAL_ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            declared = (self.data.get("Parameters") or {}).get(name) or {}
            value = self.parameters[name]
            if declared.get("Type") == "CommaDelimitedList":
                return [] if not value else [v.strip() for v in value.split(",")]
            return "" if value is None else value
        if name in self.refs:
            return self.refs[name]
        if name in self.data["Resources"]:
            # A resource the runtime does not create (a layer, a log group): its logical
            # id stands in for its physical id.
            return name
        raise ConfigError(f"!Ref {name}: no such parameter or resource in {self.path.name}")

    def _get_att(self, arg: Any) -> str:
        logical_id, attribute = (arg if isinstance(arg, list) else str(arg).split(".", 1))[:2]
        try:
            return self.attributes[(str(logical_id), str(attribute))]
        except KeyError:
            raise ConfigError(f"!GetAtt {logical_id}.{attribute} is not emulated locally") from None

    def _sub(self, arg: Any) -> str:
        text, variables = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(name.split(".", 1))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, str(text))

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.data.get("Conditions") or {}
            if name not in conditions:
                raise ConfigError(f"condition {name} is not declared in {self.path.name}")
            self._conditions[name] = bool(self._evaluate_condition(conditions[name]))
        return self._conditions[name]

    def _evaluate_condition(self, value: Any) -> bool:
        ((key, arg),) = value.items()
        if key == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self._evaluate_condition(arg[0])
        if key == "Fn::And":
            return all(self._evaluate_condition(a) for a in arg)
        if key == "Fn::Or":
            return any(self._evaluate_condition(a) for a in arg)
        if key == "Condition":
            return self.condition(str(arg))
        raise ConfigError(f"unsupported condition function {key}")

    # Resources ------------------------------------------------------------------------------
    def _resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            name: resource.get("Properties") or {}
            for name, resource in self.data["Resources"].items()
            if isinstance(resource, dict) and resource.get("Type") == kind
        }

    def _queues(self) -> dict[str, QueueSpec]:
        specs: dict[str, QueueSpec] = {}
        for logical_id, props in self._resources("AWS::SQS::Queue").items():
            name = str(self.resolve(props.get("QueueName", logical_id)))
            redrive = props.get("RedrivePolicy") or {}
            target = redrive.get("deadLetterTargetArn")
            dlq = None
            if target is not None:
                ref = target.get("Fn::GetAtt") if isinstance(target, dict) else None
                if not ref:
                    raise ConfigError(f"{logical_id}: deadLetterTargetArn must be !GetAtt <Queue>.Arn")
                dlq = str(ref[0] if isinstance(ref, list) else str(ref).split(".")[0])
            max_receive = redrive.get("maxReceiveCount")
            specs[logical_id] = QueueSpec(
                logical_id=logical_id,
                name=name,
                visibility_timeout=int(self.resolve(props.get("VisibilityTimeout", 30))),
                retention_seconds=int(self.resolve(props.get("MessageRetentionPeriod", 345600))),
                dead_letter_target=dlq,
                max_receive_count=int(self.resolve(max_receive)) if max_receive is not None else None,
            )
        for spec in specs.values():
            if spec.dead_letter_target and spec.dead_letter_target not in specs:
                raise ConfigError(f"{spec.logical_id}: dead-letter queue {spec.dead_letter_target} not found")
        return specs

    def _functions(self) -> dict[str, FunctionSpec]:
        globals_ = ((self.data.get("Globals") or {}).get("Function")) or {}
        specs: dict[str, FunctionSpec] = {}
        for logical_id, props in self._resources("AWS::Serverless::Function").items():

            def prop(name: str, default: Any, props: dict[str, Any] = props) -> Any:
                return self.resolve(props.get(name, globals_.get(name, default)))

            code_uri = prop("CodeUri", None)
            handler = prop("Handler", None)
            if not code_uri or not handler:
                raise ConfigError(f"{logical_id}: CodeUri and Handler are required locally")
            environment = dict(((globals_.get("Environment") or {}).get("Variables")) or {})
            environment.update(((props.get("Environment") or {}).get("Variables")) or {})
            schedules: list[ScheduleSpec] = []
            sqs_events: list[SqsEventSpec] = []
            for event_name, event in (props.get("Events") or {}).items():
                kind = event.get("Type")
                eprops = event.get("Properties") or {}
                if kind in ("Schedule", "ScheduleV2"):
                    schedules.append(self._schedule(logical_id, event_name, eprops))
                elif kind == "SQS":
                    sqs_events.append(self._sqs_event(logical_id, event_name, eprops))
            specs[logical_id] = FunctionSpec(
                logical_id=logical_id,
                code_uri=(self.root / str(code_uri)).resolve(),
                handler=str(handler),
                timeout=int(prop("Timeout", 3)),
                memory_mb=int(prop("MemorySize", 128)),
                environment=environment,
                schedules=schedules,
                sqs_events=sqs_events,
                function_url=bool(props.get("FunctionUrlConfig")),
            )
        return specs

    def _schedule(self, function: str, name: str, props: dict[str, Any]) -> ScheduleSpec:
        expression = str(self.resolve(props.get("Schedule") or props.get("ScheduleExpression") or ""))
        raw_input = self.resolve(props.get("Input", "{}"))
        try:
            payload = json.loads(raw_input) if isinstance(raw_input, str) else raw_input
        except ValueError:
            raise ConfigError(f"{function}.{name}: Input is not valid JSON") from None
        enabled = props.get("Enabled", True)
        state = props.get("State")
        if state is not None:
            enabled = str(self.resolve(state)).upper() == "ENABLED"
        return ScheduleSpec(name=name, expression=expression, input=payload, enabled=bool(enabled))

    def _sqs_event(self, function: str, name: str, props: dict[str, Any]) -> SqsEventSpec:
        queue = props.get("Queue")
        ref = queue.get("Fn::GetAtt") if isinstance(queue, dict) else None
        if not ref or str(ref[0]) not in self.queues:
            raise ConfigError(f"{function}.{name}: Queue must be !GetAtt <a queue in this template>.Arn")
        scaling = self.resolve(props.get("ScalingConfig") or {})
        concurrency = scaling.get("MaximumConcurrency")
        batch_size = int(self.resolve(props.get("BatchSize", 10)))
        window = float(self.resolve(props.get("MaximumBatchingWindowInSeconds", 0)))
        if batch_size > 10 and window <= 0:
            raise ConfigError(f"{function}.{name}: BatchSize above 10 needs MaximumBatchingWindowInSeconds")
        return SqsEventSpec(
            name=name,
            queue=str(ref[0]),
            batch_size=batch_size,
            batching_window=window,
            maximum_concurrency=int(concurrency) if concurrency is not None else None,
            report_batch_item_failures="ReportBatchItemFailures"
            in (self.resolve(props.get("FunctionResponseTypes")) or []),
            enabled=bool(self.resolve(props.get("Enabled", True))),
        )

    # After the queues exist locally ---------------------------------------------------------
    def bind_queue(self, logical_id: str, url: str, arn: str) -> None:
        self.refs[logical_id] = url
        self.attributes[(logical_id, "Arn")] = arn

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The function's environment as deployed, with local queue URLs for queue refs."""
        resolved = self.resolve(self.functions[logical_id].environment)
        return {str(k): "" if v is None else str(v) for k, v in resolved.items()}


def load_env_file(path: Path | str | None) -> dict[str, dict[str, str]]:
    """An env file in `sam local invoke --env-vars` format: {"Parameters": {...}} for every
    function and {"<FunctionLogicalId>": {...}} for one."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"env file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f'env file {path} must map "Parameters" or function names to objects')
    return {str(k): {str(n): "" if v is None else str(v) for n, v in vs.items()} for k, vs in data.items()}
