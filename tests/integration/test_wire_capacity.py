"""The wire endpoint's capacity mode refuses writes as DynamoDB does, and counts what it let through.

First the pure parts (item size and cost, the partition hash, token buckets on a clock the test
drives); then the endpoint in its own process, driven over HTTP by botocore, the project's lean
sender and its writer. No test waits on time: a rate is checked only as a bound a counter proves
(units accepted over a measured interval <= rate x interval + a bucket's worth), and the
deterministic cases use rates so low that a refill during a test is worth less than one unit.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from benchmarks.wire import (
    PARTITION_REASON,
    TABLE_REASON,
    THROTTLE_MESSAGE,
    Capacity,
    CapacitySettings,
    TableCapacity,
    TokenBucket,
    WireProcess,
    item_size,
    partition_of,
    running_wire,
    write_cost,
    write_costs,
)
from loader import limits
from loader.config import LoadConfig
from loader.errors import ThrottledError
from loader.fastsend import open_lean_sender
from loader.models import Batch, Entry, Item, KeySchema
from loader.sender import BatchSender
from loader.writer import BatchOutcome, Writer
from tests.support.aws import wire_client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- pure: size and cost


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SIZES = [
    # (attribute value, its size by loader.limits' rules; the name "a" adds 1)
    ({"S": "héllo"}, 6),
    ({"S": ""}, 0),
    ({"N": "12"}, 2),
    ({"N": "-1.5"}, 4),
    ({"N": "0"}, 1),
    ({"B": _b64(b"")}, 0),
    ({"B": _b64(b"x")}, 1),
    ({"B": _b64(b"xy")}, 2),
    ({"B": _b64(b"xyz")}, 3),
    ({"BOOL": False}, limits.BOOL_BYTES),
    ({"NULL": True}, limits.NULL_BYTES),
    ({"SS": ["a", "日本"]}, 1 + 6),
    ({"NS": ["1", "123"]}, 2 + 3),
    ({"BS": [_b64(b"ab"), _b64(b"c")]}, 3),
    ({"L": []}, limits.CONTAINER_BYTES),
    ({"L": [{"S": "ab"}, {"N": "1"}]}, limits.CONTAINER_BYTES + (1 + 2) + (1 + 2)),
    ({"M": {"k": {"S": "v"}, "ü": {"NULL": True}}}, limits.CONTAINER_BYTES + (1 + 1 + 1) + (1 + 2 + 1)),
    ({"M": {"m": {"M": {}}}}, limits.CONTAINER_BYTES + 1 + 1 + limits.CONTAINER_BYTES),
]


@pytest.mark.parametrize(("value", "size"), SIZES, ids=[str(v) for v, _ in SIZES])
def test_item_size_follows_dynamodbs_rules(value: dict[str, Any], size: int) -> None:
    assert item_size({"a": value}) == 1 + size
    assert item_size({"pk": {"S": "k"}, "a": value}) == 2 + 1 + 1 + size


@pytest.mark.parametrize(
    ("size", "units"), [(4, 1), (1024, 1), (1025, 2), (2048, 2), (2049, 3), (400 * 1024, 400)]
)
@pytest.mark.parametrize("text", ["ascii", "unicode"])
def test_write_cost_is_one_unit_per_started_kb(size: int, units: int, text: str) -> None:
    # "pk" + "k" + "p" = 4 bytes; the payload fills the rest, 3-byte characters when asked
    rest = size - 4
    pad = "€" * (rest // 3) + "x" * (rest % 3) if text == "unicode" else "x" * rest
    item = {"pk": {"S": "k"}, "p": {"S": pad}}
    assert item_size(item) == size
    assert write_cost(item) == units == limits.write_units(size)


def test_a_delete_costs_its_keys_size_at_least_one_unit() -> None:
    assert write_cost({"pk": {"S": "k"}}) == 1
    assert write_cost({"pk": {"S": "k" * 2048}, "sk": {"S": "s" * 1024}}) == 4  # 3076 bytes


def _random_value(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    kind = rng.choice(
        ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"] if depth < 3 else ["S", "N"]
    )
    text = "".join(rng.choice('a"\\\n€😀日') for _ in range(rng.randrange(0, 40)))
    if kind == "S":
        return {"S": text}
    if kind == "N":
        return {"N": rng.choice(["0", "-1.5", "12345678901234567890123456789012345678", "1E-130", "7"])}
    if kind == "B":
        return {"B": _b64(rng.randbytes(rng.randrange(0, 50)))}
    if kind == "BOOL":
        return {"BOOL": rng.random() < 0.5}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "SS":
        return {"SS": [text + str(i) for i in range(rng.randrange(1, 5))]}
    if kind == "NS":
        return {"NS": [str(i * 7) for i in range(rng.randrange(1, 5))]}
    if kind == "BS":
        return {"BS": [_b64(bytes([i])) for i in range(rng.randrange(1, 5))]}
    if kind == "L":
        return {"L": [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]}
    return {"M": {f"{text[:5]}{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(0, 5))}}


def test_an_items_json_bounds_its_size_and_the_cost_is_exact() -> None:
    # write_costs prices an item from its JSON length without sizing it: that is only right if
    # the JSON is never shorter than size + 9 per attribute + 1, whatever the types and characters
    rng = random.Random(14)
    items = []
    for _ in range(1000):
        n = rng.randrange(1, 30)
        item = {f"a{i}€"[: rng.randrange(1, 4)] + str(i): _random_value(rng) for i in range(n)}
        if rng.random() < 0.5:  # across 1 KB boundaries, where the bounds must agree or fall back
            item["payload"] = {"S": "é" * rng.randrange(200, 2000)}
        items.append(item)
        size = item_size(item)
        assert len(orjson.dumps(item)) - 9 * len(item) - 1 >= size
    assert write_costs(items) == [limits.write_units(item_size(it)) for it in items]
    assert max(write_costs(items)) >= 4


# ----------------------------------------------------------------------------- pure: partitions


def test_partition_of_is_a_stable_hash_not_pythons_salted_one() -> None:
    # pinned: a change of hash moves every benchmark's hot partitions
    assert [partition_of(v, "S", 4) for v in ("a", "b", "hot", "user#000000001")] == [3, 0, 3, 3]
    assert partition_of("abc", "S", 1000) == 741
    # and the same in a process with another hash seed
    code = "from benchmarks.wire import partition_of as p; print(p('hot', 'S', 4), p('abc', 'S', 1000))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["3", "741"], out.stderr


def test_equal_numbers_share_a_partition() -> None:
    assert {partition_of(v, "N", 7) for v in ("12", "12.0", "0012", "1.2E1", "+12")} == {
        partition_of("12", "N", 7)
    }
    assert partition_of("-12", "N", 1000) != partition_of("12", "N", 1000)
    with pytest.raises(ValueError):
        partition_of("12x", "N", 4)


def test_sequential_keys_spread_evenly() -> None:
    counts = [0] * 4
    for i in range(4000):
        counts[partition_of(f"k{i:05d}", "S", 4)] += 1
    assert all(900 <= c <= 1100 for c in counts), counts


def test_price_uses_partition_of() -> None:
    cap = Capacity(CapacitySettings(table_wcu=10, partitions=16), clock=Clock())
    for key_type, values in (("S", [f"user#{i}" for i in range(200)]), ("N", [str(i) for i in range(200)])):
        items = [{"pk": {key_type: v}} for v in values]
        costs, parts = cap.price(key_type, "pk", items)
        assert parts == [partition_of(v, key_type, 16) for v in values]
        assert costs == [1] * 200
    with pytest.raises(ValueError, match="required keys"):
        cap.price("S", "pk", [{"other": {"S": "x"}}])


# ----------------------------------------------------------------------------- pure: buckets


def test_a_bucket_starts_full_refills_continuously_and_keeps_at_most_its_burst() -> None:
    b = TokenBucket(rate=100, capacity=50, now=0.0)
    assert b.tokens == 50
    b.tokens -= 50
    b.refill(0.25)
    assert b.tokens == 25
    assert b.fits(25) and not b.fits(26)
    b.refill(100.0)
    assert b.tokens == 50
    b.refill(99.0)  # a clock read out of order never takes tokens away
    assert b.tokens == 50


def test_a_full_bucket_lets_an_item_larger_than_itself_through_into_debt() -> None:
    b = TokenBucket(rate=10, capacity=5, now=0.0)
    assert b.fits(400)
    b.tokens -= 400
    b.refill(39.0)
    assert not b.fits(1)  # still paying: 395 units at 10/s
    b.refill(40.0)
    assert b.fits(1)


def test_items_go_through_in_order_when_partition_and_table_both_have_the_units() -> None:
    cap = TableCapacity(CapacitySettings(table_wcu=10, partitions=2, partition_wcu=6, burst_s=1), now=0.0)
    # partition 0 holds 6, partition 1 holds 6, the table 10
    got = cap.admit([4, 3, 2, 4, 1, 1], [0, 0, 0, 1, 1, 1], now=0.0)
    # 4 -> p0 2, table 6; 3 refused by p0; 2 -> p0 0, table 4; 4 -> p1 2, table 0; then the table is out
    assert got.refused == [1, 4, 5]
    assert (got.by_partition, got.by_table, got.units) == (1, 2, 10)
    assert cap.partition_units == [6, 4]
    # an item the table refused spent nothing of its partition's
    assert cap.partitions[1].tokens == 2
    got = cap.admit([2, 1], [1, 1], now=0.5)  # +5 table, +3 per partition
    assert got.refused == []
    assert cap.write_units == 13 and cap.refused_by_partition == 1 and cap.refused_by_table == 2


def test_accepted_units_never_exceed_rate_times_time_plus_burst_and_reach_the_rate() -> None:
    clock = Clock(0.0)
    settings = CapacitySettings(table_wcu=400, partitions=4, partition_wcu=1000, burst_s=0.5)
    cap = Capacity(settings, clock=clock)
    keys = [f"k{i}" for i in range(25)]
    costs, parts = cap.price("S", "pk", [{"pk": {"S": k}} for k in keys])
    accepted = 0
    for step in range(1, 1001):  # a client offering 2,500 units/s for 10 s
        clock.now = step * 0.01
        accepted += 25 - len(cap.admit("t", costs, parts).refused)
        assert accepted <= 200 + 400 * clock.now + 1e-9
    series = cap.to_dict()["units_per_second"]
    assert sum(series) == accepted == cap.tables["t"].write_units
    # after the first second (burst + rate), every whole second carries the rate within one call
    assert series[0] <= 200 + 400
    assert all(400 - 25 <= s <= 400 + 25 for s in series[1:10]), series


def test_settings_refuse_what_would_switch_a_bucket_off() -> None:
    for bad in (
        {"table_wcu": -1},
        {"table_wcu": float("nan")},
        {"table_wcu": float("inf")},
        {"partitions": 0},
        {"partition_wcu": 0},
        {"burst_s": float("nan")},
    ):
        with pytest.raises(ValueError):
            CapacitySettings(**bad)
    assert not CapacitySettings().enabled and CapacitySettings(table_wcu=1).enabled


# ----------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def wire() -> Iterator[WireProcess]:
    with running_wire("--table-wcu", "1000") as w:
        yield w


def _client(wire: WireProcess) -> Any:
    return wire_client(wire.url)


def _setup(wire: WireProcess, table: str, *, sort: bool, **capacity: float) -> Any:
    """A fresh table, full buckets under these settings, zeroed counters."""
    query = "&".join(f"{k}={v}" for k, v in capacity.items())
    wire.post(f"/config?unprocessed=0&throttle=0&errors=0&{query}")
    wire.post("/reset")
    client = _client(wire)
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if sort:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "N"})
    client.create_table(TableName=table, KeySchema=keys, AttributeDefinitions=attrs)
    return client


def _send(client: Any, table: str, requests: list[dict[str, Any]]) -> tuple[int, int, int]:
    """One BatchWriteItem: (accepted, handed back, refused whole) items."""
    try:
        resp = client.batch_write_item(RequestItems={table: requests})
    except client.exceptions.ProvisionedThroughputExceededException:
        return 0, 0, len(requests)
    back = len(resp["UnprocessedItems"].get(table, []))
    return len(requests) - back, back, 0


def _totals(stats: dict[str, Any]) -> int:
    return int(stats["items"] + stats["unprocessed_items"] + stats["throttled_items"] + stats["error_items"])


def test_a_hot_key_is_held_at_its_partitions_budget_spread_keys_at_the_tables(wire: WireProcess) -> None:
    # per second: 0.01 units a partition, 0.02 the table; 10,000 s of burst: buckets of 100 and
    # 200 units that refill by less than one unit in any test's time
    settings = {"table_wcu": 0.02, "partitions": 4, "partition_wcu": 0.01, "burst_s": 10000}
    client = _setup(wire, "hot", sort=True, **settings)
    t0 = time.monotonic()
    got = [0, 0, 0]
    for call in range(8):
        reqs = [
            {"PutRequest": {"Item": {"pk": {"S": "hot"}, "sk": {"N": str(call * 25 + i)}}}} for i in range(25)
        ]
        got = [a + b for a, b in zip(got, _send(client, "hot", reqs), strict=True)]
    elapsed = time.monotonic() - t0
    accepted = got[0]
    stats = wire.stats()
    table = stats["capacity"]["tables"]["hot"]
    hot = partition_of("hot", "S", 4)
    assert 100 <= accepted <= 100 + 0.01 * elapsed
    assert table["partition_units"] == [accepted if p == hot else 0 for p in range(4)]
    assert table["refused_by_partition"] == 200 - accepted and table["refused_by_table"] == 0
    assert stats["items"] == accepted and _totals(stats) == 200
    assert got[1] + got[2] == 200 - accepted

    client = _setup(wire, "spread", sort=False, **settings)
    by_partition: dict[int, list[str]] = {p: [] for p in range(4)}
    i = 0
    while min(map(len, by_partition.values())) < 80:
        key = f"k{i}"
        if len(by_partition[partition_of(key, "S", 4)]) < 80:
            by_partition[partition_of(key, "S", 4)].append(key)
        i += 1
    keys = [by_partition[p][n] for n in range(80) for p in range(4)]  # interleaved
    t0 = time.monotonic()
    accepted = 0
    for start in range(0, 320, 25):
        reqs = [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in keys[start : start + 25]]
        accepted += _send(client, "spread", reqs)[0]
    elapsed = time.monotonic() - t0
    stats = wire.stats()
    table = stats["capacity"]["tables"]["spread"]
    # each partition had room for its 80 items: only the table's 200 held them back
    assert 200 <= accepted <= 200 + 0.02 * elapsed
    assert table["refused_by_partition"] == 0 and table["refused_by_table"] == 320 - accepted
    assert sum(table["partition_units"]) == accepted and max(table["partition_units"]) <= 100
    assert stats["capacity"]["write_units"] == accepted == stats["items"]
    assert _totals(stats) == 320


def _partition_ranks(keys: list[str], partitions: int) -> list[int]:
    """How many earlier keys of the list share each key's partition."""
    seen = [0] * partitions
    ranks = []
    for k in keys:
        p = partition_of(k, "S", partitions)
        ranks.append(seen[p])
        seen[p] += 1
    return ranks


