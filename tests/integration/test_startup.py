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

import botocore.session
import orjson
import pytest

from s3ddb.cli import main
from tests.support.aws import scan_all

_ROOT = Path(__file__).resolve().parents[2]

#: Runs the CLI in-process, then reports which of the heavy optional modules got imported.
_PROBE = """
import sys
from s3ddb.cli import main

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


def test_a_load_makes_one_botocore_session_for_all_its_clients(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    bucket: str,
    table: str,
    tmp_path: Path,
) -> None:
    """Each botocore session parses endpoints.json (1.2 MB) and registers its handlers again: the
    S3 client, the DynamoDB client and the lean sender's credentials come from one."""
    s3.put_object(Bucket=bucket, Key="few.csv", Body=b"pk,v\na,1\nb,2\n")
    made: list[botocore.session.Session] = []
    real_init = botocore.session.Session.__init__

    def counting_init(self: botocore.session.Session, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(botocore.session.Session, "__init__", counting_init)
    rejects = str(tmp_path / "rej")
    code = main(["load", f"s3://{bucket}/few.csv", "--table", table, "--json", "--rejects", rejects])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert orjson.loads(out)["items_written"] == 2
    assert len(made) == 1
