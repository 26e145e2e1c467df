"""What the runbook and the cut-over guide name exists: a name in backticks that looks like a
template name is a parameter, mapping, resource or output of template.yaml, or a metric the
code emits (a runbook that sends on-call to a parameter nobody can find is worse than none);
the retry figures it gives are the code's and the template's."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from proactive_delivery.adapters.telemetry import METRICS, NAMESPACE
from proactive_delivery.core import errors
from proactive_delivery.core.retry import SVIX_SCHEDULE
from tests.unit.test_template import load_template

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ["docs/operations.md", "docs/cutover.md"]
# Names in backticks that are not the template's: the states an event source mapping reports,
# and the SQS API the replay uses.
OTHER_NAMES = {"Enabled", "Disabled", "StartMessageMoveTask"}


def _known_names() -> set[str]:
    template = load_template()
    names = {n for section in ("Parameters", "Mappings", "Resources", "Outputs") for n in template[section]}
    names |= {m.name for m in METRICS} | {NAMESPACE} | OTHER_NAMES
    return names | {n for n in dir(errors) if n.endswith("Error")}


@pytest.mark.parametrize("guide", GUIDES)
def test_every_name_the_guide_gives_exists(guide: str) -> None:
    text = (ROOT / guide).read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Z][a-z]+(?:[A-Z][A-Za-z0-9]*)+)`", text))
    assert named, "the pattern found no names at all"
    assert named - _known_names() == set()


def _spoken(seconds: int) -> str:
    wait = timedelta(seconds=seconds)
    if wait < timedelta(minutes=1):
        return f"{seconds} s"
    if wait < timedelta(hours=1):
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def test_the_retry_schedule_in_the_runbook_is_the_codes() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    *first, last = (_spoken(s) for s in SVIX_SCHEDULE)
    flowing = " ".join(runbook.split())
    assert f"by default {', '.join(first)}, then {last} between attempts" in flowing
    default = load_template()["Parameters"]["RetryWindowHours"]["Default"]
    assert f"until `RetryWindowHours` (default {default} h) is spent" in flowing


def _shell_lines(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


@pytest.mark.parametrize("guide", ["README.md", *GUIDES])
def test_every_make_deploy_command_given_has_the_database_secret(guide: str) -> None:
    # `make deploy` migrates the stack's database first and stops without DATABASE_SECRET_ARN
    # (tests/unit/test_deploy_script.py): a command to copy must carry it.
    commands = [
        line for line in _shell_lines((ROOT / guide).read_text(encoding="utf-8")) if "make deploy" in line
    ]
    assert all("DATABASE_SECRET_ARN=" in line for line in commands), commands
    if guide == "docs/cutover.md":
        assert any("DeliveryEnabled=false" in line for line in commands)