def test_what_does_not_fit_comes_back_exactly_as_sent_and_nothing_fitting_is_the_exception(
    wire: WireProcess,
) -> None:
    # partitions of 5 units that refill 0.001 a second; the table is not the limit
    client = _setup(
        wire, "partial", sort=False, table_wcu=1000, partitions=4, partition_wcu=0.001, burst_s=5000
    )
    keys = [f"item-{i}" for i in range(25)]
    ranks = _partition_ranks(keys, 4)
    reqs: list[dict[str, Any]] = []
    for n, k in enumerate(keys):
        if n % 5 == 4:
            reqs.append({"DeleteRequest": {"Key": {"pk": {"S": k}}}})
        else:
            item = {
                "pk": {"S": k},
                "b": {"B": bytes([n, 0, 255])},
                "m": {"M": {"n": {"N": str(n)}, "l": {"L": []}}},
            }
            reqs.append({"PutRequest": {"Item": item}})
    refused = [r for r, rank in zip(reqs, ranks, strict=True) if rank >= 5]
    assert refused  # 25 keys over 4 partitions: one holds at least 7
    resp = client.batch_write_item(RequestItems={"partial": reqs})
    assert resp["UnprocessedItems"] == {"partial": refused}
    stats = wire.stats()
    assert stats["items"] == 25 - len(refused) and stats["unprocessed_items"] == len(refused)
    per_partition = [sum(1 for k in keys if partition_of(k, "S", 4) == p) for p in range(4)]
    assert stats["capacity"]["tables"]["partial"]["partition_units"] == [min(5, n) for n in per_partition]

    # every partition that took 5 is empty now: a call only for those is refused whole
    full = {partition_of(k, "S", 4) for k, rank in zip(keys, ranks, strict=True) if rank == 4}
    more = [f"more-{i}" for i in range(200) if partition_of(f"more-{i}", "S", 4) in full][:10]
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException) as info:
        client.batch_write_item(
            RequestItems={"partial": [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in more]}
        )
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Message"] == THROTTLE_MESSAGE
    assert response["ThrottlingReasons"] == [
        {"reason": PARTITION_REASON, "resource": "arn:aws:dynamodb:us-east-1:000000000000:table/partial"}
    ]
    stats = wire.stats()
    assert stats["throttled_calls"] == 1 and stats["throttled_items"] == len(more)
    assert _totals(stats) == 25 + len(more)


