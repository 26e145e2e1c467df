"""Cold-start import time of each Lambda handler, measured with `python -X importtime`.

    .venv/bin/python benchmarks/bench_imports.py [--runs 7]

Each run is a fresh interpreter (-S, no site) that imports functions/<name>/app.py the
way Lambda does: the function folder first on sys.path, then the layer's package, then
the runtime's packages (the venv's, with the dev-only ones that the layer does not ship,
rich/click/pygments/moto, made unimportable so httpx's optional CLI does not load them).
The figure is the sum of the cumulative microseconds of the top-level imports that
-X importtime prints (module execution included, interpreter start-up excluded).

Modes, measured in the same run:
  lambda    the handler as deployed, LAMBDA_TASK_ROOT set: tracing on, so Powertools'
            Tracer loads the X-Ray SDK with its Lambda context
  eager     baseline: `lambda` plus what the package imports only on first use: Powertools
            Parameters (read once, for the secrets)
  local     tracing disabled (POWERTOOLS_TRACE_DISABLED=true) outside Lambda, as in tests:
            the X-Ray SDK's recorder then starts without a Lambda context, which is slower
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ("evaluate", "deliver")
# The layer does not ship these (dev extras); a handler must work without them.
NOT_SHIPPED = ("rich", "click", "pygments", "moto", "pytest")
# Imported on first use, or never in Lambda; the eager baseline imports them up front.
DEFERRED = ("aws_lambda_powertools.utilities.parameters",)
# Must never be loaded by a handler (local and test tooling only).
FORBIDDEN = ("moto", "pytest", "yaml", "proactive_delivery_tools")

ENV = {
    "STAGE": "bench",
    "POWERTOOLS_SERVICE_NAME": "proactive-delivery",
    "POWERTOOLS_METRICS_NAMESPACE": "ProactiveDelivery",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
}
MODES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "lambda": ({"LAMBDA_TASK_ROOT": "/var/task"}, ()),
    "eager": ({"LAMBDA_TASK_ROOT": "/var/task"}, DEFERRED),
    "local": ({"POWERTOOLS_TRACE_DISABLED": "true"}, ()),
}
BLOCKER = """
import importlib.abc, sys
class _NotShipped(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is not in the Lambda layer")
        return None
sys.meta_path.insert(0, _NotShipped())
"""


def site_packages() -> list[str]:
    return [p for p in sys.path if p.endswith("site-packages")]


def search_path(handler: str) -> list[str]:
    """Lambda's order: function code, layer, runtime packages."""
    return [str(ROOT / "functions" / handler), str(ROOT / "layers" / "common"), *site_packages()]


def top_level_import_us(stderr: str) -> int:
    """Sum of the cumulative microseconds of the top-level (not nested) imports."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "| imported package" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith("  "):  # -X importtime indents nested imports by two spaces
            total += int(cumulative)
    return total


def run_once(handler: str, mode: str) -> tuple[int, set[str]]:
    env_extra, extra_imports = MODES[mode]
    paths = search_path(handler)
    blocker = "" if mode == "eager" else BLOCKER.format(blocked=set(NOT_SHIPPED))
    code = (
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
        + blocker
        + "".join(f"import {m}\n" for m in extra_imports)
        + "import app\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    with tempfile.TemporaryDirectory() as cwd:
        env = {"PATH": os.environ.get("PATH", ""), **ENV, **env_extra}
        # -S: no site-packages of our own; -B: no .pyc writes (each run compiles the same).
        proc = subprocess.run(
            [sys.executable, "-S", "-X", "importtime", "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"importing {handler} ({mode}) failed:\n{proc.stderr[-2000:]}")
    forbidden = {m for m in proc.stdout.strip().split(",") if m}
    return top_level_import_us(proc.stderr), forbidden


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"handler import time (python -X importtime), {args.runs} runs per cell")
    print(f"python {sys.version.split()[0]} on {os.uname().machine}")
    print()
    print(f"{'handler':<10} {'mode':<8} {'median ms':>10} {'min ms':>8} {'vs lambda':>10}")
    failures = []
    for handler in HANDLERS:
        # Warm the file system cache and .pyc files so every mode sees the same disk state.
        run_once(handler, "eager")
        medians: dict[str, float] = {}
        for mode in MODES:
            samples = []
            for _ in range(args.runs):
                us, forbidden = run_once(handler, mode)
                samples.append(us / 1000)
                if forbidden and mode != "eager":
                    failures.append(f"{handler} ({mode}) imported {sorted(forbidden)}")
            medians[mode] = statistics.median(samples)
            ratio = medians[mode] / medians["lambda"]
            print(f"{handler:<10} {mode:<8} {medians[mode]:10.1f} {min(samples):8.1f} {ratio:9.2f}x")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
