"""Batches within DynamoDB's limits, and the duplicate-key policies."""

from __future__ import annotations

import pytest

from loader.batching import Batcher, request_bytes_estimate
from loader.models import Batch, Entry


def entry(key: str, number: int, *, size: int = 10, value: str = "") -> Entry:
    return Entry(
        item={"pk": {"S": key}, "v": {"S": value or f"row{number}"}},
        key=(key,),
        size=size,
        number=number,
        offset=number * 100,
        raw=f"{key},{value}",
    )


def feed(b: Batcher, entries: list[Entry]) -> list[Batch]:
    out = [x for x in (b.add(e) for e in entries) if x is not None]
    last = b.flush()
    if last is not None:
        out.append(last)
    return out


def test_batches_hold_at_most_25_items_in_order() -> None:
    batches = feed(Batcher(), [entry(f"k{i}", i) for i in range(1, 61)])
    assert [len(b.entries) for b in batches] == [25, 25, 10]
    assert [b.seq for b in batches] == [0, 1, 2]
    numbers = [e.number for b in batches for e in b.entries]
    assert numbers == list(range(1, 61))


def test_request_size_limit_cuts_a_batch_early() -> None:
    big = 300 * 1024
    b = Batcher(max_bytes=request_bytes_estimate(big) * 3)
    batches = feed(b, [entry(f"k{i}", i, size=big) for i in range(7)])
    assert [len(x.entries) for x in batches] == [3, 3, 1]
    assert all(x.nbytes <= request_bytes_estimate(big) * 3 for x in batches)


def test_last_wins_inside_a_batch() -> None:
    b = Batcher(policy="last")
    batches = feed(b, [entry("a", 1, value="old"), entry("b", 2), entry("a", 3, value="new")])
    assert b.collapsed == 1
    (batch,) = batches
    assert [e.key for e in batch.entries] == [("a",), ("b",)]
    assert batch.entries[0].item["v"] == {"S": "new"}
    assert batch.entries[0].number == 3


def test_last_policy_does_not_remember_keys_across_batches() -> None:
    b = Batcher(policy="last", max_items=2)
    batches = feed(b, [entry("a", 1), entry("b", 2), entry("c", 3), entry("a", 4)])
    assert b.collapsed == 0  # ordering across batches is the writer's job
    assert [[e.number for e in x.entries] for x in batches] == [[1, 2], [3, 4]]


@pytest.mark.parametrize("max_items", [1, 2, 25])
def test_first_wins_across_batches(max_items: int) -> None:
    b = Batcher(policy="first", max_items=max_items)
    batches = feed(b, [entry("a", 1, value="first"), entry("b", 2), entry("a", 3, value="second")])
    assert b.collapsed == 1
    kept = [e for x in batches for e in x.entries]
    assert [e.number for e in kept] == [1, 2]
    assert all(len(x.entries) <= max_items for x in batches)


def test_error_policy_rejects_the_later_row_with_the_first_row_number() -> None:
    b = Batcher(policy="error", max_items=1)
    batches = feed(b, [entry("a", 1), entry("a", 7)])
    assert b.collapsed == 0
    assert [e.number for x in batches for e in x.entries] == [1]
    (rej,) = b.rejects
    assert rej.row == 7 and rej.offset == 700
    assert "first seen at row 1" in rej.reason and "'a'" in rej.reason


def test_no_batch_ever_holds_a_key_twice() -> None:
    import random

    rng = random.Random(3)
    b = Batcher(policy="last")
    batches = feed(b, [entry(f"k{rng.randrange(30)}", i) for i in range(1000)])
    for x in batches:
        keys = [e.key for e in x.entries]
        assert len(keys) == len(set(keys)) <= 25
    assert sum(len(x.entries) for x in batches) + b.collapsed == 1000
