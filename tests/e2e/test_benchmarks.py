"""The benchmarks run to the end: the import-time benchmark as `make bench` users run it
(its figures are not asserted: they depend on the machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_benchmark_runs_and_prints_its_table() -> None:
    # WHEN benchmarks/bench_imports.py runs with one sample per cell
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_imports.py"), "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # THEN it exits 0 with a row per handler and mode, and no handler loaded local tooling
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [
        line.split()
        for line in proc.stdout.splitlines()
        if line.startswith(("evaluate", "deliver")) and len(line.split()) == 6
    ]
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        (handler, "today", mode)
        for handler in ("evaluate", "deliver")
        for mode in ("lambda", "eager", "local")
    )
    # AND every figure is a positive time
    assert all(float(v) > 0 for r in rows for v in r[3:])
    assert "precompiled" in proc.stdout
    assert "FAIL" not in proc.stderr
