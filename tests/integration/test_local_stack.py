"""The local stand-ins as ``s3ddb local up|down`` runs them: real processes, temp state dirs, free ports.

These tests start their own DynamoDB Local, moto and Lambda emulator (not the session's services),
so they also run when the endpoint variables point elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra.local import stack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # DynamoDB Local binds every interface
        return int(s.getsockname()[1])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "local"
    yield d
    stack.down(state_dir=d)  # whatever a failing test left running


def test_up_twice_reuses_the_services_and_down_stops_exactly_them(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = {"dynamodb_port": _free_port(), "s3_port": _free_port(), "lambda_port": _free_port()}
    ddb_port, s3_port = ports["dynamodb_port"], ports["s3_port"]
    first = stack.up(state_dir=state_dir, **ports)
    second = stack.up(state_dir=state_dir, **ports)

    assert set(first.pids) == {"dynamodb", "s3", "lambda"}
    assert second.pids == first.pids
    assert second.env == first.env
    assert first.env["AWS_ENDPOINT_URL_DYNAMODB"] == f"http://127.0.0.1:{ddb_port}"
    assert first.env["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{s3_port}"
    assert first.env["AWS_ENDPOINT_URL_LAMBDA"] == f"http://127.0.0.1:{ports['lambda_port']}"
    assert (state_dir / "dynamodb.pid").read_text().strip() == str(first.pids["dynamodb"])
    assert json.loads((state_dir / "state.json").read_text())["env"] == first.env

    # Clients configured by nothing but that env reach these services (fresh ones: empty).
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for k, v in first.env.items():
        monkeypatch.setenv(k, v)
    ddb = boto3.client("dynamodb")
    s3 = boto3.client("s3")
    # a fresh DynamoDB Local: only the ledger table the Lambda service creates for its function
    ledger = os.environ.get("S3DDB_LEDGER_TABLE") or stack.DEFAULT_LEDGER_TABLE
    assert ddb.list_tables()["TableNames"] == [ledger]
    s3.create_bucket(Bucket="local-stack-probe")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["local-stack-probe"]

    out = subprocess.run(
        ["bash", "-c", 'eval "$X"; echo "$AWS_ENDPOINT_URL_S3 $AWS_ACCESS_KEY_ID"'],
        env={"X": stack.format_exports(first.env), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"http://127.0.0.1:{s3_port} s3ddblocal"

    assert sorted(stack.down(state_dir=state_dir)) == ["dynamodb", "lambda", "s3"]
    assert all(_gone(pid) for pid in first.pids.values())
    assert not list(state_dir.glob("*.pid"))
    assert stack.down(state_dir=state_dir) == []


def test_up_names_a_port_taken_by_another_process(state_dir: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(stack.PortInUseError, match=rf"port {port} .*--dynamodb-port"):
            stack.up(state_dir=state_dir, dynamodb_port=port, s3_port=_free_port(), lambda_port=_free_port())
    assert not list(state_dir.glob("*.pid"))


@pytest.mark.parametrize("own_group", [True, False], ids=["other-start-time", "not-a-group-leader"])
def test_down_leaves_a_recycled_pid_alone(state_dir: Path, own_group: bool) -> None:
    """A recorded pid that is some other process now (other start time, or not leading its own
    process group as ours do) is never signalled."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=own_group
    )
    try:
        state_dir.mkdir(parents=True)
        (state_dir / "dynamodb.pid").write_text(f"{other.pid}\n")
        if own_group:
            record = {"pid": other.pid, "starttime": "1", "url": "http://127.0.0.1:1"}
            (state_dir / "state.json").write_text(json.dumps({"services": {"dynamodb": record}}))

        assert stack.down(state_dir=state_dir) == []
        assert other.poll() is None
        assert not (state_dir / "dynamodb.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_start_services_private_set_is_removed_on_stop() -> None:
    """The path tests/conftest.py takes when no endpoint variables are set."""
    services = stack.start_services(state_dir=None)
    try:
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=services.env["AWS_ENDPOINT_URL_DYNAMODB"],
            region_name="us-east-1",
            aws_access_key_id="s3ddblocal",
            aws_secret_access_key="s3ddblocal",
        )
        assert ddb.list_tables()["TableNames"] == []
        assert (services.state_dir / "dynamodb.log").is_file()
    finally:
        pids = dict(services.pids)
        services.stop()
    assert all(_gone(pid) for pid in pids.values())
    assert not services.state_dir.exists()


def test_format_exports_quotes_values_for_eval() -> None:
    text = stack.format_exports({"A_B": "x y'z$HOME;`true`"})
    assert text == "export A_B='x y'\"'\"'z$HOME;`true`'\n"
    out = subprocess.run(
        ["bash", "-c", 'eval "$X"; printf %s "$A_B"'],
        env={"X": text, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "x y'z$HOME;`true`"
    with pytest.raises(ValueError, match="not a valid"):
        stack.format_exports({"A-B": "1"})
