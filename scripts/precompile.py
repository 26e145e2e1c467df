#!/usr/bin/env python3
"""Precompile the Python modules of a `sam build` output for the functions' runtime.

    python3.12 scripts/precompile.py [.aws-sam/build]

Lambda unpacks layers under /opt and the function under /var/task, and neither can be
written to: Python cannot cache bytecode there, so a module that ships as source alone is
compiled again at every cold start. SAM's pip builder unpacks wheels without compiling
them. This writes unchecked-hash .pyc files next to the sources (valid whatever the
files' timestamps become through zip and unzip; a layer version never changes), each
recording the path it runs from in Lambda, so tracebacks name /opt/python/... and
/var/task/.... It must run with the runtime's Python version (template.yaml `Runtime`):
another version's bytecode would be ignored. scripts/sam.sh runs it after every build.
Standard library only. Exit status 1 when a module does not compile or the interpreter
is the wrong version.
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where Lambda puts a layer's python/ folder and a function's code.
LAYER_PATH = "/opt/python"
FUNCTION_PATH = "/var/task"


def runtime_version(template: Path) -> tuple[int, int]:
    """The (major, minor) of the first `Runtime: pythonX.Y` in the template."""
    match = re.search(r"^\s*Runtime:\s*python(\d+)\.(\d+)\s*$", template.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise SystemExit(f"precompile: no `Runtime: pythonX.Y` in {template}")
    return int(match.group(1)), int(match.group(2))


def artifacts(build_dir: Path) -> list[tuple[Path, str]]:
    """(folder to compile, the path Lambda runs it from) for every artifact of the build."""
    found = []
    for entry in sorted(p for p in build_dir.iterdir() if p.is_dir()):
        if (entry / "python").is_dir():
            found.append((entry / "python", LAYER_PATH))
        else:
            found.append((entry, FUNCTION_PATH))
    return found


def precompile(build_dir: Path) -> tuple[int, bool]:
    """Compile every artifact; returns (modules compiled, every module compiled)."""
    ok = True
    for folder, lambda_path in artifacts(build_dir):
        ok &= bool(
            compileall.compile_dir(
                folder,
                ddir=lambda_path,
                quiet=1,
                workers=0,
                force=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        )
    tag = sys.implementation.cache_tag
    return sum(1 for _ in build_dir.rglob(f"*.{tag}.pyc")), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", default=".aws-sam/build")
    parser.add_argument("--template", default=str(ROOT / "template.yaml"))
    args = parser.parse_args(argv)
    build_dir = Path(args.build_dir)
    wanted = runtime_version(Path(args.template))
    if sys.version_info[:2] != wanted:
        print(
            f"precompile: the functions run python{wanted[0]}.{wanted[1]}, this is python"
            f"{sys.version_info[0]}.{sys.version_info[1]}: run it with python{wanted[0]}.{wanted[1]}",
            file=sys.stderr,
        )
        return 1
    if not build_dir.is_dir():
        print(f"precompile: {build_dir} does not exist; run sam build first", file=sys.stderr)
        return 1
    count, ok = precompile(build_dir)
    if not ok:
        print("precompile: some modules did not compile (listed above)", file=sys.stderr)
        return 1
    print(f"precompiled {count} modules in {build_dir} for python{wanted[0]}.{wanted[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
