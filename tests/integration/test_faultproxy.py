"""The fault proxy itself: it forwards exactly, and each fault is a wire response botocore parses
as the service's. A plain boto3 client is used on purpose: this tests the proxy, not the loader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tests.support.aws import scan_all
from tests.support.faultproxy import FaultProxy


@pytest.fixture
def proxy(aws_env: dict[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as p:
        yield p


@pytest.fixture
def client(proxy: FaultProxy) -> Any:
    """A boto3 client through the proxy that never retries, so each fault shows as is."""
    return boto3.client(
        "dynamodb", endpoint_url=proxy.url, config=botocore.config.Config(retries={"total_max_attempts": 1})
    )


def _puts(n: int, prefix: str = "k") -> list[dict[str, Any]]:
    return [{"PutRequest": {"Item": {"pk": {"S": f"{prefix}{i}"}, "v": {"N": str(i)}}}} for i in range(n)]


def _pks(items: list[dict[str, Any]]) -> set[str]:
    return {item["pk"]["S"] for item in items}


def test_forwards_requests_and_responses_exactly(
    client: Any, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    resp = client.batch_write_item(RequestItems={table: _puts(25)})
    assert resp["UnprocessedItems"] == {}
    client.put_item(TableName=table, Item={"pk": {"S": "single"}, "b": {"B": b"\x00\x01"}})
    got = client.get_item(TableName=table, Key={"pk": {"S": "single"}}, ConsistentRead=True)
    assert got["Item"]["b"] == {"B": b"\x00\x01"}
    # an error response from upstream reaches the client unchanged
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_table(TableName=table + "-missing")
    assert _pks(scan_all(ddb, table)) == {f"k{i}" for i in range(25)} | {"single"}
    assert (proxy.calls, proxy.items_forwarded, proxy.requests) == (1, 25, 4)


def test_unprocessed_fraction_returns_the_rest_like_the_service(
    client: Any, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    proxy.unprocessed_fraction(0.4, times=1, seed=1)
    resp = client.batch_write_item(RequestItems={table: _puts(25)})
    back = [r["PutRequest"]["Item"] for r in resp["UnprocessedItems"][table]]
    assert 0 < len(back) < 25
    assert proxy.unprocessed_returned == len(back)
    assert proxy.items_forwarded == 25 - len(back)
    written = _pks(scan_all(ddb, table))
    assert written == {f"k{i}" for i in range(25)} - _pks(back)
    # the unprocessed items are exactly what was sent, so they can be resent as they are
    assert all(item["v"] == {"N": item["pk"]["S"][1:]} for item in back)
    # times=1: the next call is untouched
    resp = client.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": i}} for i in back]})
    assert resp["UnprocessedItems"] == {}
    assert len(scan_all(ddb, table)) == 25


def test_unprocessed_fraction_one_forwards_nothing(
    client: Any, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    proxy.unprocessed_fraction(1.0)
    resp = client.batch_write_item(RequestItems={table: _puts(5)})
    assert len(resp["UnprocessedItems"][table]) == 5
    assert proxy.items_forwarded == 0
    assert scan_all(ddb, table) == []


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"]
)
def test_throttle_next(client: Any, ddb: Any, table: str, proxy: FaultProxy, code: str) -> None:
    proxy.throttle_next(2, code)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client.batch_write_item(RequestItems={table: _puts(3)})
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert scan_all(ddb, table) == []  # a throttled call was not forwarded
    client.batch_write_item(RequestItems={table: _puts(3)})
    assert (proxy.calls, proxy.throttled, proxy.items_forwarded) == (3, 2, 3)


@pytest.mark.parametrize(("status", "code"), [(500, "InternalServerError"), (503, "ServiceUnavailable")])
def test_fail_next(client: Any, table: str, proxy: FaultProxy, status: int, code: str) -> None:
    proxy.fail_next(1, status=status)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.batch_write_item(RequestItems={table: _puts(1)})
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert proxy.failed == 1
    client.batch_write_item(RequestItems={table: _puts(1)})


def test_reset_next_drops_the_connection(client: Any, ddb: Any, table: str, proxy: FaultProxy) -> None:
    proxy.reset_next(1)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        client.batch_write_item(RequestItems={table: _puts(2)})
    assert proxy.resets == 1
    assert scan_all(ddb, table) == []
    client.batch_write_item(RequestItems={table: _puts(2)})
    assert len(scan_all(ddb, table)) == 2


def test_faults_touch_only_batch_write_item(client: Any, table: str, proxy: FaultProxy) -> None:
    proxy.throttle_next(1)
    client.put_item(TableName=table, Item={"pk": {"S": "a"}})
    client.describe_table(TableName=table)
    assert proxy.calls == 0
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        client.batch_write_item(RequestItems={table: _puts(1)})


def test_when_aims_a_fault_and_delay_passes_through(
    client: Any, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    proxy.throttle_next(1, when=lambda body: "x0" in str(body))
    proxy.delay_next(1, 0.01)
    client.batch_write_item(RequestItems={table: _puts(2, "y")})  # not aimed at: delayed, written
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        client.batch_write_item(RequestItems={table: _puts(2, "x")})
    assert (proxy.throttled, proxy.delayed) == (1, 1)
    assert _pks(scan_all(ddb, table)) == {"y0", "y1"}


def test_reset_clears_faults_and_counters(client: Any, table: str, proxy: FaultProxy) -> None:
    proxy.throttle_next(5)
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        client.batch_write_item(RequestItems={table: _puts(1)})
    proxy.reset()
    assert (proxy.calls, proxy.throttled, proxy.requests) == (0, 0, 0)
    client.batch_write_item(RequestItems={table: _puts(1)})
    assert (proxy.calls, proxy.throttled, proxy.items_forwarded) == (1, 0, 1)
