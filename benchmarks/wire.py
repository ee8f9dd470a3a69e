"""A wire-speed DynamoDB endpoint: speaks BatchWriteItem over HTTP/1.1 and spends little CPU doing it.

It exists to show the client's own ceiling (DynamoDB Local's CPU caps it near 9k items/s on two
cores). It runs in its OWN process (``python -m benchmarks.wire``) so its CPU is never counted
as the client's. Written on a raw ``asyncio.Protocol`` (uvloop when present): about 2-3 µs of its
own CPU per item, most of it ``orjson.loads`` of the request.

What it does per call:

* refuses a request without a SigV4 ``Authorization`` header (400
  ``MissingAuthenticationTokenException``), like the service; it does not verify the signature;
* ``BatchWriteItem``: checks the shape (``RequestItems`` -> table -> 1..25 ``PutRequest.Item`` /
  ``DeleteRequest.Key``), that every item carries the table's key attributes with the right type
  and that no key repeats in the call (``ValidationException`` otherwise), counts items, and
  answers ``{"UnprocessedItems":{}}``; ``--unprocessed F`` hands back a fraction F of the items
  in ``UnprocessedItems``, ``--throttle F`` refuses a fraction F of whole calls with
  ``ProvisionedThroughputExceededException``, ``--errors F`` answers a fraction F of calls with
  500 ``InternalServerError``;
* ``CreateTable`` / ``DescribeTable`` / ``DeleteTable`` / ``ListTables``: enough for a loader
  to start (tables live in memory; ``--default-key pk:S`` makes every unknown table exist);
* ``--latency-ms`` delays every DynamoDB answer by a fixed time (without holding CPU);
* ``GET /stats`` returns the counters and the server's own CPU seconds; ``POST /reset`` zeroes
  them; ``POST /config?latency_ms=..&unprocessed=..&throttle=..&errors=..`` changes the faults live.

Every answer carries ``x-amz-crc32`` like the real service, so botocore's CRC check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

_TARGET_PREFIX = "DynamoDB_20120810."
_JSON_CT = b"application/x-amz-json-1.0"
_MAX_BATCH = 25
_KEY_TYPES = ("S", "N", "B")


@dataclass
class WireStats:
    calls: int = 0
    items: int = 0
    unprocessed_items: int = 0
    throttled_calls: int = 0
    error_calls: int = 0
    invalid_calls: int = 0
    unauthorized_calls: int = 0
    other_calls: int = 0
    request_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {**self.__dict__, "server_cpu_s": ru.ru_utime + ru.ru_stime}


@dataclass
class WireConfig:
    latency_s: float = 0.0
    unprocessed: float = 0.0
    throttle: float = 0.0
    errors: float = 0.0
    default_key: tuple[tuple[str, str], ...] | None = None


@dataclass
class WireState:
    config: WireConfig
    rng: random.Random
    stats: WireStats = field(default_factory=WireStats)
    #: table name -> ((attr, type), ...) partition first
    tables: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def key_of(self, table: str) -> tuple[tuple[str, str], ...] | None:
        return self.tables.get(table) or self.config.default_key


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_OK_EMPTY = b'{"UnprocessedItems":{}}'
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}


def _response(status: int, body: bytes, content_type: bytes = _JSON_CT) -> bytes:
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: %s\r\nContent-Length: %d\r\nx-amz-crc32: %d\r\n" % (content_type, len(body), crc),
            b"x-amzn-RequestId: wire\r\nConnection: keep-alive\r\n\r\n",
            body,
        )
    )


_OK_EMPTY_RESPONSE = _response(200, _OK_EMPTY)
_VALIDATION = "ValidationException"


def _error(status: int, code: str, message: str) -> bytes:
    prefix = (
        "com.amazon.coral.service#"
        if code.startswith(("Missing", "Unrecognized", "Unknown"))
        else ("com.amazonaws.dynamodb.v20120810#")
    )
    return _response(status, orjson.dumps({"__type": prefix + code, "message": message}))


def _table_description(name: str, key: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    schema = [{"AttributeName": key[0][0], "KeyType": "HASH"}]
    if len(key) > 1:
        schema.append({"AttributeName": key[1][0], "KeyType": "RANGE"})
    return {
        "TableName": name,
        "TableStatus": "ACTIVE",
        "KeySchema": schema,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t} for a, t in key],
        "ItemCount": 0,
        "TableSizeBytes": 0,
        "CreationDateTime": 0,
        "TableArn": f"arn:aws:dynamodb:us-east-1:000000000000:table/{name}",
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        "ProvisionedThroughput": {
            "ReadCapacityUnits": 0,
            "WriteCapacityUnits": 0,
            "NumberOfDecreasesToday": 0,
        },
    }


def _keys_of(reqs: list[Any], key: tuple[tuple[str, str], ...]) -> list[Any]:
    """Each request's key value(s); the fast path is one comprehension over plain put requests."""
    try:
        if len(key) == 1:
            ((a, t),) = key
            keys = [r["PutRequest"]["Item"][a][t] for r in reqs]
        else:
            (a, t), (a2, t2) = key
            items = [r["PutRequest"]["Item"] for r in reqs]
            keys = [(it[a][t], it[a2][t2]) for it in items]
        if all(len(r) == 1 for r in reqs):
            return keys
    except (KeyError, TypeError):
        pass  # deletes, or a malformed request: the slow path says which
    out: list[Any] = []
    for r in reqs:
        put = r.get("PutRequest")
        if put is not None and len(r) == 1:
            item = put["Item"]
        else:
            dele = r.get("DeleteRequest")
            if dele is None or len(r) != 1:
                raise _Refusal(400, _VALIDATION, "a request is neither PutRequest nor DeleteRequest")
            item = dele["Key"]
        if not isinstance(item, dict):
            raise _Refusal(400, _VALIDATION, "an item must be a map")
        try:
            out.append(tuple(item[a][t] for a, t in key))
        except (KeyError, TypeError):
            raise _Refusal(400, _VALIDATION, "One of the required keys was not given a value") from None
    return out


