"""The layers' requirements: pinned, in step with pyproject.toml (what .venv, the tests and
the benchmark run), nothing the Lambda runtime provides, and the tracing layer's Makefile
installs the X-Ray SDK alone, by hash."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ROOT / "layers"
# What the Lambda Python runtime provides: a layer must not ship a second copy.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer"}


def layer_requirements(layer: str) -> dict[str, Requirement]:
    text = (LAYERS / layer / "requirements.txt").read_text(encoding="utf-8")
    # Continuation lines carry the hashes; the requirement is what precedes them.
    logical = re.sub(r"\\\n\s*", " ", text)
    found = {}
    for raw in logical.splitlines():
        line = raw.split("#", 1)[0].split(" --hash", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def project_pins() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {canonicalize_name(r.name): r for r in (Requirement(d) for d in data["project"]["dependencies"])}


@pytest.mark.parametrize("layer", ["common", "tracing"])
def test_every_layer_requirement_is_pinned_as_the_project_pins_it(layer: str) -> None:
    # GIVEN a layer's requirements and the project's dependencies
    pins = project_pins()
    for name, requirement in layer_requirements(layer).items():
        # THEN each is pinned to one version, the same one .venv installs
        assert re.fullmatch(r"==[\w.]+", str(requirement.specifier)), f"{layer}: {requirement}"
        assert name in pins, f"{layer}: {name} is not in pyproject.toml"
        assert pins[name].specifier == requirement.specifier, f"{layer}: {requirement} vs {pins[name]}"
        # AND none is what the Lambda runtime already provides
        assert name not in RUNTIME_PROVIDED, f"{layer} ships {name}"


def test_the_common_layer_does_not_pull_the_x_ray_sdk_and_its_botocore() -> None:
    # GIVEN the common layer's requirements
    common = layer_requirements("common")
    # THEN Powertools comes without the tracer extra (whose aws-xray-sdk requires botocore)
    assert common["aws-lambda-powertools"].extras == set()
    assert "aws-xray-sdk" not in common
    # AND the tracing layer has the SDK, whose other dependency (wrapt) is in the common one
    assert set(layer_requirements("tracing")) == {"aws-xray-sdk"}
    assert "wrapt" in common


def test_the_tracing_layer_is_installed_alone_and_by_hash() -> None:
    # GIVEN the tracing layer's Makefile (BuildMethod: makefile runs build-<LogicalId>)
    makefile = (LAYERS / "tracing" / "Makefile").read_text(encoding="utf-8")
    # THEN its target installs without dependencies, wheels only, every hash checked,
    # into the folder Lambda puts on sys.path
    assert re.search(r"^build-TracingLayer:", makefile, re.M)
    for flag in ("--no-deps", "--only-binary=:all:", "--require-hashes", '"$(ARTIFACTS_DIR)/python"'):
        assert flag in makefile, flag
    assert re.search(r"--hash=sha256:[0-9a-f]{64}", (LAYERS / "tracing" / "requirements.txt").read_text())