def test_the_table_bucket_refuses_with_its_own_reason(wire: WireProcess) -> None:
    client = _setup(wire, "tbl", sort=False, table_wcu=0.001, partitions=4, partition_wcu=1000, burst_s=5000)
    assert _send(client, "tbl", [{"PutRequest": {"Item": {"pk": {"S": f"a{i}"}}}} for i in range(8)]) == (
        5,
        3,
        0,
    )
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException) as info:
        client.batch_write_item(RequestItems={"tbl": [{"PutRequest": {"Item": {"pk": {"S": "b"}}}}]})
    assert [r["reason"] for r in info.value.response["ThrottlingReasons"]] == [TABLE_REASON]
    # a 3 KB item costs 3 units: charged as such
    client = _setup(wire, "tbl3", sort=False, table_wcu=0.001, partitions=4, partition_wcu=1000, burst_s=5000)
    big = {"pk": {"S": "big"}, "p": {"S": "x" * 3000}}
    assert _send(client, "tbl3", [{"PutRequest": {"Item": big}}]) == (1, 0, 0)
    assert wire.stats()["capacity"]["tables"]["tbl3"]["write_units"] == 3


def test_items_the_fault_injection_hands_back_spend_no_capacity(wire: WireProcess) -> None:
    client = _setup(
        wire, "mixed", sort=False, table_wcu=0.001, partitions=4, partition_wcu=1000, burst_s=40000
    )
    wire.post("/config?unprocessed=0.3")
    sent = accepted = 0
    for call in range(4):  # 100 items at a table bucket of 40 units
        reqs = [{"PutRequest": {"Item": {"pk": {"S": f"c{call}-{i}"}}}} for i in range(25)]
        accepted += _send(client, "mixed", reqs)[0]
        sent += 25
    wire.post("/config?unprocessed=0")
    stats = wire.stats()
    table = stats["capacity"]["tables"]["mixed"]
    assert accepted == stats["items"] == table["write_units"] == 40
    assert stats["unprocessed_items"] > table["unprocessed_items"]  # some were the injection's
    assert _totals(stats) == sent