def _batch_write(state: WireState, body: bytes) -> bytes:
    stats = state.stats
    stats.calls += 1
    stats.request_bytes += len(body)
    try:
        req = orjson.loads(body)
        request_items = req["RequestItems"]
        if not isinstance(request_items, dict) or not request_items:
            raise _Refusal(400, "ValidationException", "RequestItems must be a non-empty map")
        total = 0
        for tname, reqs in request_items.items():
            key = state.key_of(tname)
            if key is None:
                raise _Refusal(400, "ResourceNotFoundException", f"Requested resource not found: {tname}")
            if not isinstance(reqs, list) or not reqs:
                raise _Refusal(400, "ValidationException", "each table needs a non-empty list of requests")
            total += len(reqs)
            keys = _keys_of(reqs, key)
            if len(set(keys)) != len(keys):
                raise _Refusal(400, _VALIDATION, "Provided list of item keys contains duplicates")
        if total > _MAX_BATCH:
            raise _Refusal(400, "ValidationException", "Member must have length less than or equal to 25")
    except _Refusal:
        stats.invalid_calls += 1
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        stats.invalid_calls += 1
        raise _Refusal(400, "ValidationException", f"malformed BatchWriteItem request: {exc!r}") from None
    cfg = state.config
    if cfg.throttle and state.rng.random() < cfg.throttle:
        stats.throttled_calls += 1
        raise _Refusal(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput was exceeded",
        )
    if cfg.errors and state.rng.random() < cfg.errors:
        stats.error_calls += 1
        raise _Refusal(500, "InternalServerError", "Internal server error (injected by the wire endpoint)")
    if not cfg.unprocessed:
        stats.items += total
        return _OK_EMPTY_RESPONSE
    rnd = state.rng.random
    frac = cfg.unprocessed
    unprocessed: dict[str, list[Any]] = {}
    for tname, reqs in request_items.items():
        back = [r for r in reqs if rnd() < frac]
        if back:
            unprocessed[tname] = back
    n_back = sum(len(v) for v in unprocessed.values())
    stats.items += total - n_back
    stats.unprocessed_items += n_back
    return _response(200, orjson.dumps({"UnprocessedItems": unprocessed}))


