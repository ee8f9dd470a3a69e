"""``--stack`` on ``s3ddb status``, ``invoke`` and ``replay``, and the replay of the failure queue,
through the real local services: moto serves CloudFormation and SQS (at the S3 endpoint), DynamoDB
Local holds the ledger and the tables, a private Lambda emulator hosts the real handler as
``s3ddb-loader``. Each test creates a real stack in moto whose outputs carry these local names and
whose failure queue is a real SQS queue, and runs the CLI as a person would (a subprocess; the
error matrix in-process through ``main``). Waiting is polling under a deadline, never a sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import orjson
import pytest

from infra.local.lambda_emulator import DEFAULT_FUNCTION
from lambda_src.admin import judge_stack_status, status
from lambda_src.events import continue_payload
from lambda_src.ledger import ensure_ledger_table, target_key
from s3ddb.cli import main
from tests.support.aws import scan_all
from tests.support.emulator import RunningEmulator, start_emulator, wait_until

REGION = "us-east-1"
FINAL = ("COMPLETED", "FAILED", "STALLED")


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(ddb: Any) -> Iterator[str]:
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    ensure_ledger_table(ddb, name)
    yield name
    ddb.delete_table(TableName=name)


@pytest.fixture(scope="module")
def emulator(
    aws_env: dict[str, str], ledger: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEmulator]:
    emu = start_emulator(
        env=aws_env,
        settings={"S3DDB_LEDGER_TABLE": ledger, "S3DDB_SAFETY_MARGIN_MS": "2000"},
        log_path=tmp_path_factory.mktemp("emulator") / "emulator.log",
    )
    yield emu
    emu.stop()


@pytest.fixture
def local_env(aws_env: dict[str, str], emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudFormation and SQS at moto (the S3 endpoint), Lambda at the private emulator, and no
    ``S3DDB_*`` left from the shell, for this test's clients and the CLI it runs."""
    for name in [k for k in os.environ if k.startswith("S3DDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", aws_env["AWS_ENDPOINT_URL_S3"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", aws_env["AWS_ENDPOINT_URL_S3"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", emulator.url)


@pytest.fixture
def cfn(local_env: None) -> Any:
    return boto3.client("cloudformation")


@pytest.fixture
def sqs(local_env: None) -> Any:
    return boto3.client("sqs")


def s3ddb_outputs(*, ledger: str, function_arn: str, bucket: str) -> dict[str, Any]:
    """The outputs infra/template.yaml declares, carrying the local names."""
    return {
        "FunctionName": {"Value": DEFAULT_FUNCTION},
        "FunctionArn": {"Value": function_arn},
        "SourceBucket": {"Value": bucket},
        "RejectsBucket": {"Value": bucket},
        "LedgerTable": {"Value": ledger},
        "FailureQueueUrl": {"Value": {"Ref": "FailedInvocations"}},
        "AlarmTopicArn": {"Value": f"arn:aws:sns:{REGION}:123456789012:s3ddb-alarms"},
        "LogGroup": {"Value": f"/aws/lambda/{DEFAULT_FUNCTION}"},
    }


@pytest.fixture
def make_stack(cfn: Any) -> Iterator[Callable[[dict[str, Any]], str]]:
    """``make(outputs) -> stack name``: a stack with a real SQS queue (``FailedInvocations``) and
    these outputs, created in moto's CloudFormation; deleted afterwards."""
    made: list[str] = []

    def make(outputs: dict[str, Any]) -> str:
        name = f"s3ddb-test-{uuid.uuid4().hex[:10]}"
        template: dict[str, Any] = {"Resources": {"FailedInvocations": {"Type": "AWS::SQS::Queue"}}}
        if outputs:
            template["Outputs"] = outputs
        cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))
        made.append(name)
        return name

    yield make
    for name in made:
        cfn.delete_stack(StackName=name)


