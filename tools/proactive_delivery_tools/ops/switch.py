"""The pause switch of a deployed stack: `proactive-delivery pause | resume | status`.

What starts work in a deployed stack is its triggers: the EventBridge rules of evaluate's
schedules (nothing is queued without them) and the SQS event source mapping of deliver
(nothing is sent without it). Pausing disables all of them, the mapping first because it is
what sends; resuming enables them, the mapping first so that the queue drains before new
work is queued. Nothing is lost while paused: due messages stay in the database, queued ones
on the queue (its retention is 4 days; a message that outlives it is still `queued` in the
database and the first evaluate run after the resume queues it again).

The triggers are found from the CloudFormation stack's resources (by type, so a renamed
event or an added schedule is still found), and the template's DeliveryEnabled parameter
sets the same switches at deploy time. The AWS clients are passed in (moto in the tests).

One schedule is not part of the switch: the daily retention purge (HOUSEKEEPING_RULES). It
queues and sends nothing, and it deletes only finished rows the platform no longer has due,
so a stack held paused for weeks keeps its tables bounded. `status` lists it apart, with its
state; it is named by its logical id, so any other schedule (a renamed or new one) is
switched, the safe default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from proactive_delivery_tools.ops.errors import OperationsError, describe_aws_error

RULE: Final = "AWS::Events::Rule"
MAPPING: Final = "AWS::Lambda::EventSourceMapping"
# Schedules that pause and resume leave alone (SAM names a function's rule <Function><Event>);
# tests/unit/test_template.py checks these are the template's purge schedule.
HOUSEKEEPING_RULES: Final = frozenset({"PurgeFunctionDailySchedule"})
HOUSEKEEPING: Final = "housekeeping"
QUEUE: Final = "AWS::SQS::Queue"
RUNNING: Final = "running"
PAUSED: Final = "paused"
PARTLY: Final = "partly paused"
# A mapping that is Disabling may still start an invocation; Disabled may not.
_OFF_STATES: Final = frozenset({"DISABLED", "Disabled", "Disabling"})
_MAPPING_SETTLED: Final = frozenset({"Enabled", "Disabled"})
SETTLED_STATES: Final = frozenset({"ENABLED", "DISABLED", *_MAPPING_SETTLED})


@dataclass(frozen=True)
class Trigger:
    kind: str  # "schedule", "event source" or "housekeeping" (a schedule the switch leaves alone)
    logical_id: str
    physical_id: str  # the rule's name, or the mapping's UUID
    state: str = "unknown"  # ENABLED/DISABLED (rule), Enabled/Disabling/... (mapping)

    @property
    def off(self) -> bool:
        return self.state in _OFF_STATES

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "logical_id": self.logical_id,
            "physical_id": self.physical_id,
            "state": self.state,
        }


@dataclass(frozen=True)
class Stack:
    name: str
    triggers: tuple[Trigger, ...]
    queues: dict[str, str]  # logical id -> queue URL
    delivery_enabled_parameter: str | None  # the deployed value of DeliveryEnabled

    @property
    def switched(self) -> tuple[Trigger, ...]:
        """The triggers pause and resume act on."""
        return tuple(t for t in self.triggers if t.kind != HOUSEKEEPING)

    @property
    def state(self) -> str:
        return overall_state(self.switched)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.name,
            "state": self.state,
            "deployed_delivery_enabled": self.delivery_enabled_parameter,
            "triggers": [t.as_dict() for t in self.triggers],
        }


def overall_state(triggers: tuple[Trigger, ...] | list[Trigger]) -> str:
    offs = {t.off for t in triggers}
    if offs == {True}:
        return PAUSED
    if offs == {False}:
        return RUNNING
    return PARTLY


def stack_name_from_samconfig(path: Path, config_env: str = "default") -> str | None:
    """stack_name of a samconfig.toml environment (global, then deploy parameters)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OperationsError(f"cannot read {path}: {exc}") from None
    env = data.get(config_env) or {}
    for command in ("global", "deploy"):
        name = ((env.get(command) or {}).get("parameters") or {}).get("stack_name")
        if name:
            return str(name)
    return None


def call_aws(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, what) from exc


def _aws_error(exc: Exception, what: str) -> OperationsError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
            return OperationsError(f"{what}: the stack does not exist in this account and region")
        if error.get("Code") == "ResourceNotFoundException":
            return OperationsError(f"{what}: not found (was it removed outside the stack?)")
    return describe_aws_error(exc, what, service="AWS")


