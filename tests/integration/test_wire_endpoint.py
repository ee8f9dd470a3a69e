"""The wire-speed endpoint speaks enough DynamoDB for boto3 and the loader, and counts what it got."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import botocore.config
import botocore.exceptions
import orjson
import pytest

from benchmarks.wire import WireProcess, running_wire
from tests.support.aws import wire_client


@pytest.fixture(scope="module")
def wire() -> Iterator[WireProcess]:
    with running_wire("--seed", "7") as w:
        yield w


@pytest.fixture
def client(wire: WireProcess) -> Any:
    wire.post("/reset")
    wire.post("/config?latency_ms=0&unprocessed=0&throttle=0&errors=0")
    return wire_client(wire.url)


def _create(client: Any, name: str, sort: bool = False) -> None:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if sort:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "N"})
    client.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
    )


def _puts(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}}}} for i in range(start, start + n)
    ]


def test_boto3_create_describe_and_batch_write(client: Any, wire: WireProcess) -> None:
    _create(client, "t1", sort=True)
    desc = client.describe_table(TableName="t1")["Table"]
    assert desc["TableStatus"] == "ACTIVE"
    assert [k["AttributeName"] for k in desc["KeySchema"]] == ["pk", "sk"]
    items = [{"PutRequest": {"Item": {"pk": {"S": "a"}, "sk": {"N": str(i)}}}} for i in range(25)]
    resp = client.batch_write_item(RequestItems={"t1": items})
    assert resp["UnprocessedItems"] == {}
    stats = wire.stats()
    assert stats["calls"] == 1
    assert stats["items"] == 25
    assert "t1" in client.list_tables()["TableNames"]


def test_request_without_authorization_is_refused(client: Any, wire: WireProcess) -> None:
    _create(client, "t2")
    body = orjson.dumps({"RequestItems": {"t2": _puts(1)}})
    req = urllib.request.Request(
        wire.url + "/",
        data=body,
        headers={
            "X-Amz-Target": "DynamoDB_20120810.BatchWriteItem",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    assert orjson.loads(info.value.read())["__type"].endswith("#MissingAuthenticationTokenException")
    stats = wire.stats()
    assert stats["unauthorized_calls"] == 1
    assert stats["items"] == 0


def test_refuses_what_dynamodb_refuses(client: Any, wire: WireProcess) -> None:
    _create(client, "t3")
    dup = _puts(1) + _puts(1)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.batch_write_item(RequestItems={"t3": dup})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.batch_write_item(RequestItems={"t3": _puts(26)})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    missing_key = [{"PutRequest": {"Item": {"other": {"S": "x"}}}}]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.batch_write_item(RequestItems={"t3": missing_key})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.batch_write_item(RequestItems={"no-such-table": _puts(1)})
    assert wire.stats()["invalid_calls"] == 4
    assert wire.stats()["items"] == 0


def test_faults_unprocessed_throttle_and_errors(client: Any, wire: WireProcess) -> None:
    _create(client, "t4")
    wire.post("/config?unprocessed=1")
    resp = client.batch_write_item(RequestItems={"t4": _puts(10)})
    assert len(resp["UnprocessedItems"]["t4"]) == 10
    assert wire.stats()["unprocessed_items"] == 10
    wire.post("/config?unprocessed=0&throttle=1")
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        client.batch_write_item(RequestItems={"t4": _puts(3)})
    wire.post("/config?throttle=0&errors=1")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.batch_write_item(RequestItems={"t4": _puts(3)})
    assert info.value.response["Error"]["Code"] == "InternalServerError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    stats = wire.stats()
    assert stats["throttled_calls"] == 1
    assert stats["error_calls"] == 1
    assert stats["items"] == 0


def test_fixed_latency_is_applied_per_call(client: Any, wire: WireProcess) -> None:
    _create(client, "t5")
    wire.post("/config?latency_ms=50")
    assert wire.post("/config")["latency_ms"] == 50
    resp = client.batch_write_item(RequestItems={"t5": _puts(5)})
    assert resp["UnprocessedItems"] == {}
    assert wire.stats()["items"] == 5