@pytest.fixture
def stack(
    make_stack: Callable[[dict[str, Any]], str], ledger: str, emulator: RunningEmulator, bucket: str
) -> str:
    return make_stack(s3ddb_outputs(ledger=ledger, function_arn=emulator.arn, bucket=bucket))


def output(cfn: Any, stack: str, key: str) -> str:
    outputs = cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    return str(next(o["OutputValue"] for o in outputs if o["OutputKey"] == key))


# -- helpers ----------------------------------------------------------------------------------------


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3ddb.cli", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ),  # local_env pointed CloudFormation, SQS and Lambda at the local services
        timeout=120,
    )


def put_csv(s3: Any, bucket: str, key: str, rows: int, tag: str) -> tuple[str, dict[str, str]]:
    """An object of ``rows`` rows (pk, s) and the items it must become, as {pk: s}."""
    expected = {f"{tag}{i:05d}": f"text {i}" for i in range(rows)}
    body = "pk,s\n" + "".join(f"{pk},{s}\n" for pk, s in expected.items())
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    return f"s3://{bucket}/{key}", expected


def loaded(ddb: Any, table: str) -> dict[str, str]:
    return {item["pk"]["S"]: item["s"]["S"] for item in scan_all(ddb, table)}


def wait_final(ddb: Any, ledger: str, uri: str, emu: RunningEmulator) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        st = status(uri, ledger_table=ledger, ddb_client=ddb)
        return st if st.get("status") in FINAL else None

    try:
        return wait_until(final, timeout_s=60, what=f"the chain of {uri} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- emulator log tail ---\n{emu.log()[-4000:]}") from None


def destination_record(
    payload: Any, *, function_arn: str, condition: str = "RetriesExhausted"
) -> tuple[str, str]:
    """(request id, body) of the record Lambda writes to an on-failure destination."""
    request_id = str(uuid.uuid4())
    record = {
        "version": "1.0",
        "timestamp": "2026-03-01T12:00:00.000Z",
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 3,
        },
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out"},
    }
    return request_id, json.dumps(record)


def visible(sqs: Any, queue_url: str) -> tuple[list[str], int]:
    """The bodies of the visible messages (received with visibility 0: left visible) and how many
    are hidden."""
    bodies: dict[str, str] = {}
    while True:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        fresh = [m for m in resp.get("Messages", []) if m["MessageId"] not in bodies]
        if not fresh:
            break
        bodies.update({m["MessageId"]: m["Body"] for m in fresh})
    hidden = "ApproximateNumberOfMessagesNotVisible"
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[hidden])
    return sorted(bodies.values()), int(attrs["Attributes"][hidden])


# -- status and invoke ------------------------------------------------------------------------------


