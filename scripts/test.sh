#!/usr/bin/env bash
# The whole check, as CI runs it: bootstrap, lint, type-check, then pytest against a private set of
# local stand-ins (DynamoDB Local, moto, the Lambda emulator) on free ports, stopped again on exit.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
say() { printf 'test.sh: %s\n' "$*" >&2; }

bash scripts/bootstrap.sh
PY="$ROOT/.venv/bin/python"

say "ruff check ."
"$ROOT/.venv/bin/ruff" check .

# mypy refuses a package directory that has no .py file yet
typed=()
for d in s3ddb loader lambda_src; do
    if compgen -G "$d/*.py" >/dev/null; then typed+=("$d"); fi
done
say "mypy ${typed[*]}"
"$ROOT/.venv/bin/mypy" "${typed[@]}"

# the template lints, the function builds, and its artifact imports (exports the build dirs for pytest)
say "check_deploy.sh"
deploy_env="$(bash scripts/check_deploy.sh)"
eval "$deploy_env"

# Own state dir and free ports: never touches a developer's `s3ddb local up` (~/.s3ddb/local, 8000/4566/9001).
STATE="$ROOT/.s3ddb/ci"
stop_services() { "$PY" -m infra.local down --dir "$STATE" || true; }
trap stop_services EXIT
exports="$("$PY" -m infra.local up --dir "$STATE" --dynamodb-port 0 --s3-port 0 --lambda-port 0)"
eval "$exports"

say "pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"
