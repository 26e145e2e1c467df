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


def test_pipeline_benchmark_runs_every_section_and_its_correctness_checks_hold() -> None:
    # WHEN the pipeline benchmark runs small (its targets are the benchmark's business: today
    # some are missed on purpose, and a loaded machine may miss others, so only exit codes 0
    # and 1 are accepted)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--quick", "--backlog-rows", "3000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode in (0, 1), out + proc.stderr[-3000:]
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if len(cells := [c.strip() for c in line.split("|")]) == 4 and cells[0] != "measure"
    }
    # THEN no section failed to run
    assert not [m for m, (value, *_) in rows.items() if value.startswith("ERROR")], out
    # AND what must hold on any machine holds: every message sent once, every id queued once
    # (sequential, concurrent, the backlog), the due rows found by an index
    for check in (
        "baseline correctness (all sent)",
        "deliver correctness (all sent once)",
        "SQL statements: every batch delivered",
        "evaluate correctness (every due row queued)",
        "enqueue correctness (every id queued once)",
        "backlog: every id sent exactly once",
        "inbound processor correctness (each event applied once; a replay changes nothing)",
        # the pace runs: five deliver processes against the rate-limited provider stand-in
        "pace: every message delivered once, none lost",
        "pace, no limit: none sent twice or lost",
        "quiet hours: every message delivered once, none lost",
        "outage: every message delivered once after it returned (probe messages: after their retry step)",
        "outage, breaker off: none sent twice or lost",
    ):
        assert rows[check][0] == "ok" and rows[check][2] == "ok", (check, out)
    for check in ("pace: messages failed or dead-lettered", "quiet hours: messages failed or dead-lettered"):
        assert rows[check] == ["0", "0", "ok"], (check, out)
    # AND the inbound processor applies a batch in one statement, whatever its size
    inbound = [m for m in rows if m.startswith("inbound SQL statements/batch")]
    assert len(inbound) >= 3 and all(rows[m][0] == "1.00" and rows[m][2] == "met" for m in inbound), out
    plans = [v for m, v in rows.items() if m.startswith("EXPLAIN due-row page")]
    assert len(plans) == 2 and all(v[0].startswith("Index") for v in plans), out
    # AND absolute rates are informational (no target, no verdict); the new deliver rows are
    # targets, and the bytes were counted
    rates = [m for m in rows if "msg/s" in m and " / " not in m]
    assert len(rates) >= 6 and all(rows[m][1:] == ["-", "-"] for m in rates), out
    assert rows["CPU per delivered message: deliver / floor"][1] == "<= 1.3"
    # AND the pace rows are targets on ratios and counts of the run: the rate reached over R,
    # the share of 429s, the attempts per message, the outage's attempts
    pace_targets = {
        "pace: delivered msg/s / R": ">= 0.95",
        "quiet hours: delivered msg/s / R": ">= 0.95",
        "pace: attempts per message (attempt_log)": "<= 1.01",
        "outage: attempts before its first cool-off ended (in flight as it opened)": "<= 50",
    }
    assert {m: rows[m][1] for m in pace_targets} == pace_targets, out
    throttled = [m for m in rows if m.startswith(("pace: 429s / requests", "quiet hours: 429s / requests"))]
    assert len(throttled) == 2 and all(rows[m][1] == "<= 0.5%" for m in throttled), out
    probes = [m for m in rows if m.startswith("outage: attempts after that, until the provider returned")]
    assert len(probes) == 1 and rows[probes[0]][1].endswith(" probes"), out
    log_bytes = rows["log + EMF bytes per delivered message"]
    assert log_bytes[1] == "<= 300" and float(log_bytes[0]) > 0
    # AND the exit status is 1 exactly when a target or a check says so, each one named
    failing = [m for m, v in rows.items() if v[2] in ("MISSED", "FAILED")]
    assert proc.returncode == (1 if failing else 0), out
    results = [line for line in out.splitlines() if line.startswith("result: ")]
    assert len(results) == max(1, len(failing)) and all(
        any(line.split(": ", 2)[2].startswith(m + ":") for line in results) for m in failing
    ), out
    # AND the cost rows add up: each total is the sum of its four parts
    totals = [m for m in rows if m.startswith("cost per 1M deliveries")]
    assert len(totals) == 3
    for measure in totals:
        parts_line = list(rows)[list(rows).index(measure) + 1]
        parts = [float(p.strip(" $")) for p in rows[parts_line][0].split("+")]
        assert abs(sum(parts) - float(rows[measure][0].strip("$"))) <= 0.021, (measure, parts)


def test_inbound_benchmark_runs_every_row_with_the_right_answers() -> None:
    # WHEN the inbound edge benchmark runs small (its times are the machine's business)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_inbound.py"), "--requests", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # THEN every answer had the status its row says (the exit status checks them all)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("refused:", "accepted:"))]
    assert len(rows) == 7, proc.stdout
    for row in rows:
        # AND each prints a status, a median and a p99 time per request, and log bytes
        status, median, p99, log_bytes = row[38:].split()
        assert status in {"200", "202", "401", "404"}
        assert 0 < float(median) <= float(p99)
        assert float(log_bytes) > 0
    # AND a price per million requests for each row
    assert (
        len(
            [
                line
                for line in proc.stdout.splitlines()
                if line.strip().startswith(("refused:", "accepted:")) and "$" in line
            ]
        )
        == 7
    )
