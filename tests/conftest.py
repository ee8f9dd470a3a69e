"""Shared fixtures: the local stand-ins, reached only through the standard endpoint variables.

When ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL_S3`` are set (``.ci/run`` and
``eval "$(s3ddb local up)"`` set them) the tests use those services. Otherwise the session starts
its own with ``infra.local.stack`` and stops them at the end. A service that cannot be started is
a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

_CREDS = {
    "AWS_ACCESS_KEY_ID": "s3ddblocal",
    "AWS_SECRET_ACCESS_KEY": "s3ddblocal",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files a run leaves in its working directory (default rejects, checkpoints) stay out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    """Endpoint and credential variables for the local services, also set in os.environ."""
    started = None
    if not (os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") and os.environ.get("AWS_ENDPOINT_URL_S3")):
        from infra.local import stack

        started = stack.start_services(state_dir=None)  # a private set for this session
        env = dict(started.env)
    else:
        env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3")}
        if os.environ.get("AWS_ENDPOINT_URL_LAMBDA"):
            env["AWS_ENDPOINT_URL_LAMBDA"] = os.environ["AWS_ENDPOINT_URL_LAMBDA"]
    for k, v in _CREDS.items():
        env.setdefault(k, os.environ.get(k, v))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if started is not None:
            started.stop()


@pytest.fixture(scope="session")
def ddb(aws_env: dict[str, str]) -> Any:
    """A plain boto3 DynamoDB client for test set-up and checks (never the code under test)."""
    return boto3.client("dynamodb")


@pytest.fixture(scope="session")
def s3(aws_env: dict[str, str]) -> Any:
    return boto3.client("s3")


@pytest.fixture
def table_factory(ddb: Any) -> Iterator[Callable[..., str]]:
    """``make(pk=("pk", "S"), sk=None, name=None, *, attrs={}, gsi={}, lsi={}) -> table name``;
    tables are deleted afterwards. ``gsi`` / ``lsi`` map an index name to its key, as
    ``[(attribute, "HASH" | "RANGE"), ...]``; ``attrs`` types the index key attributes."""
    made: list[str] = []

    def make(
        pk: tuple[str, str] = ("pk", "S"),
        sk: tuple[str, str] | None = None,
        name: str | None = None,
        *,
        attrs: dict[str, str] | None = None,
        gsi: dict[str, list[tuple[str, str]]] | None = None,
        lsi: dict[str, list[tuple[str, str]]] | None = None,
    ) -> str:
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        keys = [(pk[0], "HASH")] + ([(sk[0], "RANGE")] if sk is not None else [])
        types = {pk[0]: pk[1], **({sk[0]: sk[1]} if sk is not None else {}), **(attrs or {})}

        def schema(ks: list[tuple[str, str]]) -> list[dict[str, str]]:
            return [{"AttributeName": a, "KeyType": role} for a, role in ks]

        def indexes(spec: dict[str, list[tuple[str, str]]]) -> list[dict[str, Any]]:
            return [
                {"IndexName": ix, "KeySchema": schema(ks), "Projection": {"ProjectionType": "ALL"}}
                for ix, ks in spec.items()
            ]

        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeySchema": schema(keys),
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t} for a, t in types.items()],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if gsi:
            kwargs["GlobalSecondaryIndexes"] = indexes(gsi)
        if lsi:
            kwargs["LocalSecondaryIndexes"] = indexes(lsi)
        ddb.create_table(**kwargs)
        ddb.get_waiter("table_exists").wait(TableName=name)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            ddb.delete_table(TableName=name)
        except ddb.exceptions.ResourceNotFoundException:
            pass


@pytest.fixture
def table(table_factory: Callable[..., str]) -> str:
    """A fresh table keyed by ``pk`` (S)."""
    return table_factory()


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name
