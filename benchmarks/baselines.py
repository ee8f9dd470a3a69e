"""The two loaders s3ddb is measured against, written the way people usually write them.

``python -m benchmarks.baselines batch_writer|naive_async s3://bucket/key --table T --schema FILE``

* ``batch_writer``: boto3 ``get_object`` streamed through ``csv.DictReader``, each row's cells
  converted to Python values (``Decimal`` numbers, bools, sets, ``json.loads`` maps) and put with
  ``Table.batch_writer(overwrite_by_pkeys=...)``. One thread, boto3 defaults.
* ``naive_async``: aiobotocore; the object streamed in chunks, rows converted the same way and
  serialised with boto3's ``TypeSerializer``, 25-item ``batch_write_item`` calls with 40 in flight
  (a semaphore; ``max_pool_connections=40`` so the 40 calls really are concurrent),
  ``UnprocessedItems`` resent with a short exponential backoff. botocore's defaults otherwise
  (parameter validation on).
* ``aioboto3``: the async loader as aioboto3's users write it: ``get_object`` read through the
  same chunked reader, rows converted the same way, ``await writer.put_item(...)`` on an
  ``aioboto3`` ``Table.batch_writer(overwrite_by_pkeys=...)`` (one flush of 25 in flight at a time).

Both read the schema file s3ddb reads (``--schema``) so they type the same cells the same way, and
print one JSON line ``{"name", "items", "seconds"}`` at the end. Neither handles quoted newlines
across chunk boundaries (``naive_async``) or rejects; the generated benchmark data needs neither.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import codecs
import csv
import gzip
import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

Converter = Callable[[str], Any]


def _converters(schema_path: str | None) -> tuple[dict[str, Converter], str]:
    spec: dict[str, Any] = {}
    if schema_path:
        with open(schema_path, encoding="utf-8") as f:
            spec = json.load(f)
    delim = spec.get("set_delimiter", "|")

    def boolean(v: str) -> bool:
        low = v.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"not a boolean: {v!r}")

    table: dict[str, Converter] = {
        "S": str,
        "N": Decimal,
        "BOOL": boolean,
        "JSON": lambda v: json.loads(v, parse_float=Decimal, parse_int=Decimal),
        "SS": lambda v: set(v.split(delim)),
        "NS": lambda v: {Decimal(x) for x in v.split(delim)},
        "B": base64.b64decode,
        "NULL": lambda v: None,
    }
    return {col: table[str(typ).upper()] for col, typ in spec.get("columns", {}).items()}, delim


def _typed(row: dict[str, str], conv: dict[str, Converter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v == "":
            continue  # empty cells are left out, like s3ddb's default
        c = conv.get(k)
        out[k] = c(v) if c is not None else v
    return out


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise SystemExit(f"{uri}: want s3://bucket/key")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _key_names(table_desc: dict[str, Any]) -> list[str]:
    return [k["AttributeName"] for k in table_desc["KeySchema"]]


async def _rows(raw: Any, gz: bool) -> Any:
    """The CSV rows of a streamed body (an aiobotocore ``StreamingBody``), 1 MiB at a time."""
    decomp = zlib.decompressobj(31) if gz else None
    leftover = b""
    eof = False
    while not eof:
        data = await raw.read(1 << 20)
        eof = not data
        if decomp is not None:
            data = decomp.decompress(data) if data else decomp.flush()
        buf = leftover + data
        cut = len(buf) if eof else buf.rfind(b"\n") + 1
        buf, leftover = buf[:cut], buf[cut:]
        for fields in csv.reader(buf.decode("utf-8").split("\n")):
            if fields:
                yield fields


async def aioboto3_writer(source: str, table: str, schema: str | None) -> int:
    import aioboto3

    conv, _ = _converters(schema)
    bucket, key = _split_s3(source)
    session = aioboto3.Session()
    n = 0
    async with session.client("s3") as s3, session.resource("dynamodb") as ddb:
        tbl = await ddb.Table(table)
        keys = [k["AttributeName"] for k in await tbl.key_schema]
        body = (await s3.get_object(Bucket=bucket, Key=key))["Body"]
        header: list[str] | None = None
        async with tbl.batch_writer(overwrite_by_pkeys=keys) as writer:
            async for fields in _rows(body, key.endswith(".gz")):
                if header is None:
                    header = fields
                    continue
                await writer.put_item(Item=_typed(dict(zip(header, fields, strict=False)), conv))
                n += 1
    return n


def batch_writer(source: str, table: str, schema: str | None) -> int:
    import boto3

    conv, _ = _converters(schema)
    bucket, key = _split_s3(source)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    stream: Any = gzip.GzipFile(fileobj=body) if key.endswith(".gz") else body
    reader = csv.DictReader(codecs.getreader("utf-8")(stream))
    tbl = boto3.resource("dynamodb").Table(table)
    n = 0
    with tbl.batch_writer(overwrite_by_pkeys=_key_names({"KeySchema": tbl.key_schema})) as w:
        for row in reader:
            w.put_item(Item=_typed(row, conv))
            n += 1
    return n


async def naive_async(source: str, table: str, schema: str | None, *, concurrency: int = 40) -> int:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from boto3.dynamodb.types import TypeSerializer

    conv, _ = _converters(schema)
    ser = TypeSerializer()
    bucket, key = _split_s3(source)
    session = get_session()
    cfg = AioConfig(max_pool_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    written = 0
    async with (
        session.create_client("s3") as s3,
        session.create_client("dynamodb", config=cfg) as ddb_client,
    ):
        ddb: Any = ddb_client  # plain dicts in, as the pattern is usually written
        keys = _key_names((await ddb.describe_table(TableName=table))["Table"])

        async def write(batch: list[dict[str, Any]]) -> None:
            nonlocal written
            try:
                requests = [{"PutRequest": {"Item": it}} for it in batch]
                delay = 0.05
                while requests:
                    resp = await ddb.batch_write_item(RequestItems={table: requests})
                    done = len(requests)
                    requests = resp.get("UnprocessedItems", {}).get(table, [])
                    written += done - len(requests)
                    if requests:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
            finally:
                sem.release()

        resp = await s3.get_object(Bucket=bucket, Key=key)
        header: list[str] | None = None
        batch: dict[tuple[Any, ...], dict[str, Any]] = {}
        async for fields in _rows(resp["Body"], key.endswith(".gz")):
            if header is None:
                header = fields
                continue
            item = _typed(dict(zip(header, fields, strict=False)), conv)
            k = tuple(item[name] for name in keys)
            batch[k] = {name: ser.serialize(v) for name, v in item.items()}
            if len(batch) == 25:
                await sem.acquire()
                t = asyncio.create_task(write(list(batch.values())))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                batch = {}
        if batch:
            await sem.acquire()
            t = asyncio.create_task(write(list(batch.values())))
            tasks.add(t)
        while tasks:
            await asyncio.gather(*list(tasks))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.split("\n")[0])
    p.add_argument("name", choices=("batch_writer", "naive_async", "aioboto3"))
    p.add_argument("source", help="s3://bucket/key")
    p.add_argument("--table", required=True)
    p.add_argument("--schema", default=None, help="the s3ddb --schema JSON (column types)")
    p.add_argument("--concurrency", type=int, default=40, help="naive_async only")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.name == "batch_writer":
        n = batch_writer(a.source, a.table, a.schema)
    elif a.name == "aioboto3":
        n = asyncio.run(aioboto3_writer(a.source, a.table, a.schema))
    else:
        n = asyncio.run(naive_async(a.source, a.table, a.schema, concurrency=a.concurrency))
    out = {"name": a.name, "items": n, "seconds": round(time.perf_counter() - t0, 3)}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.exit(main())
