"""Helpers for checking what landed in the local services."""

from __future__ import annotations

from typing import Any


def scan_all(ddb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of a table, in wire JSON, with consistent reads."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def wire_client(url: str) -> Any:
    """A DynamoDB client of the wire-speed endpoint at ``url`` (``benchmarks.wire``): signed with
    made-up keys, one attempt a call (the tests count every answer themselves)."""
    import boto3
    import botocore.config

    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDWIRE",
        aws_secret_access_key="wire-secret",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
