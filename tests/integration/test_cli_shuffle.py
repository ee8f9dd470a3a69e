"""`s3ddb load --shuffle-window ROWS` through the real services (moto S3 in, DynamoDB Local out):
an object sorted by partition key lands exactly as a load without a window lands it, and a load
stopped mid-window (one process, and two workers) resumes exactly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader.models import Checkpoint
from loader.workers import ShardedCheckpoint
from tests.integration.test_cli_workers import _cli, _rejects, _wait
from tests.support.aws import scan_all

ROWS = 40_000
PER_KEY = 100  # rows a partition key; the object is sorted by it


def _sorted_object() -> bytes:
    """``pk,sk,n,note`` sorted by ``pk`` (100 ``sk`` each), with quoted newlines, bad numbers
    (rejected) and keys repeated a few rows later (the later row wins)."""
    out = ["pk,sk,n,note\n"]
    for i in range(ROWS):
        j = i - 3 if i % 499 == 0 and i >= 3 else i  # a repeat of the key three rows before
        pk, sk = f"p{j // PER_KEY:05d}", f"s{j % PER_KEY:03d}"
        if i % 1013 == 0:
            out.append(f"{pk},{sk},not-a-number,x\n")
        elif i % 57 == 0:
            out.append(f'{pk},{sk},{i},"line one\nline {i}, ""quoted"""\n')
        else:
            out.append(f"{pk},{sk},{i},text {i}\n")
    return "".join(out).encode()


def _items(ddb: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(it["pk"]["S"], it["sk"]["S"]): it for it in scan_all(ddb, table)}


@pytest.fixture
def tables(table_factory: Callable[..., str]) -> tuple[str, str]:
    return table_factory(sk=("sk", "S")), table_factory(sk=("sk", "S"))


def test_a_sorted_object_lands_with_a_window_exactly_as_without(
    s3: Any, ddb: Any, bucket: str, tables: tuple[str, str], tmp_path: Path
) -> None:
    plain, shuffled = tables
    s3.put_object(Bucket=bucket, Key="sorted/data.csv", Body=_sorted_object())
    uri = f"s3://{bucket}/sorted/data.csv"
    common = ("--type", "n=N", "--json", "--quiet", "--workers", "1")
    one = _cli("load", uri, "--table", plain, "--rejects", str(tmp_path / "r1"), *common)
    assert one.returncode == 0, one.stderr
    two = _cli(
        "load", uri, "--table", shuffled, "--rejects", str(tmp_path / "r2"), "--shuffle-window", "5000",
        *common,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    s1, s2 = orjson.loads(one.stdout), orjson.loads(two.stdout)
    assert s2["invariant_ok"] is True and s2["rows_read"] == s1["rows_read"] == ROWS
    assert s2["rows_rejected"] == s1["rows_rejected"] == len(range(0, ROWS, 1013))
    # a repeated key may land in two batches of a window (both written, the later row last)
    # instead of one (collapsed): the rows add up the same
    assert (
        s2["items_written"] + s2["duplicates_collapsed"] == s1["items_written"] + s1["duplicates_collapsed"]
    )
    assert _items(ddb, shuffled) == _items(ddb, plain)
    assert _rejects(s2["rejects"]) == _rejects(s1["rejects"])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_load_stopped_mid_window_resumes_exactly(
    s3: Any, ddb: Any, bucket: str, tables: tuple[str, str], tmp_path: Path, workers: int
) -> None:
    oracle, table = tables
    s3.put_object(Bucket=bucket, Key="sorted/stop.csv", Body=_sorted_object())
    uri = f"s3://{bucket}/sorted/stop.csv"
    done = _cli("load", uri, "--table", oracle, "--type", "n=N", "--workers", "1", "--quiet", "--json")
    assert done.returncode == 0, done.stderr
    cp = tmp_path / "cp.json"
    argv = [
        sys.executable, "-m", "s3ddb", "load", uri, "--table", table, "--type", "n=N",
        "--workers", str(workers), "--shuffle-window", "3000", "--max-wcu", "4000",
        "--checkpoint", str(cp), "--rejects", str(tmp_path / "rej"), "--json", "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def marks() -> list[int]:
        """Rows below each low-water mark so far (one per shard)."""
        try:
            raw = orjson.loads(cp.read_bytes())
        except (OSError, ValueError):
            return []
        if workers == 1:
            return [Checkpoint.from_dict(raw).next_row - 1]
        state = ShardedCheckpoint.from_dict(raw, where="cp")
        return [s.checkpoint.next_row - 1 for s in state.shards if s.checkpoint is not None]

    try:

        def advanced() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the load ended before it was stopped: {proc.communicate()}")
            return sum(marks()) >= 3000

        _wait(advanced, "a window to be written", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert orjson.loads(out)["status"] == "interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = marks()
    assert 0 < sum(stopped) < ROWS
    resumed = _cli("load", uri, "--table", table, "--resume", str(cp), "--json", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    s = orjson.loads(resumed.stdout)
    totals = s["object"]["totals"]
    assert s["invariant_ok"] is True
    assert totals["rows_read"] == ROWS
    assert totals["rows_rejected"] == len(range(0, ROWS, 1013))
    assert _items(ddb, table) == _items(ddb, oracle)
