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
