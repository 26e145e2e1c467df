#!/usr/bin/env bash
# Make a PostgreSQL server reachable for tests and the local demo, and print
# the connection settings as shell `export` lines (also written to .pg-env).
#
# Usage:
#   eval "$(scripts/ensure-postgres.sh)"     # find or start a server
#   scripts/ensure-postgres.sh stop          # stop the throwaway cluster
#   scripts/ensure-postgres.sh destroy       # stop it and delete its data
#
# Order of attempts (the first that works wins):
#   1. PGHOST/PGPORT/PGUSER/PGDATABASE from the environment, if reachable
#   2. 127.0.0.1:5432 as user postgres with trust auth
#   3. a system cluster (pg_lsclusters), started with pg_ctlcluster
#   4. a throwaway cluster on 127.0.0.1:$THROWAWAY_PG_PORT (default 54329),
#      installing PostgreSQL with apt-get first if needed (root only)
#
# FORCE_THROWAWAY_PG=1 skips steps 1-3.
# All diagnostics go to stderr; stdout carries only the export lines.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THROWAWAY_PG_PORT="${THROWAWAY_PG_PORT:-54329}"
ENV_FILE="$ROOT/.pg-env"
REPO_DATA_DIR="$ROOT/.pgdata"
TMP_DATA_DIR="${TMPDIR:-/tmp}/proactive-delivery-pg-$(id -u)-$(printf '%s' "$ROOT" | cksum | cut -d ' ' -f 1)"

# Single-quote a value for the shell (works for sh and bash when sourced).
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }
die() { printf 'ensure-postgres: ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Newest server bin dir: /usr/lib/postgresql/<ver>/bin, else the directory of
# an initdb found on PATH. Prints nothing if PostgreSQL is not installed.
pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
        printf '%s\n' "$d"
        return 0
    fi
    local initdb
    initdb="$(command -v initdb 2>/dev/null || true)"
    if [[ -n "$initdb" ]]; then
        initdb="$(readlink -f "$initdb")"
        d="$(dirname "$initdb")"
        if [[ -x "$d/pg_ctl" ]]; then
            printf '%s\n' "$d"
        fi
    fi
}

# Find a client tool on PATH or in the server bin dir.
pg_tool() {
    local name="$1" bindir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    bindir="$(pg_bindir)"
    if [[ -n "$bindir" && -x "$bindir/$name" ]]; then
        printf '%s\n' "$bindir/$name"
        return 0
    fi
    return 1
}

# can_connect HOST PORT USER DB: server answers and a query succeeds without
# prompting for a password.
can_connect() {
    local host="$1" port="$2" user="$3" db="$4" isready psql
    isready="$(pg_tool pg_isready)" || return 1
    psql="$(pg_tool psql)" || return 1
    "$isready" -q -h "$host" -p "$port" -t 5 >/dev/null 2>&1 || return 1
    PGCONNECT_TIMEOUT=5 "$psql" -X -w -q -A -t -h "$host" -p "$port" -U "$user" -d "$db" \
        -c 'select 1' </dev/null >/dev/null 2>&1
}

