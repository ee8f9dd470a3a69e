"""The e2e tier: the real handler, hop after hop, through the Lambda emulator (each invocation its
own process with a real deadline), against DynamoDB Local and moto S3.

Every test starts its own emulator (free port, ~10 s function timeout, short async retry delays)
with the function's settings in ``S3DDB_*`` variables, as ``s3ddb local up`` would. Waiting is
polling the ledger under a bounded deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import orjson
import pytest

from lambda_src.admin import status
from lambda_src.ledger import ensure_ledger_table
from tests.support import emulator as support_emulator
from tests.support.aws import scan_all

#: the function timeout the e2e tests run under
FUNCTION_TIMEOUT_S = 10.0
FINAL = ("COMPLETED", "FAILED", "STALLED")


@dataclass
class Emulator:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    client: Any  # boto3 lambda client pointed at the emulator
    copier: threading.Thread | None = None

    def attempts(self) -> list[dict[str, Any]]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_emulator/invocations", timeout=5) as resp:
            data: list[dict[str, Any]] = orjson.loads(resp.read())
        return data

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def ledger_table(ddb: Any) -> Iterator[str]:
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    ensure_ledger_table(ddb, name)
    yield name
    ddb.delete_table(TableName=name)


@pytest.fixture
def start_emulator(aws_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """``start(settings: dict[str, str], *extra_args) -> Emulator``; stopped after the test."""
    started: list[Emulator] = []

    def start(settings: dict[str, str], *extra: str, timeout: float = FUNCTION_TIMEOUT_S) -> Emulator:
        running = support_emulator.start_emulator(
            env=aws_env,
            settings=settings,
            log_path=tmp_path / f"emulator-{len(started)}.log",
            timeout_s=timeout,
            extra=extra,
        )
        client = boto3.client(
            "lambda",
            endpoint_url=running.url,
            config=botocore.config.Config(read_timeout=60, retries={"max_attempts": 1}),
        )
        emu = Emulator(
            url=running.url,
            proc=running.proc,
            log_path=running.log_path,
            client=client,
            copier=running.copier,
        )
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.proc.terminate()
        try:
            emu.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(emu.proc.pid, 9)
            emu.proc.wait()
        if emu.copier is not None:
            emu.copier.join(timeout=10)
        if emu.proc.stdout is not None:
            emu.proc.stdout.close()
        emu.client.close()


def wait_final(
    ddb: Any, ledger_table: str, uri: str, *, timeout_s: float, emu: Emulator | None = None
) -> dict[str, Any]:
    """Poll the ledger until the object's chain is COMPLETED/FAILED/STALLED (bounded deadline)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = status(uri, ledger_table=ledger_table, ddb_client=ddb)
        if last.get("status") in FINAL:
            return last
        time.sleep(0.25)  # a polling interval, not a synchronisation
    tail = emu.log()[-6000:] if emu is not None else ""
    raise AssertionError(f"{uri} did not finish in {timeout_s}s: {last}\n--- emulator log tail ---\n{tail}")


def wait_attempts(emu: Emulator, count: int, *, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The emulator's invocation records once at least ``count`` have returned (it records an
    invocation when the handler returns, after the ledger write a test may have waited for)."""
    deadline = time.monotonic() + timeout_s
    while len(attempts := emu.attempts()) < count and time.monotonic() < deadline:
        time.sleep(0.1)  # a polling interval, bounded by the deadline
    return attempts


def make_csv(rows: int, *, start: int = 0, tag: str = "") -> tuple[bytes, dict[str, dict[str, Any]]]:
    """A CSV of ``rows`` rows and the items it must become (pk S, n N, s S)."""
    lines = ["pk,n,s"]
    expected: dict[str, dict[str, Any]] = {}
    for i in range(start, start + rows):
        pk = f"{tag}k{i:07d}"
        lines.append(f"{pk},{i},text-{i}")
        expected[pk] = {"pk": {"S": pk}, "n": {"N": str(i)}, "s": {"S": f"text-{i}"}}
    return ("\n".join(lines) + "\n").encode(), expected


SCHEMA = '{"columns": {"n": "N"}}'


def function_settings(ledger: str, table: str, **over: str) -> dict[str, str]:
    """The function's ``S3DDB_*`` settings for a test: the defaults (concurrency 40 among them) but
    a small margin, frequent checkpoints and small source chunks, so 10 s hops move along."""
    env = {
        "S3DDB_LEDGER_TABLE": ledger,
        "S3DDB_TABLE": table,
        "S3DDB_SCHEMA": SCHEMA,
        "S3DDB_SAFETY_MARGIN_MS": "1500",
        "S3DDB_CHECKPOINT_INTERVAL": "0.5",
        # the engine polls its stop between source chunks: small ones keep a slow hop responsive
        "S3DDB_CHUNK_BYTES": "8192",
    }
    env.update(over)
    return env


def put_object(s3: Any, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def table_as_dict(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {item["pk"]["S"]: item for item in scan_all(ddb, table)}


def assert_invariant(st: dict[str, Any]) -> None:
    assert st["rows_read"] == st["items_written"] + st["rows_rejected"] + st["duplicates_collapsed"], st