def load_stack(cfn: Any, events: Any, lam: Any, name: str) -> Stack:
    """The stack's triggers with their current state, its queues and DeliveryEnabled."""
    what = f"stack {name}"
    described = call_aws(what, cfn.describe_stacks, StackName=name)["Stacks"][0]
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in described.get("Parameters", [])}
    triggers: list[Trigger] = []
    queues: dict[str, str] = {}
    paginator = cfn.get_paginator("list_stack_resources")
    try:
        pages = list(paginator.paginate(StackName=name))
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, what) from exc
    for page in pages:
        for resource in page.get("StackResourceSummaries", []):
            kind, logical, physical = (
                resource["ResourceType"],
                resource["LogicalResourceId"],
                resource.get("PhysicalResourceId", ""),
            )
            if kind == RULE:
                triggers.append(
                    Trigger(HOUSEKEEPING if logical in HOUSEKEEPING_RULES else "schedule", logical, physical)
                )
            elif kind == MAPPING:
                triggers.append(Trigger("event source", logical, physical))
            elif kind == QUEUE and physical:
                queues[logical] = physical
    if not any(t.kind != HOUSEKEEPING for t in triggers):
        raise OperationsError(
            f"{what} has no schedule or event source mapping: is it this application's stack?"
        )
    # The event source first, as pause and resume act on it first; housekeeping last.
    triggers.sort(key=lambda t: (t.kind != "event source", t.kind == HOUSEKEEPING, t.logical_id))
    return Stack(
        name=name,
        triggers=tuple(read_state(events, lam, t) for t in triggers),
        queues=queues,
        delivery_enabled_parameter=parameters.get("DeliveryEnabled"),
    )


def read_state(events: Any, lam: Any, trigger: Trigger) -> Trigger:
    if trigger.kind != "event source":
        rule = call_aws(f"rule {trigger.physical_id}", events.describe_rule, Name=trigger.physical_id)
        return replace(trigger, state=str(rule.get("State", "unknown")))
    mapping = call_aws(
        f"event source mapping {trigger.physical_id}", lam.get_event_source_mapping, UUID=trigger.physical_id
    )
    return replace(trigger, state=str(mapping.get("State", "unknown")))


def set_enabled(
    events: Any,
    lam: Any,
    stack: Stack,
    *,
    enabled: bool,
    wait_seconds: float = 60.0,
    poll_seconds: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Stack:
    """Flip every switched trigger of the stack, the event source mapping first; then wait
    (up to wait_seconds) until each mapping has settled, so that after a pause no new deliver
    invocation starts. Returns the stack with the states read back."""
    for trigger in stack.switched:
        what = f"{trigger.kind} {trigger.logical_id} ({trigger.physical_id})"
        if trigger.kind == "event source":
            call_aws(what, lam.update_event_source_mapping, UUID=trigger.physical_id, Enabled=enabled)
        elif enabled:
            call_aws(what, events.enable_rule, Name=trigger.physical_id)
        else:
            call_aws(what, events.disable_rule, Name=trigger.physical_id)
    deadline = clock() + wait_seconds
    while True:
        current = tuple(read_state(events, lam, t) for t in stack.triggers)
        settling = [t for t in current if t.kind == "event source" and t.state not in _MAPPING_SETTLED]
        if not settling or clock() >= deadline:
            return replace(stack, triggers=current)
        sleep(poll_seconds)


def render_switch(stack: Stack) -> list[str]:
    lines = [f"Delivery switch: {stack.state} (stack {stack.name})"]
    width = max(len(t.logical_id) for t in stack.triggers)
    for t in stack.switched:
        lines.append(f"  {t.kind:<13} {t.logical_id:<{width}}  {t.state:<9} {t.physical_id}")
    for t in stack.triggers:
        if t.kind == HOUSEKEEPING:
            lines.append(
                f"  {t.kind:<13} {t.logical_id:<{width}}  {t.state:<9} {t.physical_id}"
                " (not switched: it queues and sends nothing)"
            )
    deployed = stack.delivery_enabled_parameter
    if deployed is not None and (deployed == "true") == (stack.state == PAUSED):
        keep = "false" if stack.state == PAUSED else "true"
        lines.append(
            f"  note: the stack was deployed with DeliveryEnabled={deployed}; a deploy that changes these "
            f"resources applies that again (deploy with DeliveryEnabled={keep} to keep this state)"
        )
    return lines
