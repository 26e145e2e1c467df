#!/usr/bin/env python3
"""Check the `sam build` output: what the layers hold, and Lambda's package size limits.

    python3 scripts/check_build_size.py [.aws-sam/build]

Contents: the layers ship the runtime alone. The package in the layer is exactly the
modules and SQL files of layers/common/proactive_delivery (no CLI, local runtime, schema
or sample data, which live in tools/ outside the layer), and no layer holds what the
Lambda runtime already provides (boto3, botocore, s3transfer) or development tooling.

Size: each layer must stay under 50 MB zipped (the direct-upload limit) and each
function, unzipped together with every layer, under 250 MB (Lambda's hard limit). A layer
is a build directory with a python/ folder (how SAM builds Python layers); every other
directory is a function. Standard library only, so it runs with any Python 3.
Exit status 1 when a check fails or the build directory holds no layer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
ZIPPED_LIMIT = 50 * MB
UNZIPPED_LIMIT = 250 * MB

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "proactive_delivery"
SOURCE_PACKAGE = ROOT / "layers" / "common" / PACKAGE
# Top-level names no layer may hold, and why.
PROVIDED = "the Lambda runtime provides it (a layer's copy would be imported first and shadow it)"
TOOLING = "tooling, not runtime code (tools/ and the development extras stay out of the layers)"
NOT_IN_A_LAYER = {
    "boto3": PROVIDED,
    "botocore": PROVIDED,
    "s3transfer": PROVIDED,
    "proactive_delivery_tools": TOOLING,
    "moto": TOOLING,
    "pytest": TOOLING,
    "yaml": TOOLING,
    "rich": TOOLING,
    "tests": TOOLING,
}


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str  # "layer" or "function"
    unzipped: int
    zipped: int


def unzipped_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def zipped_size(root: Path) -> int:
    """Size of the directory zipped the way `sam package` does (deflate)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "artifact.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root).as_posix())
        return archive.stat().st_size


def measure(build_dir: Path) -> list[Artifact]:
    artifacts = []
    for entry in sorted(build_dir.iterdir()):
        if not entry.is_dir():
            continue
        kind = "layer" if (entry / "python").is_dir() else "function"
        artifacts.append(Artifact(entry.name, kind, unzipped_size(entry), zipped_size(entry)))
    return artifacts


def _package_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".py", ".sql") and "__pycache__" not in p.parts
    }


def check_contents(build_dir: Path, source_package: Path = SOURCE_PACKAGE) -> list[str]:
    """What the layers hold that they should not, or lack, one line each."""
    problems = []
    layers = [entry / "python" for entry in sorted(build_dir.iterdir()) if (entry / "python").is_dir()]
    for layer in layers:
        for name, why in NOT_IN_A_LAYER.items():
            if (layer / name).exists() or (layer / f"{name}.py").exists():
                problems.append(f"{layer.parent.name} ships {name}: {why}")
    holders = [layer for layer in layers if (layer / PACKAGE).is_dir()]
    if len(holders) != 1:
        problems.append(f"{PACKAGE} is in {len(holders)} layers, expected exactly one")
        return problems
    shipped, source = _package_files(holders[0] / PACKAGE), _package_files(source_package)
    for path in sorted(shipped - source):
        problems.append(f"{holders[0].parent.name}: {PACKAGE}/{path} is not in {source_package}")
    for path in sorted(source - shipped):
        problems.append(f"{holders[0].parent.name}: {PACKAGE}/{path} is missing from the layer")
    return problems


def check(artifacts: list[Artifact], *, zipped_limit: int, unzipped_limit: int) -> list[str]:
    """The budget violations, one line each (empty when everything fits)."""
    layers = [a for a in artifacts if a.kind == "layer"]
    functions = [a for a in artifacts if a.kind == "function"]
    problems = []
    if not layers:
        problems.append("no layer found in the build directory (expected a folder with python/)")
    for artifact in artifacts:
        if artifact.zipped >= zipped_limit:
            problems.append(
                f"{artifact.name}: {artifact.zipped / MB:.1f} MB zipped, limit {zipped_limit / MB:.0f} MB"
            )
    layers_total = sum(a.unzipped for a in layers)
    for function in functions:
        total = function.unzipped + layers_total
        if total >= unzipped_limit:
            problems.append(
                f"{function.name}: {total / MB:.1f} MB unzipped with its layers, "
                f"limit {unzipped_limit / MB:.0f} MB"
            )
    return problems


def report(artifacts: list[Artifact]) -> str:
    layers_total = sum(a.unzipped for a in artifacts if a.kind == "layer")
    lines = [f"{'artifact':<24} {'kind':<9} {'zipped MB':>10} {'unzipped MB':>12} {'with layers MB':>15}"]
    for a in artifacts:
        with_layers = f"{(a.unzipped + layers_total) / MB:15.2f}" if a.kind == "function" else f"{'':>15}"
        lines.append(f"{a.name:<24} {a.kind:<9} {a.zipped / MB:10.2f} {a.unzipped / MB:12.2f} {with_layers}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", default=os.environ.get("BUILD_DIR", ".aws-sam/build"))
    parser.add_argument("--zipped-limit-mb", type=float, default=ZIPPED_LIMIT / MB)
    parser.add_argument("--unzipped-limit-mb", type=float, default=UNZIPPED_LIMIT / MB)
    parser.add_argument("--source-package", default=str(SOURCE_PACKAGE), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    build_dir = Path(args.build_dir)
    if not build_dir.is_dir():
        print(f"check-build-size: {build_dir} does not exist; run sam build first", file=sys.stderr)
        return 1
    artifacts = measure(build_dir)
    print(report(artifacts))
    wrong = check_contents(build_dir, Path(args.source_package))
    for problem in wrong:
        print(f"check-build-size: layer contents: {problem}", file=sys.stderr)
    if not wrong:
        print(f"layer contents: {PACKAGE} as in the source, nothing the runtime provides, no tooling")
    problems = check(
        artifacts,
        zipped_limit=int(args.zipped_limit_mb * MB),
        unzipped_limit=int(args.unzipped_limit_mb * MB),
    )
    for problem in problems:
        print(f"check-build-size: over budget: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"within budget: every artifact < {args.zipped_limit_mb:.0f} MB zipped, "
            f"each function with its layers < {args.unzipped_limit_mb:.0f} MB unzipped"
        )
    return 1 if problems or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
