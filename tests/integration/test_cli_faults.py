"""`s3ddb load` under the faults no local server produces: UnprocessedItems, throttling, 5xx,
dropped connections, and a fault it cannot outlast. DynamoDB Local sits behind the fault proxy;
the CLI reaches it through AWS_ENDPOINT_URL_DYNAMODB, as it would reach AWS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader.models import Checkpoint
from s3ddb.cli import main
from tests.support.aws import scan_all
from tests.support.data import by_pk, csv_bytes, simple_expected, simple_rows
from tests.support.faultproxy import FaultProxy


@pytest.fixture
def proxy(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", p.url)
        yield p


def load(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["load", *argv, "--json", "--backoff-base", "0.001", "--backoff-cap", "0.02"])
    out, err = capsys.readouterr()
    assert out.strip(), err
    return code, orjson.loads(out)


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_unprocessed_items_throttles_5xx_and_resets_still_load_exactly(
    capsys: pytest.CaptureFixture[str],
    proxy: FaultProxy,
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    sender: str,
) -> None:
    rows = simple_rows(5000)
    s3.put_object(Bucket=bucket, Key="f.csv", Body=csv_bytes(["pk", "n", "s"], rows))
    proxy.unprocessed_fraction(0.3, times=60)
    proxy.throttle_next(6, code="ThrottlingException")
    proxy.throttle_next(4)
    proxy.fail_next(3)
    proxy.reset_next(2)
    code, s = load(
        capsys,
        f"s3://{bucket}/f.csv",
        "--table",
        table,
        "--type",
        "n=N",
        "--sender",
        sender,
        "--concurrency",
        "16",
    )
    assert code == 0, s
    assert s["items_written"] == 5000 and s["rows_rejected"] == 0
    assert s["retries"] >= 6 + 4 + 3 + 2
    assert s["throttle_events"] >= 10
    assert proxy.unprocessed_returned > 0 and proxy.throttled == 10
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_a_fault_it_cannot_outlast_exits_4_with_a_checkpoint_then_resume_is_exact(
    capsys: pytest.CaptureFixture[str],
    proxy: FaultProxy,
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
) -> None:
    rows = simple_rows(3000)
    body = csv_bytes(["pk", "n", "s"], rows)
    s3.put_object(Bucket=bucket, Key="f.csv", Body=body)
    poison = b'"k0002000"'
    # every batch holding row k0002000 is throttled, forever
    proxy.throttle_next(None, when=lambda doc: poison in orjson.dumps(doc))  # type: ignore[arg-type]
    cp = tmp_path / "cp.json"
    code, s = load(
        capsys,
        f"s3://{bucket}/f.csv",
        "--table",
        table,
        "--type",
        "n=N",
        "--max-attempts",
        "3",
        "--checkpoint",
        str(cp),
    )
    assert code == 4
    assert s["status"] == "failed" and "error" in s
    checkpoint = Checkpoint.loads(cp.read_bytes())
    assert not checkpoint.complete
    # the mark stops before the row that could not be written; everything below it is in the table
    assert checkpoint.next_row <= 2001
    assert checkpoint.counters.balanced
    landed = by_pk(scan_all(ddb, table))
    assert "k0002000" not in landed
    assert all(f"k{i:07d}" in landed for i in range(checkpoint.next_row - 1))

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", aws_env["AWS_ENDPOINT_URL_DYNAMODB"])
    code, s = load(
        capsys,
        f"s3://{bucket}/f.csv",
        "--table",
        table,
        "--type",
        "n=N",
        "--resume",
        str(cp),
        "--checkpoint",
        str(cp),
    )
    assert code == 0, s
    assert s["object"]["complete"] is True
    assert s["object"]["totals"]["rows_read"] == 3000
    assert s["object"]["totals"]["items_written"] == 3000
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_ctrl_c_drains_writes_a_checkpoint_and_exits_130_then_resume_is_exact(
    proxy: FaultProxy,
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    tmp_path: Path,
    aws_env: dict[str, str],
) -> None:
    rows = simple_rows(30_000)
    s3.put_object(Bucket=bucket, Key="big.csv", Body=csv_bytes(["pk", "n", "s"], rows))
    proxy.delay_next(None, 0.02)  # keep the load running long enough to interrupt it
    cp = tmp_path / "cp.json"
    env = dict(os.environ)
    argv = [
        sys.executable,
        "-m",
        "s3ddb.cli",
        "load",
        f"s3://{bucket}/big.csv",
        "--table",
        table,
        "--type",
        "n=N",
        "--checkpoint",
        str(cp),
        "--json",
        "--concurrency",
        "4",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while proxy.items_forwarded < 2000:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.05)  # polling a counter with a deadline, not a sleep standing in for sync
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    summary = orjson.loads(out)
    assert summary["status"] == "interrupted"
    checkpoint = Checkpoint.loads(cp.read_bytes())
    assert 0 < checkpoint.counters.rows_read < 30_000 and checkpoint.counters.balanced

    proxy.reset()
    env["AWS_ENDPOINT_URL_DYNAMODB"] = aws_env["AWS_ENDPOINT_URL_DYNAMODB"]
    done = subprocess.run(
        [*argv[:-2], "--resume", str(cp)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["object"]["totals"]["items_written"] == 30_000
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_ctrl_c_while_every_call_is_throttled_stops_at_once_with_exit_130(
    proxy: FaultProxy, s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    """Batches backing off are abandoned (their rows stay above the checkpoint), not retried to the cap."""
    rows = simple_rows(3000)
    s3.put_object(Bucket=bucket, Key="t.csv", Body=csv_bytes(["pk", "n", "s"], rows))
    proxy.throttle_next(None)
    cp = tmp_path / "cp.json"
    argv = [
        sys.executable,
        "-m",
        "s3ddb.cli",
        "load",
        f"s3://{bucket}/t.csv",
        "--table",
        table,
        "--type",
        "n=N",
        "--checkpoint",
        str(cp),
        "--json",
        "--backoff-base",
        "5",
        "--backoff-cap",
        "60",
    ]
    proc = subprocess.Popen(
        argv, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while proxy.throttled < 40:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no throttled calls seen"
            time.sleep(0.05)  # polling a counter with a deadline, not a sleep standing in for sync
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # backoffs of up to 60 s must not be waited out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    summary = orjson.loads(out)
    assert summary["status"] == "interrupted" and summary["invariant_ok"] is True
    checkpoint = Checkpoint.loads(cp.read_bytes())
    assert checkpoint.counters.items_written == 0 and checkpoint.counters.balanced
    assert scan_all(ddb, table) == []


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_concurrency_is_the_number_of_calls_in_flight(
    capsys: pytest.CaptureFixture[str],
    proxy: FaultProxy,
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    sender: str,
) -> None:
    rows = simple_rows(2000)
    s3.put_object(Bucket=bucket, Key="c.csv", Body=csv_bytes(["pk", "n", "s"], rows))
    proxy.delay_next(None, 0.05)  # every call takes a while, so calls pile up to the limit
    code, s = load(
        capsys,
        f"s3://{bucket}/c.csv",
        "--table",
        table,
        "--type",
        "n=N",
        "--concurrency",
        "5",
        "--sender",
        sender,
    )
    assert code == 0, s
    assert proxy.max_in_flight == 5
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_max_wcu_is_a_ceiling_on_write_units_per_second(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    """600 one-unit items at --max-wcu 200 cannot take less than 3 s (the bucket starts empty).
    A lower bound on time only: a slow machine can never make this fail."""
    rows = simple_rows(600)
    s3.put_object(Bucket=bucket, Key="w.csv", Body=csv_bytes(["pk", "n", "s"], rows))
    started = time.monotonic()
    code, s = load(capsys, f"s3://{bucket}/w.csv", "--table", table, "--type", "n=N", "--max-wcu", "200")
    elapsed = time.monotonic() - started
    assert code == 0, s
    assert s["write_units"] == 600
    assert elapsed >= 600 / 200 * 0.95
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)
