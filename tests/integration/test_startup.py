"""Start-up cost of `s3ddb load`: what a fresh interpreter imports on the default (lean) path.

Benchmarks divide a run's process CPU by its items, so import and client set-up are part of the
per-item cost. aiohttp (~0.25 s to import) and aiobotocore are only for the reference senders and
proxies; a lean load with no proxy in the environment must not import them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.support.aws import scan_all

_ROOT = Path(__file__).resolve().parents[2]

#: Runs the CLI in-process, then reports which of the heavy optional modules got imported.
_PROBE = """
import sys
from loader.cli import main

code = main(sys.argv[1:])
heavy = sorted(m for m in ("aiohttp", "yarl", "aiobotocore") if m in sys.modules)
print("HEAVY " + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def _env_without_proxies() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    # the code under test, not whatever copy of s3ddb the interpreter has installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    return env


def test_a_lean_load_imports_neither_aiohttp_nor_aiobotocore(
    s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="few.csv", Body=b"pk,v\na,1\nb,2\nc,3\n")
    argv = ["load", f"s3://{bucket}/few.csv", "--table", table, "--json", "--sender", "lean"]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv, "--rejects", str(tmp_path / "rej")],
        capture_output=True,
        text=True,
        env=_env_without_proxies(),
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["items_written"] == 3
    assert len(scan_all(ddb, table)) == 3
    assert "HEAVY \n" in proc.stderr, proc.stderr
