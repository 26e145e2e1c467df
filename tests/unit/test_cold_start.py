"""Start-up budget: the handlers import nothing that the Lambda layer does not ship, the
build check (scripts/check_build_size.py) flags a layer that holds more than the runtime or
is oversized, and scripts/precompile.py leaves bytecode Lambda can use."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Dev and local tooling: never in the layer, so a handler must not need them.
NOT_SHIPPED = ("moto", "rich", "click", "pygments", "pytest", "yaml")
LOCAL_ONLY = ("proactive_delivery_tools.local", "proactive_delivery_tools.cli")

IMPORT_HANDLER = """
import importlib.abc, sys
class NotShipped(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is not in the Lambda layer")
        return None
sys.meta_path.insert(0, NotShipped())
sys.path[:0] = [{function_dir!r}, {layer_dir!r}]
import app
loaded = sorted(m for m in sys.modules if m.startswith({watched!r}))
print(",".join(loaded))
"""
# What each handler must not load as it starts, deployed (tracing on): no local tooling,
# the evaluate function and the purge send nothing over HTTP and work no SQS batch.
MUST_NOT_LOAD = {
    "evaluate": (*LOCAL_ONLY, "httpx", "aws_lambda_powertools.utilities.batch"),
    "deliver": LOCAL_ONLY,
    "purge": (*LOCAL_ONLY, "httpx", "aws_lambda_powertools.utilities.batch"),
    # The inbound edge verifies and enqueues: it sends nothing over HTTP and works no batch.
    "inbound": (*LOCAL_ONLY, "httpx", "aws_lambda_powertools.utilities.batch"),
}


@pytest.mark.parametrize("handler", ["evaluate", "deliver", "purge", "inbound"])
@pytest.mark.parametrize("where", ["lambda", "local"])
def test_handler_imports_only_what_the_layer_ships(handler: str, where: str) -> None:
    # GIVEN an interpreter in which the dev-only packages cannot be imported, as in Lambda
    # (tracing on, so the X-Ray SDK patches what it is told to) or locally (tracing off)
    code = IMPORT_HANDLER.format(
        blocked=set(NOT_SHIPPED),
        function_dir=str(ROOT / "functions" / handler),
        layer_dir=str(ROOT / "layers" / "common"),
        watched=MUST_NOT_LOAD[handler],
    )
    env = {"AWS_DEFAULT_REGION": "us-east-1"}
    if where == "lambda":
        env |= {"LAMBDA_TASK_ROOT": "/var/task", "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR"}
    else:
        env |= {"POWERTOOLS_TRACE_DISABLED": "true"}
    # WHEN the handler module is imported as Lambda imports it
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    # THEN it imports, and nothing it must not load came with it
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"{handler} loaded {proc.stdout.strip()}"


def load_size_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_build_size", ROOT / "scripts" / "check_build_size.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_build_size"] = module
    spec.loader.exec_module(module)
    return module


def fake_build(root: Path, layer_bytes: int) -> Path:
    """A build shaped like sam build's: the package as in the source, a blob of dependencies."""
    build = root / "build"
    (build / "CommonLayer" / "python").mkdir(parents=True)
    shutil.copytree(
        ROOT / "layers" / "common" / "proactive_delivery",
        build / "CommonLayer" / "python" / "proactive_delivery",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (build / "CommonLayer" / "python" / "blob.bin").write_bytes(bytes(range(256)) * (layer_bytes // 256))
    for name in ("EvaluateFunction", "DeliverFunction"):
        (build / name).mkdir()
        (build / name / "app.py").write_text("def lambda_handler(event, context): ...\n")
    return build


def test_size_check_passes_a_build_within_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checker = load_size_checker()
    # GIVEN a build with a 64 KiB layer and two functions
    build = fake_build(tmp_path, 64 * 1024)
    # WHEN it is checked against limits of 1 MB
    rc = checker.main([str(build), "--zipped-limit-mb", "1", "--unzipped-limit-mb", "1"])
    # THEN it passes and prints the figures for every artifact
    out = capsys.readouterr().out
    assert rc == 0
    assert "CommonLayer" in out and "EvaluateFunction" in out and "within budget" in out


def test_size_check_fails_an_oversized_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checker = load_size_checker()
    # GIVEN a build whose layer is 2 MiB unzipped
    build = fake_build(tmp_path, 2 * 1024 * 1024)
    # WHEN it is checked against an unzipped limit of 1 MB
    rc = checker.main([str(build), "--unzipped-limit-mb", "1"])
    # THEN it fails and names each function that would exceed the limit with its layers
    err = capsys.readouterr().err
    assert rc == 1
    assert "EvaluateFunction" in err and "DeliverFunction" in err and "unzipped" in err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("proactive_delivery_tools/cli/__init__.py", "proactive_delivery_tools"),
        ("botocore/__init__.py", "botocore"),
        ("proactive_delivery/local/runtime.py", "proactive_delivery/local/runtime.py"),
    ],
)
def test_contents_check_fails_a_layer_with_more_than_the_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, named: str
) -> None:
    checker = load_size_checker()
    # GIVEN a build whose layer also holds tooling, the runtime's SDK or a stray module
    build = fake_build(tmp_path, 1024)
    path = build / "CommonLayer" / "python" / extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    # WHEN it is checked THEN it fails and names what should not be there
    assert checker.main([str(build)]) == 1
    assert named in capsys.readouterr().err


def test_contents_check_fails_a_layer_missing_a_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checker = load_size_checker()
    # GIVEN a build whose package lacks one of the source's modules (a stale build)
    build = fake_build(tmp_path, 1024)
    (build / "CommonLayer" / "python" / "proactive_delivery" / "app" / "deliver.py").unlink()
    # WHEN it is checked THEN it fails and names the missing module
    assert checker.main([str(build)]) == 1
    assert "app/deliver.py is missing" in capsys.readouterr().err


def test_size_check_fails_without_a_build(tmp_path: Path) -> None:
    checker = load_size_checker()
    # GIVEN no build directory WHEN checked THEN it fails instead of passing vacuously
    assert checker.main([str(tmp_path / "missing")]) == 1
    (tmp_path / "empty").mkdir()
    assert checker.main([str(tmp_path / "empty")]) == 1


def _benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_the_import_benchmark_names_modules_that_exist() -> None:
    # GIVEN the modules benchmarks/bench_imports.py imports up front in its eager baseline
    bench = _benchmark("bench_imports")
    # WHEN each is looked up THEN it exists (a renamed module used to crash the benchmark)
    for modules in bench.DEFERRED.values():
        for module in modules:
            assert importlib.util.find_spec(module) is not None, module


def test_precompile_writes_bytecode_that_needs_no_writable_source_folder(tmp_path: Path) -> None:
    # GIVEN a build (a layer and a function) and the runtime's interpreter
    build = fake_build(tmp_path, 1024)
    python312 = subprocess.run(
        [str(ROOT / "scripts" / "python312.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    # WHEN the build is precompiled
    proc = subprocess.run(
        [python312, str(ROOT / "scripts" / "precompile.py"), str(build)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # THEN every module has unchecked-hash bytecode (flags 0b01: hash-based, source not
    # checked), valid whatever timestamps the zip gives the files
    layer = build / "CommonLayer" / "python"
    modules = [p for p in layer.rglob("*.py") if "__pycache__" not in p.parts]
    assert modules
    for module in modules:
        [pyc] = (module.parent / "__pycache__").glob(f"{module.stem}.cpython-312.pyc")
        assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01, pyc
    assert (build / "EvaluateFunction" / "__pycache__").is_dir()
    # AND a traceback names the path Lambda runs the module from
    code = (layer / "proactive_delivery" / "__pycache__").glob("__init__.cpython-312.pyc")
    assert b"/opt/python/proactive_delivery/__init__.py" in next(code).read_bytes()


def test_precompile_refuses_another_python_version(tmp_path: Path) -> None:
    # GIVEN a template whose functions run another Python than this interpreter
    template = tmp_path / "template.yaml"
    template.write_text("Globals:\n  Function:\n    Runtime: python3.9\n")
    build = fake_build(tmp_path, 1024)
    # WHEN precompile runs THEN it refuses in one line and writes nothing
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "precompile.py"), str(build), "--template", str(template)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "the functions run python3.9" in proc.stderr
    assert not list(build.rglob("*.pyc"))
