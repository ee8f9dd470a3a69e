"""The local Lambda Invoke API (infra/local/lambda_emulator.py) behaves as the handler and the CLI
expect of Lambda: invocation types, errors, async retries with the same request id, the context,
and a timeout that starts after the init phase."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.config
import pytest

from infra.local.lambda_emulator import EmulatorConfig, FunctionSpec, LambdaEmulator

HANDLERS = "tests.support.emulator_handlers"


@pytest.fixture
def emulator(aws_env: dict[str, str]) -> Iterator[Callable[..., tuple[LambdaEmulator, Any]]]:
    started: list[tuple[LambdaEmulator, Any]] = []

    def start(handler: str, **fn: Any) -> tuple[LambdaEmulator, Any]:
        emu = LambdaEmulator(
            EmulatorConfig(
                function=FunctionSpec(handler=f"{HANDLERS}.{handler}", **fn), retry_delays=(0.05, 0.05)
            )
        )
        url = emu.start()
        client = boto3.client(
            "lambda",
            endpoint_url=url,
            config=botocore.config.Config(read_timeout=60, retries={"max_attempts": 1}),
        )
        started.append((emu, client))
        return emu, client

    yield start
    for emu, client in started:
        emu.stop()
        client.close()


def _attempts(emu: LambdaEmulator, request_id: str) -> list[dict[str, Any]]:
    with emu.lock:
        return [a for a in emu.attempts if a["request_id"] == request_id]


def test_dry_run_answers_204_and_runs_nothing(emulator: Any) -> None:
    emu, client = emulator("fail")
    resp = client.invoke(FunctionName="s3ddb-loader", InvocationType="DryRun", Payload=b"{}")
    assert resp["StatusCode"] == 204
    assert emu.attempts == []


def test_a_request_response_error_comes_back_as_a_function_error(emulator: Any) -> None:
    _, client = emulator("fail")
    resp = client.invoke(FunctionName="s3ddb-loader", Payload=b'{"x": 1}')
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    body = json.loads(resp["Payload"].read())
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == f"boom in {resp['ResponseMetadata']['RequestId']}"
    assert body["stackTrace"]


def test_an_event_that_fails_is_retried_twice_with_the_same_request_id(emulator: Any) -> None:
    emu, client = emulator("fail")
    resp = client.invoke(FunctionName="s3ddb-loader", InvocationType="Event", Payload=b"{}")
    assert resp["StatusCode"] == 202
    request_id = resp["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 60
    while len(_attempts(emu, request_id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # a polling interval, bounded by the deadline
    attempts = _attempts(emu, request_id)
    assert [(a["attempt"], a["type"], a["outcome"]) for a in attempts] == [
        (1, "Event", "error"),
        (2, "Event", "error"),
        (3, "Event", "error"),
    ]
    assert {a["error_type"] for a in attempts} == {"ValueError"}


def test_the_context_has_the_lambda_fields(emulator: Any) -> None:
    emu, client = emulator("context_fields", timeout_s=30.0, memory_mb=512)
    resp = client.invoke(FunctionName=emu.arn, Payload=b'{"hello": "world"}')
    assert "FunctionError" not in resp
    out = json.loads(resp["Payload"].read())
    assert out["event"] == {"hello": "world"}
    assert out["aws_request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert out["function_name"] == "s3ddb-loader"
    assert out["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:s3ddb-loader"
    assert out["memory_limit_in_mb"] == 512
    assert 0 < out["remaining_ms"] <= 30_000


def test_the_init_phase_does_not_count_against_the_timeout(emulator: Any) -> None:
    # the handler's module takes 1.5 s to import; the function has 1 s: it must still run
    _, client = emulator("context_fields", timeout_s=1.0, env={"S3DDB_TEST_INIT_SLEEP_S": "1.5"})
    resp = client.invoke(FunctionName="s3ddb-loader", Payload=b"{}")
    assert "FunctionError" not in resp, resp["Payload"].read()
    assert json.loads(resp["Payload"].read())["remaining_ms"] > 0


def test_an_init_that_takes_too_long_is_killed(emulator: Any) -> None:
    emu, client = emulator("context_fields", init_timeout_s=0.5, env={"S3DDB_TEST_INIT_SLEEP_S": "30"})
    resp = client.invoke(FunctionName="s3ddb-loader", Payload=b"{}")
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorType"] == "Runtime.InitTimeout"
    assert emu.children == set()
