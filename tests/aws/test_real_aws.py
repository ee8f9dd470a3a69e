"""Against real AWS: opt-in with S3DDB_AWS_TESTS=1 and credentials for a throwaway account.

Needs S3DDB_AWS_TABLE (an existing table keyed by ``pk`` (S), emptied by you afterwards) and
S3DDB_AWS_BUCKET (a bucket the test may write ``s3ddb-aws-test/`` objects to). It proves what
no local stand-in can: the lean sender's TLS, SigV4 and CRC32 handling against the real service.
Skipped (not failed) without the opt-in: this tier never runs in CI.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import boto3
import orjson
import pytest

from s3ddb.cli import main
from tests.support.data import csv_bytes, simple_rows

pytestmark = pytest.mark.skipif(
    os.environ.get("S3DDB_AWS_TESTS") != "1", reason="real AWS tests are opt-in (S3DDB_AWS_TESTS=1)"
)


@pytest.fixture
def real_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for var in (
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_LAMBDA",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return {"table": os.environ["S3DDB_AWS_TABLE"], "bucket": os.environ["S3DDB_AWS_BUCKET"]}


@pytest.mark.aws
@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_load_into_real_dynamodb(
    capsys: pytest.CaptureFixture[str], real_env: dict[str, str], sender: str
) -> None:
    s3: Any = boto3.client("s3")
    ddb: Any = boto3.client("dynamodb")
    prefix = f"aws-{uuid.uuid4().hex[:8]}-"
    rows = [(prefix + pk, n, s) for pk, n, s in simple_rows(500)]
    key = f"s3ddb-aws-test/{prefix}.csv"
    s3.put_object(Bucket=real_env["bucket"], Key=key, Body=csv_bytes(["pk", "n", "s"], rows))
    code = main(
        [
            "load",
            f"s3://{real_env['bucket']}/{key}",
            "--table",
            real_env["table"],
            "--type",
            "n=N",
            "--json",
            "--sender",
            sender,
        ]
    )
    out = orjson.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["items_written"] == 500
    got = ddb.get_item(TableName=real_env["table"], Key={"pk": {"S": rows[123][0]}}, ConsistentRead=True)
    assert got["Item"]["s"] == {"S": rows[123][2]}