def test_status_and_invoke_find_the_stacks_function_and_ledger(
    stack: str,
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    ledger: str,
    emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, expected = put_csv(s3, bucket, "in/stacked.csv", 300, "st")

    started = cli("invoke", uri, "--table", table, "--stack", stack)
    assert started.returncode == 0, started.stderr
    assert orjson.loads(started.stdout)["status"] == "accepted"
    final = wait_final(ddb, ledger, uri, emulator)
    assert final["status"] == "COMPLETED", final
    assert loaded(ddb, table) == expected

    shown = cli("status", uri, "--stack", stack, "--json")
    assert shown.returncode == 0, shown.stderr
    record = orjson.loads(shown.stdout)
    assert (record["status"], record["table"], record["items_written"]) == ("COMPLETED", table, 300)

    # S3DDB_STACK names the stack when --stack is absent
    monkeypatch.setenv("S3DDB_STACK", stack)
    by_env = cli("status", uri, "--json")
    monkeypatch.delenv("S3DDB_STACK")
    assert by_env.returncode == 0, by_env.stderr
    assert orjson.loads(by_env.stdout)["chain_id"] == record["chain_id"]

    # an explicit --ledger-table / --function beats the stack's output
    no_ledger = f"no-such-{uuid.uuid4().hex[:6]}"
    other_ledger = cli("status", uri, "--stack", stack, "--ledger-table", no_ledger)
    assert other_ledger.returncode == 2 and "ResourceNotFoundException" in other_ledger.stderr
    other_function = cli("invoke", uri, "--table", table, "--stack", stack, "--function", "ghost")
    assert other_function.returncode == 2
    assert "Function not found: ghost" in other_function.stderr, other_function.stderr


# -- a stack that cannot be used ---------------------------------------------------------------------


COMMANDS = {
    "status": (["status", "s3://b/k.csv", "--json"], "LedgerTable"),
    "invoke": (["invoke", "s3://b/k.csv", "--table", "t"], "FunctionName"),
    "replay": (["replay", "--json"], "FailureQueueUrl"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_stack_or_one_without_outputs_is_one_line_exit_2(
    command: str,
    make_stack: Callable[[dict[str, Any]], str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, needed = COMMANDS[command]
    missing = f"s3ddb-none-{uuid.uuid4().hex[:8]}"
    bare = make_stack({})

    def run(*extra: str) -> tuple[int, str, str]:
        code = main([*argv, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    for code, out, err in (run("--stack", missing), run("--stack", bare)):
        assert code == 2
        assert err.count("\n") == 1 and "Traceback" not in err, err
        if "--json" in argv:  # the error object, on every exit
            obj = orjson.loads(out)
            assert (obj["status"], obj["exit_code"]) == ("error", 2)
            assert obj["error"] == err.removeprefix("s3ddb: error: ").rstrip("\n")
    not_found = f"s3ddb: error: stack '{missing}' not found in {REGION}\n"
    assert run("--stack", missing)[2] == not_found
    assert (
        run("--stack", bare)[2]
        == f"s3ddb: error: stack '{bare}' has no output {needed}: not an s3ddb stack?\n"
    )

    monkeypatch.setenv("S3DDB_STACK", missing)  # the variable, when --stack is absent
    assert run()[::2] == (2, not_found)


def test_a_deleted_stack_and_an_unexecuted_change_set_are_refused(
    cfn: Any, make_stack: Callable[[dict[str, Any]], str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = make_stack({"LedgerTable": {"Value": "x"}})
    stack_id = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"]
    cfn.delete_stack(StackName=name)
    assert main(["status", "s3://b/k.csv", "--stack", stack_id]) == 2
    assert capsys.readouterr().err == (
        f"s3ddb: error: stack '{stack_id}' is DELETE_COMPLETE: it is being deleted or was deleted\n"
    )

    review = f"s3ddb-review-{uuid.uuid4().hex[:8]}"
    cfn.create_change_set(
        StackName=review,
        ChangeSetName="never-executed",
        ChangeSetType="CREATE",
        TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
    )
    try:
        assert main(["replay", "--stack", review]) == 2
        assert "is REVIEW_IN_PROGRESS: a change set made it and was never executed" in capsys.readouterr().err
    finally:
        cfn.delete_stack(StackName=review)


@pytest.mark.parametrize(
    ("state", "usable", "warned"),
    [
        ("CREATE_COMPLETE", True, False),
        ("UPDATE_COMPLETE", True, False),
        ("UPDATE_IN_PROGRESS", True, True),
        ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", True, True),
        ("UPDATE_ROLLBACK_COMPLETE", True, True),
        ("UPDATE_ROLLBACK_FAILED", True, True),
        ("CREATE_IN_PROGRESS", False, True),
        ("CREATE_FAILED", False, True),
        ("ROLLBACK_IN_PROGRESS", False, True),
        ("ROLLBACK_COMPLETE", False, True),
        ("ROLLBACK_FAILED", False, True),
        ("DELETE_IN_PROGRESS", False, True),
        ("DELETE_FAILED", False, True),
        ("REVIEW_IN_PROGRESS", False, True),
    ],
)
def test_stack_states_moto_cannot_hold_are_judged_the_same_way(
    state: str, usable: bool, warned: bool
) -> None:
    # moto settles every change at once: the states in between are judged here, by the same function
    ok, note = judge_stack_status("s", state)
    assert ok is usable
    assert (note is not None) is warned
    if note is not None:
        assert note.startswith(f"stack 's' is {state}") and "\n" not in note


# -- replay -----------------------------------------------------------------------------------------


def test_replay_resends_this_functions_records_and_leaves_the_rest(
    stack: str,
    cfn: Any,
    sqs: Any,
    s3: Any,
    ddb: Any,
    bucket: str,
    table_factory: Callable[..., str],
    ledger: str,
    emulator: RunningEmulator,
) -> None:
    queue_url = output(cfn, stack, "FailureQueueUrl")
    empty = cli("replay", "--stack", stack)
    assert (empty.returncode, empty.stdout) == (0, "s3ddb: the failure queue has no visible messages\n")

    # a chain that finished: its continuation, replayed, must be refused by its token
    done_table = table_factory()
    done_uri, done_rows = put_csv(s3, bucket, "in/done.csv", 50, "dn")
    started = boto3.client("lambda").invoke(
        FunctionName=DEFAULT_FUNCTION,
        Payload=orjson.dumps({"kind": "backfill", "version": 1, "source": done_uri, "table": done_table}),
    )
    assert orjson.loads(started["Payload"].read())["status"] == "accepted"
    done = wait_final(ddb, ledger, done_uri, emulator)
    assert done["status"] == "COMPLETED"

    target = table_factory()
    uri, expected = put_csv(s3, bucket, "in/lost.csv", 400, "lo")
    backfill = {"kind": "backfill", "version": 1, "source": uri, "table": target}
    stale = continue_payload(
        object=done_uri, target=target_key(done_table, done["version"]), hop=done["hop"] + 1, token="0" * 32
    )
    foreign_arn = f"arn:aws:lambda:{REGION}:000000000000:function:someone-else"
    backfill_id, backfill_body = destination_record(backfill, function_arn=emulator.arn)
    stale_id, stale_body = destination_record(stale, function_arn=emulator.arn, condition="EventAgeExceeded")
    foreign_id, foreign_body = destination_record(backfill, function_arn=foreign_arn)
    for body in (backfill_body, stale_body, foreign_body, "not a record"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    replayed = cli("replay", "--stack", stack, "--json")
    assert replayed.returncode == 1, replayed.stderr  # two messages were left in the queue
    report = orjson.loads(replayed.stdout)
    assert (report["received"], report["resent"], report["left"], report["failed"]) == (4, 2, 2, 0)
    assert (report["stack"], report["queue_url"], report["function"]) == (stack, queue_url, DEFAULT_FUNCTION)
    by_id = {m["request_id"]: m for m in report["messages"] if m["request_id"]}
    assert {k: v for k, v in by_id[backfill_id].items() if k != "message_id"} == {
        "action": "resent",
        "request_id": backfill_id,
        "condition": "RetriesExhausted",
        "kind": "backfill",
        "object": uri,
        "reason": None,
    }
    assert (by_id[stale_id]["action"], by_id[stale_id]["kind"], by_id[stale_id]["condition"]) == (
        "resent",
        "continue",
        "EventAgeExceeded",
    )
    assert by_id[foreign_id]["action"] == "left" and foreign_arn in by_id[foreign_id]["reason"]
    [junk] = [m for m in report["messages"] if m["request_id"] is None]
    assert junk["action"] == "left" and "not JSON" in junk["reason"]
    assert replayed.stderr == "s3ddb: 2 message(s) stay in the queue; the report says why\n"

    # the backfill, resent, loaded its object exactly
    final = wait_final(ddb, ledger, uri, emulator)
    assert (final["status"], final["items_written"]) == ("COMPLETED", 400), final
    assert loaded(ddb, target) == expected
    # the stale continuation was refused by its token, and changed nothing
    wait_until(
        lambda: "does not carry the token" in emulator.log(), timeout_s=30, what="the continuation's refusal"
    )
    after = status(done_uri, ledger_table=ledger, ddb_client=ddb)
    kept = ("status", "hops", "updated_at")
    assert {k: after[k] for k in kept} == {k: done[k] for k in kept}
    assert loaded(ddb, done_table) == done_rows

    # the resent records are gone; the others are back in the queue, visible at once
    assert visible(sqs, queue_url) == (sorted([foreign_body, "not a record"]), 0)


def test_dry_run_sends_and_deletes_nothing(
    stack: str,
    make_stack: Callable[[dict[str, Any]], str],
    cfn: Any,
    sqs: Any,
    bucket: str,
    table: str,
    ddb: Any,
    ledger: str,
    emulator: RunningEmulator,
    request: pytest.FixtureRequest,
) -> None:
    queue_url = output(cfn, stack, "FailureQueueUrl")
    uri = f"s3://{bucket}/in/never.csv"
    backfill = {"kind": "backfill", "version": 1, "source": uri, "table": table}
    request_id, body = destination_record(backfill, function_arn=emulator.arn)
    other_arn = emulator.arn.replace(f":function:{DEFAULT_FUNCTION}", ":function:other")
    foreign_id, foreign = destination_record(backfill, function_arn=other_arn)
    for message in (body, foreign):
        sqs.send_message(QueueUrl=queue_url, MessageBody=message)

    dry = cli("replay", "--stack", stack, "--dry-run")
    assert dry.returncode == 1, dry.stderr  # the foreign record would stay
    lines = dry.stdout.splitlines()
    assert f"would resend {request_id}  RetriesExhausted  backfill  {uri}" in lines, lines
    left = f"{'left':<12} {foreign_id}  RetriesExhausted  backfill  {uri}  (a record of {other_arn}:$LATEST, "
    assert any(line.startswith(left) for line in lines), lines
    assert lines[-1] == "s3ddb: dry run, nothing sent or deleted: 2 received, 1 would be resent, 1 would stay"
    assert visible(sqs, queue_url) == (sorted([body, foreign]), 0)
    assert status(uri, ledger_table=ledger, ddb_client=ddb)["status"] == "NOT_FOUND"

    # proof that a dry run invokes nothing: a function that does not exist is no error to it, while
    # the same replay sent for real stops on it (exit 2) and leaves the message where it was. The
    # explicit --queue-url and --function beat a stack that has no outputs.
    bare = make_stack({})
    ghost_queue = sqs.create_queue(QueueName=f"ghost-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    request.addfinalizer(lambda: sqs.delete_queue(QueueUrl=ghost_queue))
    ghost_arn = f"arn:aws:lambda:{REGION}:000000000000:function:ghost"
    _, ghost_body = destination_record(backfill, function_arn=ghost_arn)
    sqs.send_message(QueueUrl=ghost_queue, MessageBody=ghost_body)
    ghost = ["replay", "--stack", bare, "--queue-url", ghost_queue, "--function", "ghost", "--json"]
    dry_ghost = cli(*ghost, "--dry-run")
    assert dry_ghost.returncode == 0, dry_ghost.stderr
    assert orjson.loads(dry_ghost.stdout)["would_resend"] == 1
    real_ghost = cli(*ghost)
    assert real_ghost.returncode == 2
    assert real_ghost.stderr.startswith("s3ddb: error: cannot invoke ghost: ResourceNotFoundException")
    assert real_ghost.stderr.count("\n") == 1
    assert orjson.loads(real_ghost.stdout)["exit_code"] == 2
    assert visible(sqs, ghost_queue) == ([ghost_body], 0)
