"""`make build` / `make deploy` (scripts/deploy.py) with stand-ins for the SAM CLI and the
operator's command line that record how they were called: the order (build, migrate with
the stack's secret, then deploy), the parameters each gets (Architecture to build as well as
deploy), and that a failed migration stops the deploy. No AWS, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pd-db-AbCdEf"
RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps({{"tool": {name!r}, "argv": sys.argv[1:], "env": {{
        k: os.environ.get(k) for k in ("DATABASE_SECRET_ARN", "DATABASE_URL", "AWS_DEFAULT_REGION")
    }}}}) + "\\n")
sys.exit(int(os.environ.get("FAIL_" + {name!r}.upper(), "0")))
"""


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Any]:
    log = tmp_path / "calls.jsonl"
    paths = {}
    for name in ("sam", "cli"):
        path = tmp_path / name
        path.write_text(RECORDER.format(python=sys.executable, log=str(log), name=name))
        path.chmod(0o755)
        paths[name] = str(path)
    return {"log": log, **paths}


def deploy(
    tools: dict[str, Any], *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_SECRET_ARN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")
    }
    environ.update({"SAM": tools["sam"], "PROACTIVE_DELIVERY": tools["cli"], **env})
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "deploy.py"), *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log: Path = tools["log"]
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def overrides(call: dict[str, Any]) -> dict[str, str]:
    argv = call["argv"]
    pairs = argv[argv.index("--parameter-overrides") + 1 :]
    return dict(p.split("=", 1) for p in pairs)


def test_deploy_builds_migrates_with_the_stack_secret_then_deploys(tools: dict[str, Any]) -> None:
    # GIVEN the stack's database secret and an architecture
    proc, calls = deploy(
        tools, "deploy", "--architecture", "x86_64", "AlarmEmail=oncall@example.com",
        DATABASE_SECRET_ARN=SECRET, DATABASE_URL="postgresql://postgres@127.0.0.1/elsewhere",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # THEN sam build, proactive-delivery migrate, sam deploy, in that order
    assert [(c["tool"], c["argv"][0]) for c in calls] == [
        ("sam", "build"),
        ("cli", "migrate"),
        ("sam", "deploy"),
    ]
    build, migrate, sam_deploy = calls
    # AND build and deploy get the same parameters: samconfig's, the architecture, the secret
    expected = {
        "Stage": "dev",
        "Architecture": "x86_64",
        "DatabaseSecretArn": SECRET,
        "AlarmEmail": "oncall@example.com",
    }
    assert overrides(build) == overrides(sam_deploy) == expected
    assert build["argv"][1:3] == ["--config-env", "default"]
    # AND the migrations use exactly the stack's secret (a local DATABASE_URL cannot divert
    # them), in the secret's region when none is set
    assert migrate["env"] == {
        "DATABASE_SECRET_ARN": SECRET,
        "DATABASE_URL": None,
        "AWS_DEFAULT_REGION": "eu-west-1",
    }


def test_a_failed_migration_stops_the_deploy(tools: dict[str, Any]) -> None:
    proc, calls = deploy(tools, "deploy", "--architecture", "arm64", DATABASE_SECRET_ARN=SECRET, FAIL_CLI="1")
    assert proc.returncode == 2
    assert "migrate failed" in proc.stderr
    assert [c["argv"][0] for c in calls] == ["build", "migrate"]


def test_deploy_without_the_database_secret_runs_nothing(tools: dict[str, Any]) -> None:
    proc, calls = deploy(tools, "deploy", "--architecture", "arm64")
    assert proc.returncode == 2
    assert "DATABASE_SECRET_ARN is required" in proc.stderr
    assert calls == []


@pytest.mark.parametrize(("args", "architecture"), [((), "arm64"), (("--architecture", "x86_64"), "x86_64")])
def test_build_passes_the_architecture(
    tools: dict[str, Any], args: tuple[str, ...], architecture: str
) -> None:
    # GIVEN no architecture (the template's default) or x86_64 WHEN make build runs
    proc, calls = deploy(tools, "build", *args)
    # THEN sam build alone ran, told the architecture the layer's wheels are built for
    assert proc.returncode == 0, proc.stderr
    [build] = calls
    assert build["argv"][0] == "build"
    assert overrides(build)["Architecture"] == architecture


def test_the_prod_environment_keeps_its_stage(tools: dict[str, Any]) -> None:
    proc, calls = deploy(
        tools, "deploy", "--config-env", "prod", "--architecture", "arm64", DATABASE_SECRET_ARN=SECRET
    )
    assert proc.returncode == 0, proc.stderr
    assert overrides(calls[-1])["Stage"] == "prod"
    assert calls[-1]["argv"][1:3] == ["--config-env", "prod"]


def test_make_targets_run_the_script_with_the_variables() -> None:
    # GIVEN make's view of the targets (-n: print, run nothing)
    out = subprocess.run(
        [
            "make",
            "-n",
            "deploy",
            "build",
            "CONFIG_ENV=prod",
            "ARCHITECTURE=x86_64",
            "PARAMETER_OVERRIDES=A=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    # THEN both run scripts/deploy.py with the environment, the architecture and the overrides
    assert "scripts/deploy.py deploy --config-env prod --architecture x86_64" in out
    assert "scripts/deploy.py build --config-env prod --architecture x86_64" in out
    assert out.count("A=1") == 2


def test_sam_wrapper_puts_a_real_python312_first_on_path_and_precompiles_the_build(tmp_path: Path) -> None:
    # GIVEN a stand-in SAM CLI that builds one function into --build-dir and reports which
    # python3.12 it would run pip with
    fake_sam = tmp_path / "sam"
    fake_sam.write_text(
        "#!/bin/sh\n"
        'mkdir -p "$3/EvaluateFunction" && echo "x = 1" > "$3/EvaluateFunction/app.py"\n'
        "exec python3.12 -c 'import sys; print(sys.version_info[:2])'\n"
    )
    fake_sam.chmod(0o755)
    build = tmp_path / "build"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "sam.sh"), "build", "--build-dir", str(build)],
        env={**os.environ, "SAM": str(fake_sam)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 and "needs Python 3.12" in proc.stderr:
        pytest.skip("no Python 3.12 on this machine")
    # THEN that python3.12 answers, and is 3.12 (not a pyenv shim that refuses)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "(3, 12)"
    # AND the build it made was precompiled for the runtime, in the build dir it was given
    assert second == f"precompiled 1 modules in {build} for python3.12"
    assert list((build / "EvaluateFunction" / "__pycache__").glob("app.cpython-312.pyc"))