async def test_the_lean_sender_sees_the_same_two_answers(wire: WireProcess) -> None:
    _setup(
        wire, "lean", sort=False, table_wcu=1000, partitions=1, partition_wcu=0.001, burst_s=3000
    )  # 3 units
    items: list[Item] = [{"pk": {"S": f"k{i}"}, "v": {"N": str(i)}} for i in range(5)]
    async with open_lean_sender(concurrency=2, client=_client(wire)) as sender:
        assert await sender.send("lean", items) == items[3:]
        with pytest.raises(ThrottledError) as info:
            await sender.send("lean", items[3:])
    assert info.value.code == "ProvisionedThroughputExceededException"
    assert PARTITION_REASON in str(info.value)


class CountingSender:
    """Counts the items handed to a sender, call by call (the test's own wrapper, not a patch)."""

    def __init__(self, inner: BatchSender) -> None:
        self.inner = inner
        self.items = 0

    @property
    def encode(self) -> Callable[[Item], bytes] | None:
        return self.inner.encode

    async def send(self, table: str, items: list[Item], wire: list[bytes] | None = None) -> list[Item]:
        self.items += len(items) if wire is None else len(wire)
        return await self.inner.send(table, items, wire)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_writer_under_a_budget_loses_nothing_and_the_counters_add_up(wire: WireProcess) -> None:
    # buckets of 10 units (0.01 s of 1,000/s): every 25-item call is cut short, so the writer's
    # retry of UnprocessedItems and of whole-call throttles is exercised on every batch
    _setup(wire, "w", sort=False, table_wcu=1000, partitions=4, partition_wcu=1000, burst_s=0.01)
    n = 1500
    entries = [
        Entry(
            item={"pk": {"S": f"k{i:05d}"}, "v": {"N": str(i)}},
            key=(f"k{i:05d}",),
            size=20,
            number=i,
            offset=i,
            raw="",
        )
        for i in range(n)
    ]
    outcomes: list[BatchOutcome] = []
    async with open_lean_sender(concurrency=8, client=_client(wire)) as lean:
        sender = CountingSender(lean)
        writer = Writer(
            sender=sender,
            table="w",
            config=LoadConfig(
                table="w", concurrency=8, max_attempts=1000, backoff_base_s=0.001, backoff_cap_s=0.02
            ),
            on_done=outcomes.append,
            key_schema=KeySchema(partition="pk", partition_type="S"),
        )
        t0 = time.monotonic()
        for seq, start in enumerate(range(0, n, 25)):
            await writer.submit(Batch(seq=seq, entries=entries[start : start + 25], nbytes=0))
        await writer.drain()
        elapsed = time.monotonic() - t0
    assert writer.failed is None
    assert all(o.error is None for o in outcomes) and sum(o.written for o in outcomes) == n
    stats = wire.stats()
    cap = stats["capacity"]
    # each item accepted exactly once: none lost, none written twice
    assert stats["items"] == n == cap["write_units"]
    assert stats["unprocessed_items"] >= 15  # the first full call got at most 10 through
    assert _totals(stats) == sender.items
    assert cap["tables"]["w"]["throttled_items"] + cap["tables"]["w"]["unprocessed_items"] == sender.items - n
    # the budget held: at most a bucket's worth (10) over 1,000 units a second
    assert n <= 10 + 1000 * elapsed
    assert sum(cap["units_per_second"]) == n
    assert all(units <= 1000 + 10 for units in cap["units_per_second"])


def test_config_reports_and_checks_the_settings(wire: WireProcess) -> None:
    out = wire.post("/config?table_wcu=500&partitions=8&partition_wcu=200&burst_s=2")
    assert {k: out[k] for k in ("table_wcu", "partitions", "partition_wcu", "burst_s")} == {
        "table_wcu": 500,
        "partitions": 8,
        "partition_wcu": 200,
        "burst_s": 2,
    }
    assert wire.stats()["capacity"]["partitions"] == 8
    for bad in ("partitions=0", "table_wcu=nan", "burst_s=-1", "partition_wcu=x"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(
                urllib.request.Request(wire.url + "/config?" + bad, data=b"", method="POST")
            )
        assert info.value.code == 400
        assert b"bad /config value" in info.value.read()
        info.value.close()
    assert wire.post("/config")["partitions"] == 8  # a refused change changed nothing
    wire.post("/config?table_wcu=0")
    assert wire.stats()["capacity"] is None  # off: the endpoint counts and accepts everything


def test_bad_flags_exit_2_with_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.wire", "--table-wcu", "100", "--partitions", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "partitions must be >= 1" in out.stderr and "Traceback" not in out.stderr
