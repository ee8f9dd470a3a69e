"""``--shuffle-window``: rows written in a random order within a window, each key's rows in file
order, the checkpoint exact at window boundaries.

The pipeline runs over an in-memory object with the in-process senders of ``test_pipeline`` (one
that takes items, one that takes wire bytes and types clean blocks of rows at once), at the
product's defaults (concurrency 40, 1 MB chunks) on objects of 60,000 rows sorted by partition
key, the input the option is for.
"""

from __future__ import annotations

import random

import pytest

from loader.config import LoadConfig
from loader.errors import ConfigError
from loader.models import Counters, Entry, Progress, StopReason
from loader.shuffle import MAX_SHUFFLE_WINDOW, MIN_SHUFFLE_WINDOW, shuffled
from loader.spec import LoadSpec
from tests.unit.test_pipeline import (
    SENDERS,
    FakeSender,
    MemorySource,
    assert_consistent,
    config,
    csv_of,
    load,
    row_starts,
    table_of,
)

ROWS = 60_000
PER_KEY = 100  # rows a partition key: the object is sorted by it


def sorted_lines(count: int = ROWS, *, bad_every: int = 0, repeat_every: int = 0) -> list[str]:
    """Rows ``p0000#s000,...`` sorted by the partition key's prefix (``pk`` here is the whole key:
    ``PER_KEY`` consecutive rows share the prefix that ``prefix_of`` names). Every ``bad_every``-th
    row has a bad number; every ``repeat_every``-th repeats the key of the row 3 before it (its
    value must win, as it comes later in the file)."""
    lines = []
    for i in range(1, count + 1):
        key = f"p{(i - 1) // PER_KEY:04d}#s{(i - 1) % PER_KEY:03d}"
        if repeat_every and i % repeat_every == 0:
            key = f"p{(i - 4) // PER_KEY:04d}#s{(i - 4) % PER_KEY:03d}"
        number = "xbad" if bad_every and i % bad_every == 0 else str(i)
        lines.append(f"{key},{number},v{i}")
    return lines


def expected_table(lines: list[str]) -> dict[str, str]:
    """What lands: the last valid row of each key."""
    table: dict[str, str] = {}
    for line in lines:
        pk, n, v = line.split(",")
        if n.isdigit():
            table[pk] = v
    return table


def prefix_of(pk: str) -> str:
    return pk.partition("#")[0]


# -- shuffled ----------------------------------------------------------------------------------


def _entries(keys: list[str]) -> list[Entry]:
    return [Entry(None, (k,), 10, n, n * 10, f"{k},{n}", b"{}") for n, k in enumerate(keys, start=1)]


def test_shuffled_is_a_permutation_that_keeps_each_keys_rows_in_order() -> None:
    rng = random.Random(7)
    keys = [f"k{rng.randrange(300)}" for _ in range(5000)]  # most keys repeat
    entries = _entries(keys)
    out = shuffled(entries, rng)
    assert sorted(e.number for e in out) == list(range(1, 5001))
    by_key: dict[str, list[int]] = {}
    for e in out:
        by_key.setdefault(e.key[0], []).append(e.number)
    assert all(numbers == sorted(numbers) for numbers in by_key.values())
    assert [e.number for e in out] != list(range(1, 5001))  # and it did move rows


def test_shuffled_spreads_sorted_keys_over_the_first_batches() -> None:
    """The point of it: 40 batches of 25 from a window of sorted input hold keys of many prefixes
    (partitions), where file order gives 10 (1,000 rows at 100 a prefix)."""
    lines = sorted_lines(20_000)
    entries = _entries([line.split(",")[0] for line in lines])
    first = shuffled(entries, random.Random(1))[:1000]
    assert len({prefix_of(e.key[0]) for e in entries[:1000]}) == 10
    assert len({prefix_of(e.key[0]) for e in first}) > 150  # of 200 prefixes in the window


