#!/usr/bin/env bash
# Create the template tooling virtualenvs, pinned and idempotent.
#
#   .tools/          aws-sam-cli + cfn-lint + cfn-lint-serverless (its rules)
#   .tools-checkov/  checkov
#
# These live apart from the project's .venv on purpose: aws-sam-cli pins
# boto3, click and friends exactly, and checkov pins its own large dependency
# set; sharing one environment with the application (or with each other) ends
# in resolver conflicts. Re-running the script is cheap: a venv whose pinned
# versions are already installed is left alone.
#
# Environment:
#   TOOLS_PYTHON   interpreter for the venvs (default: python3.11)
#   SKIP_CHECKOV=1 do not create the checkov venv
set -euo pipefail

SAM_CLI_VERSION="1.170.0"
CFN_LINT_VERSION="1.58.0"
CFN_LINT_SERVERLESS_VERSION="0.3.6"
CHECKOV_VERSION="3.3.30"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_PYTHON="${TOOLS_PYTHON:-python3.11}"

log() { printf 'tools-venv: %s\n' "$*" >&2; }

# installed_version VENV DIST -> prints the installed version, or nothing.
installed_version() {
    local venv="$1" dist="$2"
    [[ -x "$venv/bin/python" ]] || return 0
    "$venv/bin/python" - "$dist" <<'PY' 2>/dev/null || true
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PY
}

# ensure_venv VENV NAME==VERSION... -> creates VENV and installs the pins
# unless every pin is already satisfied.
ensure_venv() {
    local venv="$1"
    shift
    local pin dist want have missing=()
    for pin in "$@"; do
        dist="${pin%%==*}"
        want="${pin##*==}"
        have="$(installed_version "$venv" "$dist")"
        if [[ "$have" != "$want" ]]; then
            missing+=("$pin")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "$(basename "$venv") up to date ($*)"
        return 0
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        command -v "$TOOLS_PYTHON" >/dev/null || {
            log "interpreter '$TOOLS_PYTHON' not found; set TOOLS_PYTHON"
            exit 1
        }
        log "creating $venv with $TOOLS_PYTHON"
        "$TOOLS_PYTHON" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    log "installing into $(basename "$venv"): ${missing[*]}"
    "$venv/bin/python" -m pip install --quiet "$@"
    "$venv/bin/python" -m pip check >/dev/null || {
        log "pip check reports conflicts in $venv:"
        "$venv/bin/python" -m pip check >&2 || true
        exit 1
    }
}

ensure_venv "$ROOT/.tools" "aws-sam-cli==$SAM_CLI_VERSION" "cfn-lint==$CFN_LINT_VERSION" \
    "cfn-lint-serverless==$CFN_LINT_SERVERLESS_VERSION"

if [[ "${SKIP_CHECKOV:-0}" != "1" ]]; then
    ensure_venv "$ROOT/.tools-checkov" "checkov==$CHECKOV_VERSION"
fi

log "sam:     $("$ROOT/.tools/bin/sam" --version)"
log "cfn-lint: $("$ROOT/.tools/bin/cfn-lint" --version)"
if [[ -x "$ROOT/.tools-checkov/bin/checkov" ]]; then
    log "checkov: $("$ROOT/.tools-checkov/bin/checkov" --version)"
fi