emit() {
    local host="$1" port="$2" user="$3" db="$4" url
    if [[ "$host" == /* ]]; then
        url="postgresql://${user}@/${db}?host=${host}&port=${port}"
    else
        url="postgresql://${user}@${host}:${port}/${db}"
    fi
    local out
    out="$(
        printf 'export PGHOST=%s\n' "$(shq "$host")"
        printf 'export PGPORT=%s\n' "$(shq "$port")"
        printf 'export PGUSER=%s\n' "$(shq "$user")"
        printf 'export PGDATABASE=%s\n' "$(shq "$db")"
        printf 'export DATABASE_URL=%s\n' "$(shq "$url")"
    )"
    printf '%s\n' "$out" >"$ENV_FILE"
    printf '%s\n' "$out"
    log "using PostgreSQL at $host:$port (user $user, database $db); settings written to .pg-env"
}

# ---------------------------------------------------------------- step 1
try_given_env() {
    if [[ -z "${PGHOST:-}${PGPORT:-}${PGUSER:-}${PGDATABASE:-}" ]]; then
        return 1
    fi
    local host="${PGHOST:-127.0.0.1}" port="${PGPORT:-5432}"
    local user="${PGUSER:-postgres}" db="${PGDATABASE:-postgres}"
    if can_connect "$host" "$port" "$user" "$db"; then
        log "PG* settings from the environment work"
        emit "$host" "$port" "$user" "$db"
        return 0
    fi
    log "WARNING: PG* settings from the environment ($user@$host:$port/$db) do not connect;" \
        "looking for another server"
    return 1
}

# ---------------------------------------------------------------- step 2
try_local_default() {
    if can_connect 127.0.0.1 5432 postgres postgres; then
        log "found a trust-auth server on 127.0.0.1:5432"
        emit 127.0.0.1 5432 postgres postgres
        return 0
    fi
    return 1
}

# ---------------------------------------------------------------- step 3
try_system_cluster() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 1
    local ver name port status rest
    while read -r ver name port status rest; do
        [[ -n "$ver" ]] || continue
        if [[ "$status" != online* ]]; then
            log "starting system cluster $ver/$name (port $port)"
            if ! pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2; then
                log "could not start system cluster $ver/$name"
                continue
            fi
        fi
        if can_connect 127.0.0.1 "$port" postgres postgres; then
            log "system cluster $ver/$name accepts trust connections on 127.0.0.1:$port"
            emit 127.0.0.1 "$port" postgres postgres
            return 0
        fi
        log "system cluster $ver/$name on port $port does not accept trust auth for user postgres" \
            "on 127.0.0.1; not using it"
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
    return 1
}

# ---------------------------------------------------------------- step 4
install_postgres() {
    if [[ -n "$(pg_bindir)" ]]; then
        return 0
    fi
    if is_root && command -v apt-get >/dev/null 2>&1; then
        log "PostgreSQL is not installed; installing it with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update >&2
        apt-get install -y --no-install-recommends postgresql >&2
        [[ -n "$(pg_bindir)" ]] || die "apt-get installed postgresql but initdb/pg_ctl were not found"
        return 0
    fi
    die "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH)." \
        "Install it (e.g. 'apt-get install postgresql') or set PGHOST/PGPORT/PGUSER/PGDATABASE" \
        "to a reachable server."
}

# Run a server binary as the owner of the cluster (postgres when we are root,
# because initdb and pg_ctl refuse to run as root).
as_owner() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ensure_postgres_user() {
    is_root || return 0
    if ! id -u postgres >/dev/null 2>&1; then
        command -v useradd >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to own the cluster"
        log "creating system user postgres"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    command -v runuser >/dev/null 2>&1 || die "running as root but runuser is not available"
}

# Pick the data directory: ./.pgdata if its owner can reach it, otherwise a
# directory under /tmp (e.g. when the checkout lives under /root as root).
choose_data_dir() {
    local d
    for d in "$REPO_DATA_DIR" "$TMP_DATA_DIR"; do
        if [[ -f "$d/PG_VERSION" ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    if ! is_root; then
        printf '%s\n' "$REPO_DATA_DIR"
        return 0
    fi
    for d in "$REPO_DATA_DIR" "$TMP_DATA_DIR"; do
        if mkdir -p "$d" 2>/dev/null && chown postgres: "$d" 2>/dev/null && chmod 700 "$d" \
            && runuser -u postgres -- test -w "$d" 2>/dev/null; then
            printf '%s\n' "$d"
            return 0
        fi
        rmdir "$d" 2>/dev/null || true
    done
    die "could not create a data directory that user postgres can write ($REPO_DATA_DIR or $TMP_DATA_DIR)"
}

start_throwaway() {
    local port="$THROWAWAY_PG_PORT"
    if can_connect 127.0.0.1 "$port" postgres postgres; then
        log "throwaway cluster already running on 127.0.0.1:$port"
        emit 127.0.0.1 "$port" postgres postgres
        return 0
    fi

    install_postgres
    ensure_postgres_user
    local bindir datadir
    bindir="$(pg_bindir)"
    datadir="$(choose_data_dir)"

    if [[ ! -f "$datadir/PG_VERSION" ]]; then
        log "initialising throwaway cluster in $datadir ($bindir)"
        mkdir -p "$datadir"
        if is_root; then chown postgres: "$datadir"; fi
        chmod 700 "$datadir"
        as_owner "$bindir/initdb" -D "$datadir" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >&2 \
            || as_owner "$bindir/initdb" -D "$datadir" -U postgres --auth=trust \
                --encoding=UTF8 --no-locale >&2 \
            || die "initdb failed for $datadir"
        as_owner tee -a "$datadir/postgresql.conf" >/dev/null <<CONF

# --- added by scripts/ensure-postgres.sh (throwaway test cluster) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$datadir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    fi

    # An old server for this data dir may still be running on another port.
    if as_owner "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
        log "a server for $datadir is running but not answering on port $port; restarting it"
        as_owner "$bindir/pg_ctl" -D "$datadir" -m fast -w -t 10 stop >&2 || true
    fi

    log "starting throwaway cluster on 127.0.0.1:$port"
    if ! as_owner "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 \
        -o "-p $port" start >&2; then
        log "server log ($datadir/server.log):"
        tail -n 30 "$datadir/server.log" >&2 || true
        die "could not start the throwaway cluster (is port $port taken?)"
    fi
    if ! can_connect 127.0.0.1 "$port" postgres postgres; then
        die "throwaway cluster started but 127.0.0.1:$port does not accept connections as postgres"
    fi
    emit 127.0.0.1 "$port" postgres postgres
}

stop_throwaway() {
    local bindir d stopped=0
    bindir="$(pg_bindir)"
    for d in "$REPO_DATA_DIR" "$TMP_DATA_DIR"; do
        [[ -f "$d/PG_VERSION" ]] || continue
        if [[ -z "$bindir" ]]; then
            die "found cluster $d but no pg_ctl to stop it"
        fi
        if as_owner "$bindir/pg_ctl" -D "$d" status >/dev/null 2>&1; then
            log "stopping throwaway cluster in $d"
            as_owner "$bindir/pg_ctl" -D "$d" -m fast -w -t 60 stop >&2
            stopped=1
        fi
    done
    if [[ "$stopped" -eq 0 ]]; then
        log "no throwaway cluster is running"
    fi
    rm -f "$ENV_FILE"
}

destroy_throwaway() {
    stop_throwaway
    local d
    for d in "$REPO_DATA_DIR" "$TMP_DATA_DIR"; do
        if [[ -e "$d" ]]; then
            log "removing $d"
            rm -rf "$d"
        fi
    done
}

main() {
    local cmd="${1:-start}"
    case "$cmd" in
        start|env)
            if [[ "${FORCE_THROWAWAY_PG:-0}" != "1" ]]; then
                try_given_env && return 0
                try_local_default && return 0
                try_system_cluster && return 0
            else
                log "FORCE_THROWAWAY_PG=1: skipping existing servers"
            fi
            start_throwaway
            ;;
        stop) stop_throwaway ;;
        destroy) destroy_throwaway ;;
        -h|--help|help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
            ;;
        *) die "unknown command '$cmd' (expected: start, stop, destroy)" ;;
    esac
}

main "$@"
