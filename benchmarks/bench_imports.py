"""Cold-start import time of each Lambda handler: wall-clock and CPU time of `import app`,
with the layers laid out as they ship.

    .venv/bin/python benchmarks/bench_imports.py [--runs 7] [--baseline REV]

For each tree measured, the layers are assembled in a scratch folder as `sam build` and
scripts/sam.sh make them: every layers/<name>/requirements.txt installed with what it
requires (only what it names when its Makefile installs with --no-deps), copied from the
venv's installed distributions as sources, the project package in the common layer, then
the tree's own scripts/precompile.py applied when it has one (as its build does). A
separate folder holds what the Lambda Python runtime provides (boto3 and what it
requires, linked to the venv's compiled copies). Each run is a fresh interpreter with
-S (no site-packages) and -B (no bytecode written: Lambda cannot write under /opt) whose
sys.path is Lambda's: the function folder, the layers, the runtime's packages; nothing
else (requests, moto, rich, ...) can be imported, so the X-Ray SDK patches only what
would be there. Two figures per run, interpreter start-up excluded: the wall-clock time
of `import app` and the CPU time the process spent in it. On a shared machine the wall
clock also counts waiting for a core; the CPU time does not, so comparisons use it.

Modes, measured in the same run:
  lambda    the handler as deployed, LAMBDA_TASK_ROOT set: tracing on, so Powertools'
            Tracer loads the X-Ray SDK with its Lambda context
  eager     `lambda` plus what the package imports only on first use and every deployed
            cold start then needs anyway: Powertools Parameters (the secrets), httpx (the
            deliver function's channels). Import plus first use costs at least this.
  local     tracing disabled (POWERTOOLS_TRACE_DISABLED=true) outside Lambda, as in tests

--sources-only also measures today's layers as a bare `sam build` leaves them (no
precompile), so the share of each change shows. --baseline REV measures the handlers of
an earlier commit too (extracted with git archive,
its layers assembled by the same rules from the same installed packages), interleaved run
by run with today's; the ratio quoted is the median of the run-by-run CPU ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ("evaluate", "deliver")
# What the Lambda Python runtime provides next to the layers.
RUNTIME_PROVIDED = ("boto3",)
# Imported on first use by every deployed cold start; the eager mode imports them up front.
DEFERRED = {
    "evaluate": ("aws_lambda_powertools.utilities.parameters",),
    "deliver": ("aws_lambda_powertools.utilities.parameters", "httpx"),
}
# What a handler must not load as it starts: local and test tooling never, and evaluate
# has no channel to send on (no HTTP client, no batch utilities).
TOOLING = ("moto", "pytest", "yaml", "proactive_delivery_tools")
MUST_NOT_LOAD = {
    "evaluate": (*TOOLING, "httpx", "aws_lambda_powertools.utilities.batch"),
    "deliver": TOOLING,
}
WATCHED = sorted({m for names in MUST_NOT_LOAD.values() for m in names})

ENV = {
    "STAGE": "bench",
    "POWERTOOLS_SERVICE_NAME": "proactive-delivery",
    "POWERTOOLS_METRICS_NAMESPACE": "ProactiveDelivery",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
}
MODES: dict[str, dict[str, str]] = {
    "lambda": {"LAMBDA_TASK_ROOT": "/var/task"},
    "eager": {"LAMBDA_TASK_ROOT": "/var/task"},
    "local": {"POWERTOOLS_TRACE_DISABLED": "true"},
}


# --------------------------------------------------------------------------------------
# Distributions and what they install
# --------------------------------------------------------------------------------------
def closure(requirements: Iterable[str], *, follow: bool) -> list[metadata.Distribution]:
    """The installed distributions that `requirements` bring (their own requirements too,
    extras and markers honoured, when `follow`)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in found:
            continue
        dist = found[key] = metadata.distribution(req.name)
        if not follow:
            continue
        for spec in dist.requires or ():
            sub = Requirement(spec)
            extras = req.extras or {""}
            if sub.marker is None or any(Marker(str(sub.marker)).evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return list(found.values())


def requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].split(" --hash", 1)[0].strip().rstrip("\\").strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def install_sources(dists: Iterable[metadata.Distribution], into: Path) -> None:
    """Copy what each distribution installed, sources only (no bytecode), as a wheel
    unpacked by SAM's pip builder would leave it."""
    for dist in dists:
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                target = into / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


def link_runtime(dists: Iterable[metadata.Distribution], into: Path) -> None:
    """What the Lambda runtime provides, linked to the venv's installed (compiled) copies."""
    into.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__")}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


@dataclass(frozen=True)
class Tree:
    """A checkout's functions, with its layers assembled as they ship."""

    name: str
    root: Path
    layers: tuple[Path, ...]
    runtime: Path
    precompiled: bool

    def search_path(self, handler: str) -> list[str]:
        """Lambda's order: function code, layers, the runtime's packages."""
        return [str(self.root / "functions" / handler), *map(str, self.layers), str(self.runtime)]


