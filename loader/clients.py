"""The only place that builds AWS clients (the CLI and the Lambda handler call these).

Region and endpoints come from the standard variables: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
and botocore itself reads ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL_S3`` (the local
stand-ins). An explicit argument beats the variable.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from loader.errors import ConfigError
from loader.models import KeySchema, KeyType
from loader.sender import AioBotocoreSender, BatchSender

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from types_aiobotocore_dynamodb import DynamoDBClient

# aiobotocore is imported where it is used: the lean write path (the default) never needs it, and
# importing it costs ~0.35 s of start-up CPU (measured with pyinstrument on `s3ddb load`).

__all__ = [
    "describe_key_schema",
    "dynamodb_client",
    "dynamodb_client_config",
    "open_dynamodb_sender",
    "open_sender",
    "s3_client",
    "session",
]

#: Extra sockets beyond one per concurrent call: DescribeTable and the odd straggler.
_SPARE_CONNECTIONS = 4
#: Writable table states: UPDATING (an index being built, a capacity change) still takes writes.
_WRITABLE = frozenset({"ACTIVE", "UPDATING"})


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def dynamodb_client_config(concurrency: int) -> AioConfig:
    """Config for the hot-path aiobotocore DynamoDB client.

    * a socket per concurrent call (botocore's default pool of 10 would queue 30 of 40 calls);
    * ``parameter_validation=False``: about 40% of the client's CPU per call, and the loader
      validates every item itself before it is batched;
    * one attempt: the writer owns ALL retries, so its rate control sees every throttle;
    * a request either connects within seconds or the endpoint is down; a 16 MB batch is written
      well within the read timeout.
    """
    from aiobotocore.config import AioConfig

    return AioConfig(
        max_pool_connections=concurrency + _SPARE_CONNECTIONS,
        parameter_validation=False,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        tcp_keepalive=True,
    )


@asynccontextmanager
async def open_dynamodb_sender(
    *,
    concurrency: int,
    binary_attrs: frozenset[str] = frozenset(),
    session: AioSession | None = None,
    endpoint_url: str | None = None,
) -> AsyncIterator[BatchSender]:
    """An ``AioBotocoreSender`` over a client built with ``dynamodb_client_config``; closed on exit.

    ``endpoint_url`` overrides ``AWS_ENDPOINT_URL_DYNAMODB`` (tests put a fault proxy there).
    """
    from aiobotocore.session import get_session

    session = session or get_session()
    kwargs: dict[str, Any] = {"config": dynamodb_client_config(concurrency)}
    if (region := _region()) is not None:
        kwargs["region_name"] = region
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    client: DynamoDBClient
    async with session.create_client("dynamodb", **kwargs) as client:
        sender = AioBotocoreSender(client, binary_attrs=binary_attrs)
        try:
            yield sender
        finally:
            await sender.aclose()


def _sync_config(pool: int) -> botocore.config.Config:
    return botocore.config.Config(
        max_pool_connections=pool,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=60,
        tcp_keepalive=True,
    )


def open_sender(
    kind: str, *, concurrency: int, ddb: Any, binary_attrs: frozenset[str] = frozenset()
) -> AbstractAsyncContextManager[BatchSender]:
    """The write path by name, for every caller (the command, its workers, the Lambda): ``lean``
    (items encoded once, own SigV4 over keep-alive HTTP; its connection settings are those of the
    botocore client ``ddb``) or ``botocore`` (aiobotocore, the reference; it needs the schema's
    binary attributes)."""
    if kind == "lean":
        from loader.fastsend import open_lean_sender

        return open_lean_sender(concurrency=concurrency, client=ddb)
    if kind == "botocore":
        return open_dynamodb_sender(concurrency=concurrency, binary_attrs=binary_attrs)
    raise ConfigError(f"the sender is lean or botocore, got {kind!r}")


def session() -> boto3.session.Session:
    """A new boto3 session (credentials, profile and region from the environment, as botocore reads them).

    A process that makes several clients should make them from one session: each session loads
    and parses botocore's endpoint and partition data (endpoints.json alone is 1.2 MB), lists the
    service data directories, registers its event handlers and resolves credentials again. The
    DynamoDB client after the S3 one took ~0.1 s of CPU from its own session, ~0.02 s from the same
    one (botocore 1.40, measured in-process with ``time.process_time``).
    """
    return boto3.session.Session()


def s3_client(session: boto3.session.Session | None = None) -> Any:
    """A sync S3 client for the source reader (ranged GETs) and checkpoint / rejects uploads.

    ``session``: the session to build it from (see ``session()``); default: a new one.
    """
    return (session or boto3.session.Session()).client("s3", region_name=_region(), config=_sync_config(16))


def dynamodb_client(session: boto3.session.Session | None = None, *, endpoint_url: str | None = None) -> Any:
    """A sync DynamoDB client for control-plane calls (DescribeTable), and the one the lean sender
    takes its connection from (``loader.fastsend.open_lean_sender(client=...)``): region,
    endpoint, credentials, CA bundle and proxy as botocore resolves them.

    ``session``: the session to build it from (see ``session()``); default: a new one.
    ``endpoint_url`` overrides botocore's endpoint resolution (tests put a proxy there).
    """
    return (session or boto3.session.Session()).client(
        "dynamodb", region_name=_region(), endpoint_url=endpoint_url, config=_sync_config(4)
    )


def describe_key_schema(client: Any, table: str) -> KeySchema:
    """The table's primary key and its indexes' key attributes from DescribeTable; a ConfigError
    that says what to fix otherwise."""
    where = f"{client.meta.region_name} (endpoint {client.meta.endpoint_url})"
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise ConfigError(
                f"table {table!r} does not exist in {where}: create it, or fix --table / AWS_REGION"
            ) from None
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            raise ConfigError(
                f"cannot describe table {table!r} in {where}: {code}; check the credentials and "
                "that they allow dynamodb:DescribeTable and dynamodb:BatchWriteItem"
            ) from exc
        raise
    except botocore.exceptions.EndpointConnectionError as exc:
        raise ConfigError(f"cannot reach DynamoDB at {where}: {exc}") from exc
    status = desc.get("TableStatus", "")
    if status not in _WRITABLE:
        raise ConfigError(f"table {table!r} in {where} is {status}, not ACTIVE: wait for it, then run again")
    types: dict[str, KeyType] = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
    partition = sort = None
    for key in desc["KeySchema"]:
        if key["KeyType"] == "HASH":
            partition = key["AttributeName"]
        elif key["KeyType"] == "RANGE":
            sort = key["AttributeName"]
    if partition is None:  # pragma: no cover - every table has a partition key
        raise ConfigError(f"table {table!r} has no partition key in DescribeTable")
    # AttributeDefinitions holds the key attributes of the table and of every index, one type each
    index_names: dict[str, tuple[str, ...]] = {}
    for index in (*desc.get("GlobalSecondaryIndexes", ()), *desc.get("LocalSecondaryIndexes", ())):
        for key in index["KeySchema"]:
            name = key["AttributeName"]
            index_names[name] = (*index_names.get(name, ()), index["IndexName"])
    return KeySchema(
        partition=partition,
        partition_type=types[partition],
        sort=sort,
        sort_type=None if sort is None else types[sort],
        index_keys={name: types[name] for name in index_names},
        index_names=index_names,
    )
