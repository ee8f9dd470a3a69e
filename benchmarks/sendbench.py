"""The send path alone: pre-typed items, N concurrent BatchWriteItem calls, client CPU per item.

``python -m benchmarks sendbench --items 200000 [--sender lean|botocore] [--signer fast|botocore]
[--http raw|aiohttp] [--encoded] [--profile FILE.prof]`` starts a wire endpoint in its own process (or uses
``--endpoint``), makes 25-item batches of typical items up front (not timed), then sends them
all with ``--concurrency`` workers and reports this process's CPU seconds (user+sys) per item.
The wire endpoint's own CPU is reported apart and never counted. ``--encoded`` sends items
encoded up front (the pipeline's path: a request body is a join of ready bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson

from benchmarks.wire import start_wire


def typed_items(n: int, *, payload: int = 200) -> list[dict[str, Any]]:
    """``n`` distinct wire-JSON items of about ``payload`` + 250 bytes, every common type."""
    pad = "p" * payload
    return [
        {
            "pk": {"S": f"user#{i:09d}"},
            "sk": {"N": str(i)},
            "name": {"S": f"Name {i % 977} Surname"},
            "score": {"N": f"{i % 1000}.{i % 97:02d}"},
            "active": {"BOOL": i % 2 == 0},
            "meta": {
                "M": {"source": {"S": "bench"}, "n": {"N": "3"}, "list": {"L": [{"N": "1"}, {"S": "x"}]}}
            },
            "tags": {"SS": ["red", "green", f"t{i % 13}"]},
            "payload": {"S": pad},
        }
        for i in range(n)
    ]


@asynccontextmanager
async def _botocore_sender(concurrency: int, endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from loader.sender import AioBotocoreSender

    cfg = AioConfig(
        max_pool_connections=concurrency + 4, parameter_validation=False, retries={"total_max_attempts": 1}
    )
    async with get_session().create_client("dynamodb", endpoint_url=endpoint, config=cfg) as client:
        yield AioBotocoreSender(client)


async def _run(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    from loader.fastsend import LeanSender, open_lean_sender

    items = typed_items(args.items, payload=args.payload)
    batches = [items[i : i + 25] for i in range(0, len(items), 25)]
    opener: AbstractAsyncContextManager[Any]
    if args.sender == "lean":
        opener = open_lean_sender(
            concurrency=args.concurrency, endpoint_url=endpoint, signer=args.signer, http=args.http
        )
    else:
        opener = _botocore_sender(args.concurrency, endpoint)
    async with opener as sender:
        await sender.send(args.table, batches[0])  # warm: connection, credentials
        queue = iter(enumerate(batches[1:], 1))
        sent = 0

        encoded = [[LeanSender.encode(it) for it in b] for b in batches] if args.encoded else None
        # as `s3ddb load` does after start-up: the collector leaves the set-up's objects alone
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)

        async def worker() -> None:
            nonlocal sent
            for n, batch in queue:
                if encoded is not None:  # the pipeline's path: items encoded as they were typed
                    back = await sender.send(args.table, [], encoded[n])
                else:
                    back = await sender.send(args.table, batch)
                while back:
                    back = await sender.send(args.table, back)
                sent += len(batch)

        prof = cProfile.Profile(time.process_time) if args.profile else None
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        if prof:
            prof.disable()
            prof.dump_stats(args.profile)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "sender": args.sender,
        "signer": args.signer if args.sender == "lean" else "botocore",
        "http": args.http if args.sender == "lean" else "botocore",
        "encoded": bool(args.encoded),
        "items": sent,
        "seconds": round(wall, 3),
        "items_per_second": round(sent / wall),
        "client_cpu_us_per_item": round(cpu / sent * 1e6, 2),
        "client_user_us_per_item": round((ru1.ru_utime - ru0.ru_utime) / sent * 1e6, 2),
        "loadavg_1m": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks sendbench", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--payload", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=40)
    p.add_argument("--sender", choices=("lean", "botocore"), default="lean")
    p.add_argument("--signer", choices=("fast", "botocore"), default="fast")
    p.add_argument("--http", choices=("raw", "aiohttp"), default="raw", help="the lean sender's HTTP client")
    p.add_argument("--endpoint", default=None, help="an already running endpoint (default: start a wire one)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--table", default="bench")
    p.add_argument("--profile", default=None, help="write cProfile stats of the timed part here")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument(
        "--encoded", action="store_true", help="send items encoded up front (as the pipeline does), not dicts"
    )
    p.add_argument(
        "--out", default=None, help="append the result (JSON line, with machine info) to this file"
    )
    a = p.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "s3ddblocal")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "s3ddblocal")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    wire = None
    endpoint = a.endpoint
    if endpoint is None:
        wire = start_wire("--default-key", "pk:S,sk:N", "--latency-ms", str(a.latency_ms))
        endpoint = wire.url
    try:
        if a.no_uvloop:
            result = asyncio.run(_run(a, endpoint))
        else:
            import uvloop

            result = uvloop.run(_run(a, endpoint))
        if wire is not None:
            st = wire.stats()
            result["wire_items"] = st["items"]
            result["wire_cpu_us_per_item"] = round(st["server_cpu_s"] / max(st["items"], 1) * 1e6, 2)
    finally:
        if wire is not None:
            wire.stop()
    print(orjson.dumps(result).decode())
    if a.out:
        from benchmarks.harness import machine_info

        result["machine"] = machine_info(["sendbench", *(argv if argv is not None else sys.argv[2:])])
        with open(a.out, "ab") as f:
            f.write(orjson.dumps(result) + b"\n")
    return 0
