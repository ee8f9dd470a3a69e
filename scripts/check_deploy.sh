#!/usr/bin/env bash
# What `sam deploy` needs from this repository, checked without AWS credentials:
#   1. infra/template.yaml passes `sam validate --lint` (the SAM transform, then cfn-lint);
#   2. `sam build` builds the function with infra/lambda/Makefile for the template's runtime and
#      architecture (tests/unit/test_deploy_artifact.py then reads that artifact);
#   3. the same Makefile builds an x86_64 artifact for an interpreter this machine runs, and
#      lambda_src.handler, every module of lambda_src/loader and every compiled wheel import from
#      that artifact alone (a clean interpreter: -I -S, nothing else on sys.path).
# SAM CLI lives in its own venv, .venv-sam, pinned by infra/sam-requirements.txt (its boto3 and
# click pins would fight the project's in .venv); it is reinstalled only when a pin changes.
# stdout: `export S3DDB_SAM_BUILD_DIR=... S3DDB_X86_BUILD_DIR=...` for the tests (scripts/test.sh
# evals it); everything else goes to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
say() { printf 'check_deploy.sh: %s\n' "$*" >&2; }
started=$SECONDS

export SAM_CLI_TELEMETRY=0 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
TEMPLATE=infra/template.yaml
SAM_VENV="$ROOT/.venv-sam"
SAM_REQ="$ROOT/infra/sam-requirements.txt"
SAM_BUILD_DIR="$ROOT/.aws-sam/build"
X86_BUILD_DIR="$ROOT/.aws-sam/x86_64"

# 0. make: sam build runs infra/lambda/Makefile with it
if ! command -v make >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "make is missing: installing it"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make >&2
    else
        say "make is missing (sam build runs infra/lambda/Makefile): run 'sudo apt-get install make'"
        exit 1
    fi
fi

# 1. the SAM CLI, at its pins
pins_installed() {
    [ -x "$SAM_VENV/bin/python" ] && "$SAM_VENV/bin/python" - "$SAM_REQ" <<'EOF'
import importlib.metadata as md
import sys

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        if md.version(name) != version:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
EOF
}
if pins_installed; then
    say "SAM CLI up to date in .venv-sam ($("$SAM_VENV/bin/sam" --version))"
else
    PYTHON="${PYTHON:-python3}"
    say "installing $(grep -v '^#' "$SAM_REQ" | tr '\n' ' ')into .venv-sam with $("$PYTHON" --version 2>&1)"
    [ -x "$SAM_VENV/bin/python" ] || "$PYTHON" -m venv "$SAM_VENV"
    log="$SAM_VENV/pip-install.log"
    if ! "$SAM_VENV/bin/python" -m pip install --root-user-action=ignore -r "$SAM_REQ" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        say "pip install failed; full output in $log"
        exit 1
    fi
    pins_installed || { say "installed, but the pins of $SAM_REQ are still not what .venv-sam holds"; exit 1; }
fi
SAM="$SAM_VENV/bin/sam"

# 2. the template
say "sam validate --lint -t $TEMPLATE"
"$SAM" validate --lint -t "$TEMPLATE" --region us-east-1 >&2

# 3. sam build: the artifact as it deploys (the Makefile's defaults: the template's runtime and arch)
say "sam build -t $TEMPLATE --build-dir ${SAM_BUILD_DIR#"$ROOT"/}"
"$SAM" build -t "$TEMPLATE" --build-dir "$SAM_BUILD_DIR" >&2

# 4. an x86_64 artifact this machine can import: the template's Python if it is here, else python3
runtime="$(sed -n 's/^ *Runtime: *python\([0-9][0-9.]*\).*/\1/p' "$TEMPLATE" | head -n 1)"
[ -n "$runtime" ] || { say "no 'Runtime: pythonX.Y' in $TEMPLATE"; exit 1; }
interp=""
if "python$runtime" --version >/dev/null 2>&1; then
    interp="$(command -v "python$runtime")"
elif command -v pyenv >/dev/null 2>&1; then
    # pyenv's shim is on PATH but answers only for the selected versions: ask for the interpreter
    for cand in "$(pyenv root)"/versions/"$runtime".*/bin/"python$runtime"; do
        if [ -x "$cand" ] && "$cand" --version >/dev/null 2>&1; then interp="$cand"; fi
    done
fi
if [ -z "$interp" ]; then
    interp="$(command -v python3)"
    say "no python$runtime here (the template's runtime): the import check uses $("$interp" --version 2>&1), $interp"
fi
version="$("$interp" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
say "make -f infra/lambda/Makefile build-LoaderFunction LAMBDA_ARCH=x86_64 LAMBDA_PYTHON=$version"
rm -rf "$X86_BUILD_DIR"
make --no-print-directory -f infra/lambda/Makefile build-LoaderFunction \
    ARTIFACTS_DIR="$X86_BUILD_DIR" LAMBDA_ARCH=x86_64 LAMBDA_PYTHON="$version" >&2

# -I: no PYTHON* variables, no user site, no current directory; -S: no site-packages. Only the
# artifact is added. Outside Lambda (AWS_LAMBDA_FUNCTION_NAME unset) importing the handler builds
# no client, so this needs no AWS access.
env -u AWS_LAMBDA_FUNCTION_NAME "$interp" -I -S - "$X86_BUILD_DIR" <<'EOF' >&2
import importlib
import os
import pkgutil
import sys

artifact = os.path.realpath(sys.argv[1])
sys.path.insert(0, artifact)
importlib.import_module("lambda_src.handler")
modules = {"lambda_src.handler"}
for package in ("lambda_src", "loader"):
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)
        modules.add(info.name)
compiled = sorted(
    name
    for name in os.listdir(artifact)
    if os.path.isdir(os.path.join(artifact, name))
    and not name.endswith(".dist-info")
    and any(f.endswith(".so") for _, _, files in os.walk(os.path.join(artifact, name)) for f in files)
)
for name in compiled:
    importlib.import_module(name)
outside = sorted(
    name
    for name, module in sys.modules.items()
    if name.split(".")[0] in {"lambda_src", "loader", *compiled}
    and getattr(module, "__file__", None)
    and not os.path.realpath(module.__file__).startswith(artifact + os.sep)
)
if outside:
    sys.exit(f"check_deploy.sh: imported from outside the artifact: {outside}")
print(
    f"check_deploy.sh: imported all {len(modules)} modules of lambda_src and loader (the handler first), "
    f"and the compiled wheels {', '.join(compiled)}, with Python {sys.version.split()[0]} "
    f"from {artifact} alone"
)
EOF

say "done in $((SECONDS - started)) s"
printf 'export S3DDB_SAM_BUILD_DIR=%q S3DDB_X86_BUILD_DIR=%q\n' "$SAM_BUILD_DIR/LoaderFunction" "$X86_BUILD_DIR"