# -- a run with a window -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("window", [1000, 1013, 25_000, ROWS * 2])
async def test_a_run_with_a_window_writes_every_row_once_and_the_checkpoints_are_exact(
    kind: str, window: int
) -> None:
    lines = sorted_lines(bad_every=997, repeat_every=1009)
    data = csv_of(lines)
    sender = SENDERS[kind]()
    result, rejects, recorder = await load(data, sender=sender, cfg=config(shuffle_window=window))
    assert result.stopped is StopReason.COMPLETE
    c = result.counters
    bad = ROWS // 997
    assert c.rows_read == ROWS and c.rows_rejected == bad and c.balanced
    assert c.items_written + c.duplicates_collapsed == ROWS - bad
    assert table_of(sender) == expected_table(lines)
    assert sorted(r.row for r in rejects.items) == [i for i in range(1, ROWS + 1) if i % 997 == 0]
    starts = row_starts(data)
    assert all(r.offset == starts[r.row] for r in rejects.items)
    assert result.checkpoint.counters == c and result.checkpoint.offset == len(data)
    assert_consistent(recorder, data)
    calls = sender.calls
    assert all(len(call) <= 25 and len(set(call)) == len(call) for call in calls)
    # calls hold keys from across the window, not 25 neighbours of one prefix
    spread = [len({prefix_of(k) for k in call}) for call in calls[:40]]
    assert min(spread) >= 5, spread
    # a window ends with at most one part-filled batch (and rejects or repeats make a few short)
    windows = -(-ROWS // window)
    assert len(calls) <= -(-ROWS // 25) + windows + bad + 60


@pytest.mark.parametrize("policy", ["first", "error"])
async def test_first_and_error_see_a_keys_rows_in_file_order_through_the_window(policy: str) -> None:
    lines = sorted_lines(20_000, repeat_every=101)
    data = csv_of(lines)
    sender = SENDERS["wire"]()
    result, rejects, _ = await load(data, sender=sender, cfg=config(shuffle_window=5000, on_duplicate=policy))
    repeats = [i for i in range(1, 20_001) if i % 101 == 0]
    firsts: dict[str, str] = {}
    for line in lines:
        pk, _, v = line.split(",")
        firsts.setdefault(pk, v)
    assert table_of(sender) == firsts  # the earlier row of each key, as without a window
    if policy == "first":
        assert result.counters.duplicates_collapsed == len(repeats) and not rejects.items
    else:
        assert sorted(r.row for r in rejects.items) == repeats
        assert all(r.reason.startswith("duplicate key") for r in rejects.items)


class StopAfter:
    """``should_stop``: True once ``calls`` BatchWriteItem calls were made."""

    def __init__(self, sender: FakeSender, calls: int) -> None:
        self.sender, self.calls = sender, calls

    def __call__(self, _: Progress) -> bool:
        return len(self.sender.calls) >= self.calls


@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("calls", [1, 150, 700, 1500])
async def test_a_stop_then_a_resume_with_a_window_is_exact_and_the_mark_is_a_window_boundary(
    kind: str, calls: int
) -> None:
    window = 7000  # 280 batches a window; 2,400 in the object
    lines = sorted_lines()
    data = csv_of(lines)
    starts = row_starts(data)
    source = MemorySource(data)
    cfg = config(shuffle_window=window, concurrency=40)
    first = SENDERS[kind]()
    one, _, rec1 = await load(source, sender=first, cfg=cfg, should_stop=StopAfter(first, calls))
    assert one.stopped is StopReason.STOPPED
    cp = one.checkpoint
    # the mark only passes whole windows (clean rows: a window is `window` rows)
    assert (cp.next_row - 1) % window == 0
    assert cp.offset == (starts[cp.next_row] if cp.next_row > 1 else 0)  # no window done: the start
    assert cp.counters == Counters(
        rows_read=cp.next_row - 1, items_written=cp.next_row - 1, write_units=cp.next_row - 1
    )
    written = {k for call in first.calls for k in call}
    below = {line.split(",")[0] for line in lines[: cp.next_row - 1]}
    assert below <= written  # every row below the mark was written
    assert_consistent(rec1, data)

    second = SENDERS[kind](landed=first.landed)
    two, _, rec2 = await load(source, sender=second, cfg=cfg, resume=cp)
    assert two.complete and source.opened == [0, cp.offset]
    assert two.checkpoint.counters == Counters(rows_read=ROWS, items_written=ROWS, write_units=ROWS)
    assert two.counters.rows_read == ROWS - (cp.next_row - 1)
    assert table_of(second) == expected_table(lines)
    assert_consistent(rec2, data, resume=cp)


async def test_checkpoints_taken_while_windows_are_in_flight_count_only_whole_windows() -> None:
    lines = sorted_lines()
    data = csv_of(lines)
    _, _, recorder = await load(
        data, sender=SENDERS["wire"](), cfg=config(shuffle_window=3000, checkpoint_interval_s=0)
    )
    marks = [cp.next_row - 1 for cp, _ in recorder.seen]
    assert len(set(marks)) > 10  # the mark moved window by window...
    assert all(m % 3000 == 0 for m in marks)  # ...and only ever to a window's end


# -- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1, 25, MIN_SHUFFLE_WINDOW - 1, MAX_SHUFFLE_WINDOW + 1])
def test_a_window_out_of_range_is_a_config_error(bad: int) -> None:
    """A window under 1,000 rows cannot spread 40 batches in flight, and ends every few batches
    with a part-filled one: refused, as is one over the memory bound."""
    with pytest.raises(ConfigError, match=r"^--shuffle-window must be 0 \(off\) or in 1000\.\.1000000 rows"):
        LoadConfig(table="t", shuffle_window=bad)


@pytest.mark.parametrize("bad", [True, 2.5, "1000"])
def test_a_window_that_is_not_an_integer_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^--shuffle-window must be an integer \(rows\)"):
        LoadConfig(table="t", shuffle_window=bad)  # type: ignore[arg-type]


def test_the_window_is_kept_in_the_pinned_spec_and_may_change_on_resume() -> None:
    spec = LoadSpec(source="/data/x.csv", table="t", shuffle_window=5000)
    again = LoadSpec.from_dict(spec.to_dict())
    assert again.shuffle_window == 5000 and again.config().shuffle_window == 5000
    assert (
        LoadSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "shuffle_window"}).shuffle_window
        == 0
    )
    other = LoadSpec(source="/data/x.csv", table="t", shuffle_window=0)
    assert spec.differences(other) == []  # not data-affecting: a resume may turn it off or on
    with pytest.raises(ConfigError, match="'shuffle_window' must be an integer"):
        LoadSpec.from_dict({**spec.to_dict(), "shuffle_window": "5000"})
