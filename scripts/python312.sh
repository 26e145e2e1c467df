#!/usr/bin/env bash
# Print the absolute path of a Python 3.12 interpreter: the Lambda runtime's version, which
# `sam build` without a container runs pip with (it looks for `python3.12` on PATH).
#
# The interpreter is the one scripts/find-python.sh finds (what `make install` used), when
# that is a 3.12; otherwise find-python.sh's own search for a 3.12 (python3.12 on PATH, the
# newest pyenv 3.12.x) without $PYTHON. Printing sys.executable, never a pyenv shim: the
# shim only answers while 3.12 is the selected pyenv version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

is_312() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null
}

py="$("$ROOT/scripts/find-python.sh" 2>/dev/null || true)"
if [[ -n "$py" ]] && is_312 "$py"; then
    printf '%s\n' "$py"
    exit 0
fi
if [[ -n "${PYTHON:-}" ]]; then
    py="$(PYTHON='' "$ROOT/scripts/find-python.sh" 2>/dev/null || true)"
    if [[ -n "$py" ]] && is_312 "$py"; then
        printf '%s\n' "$py"
        exit 0
    fi
fi
printf 'python312: sam build without a container needs Python 3.12 (the functions'"'"' runtime); found %s.\n' \
    "${py:-no Python}" >&2
printf 'python312: install it (pyenv install 3.12, or your package manager), or build with --use-container.\n' >&2
exit 1
