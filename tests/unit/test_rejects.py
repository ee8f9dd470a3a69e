"""Reject records are readable JSON Lines with row, offset, raw text and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from loader.errors import ConfigError
from loader.models import Reject
from loader.rejects import LocalRejects, S3Rejects, open_rejects


def test_local_rejects_are_written_only_when_there_are_some(tmp_path: Path) -> None:
    sink = open_rejects(str(tmp_path / "rej"), run_id="run1")
    assert isinstance(sink, LocalRejects)
    assert sink.close() is None
    assert not (tmp_path / "rej").exists()


def test_local_rejects_lines(tmp_path: Path) -> None:
    sink = open_rejects(str(tmp_path), run_id="run2")
    sink.add(Reject(row=3, offset=120, raw='x,"y\nz"', reason="bad number"))
    sink.add(Reject(row=9, offset=400, raw="ü", reason="empty partition key 'pk'"))
    sink.flush()
    location = sink.close()
    assert location == str(tmp_path / "run2.jsonl")
    lines = [orjson.loads(x) for x in Path(location).read_bytes().splitlines()]
    assert lines == [
        {"row": 3, "offset": 120, "raw": 'x,"y\nz"', "reason": "bad number"},
        {"row": 9, "offset": 400, "raw": "ü", "reason": "empty partition key 'pk'"},
    ]


# ----------------------------------------------------------------------------- S3: checked on open


class _Meta:
    region_name = "us-east-1"
    endpoint_url = "http://127.0.0.1:1"


class _FakeS3:
    """HeadBucket answers with ``error`` (or succeeds); calls are recorded."""

    meta = _Meta()

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def head_bucket(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("head_bucket", kw))
        if self.error is not None:
            raise self.error
        return {}

    def put_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("put_object", kw))
        return {}


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "HeadBucket")


def test_s3_rejects_check_the_bucket_when_opened() -> None:
    s3 = _FakeS3()
    sink = open_rejects("s3://rej-bucket/some/prefix/", run_id="r1", s3_client=s3)
    assert isinstance(sink, S3Rejects)
    assert s3.calls == [("head_bucket", {"Bucket": "rej-bucket"})]
    assert sink.location == "s3://rej-bucket/some/prefix/r1.jsonl"
    assert sink.close() is None and len(s3.calls) == 1  # nothing written without a reject


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            _client_error("404", 404),
            "rejects destination s3://nope/x/: bucket 'nope' does not exist; create it",
        ),
        (_client_error("NoSuchBucket", 404), "bucket 'nope' does not exist"),
        (
            _client_error("403", 403),
            "rejects destination s3://nope/x/: access to bucket 'nope' is denied (HeadBucket said 403); "
            "grant "
            "s3:ListBucket on arn:aws:s3:::nope (the check before loading) and s3:PutObject on "
            "arn:aws:s3:::nope/x/* to these credentials, or name a bucket they may write",
        ),
        (
            ParamValidationError(report="Invalid bucket name"),
            "rejects destination s3://nope/x/: 'nope' is not a valid bucket name",
        ),
        (
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1/nope"),
            "rejects destination s3://nope/x/: cannot reach S3 at us-east-1 (endpoint http://127.0.0.1:1)",
        ),
    ],
)
def test_an_unusable_s3_rejects_bucket_is_a_config_error(error: Exception, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_rejects("s3://nope/x/", run_id="r1", s3_client=_FakeS3(error))
    assert message in str(err.value)


def test_a_server_fault_on_the_check_is_not_a_config_error() -> None:
    with pytest.raises(ClientError):
        open_rejects("s3://b/x", run_id="r1", s3_client=_FakeS3(_client_error("InternalError", 500)))


def test_an_s3_rejects_bucket_at_the_root_names_the_whole_bucket() -> None:
    with pytest.raises(ConfigError) as err:
        open_rejects("s3://nope", run_id="r1", s3_client=_FakeS3(_client_error("403", 403)))
    text = str(err.value)
    assert "rejects destination s3://nope/:" in text and "s3:PutObject on arn:aws:s3:::nope/*" in text
