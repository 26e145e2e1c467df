#!/usr/bin/env bash
# Run the SAM CLI of .tools/ (scripts/tools-venv.sh) with a `python3.12` first on PATH that
# is the real interpreter scripts/python312.sh finds, so `sam build` works without a
# container on a machine whose python3.12 is a pyenv shim, or missing from PATH. After a
# successful `build`, the build's modules are precompiled for the runtime
# (scripts/precompile.py): Lambda cannot write bytecode next to them.
#
#   scripts/sam.sh build --parameter-overrides Architecture=x86_64
#
# Environment: SAM=/path/to/sam to use another SAM CLI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sam="${SAM:-}"
if [[ -z "$sam" ]]; then
    if [[ -x "$ROOT/.tools/bin/sam" ]]; then
        sam="$ROOT/.tools/bin/sam"
    elif command -v sam >/dev/null 2>&1; then
        sam="$(command -v sam)"
    else
        printf 'sam.sh: the SAM CLI is not installed: run `make tools`\n' >&2
        exit 1
    fi
fi

py312="$("$ROOT/scripts/python312.sh")"
shim_dir="$(mktemp -d)"
trap 'rm -rf "$shim_dir"' EXIT
printf '#!/bin/sh\nexec "%s" "$@"\n' "$py312" >"$shim_dir/python3.12"
chmod +x "$shim_dir/python3.12"

export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"
cd "$ROOT"
PATH="$shim_dir:$PATH" "$sam" "$@"

if [[ "${1:-}" == "build" ]]; then
    build_dir=".aws-sam/build"
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[i]}" in
            --build-dir | -b) build_dir="${args[i + 1]:-$build_dir}" ;;
            --build-dir=*) build_dir="${args[i]#--build-dir=}" ;;
        esac
    done
    "$py312" "$ROOT/scripts/precompile.py" "$build_dir"
fi