def _key_from_create(req: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    types = {d["AttributeName"]: d["AttributeType"] for d in req["AttributeDefinitions"]}
    by_role = {k["KeyType"]: k["AttributeName"] for k in req["KeySchema"]}
    names = [by_role["HASH"]] + ([by_role["RANGE"]] if "RANGE" in by_role else [])
    key = tuple((n, types[n]) for n in names)
    if any(t not in _KEY_TYPES for _, t in key):
        raise _Refusal(400, "ValidationException", "key attribute types must be S, N or B")
    return key


def _dynamodb(state: WireState, op: str, body: bytes) -> bytes:
    if op == "BatchWriteItem":
        return _batch_write(state, body)
    state.stats.other_calls += 1
    try:
        req = orjson.loads(body) if body else {}
        if op == "DescribeTable":
            name = req["TableName"]
            key = state.key_of(name)
            if key is None:
                raise _Refusal(
                    400, "ResourceNotFoundException", f"Requested resource not found: Table: {name} not found"
                )
            return _response(200, orjson.dumps({"Table": _table_description(name, key)}))
        if op == "CreateTable":
            name = req["TableName"]
            if name in state.tables:
                raise _Refusal(400, "ResourceInUseException", f"Table already exists: {name}")
            state.tables[name] = _key_from_create(req)
            return _response(
                200, orjson.dumps({"TableDescription": _table_description(name, state.tables[name])})
            )
        if op == "DeleteTable":
            name = req["TableName"]
            if name not in state.tables:
                raise _Refusal(
                    400, "ResourceNotFoundException", f"Requested resource not found: Table: {name} not found"
                )
            key = state.tables.pop(name)
            return _response(200, orjson.dumps({"TableDescription": _table_description(name, key)}))
        if op == "ListTables":
            return _response(200, orjson.dumps({"TableNames": sorted(state.tables)}))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _Refusal(400, "ValidationException", f"malformed {op} request: {exc!r}") from None
    raise _Refusal(400, "UnknownOperationException", f"the wire endpoint does not implement {op}")


def _control(state: WireState, method: bytes, target: str) -> bytes:
    parts = urlsplit(target)
    if method == b"GET" and parts.path == "/stats":
        return _response(200, orjson.dumps(state.stats.to_dict()), b"application/json")
    if method == b"POST" and parts.path == "/reset":
        state.stats = WireStats()
        return _response(200, b"{}", b"application/json")
    if method == b"POST" and parts.path == "/config":
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        cfg = state.config
        if "latency_ms" in q:
            cfg.latency_s = float(q["latency_ms"]) / 1000.0
        if "unprocessed" in q:
            cfg.unprocessed = float(q["unprocessed"])
        if "throttle" in q:
            cfg.throttle = float(q["throttle"])
        if "errors" in q:
            cfg.errors = float(q["errors"])
        return _response(
            200,
            orjson.dumps(
                {
                    "latency_ms": cfg.latency_s * 1000,
                    "unprocessed": cfg.unprocessed,
                    "throttle": cfg.throttle,
                    "errors": cfg.errors,
                }
            ),
            b"application/json",
        )
    return _response(404, b'{"message":"not found"}', b"application/json")


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; requests on it are answered strictly in order."""

    def __init__(self, state: WireState) -> None:
        self.state = state
        self.buf = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        buf = self.buf
        while not self.busy and self.transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).split(b"\r\n")
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            method, target, _ = head[0].split(b" ", 2)
            self._handle(method, target.decode("latin-1"), headers, body)

    def _handle(self, method: bytes, target: str, headers: dict[bytes, bytes], body: bytes) -> None:
        state = self.state
        amz_target = headers.get(b"x-amz-target")
        if amz_target is None:
            self._write(_control(state, method, target))
            return
        auth = headers.get(b"authorization", b"")
        if not auth.startswith(b"AWS4-HMAC-SHA256 Credential=") or b"Signature=" not in auth:
            state.stats.unauthorized_calls += 1
            out = _error(
                400, "MissingAuthenticationTokenException", "Request is missing Authentication Token"
            )
        else:
            op = amz_target.decode("latin-1")
            op = op[len(_TARGET_PREFIX) :] if op.startswith(_TARGET_PREFIX) else op
            try:
                out = _dynamodb(state, op, body)
            except _Refusal as exc:
                out = _error(exc.status, exc.code, exc.message)
        delay = state.config.latency_s
        if delay > 0:
            self.busy = True
            asyncio.get_running_loop().call_later(delay, self._write_later, out)
        else:
            self._write(out)

    def _write(self, out: bytes) -> None:
        if self.transport is not None:
            self.transport.write(out)

    def _write_later(self, out: bytes) -> None:
        self.busy = False
        self._write(out)
        self._drain()


async def serve(*, host: str, port: int, state: WireState, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(state), host, port, backlog=512)
    sock_port = server.sockets[0].getsockname()[1]
    print(f"LISTENING http://{host}:{sock_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _parse_key(spec: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in spec.split(","):
        name, _, typ = part.partition(":")
        if typ not in _KEY_TYPES or not name:
            raise argparse.ArgumentTypeError(f"key spec {part!r}: want NAME:S|N|B")
        out.append((name, typ))
    if not 1 <= len(out) <= 2:
        raise argparse.ArgumentTypeError("a key has one or two attributes")
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wire", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as LISTENING url)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--unprocessed", type=float, default=0.0, help="fraction of items handed back")
    p.add_argument("--throttle", type=float, default=0.0, help="fraction of calls throttled whole")
    p.add_argument("--errors", type=float, default=0.0, help="fraction of calls answered 500")
    p.add_argument("--default-key", type=_parse_key, default=None, help="e.g. pk:S or pk:S,sk:N")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--profile", default=None, help="write cProfile stats (CPU time) here on exit")
    a = p.parse_args(argv)
    state = WireState(
        config=WireConfig(
            latency_s=a.latency_ms / 1000.0,
            unprocessed=a.unprocessed,
            throttle=a.throttle,
            errors=a.errors,
            default_key=a.default_key,
        ),
        rng=random.Random(a.seed),
    )
    coro = serve(host=a.host, port=a.port, state=state)
    if a.profile:
        import cProfile

        prof = cProfile.Profile(time.process_time)
        prof.enable()
        try:
            asyncio.run(coro)
        finally:
            prof.disable()
            prof.dump_stats(a.profile)
        return 0
    if not a.no_uvloop:
        try:
            import uvloop

            uvloop.run(coro)
            return 0
        except ImportError:
            pass
    asyncio.run(coro)
    return 0


@dataclass
class WireProcess:
    """A wire endpoint running in its own process; ``url`` is where to point the client."""

    proc: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/stats", timeout=10) as r:
            data: dict[str, Any] = orjson.loads(r.read())
            return data

    def post(self, path: str) -> dict[str, Any]:
        import urllib.request

        req = urllib.request.Request(self.url + path, data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            data: dict[str, Any] = orjson.loads(r.read())
            return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_wire(*args: str, python: str = sys.executable, timeout_s: float = 20.0) -> WireProcess:
    """Start ``python -m benchmarks.wire ARGS`` and wait until it prints the URL it listens on."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [python, "-m", "benchmarks.wire", *args], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = proc.stdout.readline()  # blocks until the server prints, or exits
    if not line.startswith("LISTENING ") or time.monotonic() > deadline:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"wire endpoint did not start: {line!r}")
    return WireProcess(proc=proc, url=line.split(" ", 1)[1].strip())


@contextlib.contextmanager
def running_wire(*args: str) -> Iterator[WireProcess]:
    w = start_wire(*args)
    try:
        yield w
    finally:
        w.stop()


if __name__ == "__main__":
    sys.exit(main())
