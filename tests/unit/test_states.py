"""FAILED_REASONS is the list of reasons the runtime records with State.FAILED: read from
the runtime's code (the literal reasons of its failing paths) and from the verdict on the
preference values it cannot use, so a new failed reason cannot be added without the list
(and `resend --reason`) knowing it, nor a stale one kept."""

from __future__ import annotations

import ast
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import proactive_delivery
from proactive_delivery.app.verdict import judge
from proactive_delivery.core.content import Names
from proactive_delivery.core.models import MessageFacts, MessageKey
from proactive_delivery.core.policy import NO_QUIET_HOURS, StoredPreferences
from proactive_delivery.core.states import FAILED_REASONS
from tests.support.policy import ALL_CHANNELS, NEW_YORK

PACKAGE = Path(proactive_delivery.__file__).parent
NOW = datetime(2025, 1, 15, 15, 0, 0, tzinfo=UTC)
DEFAULTS = replace(NEW_YORK, channels=("sms",), quiet_hours=NO_QUIET_HOURS)
# Preference rows the policy cannot use, one value wrong in each (anyone with database access
# can write the row; the CLI refuses these).
UNUSABLE_PREFERENCES = [
    StoredPreferences(channels=["fax"]),
    StoredPreferences(timezone="Mars/Base"),
    StoredPreferences(max_per_day=-1),
]


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_state(node: ast.expr | None, state: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == state


def _failed_reason(call: ast.Call) -> str | None:
    """The reason a call records a message `failed` with, when it is one of the runtime's
    three ways to do it and the reason is a literal."""
    name = _name(call.func)
    first = call.args[0] if call.args else None
    if name == "PermanentSendError":
        # "failed" unless it says otherwise (final_state=State.SKIPPED: do not message them).
        final = _keyword(call, "final_state")
        return _literal(first) if final is None or _is_state(final, "FAILED") else None
    if name == "Decision" and _literal(first) == "fail":
        return _literal(_keyword(call, "reason"))
    if name == "Outcome" and any(_is_state(a, "FAILED") for a in [*call.args, _keyword(call, "state")]):
        return _literal(_keyword(call, "reason"))
    return None


def literal_failed_reasons() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (reason := _failed_reason(node)) is not None:
                found.add(reason)
    return found


def verdict_on(preferences: StoredPreferences) -> tuple[str, str | None]:
    facts = MessageFacts(
        key=MessageKey("proactive", 9),
        contractor_id=7,
        message_type="check_in",
        body="Hi {first_name}",
        due_at=NOW - timedelta(minutes=1),
        names=Names("Ana", "Silva"),
        phone="(312) 555-0142",
        preferences=preferences,
    )
    decision = judge(facts, now=NOW, defaults=DEFAULTS, channels=ALL_CHANNELS).decision
    return decision.action, decision.reason


@pytest.mark.parametrize("preferences", UNUSABLE_PREFERENCES)
def test_an_unusable_preference_fails_with_a_listed_reason(preferences: StoredPreferences) -> None:
    action, reason = verdict_on(preferences)
    assert action == "fail"
    assert reason in FAILED_REASONS


def test_the_runtime_records_failed_with_exactly_the_listed_reasons() -> None:
    # GIVEN the literal reasons of the runtime's failing paths (a provider's refusal, a
    # verdict of fail, a failed outcome) and the verdict's on unusable preferences
    in_code = literal_failed_reasons()
    from_preferences = {verdict_on(p)[1] for p in UNUSABLE_PREFERENCES}
    # THEN the scan found the paths it reads (it would find nothing if the code changed shape)
    assert {"attempts_exhausted", "rejected", "source_row_missing"} <= in_code
    # AND together they are the list, no more and no less
    assert in_code | from_preferences == FAILED_REASONS


def test_the_runbook_lists_every_reason_resend_accepts() -> None:
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    resend = runbook[runbook.index("### `proactive-delivery resend") :]
    assert {r for r in FAILED_REASONS if f"`{r}`" in resend} == FAILED_REASONS