def assemble(name: str, root: Path, scratch: Path, *, compile_if_built_so: bool = True) -> Tree:
    build = scratch / "build"
    layers = []
    for requirements in sorted((root / "layers").glob("*/requirements.txt")):
        layer_dir = requirements.parent
        makefile = layer_dir / "Makefile"
        no_deps = makefile.is_file() and "--no-deps" in makefile.read_text()
        python = build / f"{layer_dir.name}-layer" / "python"
        python.mkdir(parents=True)
        install_sources(closure(requirement_lines(requirements), follow=not no_deps), python)
        if (layer_dir / "proactive_delivery").is_dir():
            shutil.copytree(
                layer_dir / "proactive_delivery",
                python / "proactive_delivery",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        layers.append(python)
    precompile = root / "scripts" / "precompile.py"
    precompiled = compile_if_built_so and precompile.is_file()
    if precompiled:
        subprocess.run(
            [sys.executable, str(precompile), str(build), "--template", str(root / "template.yaml")],
            check=True,
            capture_output=True,
        )
    runtime = scratch / "runtime"
    link_runtime(closure(RUNTIME_PROVIDED, follow=True), runtime)
    return Tree(name, root, tuple(layers), runtime, precompiled)


def extract(rev: str, into: Path) -> Path:
    """functions/, layers/, scripts/ and template.yaml of commit `rev`, as files."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "tree.tar"
    paths = ("functions", "layers", "scripts", "template.yaml")
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--output", str(archive), rev, *paths],
        check=True,
        capture_output=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------
def run_once(tree: Tree, handler: str, mode: str) -> tuple[float, float, set[str]]:
    """(wall ms, CPU ms, watched modules loaded) of one fresh import of the handler."""
    extra_imports = DEFERRED[handler] if mode == "eager" else ()
    code = (
        "import sys, time\n"
        f"sys.path[:] = {tree.search_path(handler)!r} + [p for p in sys.path if 'site-packages' not in p]\n"
        "wall, cpu = time.perf_counter(), time.process_time()\n"
        + "".join(f"import {m}\n" for m in extra_imports)
        + "import app\n"
        "wall, cpu = time.perf_counter() - wall, time.process_time() - cpu\n"
        f"loaded = ','.join(m for m in {WATCHED!r} if m in sys.modules)\n"
        "print(f'{wall * 1000:.3f} {cpu * 1000:.3f} {loaded}')\n"
    )
    with tempfile.TemporaryDirectory() as cwd:
        env = {"PATH": os.environ.get("PATH", ""), **ENV, **MODES[mode]}
        proc = subprocess.run(
            [sys.executable, "-S", "-B", "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"importing {handler} ({mode}) of {tree.name} failed:\n{proc.stderr[-2000:]}")
    wall, cpu, *loaded = proc.stdout.split()
    return float(wall), float(cpu), {m for m in "".join(loaded).split(",") if m}


def layer_mb(tree: Tree) -> float:
    return sum(p.stat().st_size for layer in tree.layers for p in layer.rglob("*") if p.is_file()) / 2**20


def measure(trees: list[Tree], runs: int) -> int:
    print(f"handler import time (`import app` in a fresh interpreter), median of {runs} runs per cell")
    print(f"python {sys.version.split()[0]} on {os.uname().machine}, load average {os.getloadavg()[0]:.2f}")
    for tree in trees:
        print(
            f"  {tree.name}: {len(tree.layers)} layer(s), {layer_mb(tree):.1f} MB as assembled,"
            f" {'precompiled' if tree.precompiled else 'sources only (as SAM unpacks wheels)'}"
        )
    print()
    print(f"{'handler':<10} {'tree':<10} {'mode':<8} {'wall ms':>8} {'CPU ms':>8} {'CPU min':>8}")
    failures: set[str] = set()
    ratios = []
    for handler in HANDLERS:
        cells = [(tree, mode) for tree in trees for mode in MODES]
        for tree, mode in cells:  # warm the file system cache
            run_once(tree, handler, mode)
        wall: dict[tuple[str, str], list[float]] = {(t.name, m): [] for t, m in cells}
        cpu: dict[tuple[str, str], list[float]] = {(t.name, m): [] for t, m in cells}
        for _ in range(runs):  # interleaved, so load on the machine falls on every cell alike
            for tree, mode in cells:
                wall_ms, cpu_ms, loaded = run_once(tree, handler, mode)
                wall[(tree.name, mode)].append(wall_ms)
                cpu[(tree.name, mode)].append(cpu_ms)
                watched = set(MUST_NOT_LOAD[handler])
                if tree is trees[0] and mode != "eager" and loaded & watched:
                    failures.add(f"{handler} ({mode}) imported {sorted(loaded & watched)}")
        for tree, mode in cells:
            cell = (tree.name, mode)
            print(
                f"{handler:<10} {tree.name:<10} {mode:<8} {statistics.median(wall[cell]):8.1f}"
                f" {statistics.median(cpu[cell]):8.1f} {min(cpu[cell]):8.1f}"
            )
        today = trees[0].name
        for tree in trees[1:]:
            for mode in ("lambda", "eager"):
                pairs = zip(cpu[(today, mode)], cpu[(tree.name, mode)], strict=True)
                ratio = statistics.median(a / b for a, b in pairs)
                ratios.append(
                    f"{handler} {mode}: CPU {today} / {tree.name} = {ratio:.2f} (median of {runs} pairs)"
                )
    if ratios:
        print()
        print("\n".join(ratios))
    for failure in sorted(failures):
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", metavar="REV", help="an earlier commit to measure in the same run")
    parser.add_argument(
        "--sources-only",
        action="store_true",
        help="also today's layers without precompiling (what a bare `sam build` ships)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        trees = [assemble("today", ROOT, scratch / "today")]
        if args.sources_only:
            trees.append(assemble("today-src", ROOT, scratch / "today-src", compile_if_built_so=False))
        if args.baseline:
            root = extract(args.baseline, scratch / "baseline")
            trees.append(assemble(args.baseline, root, scratch / "baseline"))
        return measure(trees, args.runs)


if __name__ == "__main__":
    sys.exit(main())
