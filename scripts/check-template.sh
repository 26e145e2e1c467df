#!/usr/bin/env bash
# Check template.yaml: sam validate --lint, cfn-lint (with the
# cfn-lint-serverless rules), sam build (no container) and the size budget of
# its output, and checkov with zero failed checks. Any failure stops the
# script with a non-zero exit status. Under CI=true a missing checkov or
# serverless rules package is a failure; elsewhere it is skipped with a note.
#
# Tools come from .tools/ and .tools-checkov/ (see scripts/tools-venv.sh) or,
# failing that, from PATH. Nothing here talks to an AWS account; sam build
# downloads the layer's dependencies from the package index.
#
# Environment:
#   SKIP_BUILD=1   skip sam build (validate and lint only)
#   BUILD_DIR      sam build output directory (default: .aws-sam/build)
#   CI=true        require checkov and cfn-lint-serverless
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# A fixed region: the checks are account- and region-independent, but the SAM
# translator refuses to run without one.
export AWS_DEFAULT_REGION=us-east-1
export SAM_CLI_TELEMETRY=0

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'check-template: %s\n' "$*" >&2
    exit 1
}
# missing WHAT: fail under CI, otherwise say what is skipped.
missing() {
    if [[ "${CI:-}" == "true" ]]; then
        die "$* (required when CI=true; run scripts/tools-venv.sh)"
    fi
    step "$*; skipped (scripts/tools-venv.sh installs it; required when CI=true)"
}

# tool NAME VENV -> path of NAME from VENV/bin, else from PATH.
tool() {
    local name="$1" venv="$2"
    if [[ -x "$ROOT/$venv/bin/$name" ]]; then
        printf '%s\n' "$ROOT/$venv/bin/$name"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    fi
}

SAM="$(tool sam .tools)"
CFN_LINT="$(tool cfn-lint .tools)"
CHECKOV="$(tool checkov .tools-checkov)"
[[ -n "$SAM" ]] || die "sam not found; run scripts/tools-venv.sh"
[[ -n "$CFN_LINT" ]] || die "cfn-lint not found; run scripts/tools-venv.sh"

step "sam validate --lint ($("$SAM" --version))"
"$SAM" validate --lint --template-file template.yaml

# The serverless rules live in the cfn-lint venv; their findings that do not
# apply are ignored next to the resource (Metadata: cfn-lint: config).
cfn_lint_python="$(dirname "$CFN_LINT")/python"
if [[ -x "$cfn_lint_python" ]] && "$cfn_lint_python" -c 'import cfn_lint_serverless.rules' 2>/dev/null; then
    step "cfn-lint ($("$CFN_LINT" --version)) with the cfn-lint-serverless rules"
    "$CFN_LINT" template.yaml --append-rules cfn_lint_serverless.rules
else
    step "cfn-lint ($("$CFN_LINT" --version))"
    "$CFN_LINT" template.yaml
    missing "cfn-lint-serverless not installed next to $CFN_LINT"
fi

if [[ "${SKIP_BUILD:-0}" == "1" ]]; then
    step "sam build skipped (SKIP_BUILD=1)"
else
    # sam build (without a container) runs pip with an interpreter named
    # exactly like the runtime, python3.12, found on PATH. pyenv installs one
    # but its shim only answers when 3.12 is the selected version: scripts/sam.sh
    # puts a wrapper that execs the real binary (scripts/python312.sh) first on
    # PATH, as `make build` does.
    [[ -f layers/common/requirements.txt ]] || die "layers/common/requirements.txt is missing"
    py312="$(scripts/python312.sh)" || die "no Python 3.12 for sam build (see above)"

    step "sam build (python3.12 = $py312)"
    SAM="$SAM" scripts/sam.sh build --template-file template.yaml \
        --build-dir "${BUILD_DIR:-.aws-sam/build}"

    step "size budget of the build (layer < 50 MB zipped; function + layers < 250 MB unzipped)"
    "$py312" scripts/check_build_size.py "${BUILD_DIR:-.aws-sam/build}"
fi

if [[ -n "$CHECKOV" ]]; then
    # Skips are justified next to the resource (Metadata: checkov: skip) in
    # template.yaml; any failed check fails this script.
    step "checkov ($("$CHECKOV" --version))"
    "$CHECKOV" --file template.yaml --framework cloudformation \
        --quiet --compact --skip-download
else
    missing "checkov not installed"
fi

step "template checks passed"
