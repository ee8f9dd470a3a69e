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


# -- add_block: a block of distinct keys at once, exactly as add() one by one --------------------


def _state(b: Batcher) -> tuple[list[tuple[str, ...]], int, int, dict[tuple[str, ...], int] | None]:
    return list(b._open), b._nbytes, b._seq, b._seen


@pytest.mark.parametrize("policy", ["last", "first", "error"])
@pytest.mark.parametrize("seed", range(20))
def test_add_block_is_add_one_by_one(seed: int, policy: str) -> None:
    import random

    rnd = random.Random(seed)
    head = [entry(f"h{i}", i, size=rnd.randint(1, 500)) for i in range(rnd.randint(0, 30))]
    block = [entry(f"b{i}", 100 + i, size=rnd.randint(1, 500)) for i in range(rnd.randint(1, 120))]
    stop_after = rnd.randint(0, 6)  # batches the caller takes before it stops consuming

    one, many = Batcher(policy=policy), Batcher(policy=policy)  # type: ignore[arg-type]
    assert feed_only(one, head) == feed_only(many, head)
    expected: list[tuple[int, list[int]]] = []
    for j, e in enumerate(block):
        batch = one.add(e)
        if batch is not None:
            expected.append((j, [x.number for x in batch.entries]))
            if len(expected) > stop_after:
                break
    keys, sizes = [e.key for e in block], [e.size for e in block]
    assert many.takes_whole(keys, sizes)
    got: list[tuple[int, list[int]]] = []
    for j, batch in many.add_block(block, keys, sizes):
        got.append((j, [x.number for x in batch.entries]))
        if len(got) > stop_after:
            break
    assert got == expected
    assert _state(many) == _state(one)
    assert many.collapsed == one.collapsed == 0


def feed_only(b: Batcher, entries: list[Entry]) -> list[list[int]]:
    return [[e.number for e in x.entries] for x in (b.add(e) for e in entries) if x is not None]


def test_takes_whole_declines_repeated_seen_or_large_entries() -> None:
    b = Batcher()
    b.add(entry("a", 1))
    assert not b.takes_whole([("x",), ("x",)], [10, 10])  # repeated inside the block
    assert not b.takes_whole([("a",), ("y",)], [10, 10])  # in the open batch
    assert b.takes_whole([("x",), ("y",)], [10, 10])
    assert not b.takes_whole([("x",)], [400 * 1024])  # 25 such items could pass the request limit
    first = Batcher(policy="first")
    for e in [entry(f"k{i}", i) for i in range(30)]:
        first.add(e)
    assert not first.takes_whole([("k0",)], [10])  # seen in an earlier batch
    assert first.takes_whole([("new",)], [10])


def test_request_bytes_total_is_the_sum_of_estimates() -> None:
    from loader.batching import request_bytes_total

    sizes = [0, 1, 77, 4096, 400 * 1024]
    assert request_bytes_total(sizes) == sum(map(request_bytes_estimate, sizes))
