"""A private Lambda emulator (``python -m infra.local.lambda_emulator``) for one test module: the
real handler hosted as ``s3ddb-loader`` on a free port, with the function's settings in ``S3DDB_*``
variables, its output (the handler's log lines included) copied to a file the test can read.

Waiting on it is polling a condition under a deadline (:func:`wait_until`), never a fixed sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from infra.local.lambda_emulator import ACCOUNT, DEFAULT_FUNCTION

_REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class RunningEmulator:
    url: str
    arn: str  # the function's ARN, as the emulator gives it to the handler's context
    proc: subprocess.Popen[bytes]
    log_path: Path
    copier: threading.Thread

    def attempts(self) -> list[dict[str, Any]]:
        """Every invocation attempt that has returned (the emulator records one when it ends)."""
        with urllib.request.urlopen(f"{self.url}/_emulator/invocations", timeout=5) as resp:
            data: list[dict[str, Any]] = orjson.loads(resp.read())
        return data

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.copier.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_emulator(
    *,
    env: Mapping[str, str],
    settings: Mapping[str, str],
    log_path: Path,
    timeout_s: float = 60.0,
    extra: Sequence[str] = (),
) -> RunningEmulator:
    """Start the emulator with ``env`` (endpoints, credentials) plus the function's ``settings``;
    a RuntimeError with its output when it does not say it is listening."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("S3DDB_")}
    child_env.update(env)
    child_env.update(settings)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.local.lambda_emulator",
            "--port",
            "0",
            "--timeout",
            str(timeout_s),
            "--retry-delays",
            "0.5,1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=str(_REPO),
        start_new_session=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    if "listening on" not in first:
        proc.kill()
        raise RuntimeError(f"the Lambda emulator did not start: {first}{proc.stdout.read().decode()}")
    url = first.rsplit(" ", 1)[1].strip()
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the copier thread

    def copy() -> None:
        assert proc.stdout is not None
        with log:
            for line in proc.stdout:
                log.write(line)
                log.flush()

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    region = child_env.get("AWS_REGION") or child_env.get("AWS_DEFAULT_REGION") or "us-east-1"
    arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{DEFAULT_FUNCTION}"
    return RunningEmulator(url=url, arn=arn, proc=proc, log_path=log_path, copier=copier)


def wait_until(probe: Callable[[], T | None], *, timeout_s: float, what: str) -> T:
    """``probe()``'s first answer that is not None (or False), polled under a deadline; an
    AssertionError naming ``what`` when the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = probe()
        if answer is not None and answer is not False:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout_s} s waiting for {what}")
        time.sleep(0.1)  # a polling interval, bounded by the deadline
