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
* ``--validate count`` (``POST /config?validate=count``) answers a BatchWriteItem without parsing
  it: the items are counted in the raw body (``_count_items``: exact for any valid request), a
  first table that does not exist and more than 25 requests are still refused, the injected
  whole-call faults still apply; the JSON, the key attributes and duplicate keys are not checked.
  It takes the endpoint's own cost from ~2.5 to ~0.3 µs of CPU per item of request handling (the
  event loop and the sockets cost the same in both modes), for runs that measure a loader's
  throughput. Capacity mode and ``--unprocessed`` need the items and parse them in either mode;
* ``CreateTable`` / ``DescribeTable`` / ``DeleteTable`` / ``ListTables``: enough for a loader
  to start (tables live in memory; ``--default-key pk:S`` makes every unknown table exist);
* ``--latency-ms`` delays every DynamoDB answer by a fixed time (without holding CPU);
* ``GET /stats`` returns the counters and the server's own CPU seconds; ``POST /reset`` zeroes
  them; ``POST /config?latency_ms=..&unprocessed=..&throttle=..&errors=..`` changes the faults live.

Capacity mode (``--table-wcu W``, off at 0) enforces write capacity as DynamoDB does, per table:
a table bucket of W write units per second and ``--partitions P`` partition buckets of
``--partition-wcu`` units per second each (1,000 by default, the service's per-partition limit).
An item goes to partition ``partition_of(partition key value)`` (a stable hash, mod P) and costs
``write_cost(item)`` = one unit per started KB of its size by ``loader.limits`` (a DeleteRequest:
its key's size), at least 1. Items are taken in request order; one is accepted when its
partition bucket and the table bucket both hold its units (or are full: an item larger than a
bucket still gets through, leaving the bucket in debt). Within a BatchWriteItem the items that do
not fit come back in ``UnprocessedItems`` exactly as sent; when no item fits, the whole call is
answered 400 ``ProvisionedThroughputExceededException`` with the service's message and
``ThrottlingReasons`` (``TableWriteKeyRangeThroughputExceeded`` for a partition,
``TableWriteProvisionedThroughputExceeded`` for the table). Buckets refill continuously and hold
at most ``--burst-s`` seconds of their rate (default 1 s; DynamoDB keeps up to 300 s of unused
capacity as burst, so a small burst makes a benchmark stricter than the service). They start
full, and ``POST /reset`` or a capacity change in ``POST /config`` (``table_wcu``, ``partitions``,
``partition_wcu``, ``burst_s``) refills them. ``GET /stats`` then carries a ``capacity`` block:
consumed units per table and per partition, items refused by each kind of bucket, and accepted
units per second since the last reset (``units_per_second``; its last entry is the second in
progress, ``elapsed_s`` says how far into it).

Every answer carries ``x-amz-crc32`` like the real service, so botocore's CRC check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import operator
import os
import random
import resource
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from loader.limits import (
    BOOL_BYTES,
    CONTAINER_BYTES,
    ELEMENT_BYTES,
    NULL_BYTES,
    WRITE_UNIT_BYTES,
    number_parts,
    number_size,
    utf8_size,
    write_units,
)

_TARGET_PREFIX = "DynamoDB_20120810."
_JSON_CT = b"application/x-amz-json-1.0"
_MAX_BATCH = 25
_KEY_TYPES = ("S", "N", "B")

# ----------------------------------------------------------------------------- capacity

#: The service's words for a write over a provisioned table's capacity.
THROTTLE_MESSAGE = (
    "The level of configured provisioned throughput for the table was exceeded. "
    "Consider increasing your provisioning level with the UpdateTable API."
)
PARTITION_REASON = "TableWriteKeyRangeThroughputExceeded"
TABLE_REASON = "TableWriteProvisionedThroughputExceeded"


def _b64_size(text: str) -> int:
    """The decoded size of padded base64 text (as botocore sends B), without decoding it."""
    return len(text) // 4 * 3 - (2 if text.endswith("==") else text.endswith("="))


def _value_size(value: dict[str, Any]) -> int:
    ((typ, x),) = value.items()
    if typ == "S":
        return utf8_size(x)
    if typ == "N":
        return number_size(x)
    if typ == "M":
        return CONTAINER_BYTES + sum(ELEMENT_BYTES + utf8_size(k) + _value_size(v) for k, v in x.items())
    if typ == "L":
        return CONTAINER_BYTES + sum(ELEMENT_BYTES + _value_size(v) for v in x)
    if typ == "BOOL":
        return BOOL_BYTES
    if typ == "NULL":
        return NULL_BYTES
    if typ == "B":
        return _b64_size(x)
    if typ == "SS":
        return sum(map(utf8_size, x))
    if typ == "NS":
        return sum(map(number_size, x))
    if typ == "BS":
        return sum(map(_b64_size, x))
    raise ValueError(f"unknown attribute type {typ!r}")


def item_size(item: dict[str, Any]) -> int:
    """An item's size (wire JSON, binary as base64) by DynamoDB's rules in ``loader.limits``;
    ValueError for a value DynamoDB refuses."""
    return sum(utf8_size(name) + _value_size(value) for name, value in item.items())


def write_cost(item: dict[str, Any]) -> int:
    """Write units for putting ``item`` (or deleting by this key): one per started KB, at least 1."""
    return write_costs([item])[0]


def write_costs(items: list[dict[str, Any]]) -> list[int]:
    """``write_cost`` of each item; most are priced without being walked.

    An item's JSON is at least its size + 9 bytes per attribute + 1 (a name is quoted and followed
    by a colon, a value wrapped in its type is at least 5 bytes longer than its size, attributes
    are separated by commas): that bounds the size from above, and an item under 1 KB by that
    bound costs 1. Otherwise its names, strings and binaries, measured cheaply, bound the size from
    below; when both bounds give the same units that is the cost, else the item is sized exactly.
    """
    # each item's JSON length - 9 per attribute, in C-level maps: this runs for every item
    bounds = list(map(operator.sub, map(len, map(orjson.dumps, items)), map((9).__mul__, map(len, items))))
    if max(bounds) <= WRITE_UNIT_BYTES + 1:
        return [1] * len(items)
    return [
        1 if b <= WRITE_UNIT_BYTES + 1 else _bounded_cost(it, b - 1)
        for it, b in zip(items, bounds, strict=True)
    ]


def _bounded_cost(item: dict[str, Any], hi: int) -> int:
    lo = 0
    for name, value in item.items():
        lo += utf8_size(name)
        text = value.get("S")
        if text is not None:
            lo += utf8_size(text)
        elif (data := value.get("B")) is not None:
            lo += _b64_size(data)
    units = write_units(hi)
    return units if write_units(lo) == units else write_units(item_size(item))


_MIX = 0x9E3779B1  # Fibonacci hashing: spreads CRC32's bits before the range is cut to P


def partition_of(value: str, key_type: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) of a partition key value as sent (S text, N text, B
    base64). Stable across processes, unlike ``hash()``; equal numbers written differently
    ("1", "1.0", "01") land together. ValueError for a number DynamoDB refuses."""
    if key_type == "N":
        negative, digits, exponent = number_parts(value.strip())
        value = f"{'-' if negative else ''}{digits}E{exponent}"
    mixed = (zlib.crc32(value.encode()) * _MIX) & 0xFFFFFFFF
    return (mixed * partitions) >> 32


class TokenBucket:
    """``rate`` units per second, refilled continuously from the clock readings ``refill`` is
    given, holding at most ``capacity`` (it starts full). Units ``fit`` when the bucket holds them
    or is full: an item larger than the whole bucket must still get through some time (the bucket
    then goes into debt)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, *, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def fits(self, units: int) -> bool:
        return self.tokens >= units or self.tokens >= self.capacity


@dataclass(frozen=True, kw_only=True)
class CapacitySettings:
    """Capacity mode's knobs; ``table_wcu == 0`` turns the mode off."""

    #: write units per second for each table, all partitions together (0: unlimited)
    table_wcu: float = 0.0
    #: partitions per table; an item's partition is ``partition_of`` its partition key
    partitions: int = 4
    #: write units per second for each partition (the service's limit is 1,000)
    partition_wcu: float = 1000.0
    #: seconds of unused capacity a bucket keeps (the service keeps up to 300 s)
    burst_s: float = 1.0

    def __post_init__(self) -> None:
        # nan compares false with everything and inf * 0 is nan: either would switch a bucket off
        for name, value, positive in (
            ("table_wcu", self.table_wcu, False),
            ("partition_wcu", self.partition_wcu, True),
            ("burst_s", self.burst_s, False),
        ):
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(
                    f"{name} must be a finite number {'> 0' if positive else '>= 0'}, not {value}"
                )
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, not {self.partitions}")

    @property
    def enabled(self) -> bool:
        return self.table_wcu > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table_wcu": self.table_wcu,
            "partitions": self.partitions,
            "partition_wcu": self.partition_wcu,
            "burst_s": self.burst_s,
        }


@dataclass(frozen=True, slots=True)
class Admission:
    """What one table's share of a call got: the indexes of the refused items, in request order,
    and how many were refused by a partition bucket and by the table bucket."""

    refused: list[int]
    by_partition: int
    by_table: int
    units: int


class TableCapacity:
    """One table's buckets and what went through them."""

    def __init__(self, settings: CapacitySettings, now: float) -> None:
        burst = settings.burst_s
        self.table = TokenBucket(rate=settings.table_wcu, capacity=settings.table_wcu * burst, now=now)
        self.partitions = [
            TokenBucket(rate=settings.partition_wcu, capacity=settings.partition_wcu * burst, now=now)
            for _ in range(settings.partitions)
        ]
        #: accepted write units, in all and per partition
        self.write_units = 0
        self.partition_units = [0] * settings.partitions
        #: items refused because their partition's bucket, or the table's, was short
        self.refused_by_partition = 0
        self.refused_by_table = 0
        #: calls refused whole (nothing fitted) and the items they carried
        self.throttled_calls = 0
        self.throttled_items = 0
        #: items handed back in UnprocessedItems (the rest of their call went through)
        self.unprocessed_items = 0

    def admit(self, costs: list[int], parts: list[int], now: float) -> Admission:
        """Take the items (their costs and partitions) in order; each one goes through when its
        partition bucket and the table bucket both have its units."""
        table = self.table
        table.refill(now)
        buckets = self.partitions
        for p in set(parts):
            buckets[p].refill(now)
        refused: list[int] = []
        by_partition = by_table = units = 0
        used = self.partition_units
        tokens, full = table.tokens, table.capacity
        for i, (cost, p) in enumerate(zip(costs, parts, strict=True)):
            bucket = buckets[p]  # TokenBucket.fits, inlined for both buckets: it runs per item
            if bucket.tokens < cost and bucket.tokens < bucket.capacity:
                refused.append(i)
                by_partition += 1
            elif tokens < cost and tokens < full:
                refused.append(i)
                by_table += 1
            else:
                bucket.tokens -= cost
                tokens -= cost
                used[p] += cost
                units += cost
        table.tokens = tokens
        self.write_units += units
        self.refused_by_partition += by_partition
        self.refused_by_table += by_table
        return Admission(refused=refused, by_partition=by_partition, by_table=by_table, units=units)

    def to_dict(self) -> dict[str, Any]:
        return {
            "write_units": self.write_units,
            "partition_units": list(self.partition_units),
            "refused_by_partition": self.refused_by_partition,
            "refused_by_table": self.refused_by_table,
            "throttled_calls": self.throttled_calls,
            "throttled_items": self.throttled_items,
            "unprocessed_items": self.unprocessed_items,
        }


class Capacity:
    """Capacity mode for every table of the endpoint, on ``clock`` (a monotonic clock in seconds;
    a test passes its own). Tables get their buckets, full, on their first write."""

    def __init__(self, settings: CapacitySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.epoch = clock()
        self.tables: dict[str, TableCapacity] = {}
        #: accepted write units in each second since ``epoch``, all tables together
        self.units_per_second: list[int] = []

    def table(self, name: str) -> TableCapacity:
        cap = self.tables.get(name)
        if cap is None:
            cap = self.tables[name] = TableCapacity(self.settings, self.clock())
        return cap

    def price(self, key_type: str, key_name: str, items: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
        """Each item's write units and partition (put items, or delete keys, of one table).

        ValueError when a value cannot be sized or a number key hashed (DynamoDB refuses those).
        """
        n = self.settings.partitions
        try:
            values = [it[key_name][key_type] for it in items]
        except (KeyError, TypeError):
            raise ValueError("One of the required keys was not given a value") from None
        try:
            if key_type == "N":
                parts = [partition_of(v, key_type, n) for v in values]
            else:  # partition_of's hash, inlined: it runs for every item
                crcs = map(zlib.crc32, map(str.encode, values))
                parts = [((c * _MIX) & 0xFFFFFFFF) * n >> 32 for c in crcs]
            return write_costs(items), parts
        except (AttributeError, TypeError, ValueError) as exc:  # a value of the wrong shape
            raise ValueError(f"an attribute value cannot be sized: {exc}") from None

    def admit(self, table: str, costs: list[int], parts: list[int]) -> Admission:
        """Admit one table's items of one call (``price`` gave their costs and partitions)."""
        now = self.clock()
        got = self.table(table).admit(costs, parts, now)
        if got.units:
            second = int(now - self.epoch)
            series = self.units_per_second
            if len(series) <= second:
                series.extend([0] * (second + 1 - len(series)))
            series[second] += got.units
        return got

    def to_dict(self) -> dict[str, Any]:
        elapsed = self.clock() - self.epoch
        series = self.units_per_second
        if len(series) <= int(elapsed):
            series.extend([0] * (int(elapsed) + 1 - len(series)))
        return {
            **self.settings.to_dict(),
            "elapsed_s": elapsed,
            "write_units": sum(t.write_units for t in self.tables.values()),
            "units_per_second": list(series),
            "tables": {name: t.to_dict() for name, t in self.tables.items()},
        }


@dataclass
class WireStats:
    calls: int = 0
    items: int = 0
    unprocessed_items: int = 0
    throttled_calls: int = 0
    #: items in calls refused whole (injected throttles and capacity mode's)
    throttled_items: int = 0
    error_calls: int = 0
    error_items: int = 0
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
    capacity: CapacitySettings = field(default_factory=CapacitySettings)
    #: ``full`` parses and checks every BatchWriteItem; ``count`` counts its items without parsing
    #: (see ``_count_items``) when nothing needs the items themselves
    validate: str = "full"


@dataclass
class WireState:
    config: WireConfig
    rng: random.Random
    stats: WireStats = field(default_factory=WireStats)
    #: table name -> ((attr, type), ...) partition first
    tables: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    #: capacity mode's buckets, None when it is off (``config.capacity.table_wcu == 0``)
    capacity: Capacity | None = None

    def __post_init__(self) -> None:
        self.reset_capacity()

    def key_of(self, table: str) -> tuple[tuple[str, str], ...] | None:
        return self.tables.get(table) or self.config.default_key

    def reset_capacity(self) -> None:
        """Full buckets and no history, under the current settings (None when the mode is off)."""
        settings = self.config.capacity
        self.capacity = Capacity(settings, clock=self.clock) if settings.enabled else None


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: more members of the error body (``ThrottlingReasons``)
        self.extra = extra


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


def _error(status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> bytes:
    prefix = (
        "com.amazon.coral.service#"
        if code.startswith(("Missing", "Unrecognized", "Unknown"))
        else ("com.amazonaws.dynamodb.v20120810#")
    )
    body: dict[str, Any] = {"__type": prefix + code, "message": message}
    if extra:
        body.update(extra)
    return _response(status, orjson.dumps(body))


def _table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:000000000000:table/{name}"


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
        "TableArn": _table_arn(name),
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


VALIDATE_MODES = ("full", "count")
#: the two ways a JSON encoder separates members: compact (orjson, the lean sender) and ``json.dumps``'s
#: default (botocore): the request's opening, where a table's list starts, one put, one delete
_LAYOUTS = (
    (b'{"RequestItems":{"', b'":[', b'{"PutRequest":{"Item":', b'{"DeleteRequest":{"Key":'),
    (b'{"RequestItems": {"', b'": [', b'{"PutRequest": {"Item": ', b'{"DeleteRequest": {"Key": '),
)


def _count_items(state: WireState, body: bytes) -> int | None:
    """The write requests of a BatchWriteItem body, counted without parsing it; None when the body
    does not have the layout counted here (the caller then parses it in full).

    Exact for any valid request: a put is ``{"PutRequest":{"Item":`` and a delete
    ``{"DeleteRequest":{"Key":``, and neither can appear inside one: a quote inside a string is
    escaped, and an attribute's value is a type wrapper (``{"S":...``, ``{"M":...``), never
    ``{"Item":`` or ``{"Key":``. Still refused, as the service does: a first table that does not
    exist, and more than 25 requests. Not checked: the JSON itself, the key attributes, duplicate
    keys, a second table's name (the ``full`` mode checks all of these)."""
    layout = next((lay for lay in _LAYOUTS if body.startswith(lay[0])), None)
    if layout is None:
        return None
    head, list_open, put, delete = layout
    end = body.find(list_open, len(head))
    if end < 0:
        return None
    name = body[len(head) : end].decode("utf-8", "replace")
    if state.key_of(name) is None:
        return None  # the full parse says so, with the service's error
    n = body.count(put) + body.count(delete)
    if n == 0:
        return None
    if n > _MAX_BATCH:
        state.stats.invalid_calls += 1
        raise _Refusal(400, "ValidationException", "Member must have length less than or equal to 25")
    return n


def _batch_write(state: WireState, body: bytes) -> bytes:
    stats = state.stats
    stats.calls += 1
    stats.request_bytes += len(body)
    cfg = state.config
    if cfg.validate == "count" and state.capacity is None and not cfg.unprocessed:
        # nothing below needs the items themselves: count them, keep the injected faults
        counted = _count_items(state, body)
        if counted is not None:
            return _answer_counted(state, counted)
    tables: list[tuple[str, list[Any], tuple[tuple[str, str], ...]]] = []
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
            tables.append((tname, reqs, key))
        if total > _MAX_BATCH:
            raise _Refusal(400, "ValidationException", "Member must have length less than or equal to 25")
    except _Refusal:
        stats.invalid_calls += 1
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        stats.invalid_calls += 1
        raise _Refusal(400, "ValidationException", f"malformed BatchWriteItem request: {exc!r}") from None
    _whole_call_faults(state, total)
    capacity = state.capacity
    if not cfg.unprocessed and capacity is None:
        stats.items += total
        return _OK_EMPTY_RESPONSE
    rnd = state.rng.random
    frac = cfg.unprocessed
    # per table: its requests, and True for each one the fault injection hands back
    handed: list[tuple[str, list[Any], list[bool] | None]] = [
        (tname, reqs, [rnd() < frac for _ in reqs] if frac else None) for tname, reqs, _ in tables
    ]
    unprocessed: dict[str, list[Any]] = {}
    #: the tables capacity mode refused items of: name, buckets, what the call got
    refusals: list[tuple[str, TableCapacity, Admission]] = []
    admitted = refused = 0
    if capacity is not None:
        # every table's items are sized before any bucket is touched: a call refused as
        # invalid must not spend capacity
        offers: list[tuple[list[int], list[int], list[int]]] = []
        try:
            for (_, reqs, injected), (_, _, key) in zip(handed, tables, strict=True):
                # an item handed back by the fault injection never reaches the buckets
                if injected:
                    idx = [i for i, out in enumerate(injected) if not out]
                    offered = [reqs[i] for i in idx]
                else:
                    idx, offered = list(range(len(reqs))), reqs
                try:
                    items = [r["PutRequest"]["Item"] for r in offered]
                except KeyError:  # deletes among them
                    items = list(map(_item_of, offered))
                offers.append((idx, *capacity.price(key[0][1], key[0][0], items)))
        except ValueError as exc:
            stats.invalid_calls += 1
            raise _Refusal(400, _VALIDATION, str(exc)) from None
        for i, (tname, reqs, injected) in enumerate(handed):
            idx, costs, parts = offers[i]
            got = capacity.admit(tname, costs, parts)
            admitted += len(idx) - len(got.refused)
            refused += len(got.refused)
            if got.refused:
                refusals.append((tname, capacity.table(tname), got))
                out = injected[:] if injected is not None else [False] * len(reqs)
                for j in got.refused:
                    out[idx[j]] = True
                handed[i] = (tname, reqs, out)
    for tname, reqs, back_flags in handed:
        if back_flags is not None:
            back = [r for r, out in zip(reqs, back_flags, strict=True) if out]
            if back:
                unprocessed[tname] = back
    if capacity is not None and refused and not admitted:
        stats.throttled_calls += 1
        stats.throttled_items += total
        reasons: list[dict[str, str]] = []
        for tname, tcap, got in refusals:
            tcap.throttled_calls += 1
            tcap.throttled_items += len(got.refused)
            arn = _table_arn(tname)
            if got.by_partition:
                reasons.append({"reason": PARTITION_REASON, "resource": arn})
            if got.by_table:
                reasons.append({"reason": TABLE_REASON, "resource": arn})
        raise _Refusal(
            400, "ProvisionedThroughputExceededException", THROTTLE_MESSAGE, {"ThrottlingReasons": reasons}
        )
    for _, tcap, got in refusals:
        tcap.unprocessed_items += len(got.refused)
    n_back = sum(len(v) for v in unprocessed.values())
    stats.items += total - n_back
    stats.unprocessed_items += n_back
    if not n_back:
        return _OK_EMPTY_RESPONSE
    return _response(200, orjson.dumps({"UnprocessedItems": unprocessed}))


def _whole_call_faults(state: WireState, total: int) -> None:
    """The injected faults of a whole call of ``total`` items (``--throttle``, ``--errors``), drawn
    in that order: raises the refusal, counted, or returns."""
    stats, cfg = state.stats, state.config
    if cfg.throttle and state.rng.random() < cfg.throttle:
        stats.throttled_calls += 1
        stats.throttled_items += total
        raise _Refusal(400, "ProvisionedThroughputExceededException", THROTTLE_MESSAGE)
    if cfg.errors and state.rng.random() < cfg.errors:
        stats.error_calls += 1
        stats.error_items += total
        raise _Refusal(500, "InternalServerError", "Internal server error (injected by the wire endpoint)")


def _answer_counted(state: WireState, total: int) -> bytes:
    """The answer to a call of ``total`` items counted by ``_count_items``: the injected whole-call
    faults as ``_batch_write`` draws them, else every item accepted."""
    _whole_call_faults(state, total)
    state.stats.items += total
    return _OK_EMPTY_RESPONSE


def _item_of(request: dict[str, Any]) -> dict[str, Any]:
    """The item a write request carries: a put's item, or a delete's key (what it is charged on)."""
    put = request.get("PutRequest")
    item: dict[str, Any] = put["Item"] if put is not None else request["DeleteRequest"]["Key"]
    return item


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


_CAPACITY_PARAMS = {"table_wcu": float, "partitions": int, "partition_wcu": float, "burst_s": float}


def _control(state: WireState, method: bytes, target: str) -> bytes:
    parts = urlsplit(target)
    if method == b"GET" and parts.path == "/stats":
        out = state.stats.to_dict()
        out["capacity"] = state.capacity.to_dict() if state.capacity is not None else None
        out["validate"] = state.config.validate
        return _response(200, orjson.dumps(out), b"application/json")
    if method == b"POST" and parts.path == "/reset":
        state.stats = WireStats()
        state.reset_capacity()
        return _response(200, b"{}", b"application/json")
    if method == b"POST" and parts.path == "/config":
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        cfg = state.config
        try:
            latency_s = float(q["latency_ms"]) / 1000.0 if "latency_ms" in q else cfg.latency_s
            unprocessed = float(q.get("unprocessed", cfg.unprocessed))
            throttle = float(q.get("throttle", cfg.throttle))
            errors = float(q.get("errors", cfg.errors))
            validate = q.get("validate", cfg.validate)
            if validate not in VALIDATE_MODES:
                raise ValueError(f"validate={validate!r}: want one of {', '.join(VALIDATE_MODES)}")
            changed = {k: conv(q[k]) for k, conv in _CAPACITY_PARAMS.items() if k in q}
            capacity = dataclasses.replace(cfg.capacity, **changed) if changed else cfg.capacity
        except ValueError as exc:
            return _response(400, orjson.dumps({"message": f"bad /config value: {exc}"}), b"application/json")
        cfg.latency_s, cfg.unprocessed, cfg.throttle, cfg.errors = latency_s, unprocessed, throttle, errors
        cfg.validate = validate
        if changed:
            cfg.capacity = capacity
            state.reset_capacity()
        return _response(
            200,
            orjson.dumps(
                {
                    "latency_ms": cfg.latency_s * 1000,
                    "unprocessed": cfg.unprocessed,
                    "throttle": cfg.throttle,
                    "errors": cfg.errors,
                    "validate": cfg.validate,
                    **cfg.capacity.to_dict(),
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
                out = _error(exc.status, exc.code, exc.message, exc.extra)
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
    p.add_argument(
        "--table-wcu",
        type=float,
        default=0.0,
        help="capacity mode: write units/s per table (0: unlimited, off)",
    )
    p.add_argument("--partitions", type=int, default=4, help="capacity mode: partitions per table")
    p.add_argument(
        "--partition-wcu", type=float, default=1000.0, help="capacity mode: write units/s per partition"
    )
    p.add_argument(
        "--burst-s",
        type=float,
        default=1.0,
        help="capacity mode: seconds of unused capacity a bucket keeps (the service keeps up to 300)",
    )
    p.add_argument(
        "--validate",
        choices=VALIDATE_MODES,
        default="full",
        help="BatchWriteItem checks: full (parse and check every request, the default) or count "
        "(count the items without parsing; capacity mode and --unprocessed still parse)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--profile", default=None, help="write cProfile stats (CPU time) here on exit")
    a = p.parse_args(argv)
    try:
        capacity = CapacitySettings(
            table_wcu=a.table_wcu, partitions=a.partitions, partition_wcu=a.partition_wcu, burst_s=a.burst_s
        )
    except ValueError as exc:
        p.error(str(exc))  # exit 2, one line
    state = WireState(
        config=WireConfig(
            latency_s=a.latency_ms / 1000.0,
            unprocessed=a.unprocessed,
            throttle=a.throttle,
            errors=a.errors,
            default_key=a.default_key,
            capacity=capacity,
            validate=a.validate,
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
