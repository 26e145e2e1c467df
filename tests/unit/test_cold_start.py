"""Start-up budget: the handlers import nothing that the Lambda layer does not ship, and
the size check of the build output (scripts/check_build_size.py) flags an oversized layer."""

from __future__ import annotations

import importlib.util
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
loaded = sorted(m for m in sys.modules if m.startswith({local_only!r}))
print(",".join(loaded))
"""


@pytest.mark.parametrize("handler", ["evaluate", "deliver"])
def test_handler_imports_only_what_the_layer_ships(handler: str) -> None:
    # GIVEN an interpreter in which the dev-only packages cannot be imported
    code = IMPORT_HANDLER.format(
        blocked=set(NOT_SHIPPED),
        function_dir=str(ROOT / "functions" / handler),
        layer_dir=str(ROOT / "layers" / "common"),
        local_only=LOCAL_ONLY,
    )
    # WHEN the handler module is imported as Lambda imports it
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    # THEN it imports, and none of the local runtime came with it
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
    build = root / "build"
    (build / "CommonLayer" / "python").mkdir(parents=True)
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
    spec.loader.exec_module(module)
    return module


def test_the_import_benchmark_names_modules_that_exist() -> None:
    # GIVEN the modules benchmarks/bench_imports.py imports up front in its eager baseline
    bench = _benchmark("bench_imports")
    # WHEN each is looked up THEN it exists (a renamed module used to crash the benchmark)
    for module in bench.DEFERRED:
        assert importlib.util.find_spec(module) is not None, module
