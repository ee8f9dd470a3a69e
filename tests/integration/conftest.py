"""Fixtures of the runner tests: a recording Invoke endpoint and a ledger table of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lambda_src.ledger import ensure_ledger_table
from tests.support.invoke import InvokeEndpoint, running_endpoint


@pytest.fixture
def endpoint() -> Iterator[InvokeEndpoint]:
    with running_endpoint() as ep:
        yield ep


@pytest.fixture
def ledger_name(ddb: Any) -> Iterator[str]:
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    ensure_ledger_table(ddb, name)
    yield name
    ddb.delete_table(TableName=name)
