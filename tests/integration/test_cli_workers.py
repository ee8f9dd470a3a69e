"""`s3ddb load --workers N`: one object over N processes, exact, and resumable after a kill.

Through the real services: moto S3 in, DynamoDB Local out. The CLI runs as a subprocess (its
workers are processes of their own); the one-process load of the same object is the oracle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader.workers import ShardedCheckpoint, default_workers
from tests.support.aws import scan_all
from tests.support.data import by_pk

ROWS = 40_000


def _object(rows: int = ROWS, *, newline: str = "\n") -> bytes:
    """A realistic CSV: quoted fields with commas and embedded newlines, escaped quotes, a few
    malformed rows (text after a closing quote) and bad numbers that are rejected, blank lines."""
    out = [f"pk,n,note{newline}"]
    for i in range(rows):
        if i % 997 == 0:
            out.append(f'k{i:07d},{i},"ok"tail{newline}')  # rejected: text after the closing quote
        elif i % 1009 == 0:
            out.append(f"k{i:07d},not-a-number,x{newline}")  # rejected: n is N
        elif i % 53 == 0:
            out.append(f'k{i:07d},{i},"line one{newline}line two, with ""quotes"""{newline}')
        elif i % 211 == 0:
            out.append(newline)  # a blank line is not a row
            out.append(f"k{i:07d},{i},plain{newline}")
        else:
            out.append(f'k{i:07d},{i},"text {i}, ü"{newline}')
    return "".join(out).encode()


def _cli(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3ddb", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        check=False,
    )


def _rejects(path: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


@pytest.fixture
def two_tables(table_factory: Callable[..., str]) -> tuple[str, str]:
    return table_factory(), table_factory()


@pytest.mark.slow
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_four_workers_load_exactly_what_one_process_loads(
    s3: Any, ddb: Any, bucket: str, two_tables: tuple[str, str], tmp_path: Path, newline: str
) -> None:
    one, four = two_tables
    s3.put_object(Bucket=bucket, Key="w/data.csv", Body=_object(newline=newline))
    uri = f"s3://{bucket}/w/data.csv"
    common = ("--type", "n=N", "--json", "--quiet")
    single = _cli("load", uri, "--table", one, "--workers", "1", "--rejects", str(tmp_path / "r1"), *common)
    assert single.returncode == 0, single.stderr
    sharded = _cli(
        "load", uri, "--table", four, "--workers", "4", "--rejects", str(tmp_path / "r4"),
        "--checkpoint", str(tmp_path / "cp.json"), *common,
    )  # fmt: skip
    assert sharded.returncode == 0, sharded.stderr
    s1, s4 = orjson.loads(single.stdout), orjson.loads(sharded.stdout)
    for k in ("rows_read", "items_written", "rows_rejected", "duplicates_collapsed"):
        assert s4[k] == s1[k], k
    assert s4["rows_rejected"] > 40 and s4["invariant_ok"] is True and s4["object"]["complete"] is True
    assert s4["object"]["totals"]["rows_read"] == s1["rows_read"]
    # every shard ran: the checkpoint holds four complete shards that tile the object
    state = ShardedCheckpoint.from_dict(orjson.loads((tmp_path / "cp.json").read_bytes()), where="cp")
    assert len(state.shards) == 4 and state.complete
    # the same items, and the same rejects with the row numbers and offsets one process gives
    assert by_pk(scan_all(ddb, four)) == by_pk(scan_all(ddb, one))
    assert _rejects(s4["rejects"]) == _rejects(s1["rejects"])


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["killed", "interrupted"])
def test_a_stopped_sharded_load_resumes_exactly_and_leaves_no_worker_behind(
    s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path, how: signal.Signals
) -> None:
    body = _object()
    s3.put_object(Bucket=bucket, Key="w/kill.csv", Body=body)
    uri = f"s3://{bucket}/w/kill.csv"
    cp = tmp_path / "cp.json"
    argv = [
        sys.executable, "-m", "s3ddb", "load", uri, "--table", table, "--type", "n=N", "--workers", "4",
        "--checkpoint", str(cp), "--rejects", str(tmp_path / "rej"), "--max-wcu", "2000", "--json", "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def some_shard_advanced() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the load ended before it was stopped: {proc.communicate()}")
            try:
                state = ShardedCheckpoint.from_dict(orjson.loads(cp.read_bytes()), where="cp")
            except (OSError, ValueError, Exception):
                return False
            return sum(1 for s in state.shards if s.checkpoint and s.checkpoint.offset > s.start) >= 2

        _wait(some_shard_advanced, "two shards to commit a checkpoint")
        workers = _children(proc.pid)
        assert len(workers) >= 4, workers
        proc.send_signal(how)
        out, err = proc.communicate(timeout=120)
        if how == signal.SIGINT:
            assert proc.returncode == 130, err
            assert orjson.loads(out)["status"] == "interrupted"
        _wait(lambda: not any(_alive(w) for w in workers), "the workers to die with their parent", 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = ShardedCheckpoint.from_dict(orjson.loads(cp.read_bytes()), where="cp")
    assert not before.complete
    resumed = _cli("load", uri, "--table", table, "--resume", str(cp), "--json", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    s = orjson.loads(resumed.stdout)
    totals = s["object"]["totals"]
    assert s["object"]["complete"] is True and s["invariant_ok"] is True
    assert totals["rows_read"] == (
        totals["items_written"] + totals["rows_rejected"] + totals["duplicates_collapsed"]
    )
    assert totals["rows_read"] == ROWS  # one row per i; blank lines are not rows
    items = by_pk(scan_all(ddb, table))
    assert len(items) == totals["items_written"]
    assert items["k0000053"]["note"] == {"S": 'line one\nline two, with "quotes"'}


def test_workers_default_to_the_cores_for_large_uncompressed_objects_only() -> None:
    assert default_workers(10 << 30, compressed=False, cores=8) == 8
    assert default_workers(200 << 20, compressed=False, cores=8) == 3  # 64 MB a worker at least
    assert default_workers(10 << 20, compressed=False, cores=8) == 1
    assert default_workers(10 << 30, compressed=True, cores=8) == 1


def test_workers_must_be_positive_and_a_compressed_object_runs_in_one_process(
    s3: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    bad = _cli("load", "./x.csv", "--table", table, "--workers", "0")
    assert bad.returncode == 2 and "--workers must be 1.." in bad.stderr
    import gzip

    s3.put_object(Bucket=bucket, Key="w/z.csv.gz", Body=gzip.compress(_object(2_000)))
    r = _cli("load", f"s3://{bucket}/w/z.csv.gz", "--table", table, "--type", "n=N", "--workers", "4",
             "--rejects", str(tmp_path / "r"), "--json", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "gzip object cannot be cut by bytes: one worker loads it" in r.stderr
    assert orjson.loads(r.stdout)["object"]["complete"] is True
