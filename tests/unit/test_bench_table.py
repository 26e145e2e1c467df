"""The pipeline benchmark's exit status: informational rows (absolute rates) never fail a
run; a missed target, a failed check or a section that raised always does, by name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def table_module() -> ModuleType:
    # table.py imports nothing of the benchmark's, so it loads alone (no sys.path change).
    path = ROOT / "benchmarks" / "pipeline_bench" / "table.py"
    spec = importlib.util.spec_from_file_location("_bench_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_informational_rows_never_fail_the_run() -> None:
    # GIVEN a table with a low absolute rate as an informational row and targets that hold
    table = table_module().Table()
    table.info("deliver msg/s (1000 msgs, batches of 10)", "12.0")
    table.target("deliver / httpx floor (msg/s)", 0.95, "{:.2f}", 0.9, at_least=True)
    table.target("log + EMF bytes per delivered message", 280.0, "{:.0f}", 300.0, at_least=False)
    table.check("deliver correctness (all sent once)", "ok", "each message once", ok=True)
    # THEN the run passes, and the informational row has neither target nor verdict
    assert not table.failed
    assert table.results() == ["result: all targets met, all checks hold"]
    assert table.rows[0] == ("deliver msg/s (1000 msgs, batches of 10)", "12.0", "-", "-")
    assert [r[3] for r in table.rows[1:]] == ["met", "met", "ok"]


def test_a_missed_target_fails_the_run_and_is_named() -> None:
    # GIVEN a ratio above its ceiling
    table = table_module().Table()
    met = table.target("CPU per delivered message: deliver / floor", 1.9, "{:.2f}", 1.3, at_least=False)
    # THEN the row says MISSED, the run fails and the result line names the target
    assert met is False
    assert table.rows[0][1:] == ("1.90", "<= 1.3", "MISSED")
    assert table.failed
    assert table.results() == [
        "result: TARGET MISSED: CPU per delivered message: deliver / floor: 1.90 (target <= 1.3)"
    ]


def test_a_lower_bound_is_met_at_the_bound_and_missed_below_it() -> None:
    table = table_module().Table()
    assert table.target("deliver / baseline (msg/s)", 8.0, "{:.1f}", 8.0, at_least=True, unit="x")
    assert not table.target("deliver / baseline (msg/s)", 7.95, "{:.1f}", 8.0, at_least=True, unit="x")
    assert table.rows[1][1:] == ("8.0x", ">= 8x", "MISSED")


def test_a_failed_check_and_a_failed_section_fail_the_run() -> None:
    # GIVEN a check with problems, and a section that raises
    module = table_module()
    table = module.Table()
    table.problems("deliver correctness (all sent once)", ["batches of 10: 2 batchItemFailures"], "each once")
    with table.section("evaluate"):
        raise RuntimeError("child exited 1")
    # THEN both are named and the run fails; the section's rows before the error stay
    assert table.failed
    assert table.results() == [
        "result: CHECK FAILED: deliver correctness (all sent once): "
        "batches of 10: 2 batchItemFailures (expected each once)",
        "result: SECTION FAILED: evaluate: ERROR RuntimeError: child exited 1",
    ]
    assert "| FAILED" in table.render()
