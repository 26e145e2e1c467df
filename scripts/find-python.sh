#!/usr/bin/env bash
# Print the absolute path of the best Python interpreter for this project.
#
# Preference order:
#   0. $PYTHON, if set (must be >= 3.11)
#   1. a working python3.12 on PATH
#   2. the newest pyenv-installed 3.12.x
#   3. python3, if it is >= 3.11
# Exits non-zero with a message on stderr when none is usable.
set -euo pipefail

MIN_MINOR=11

log() { printf 'find-python: %s\n' "$*" >&2; }

# Print sys.executable of the given interpreter command if it runs and is
# Python 3.<min_minor> or newer (optionally exactly 3.<exact_minor>).
# Resolving sys.executable avoids returning a pyenv shim that only works
# with the current environment.
probe() {
    local exact_minor="$1"; shift
    "$@" - "$MIN_MINOR" "$exact_minor" 2>/dev/null <<'PY' || return 1
import sys
min_minor = int(sys.argv[1])
exact = sys.argv[2]
v = sys.version_info
ok = v.major == 3 and v.minor >= min_minor and (not exact or v.minor == int(exact))
if not ok or not sys.executable:
    sys.exit(1)
print(sys.executable)
PY
}

# 0. explicit override
if [[ -n "${PYTHON:-}" ]]; then
    if probe "" "$PYTHON"; then
        exit 0
    fi
    log "PYTHON=$PYTHON is not a working Python >= 3.$MIN_MINOR"
    exit 1
fi

# 1. python3.12 on PATH (a pyenv shim for an inactive version fails here)
if command -v python3.12 >/dev/null 2>&1 && probe 12 python3.12; then
    exit 0
fi

# 2. newest pyenv 3.12.x
if command -v pyenv >/dev/null 2>&1; then
    v="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -n 1 || true)"
    if [[ -n "$v" ]]; then
        p="$(PYENV_VERSION="$v" pyenv which python3.12 2>/dev/null || true)"
        if [[ -n "$p" ]] && probe 12 "$p"; then
            exit 0
        fi
        log "pyenv lists $v but its python3.12 does not run; skipping"
    fi
fi

# 3. python3 >= 3.11
if command -v python3 >/dev/null 2>&1 && probe "" python3; then
    exit 0
fi

log "no suitable Python found: need python3.12 (preferred) or python3 >= 3.$MIN_MINOR."
log "install Python 3.12 (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3."
exit 1
