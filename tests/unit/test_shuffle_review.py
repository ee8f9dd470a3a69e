"""Review of ``--shuffle-window``: defects found in the window path of the pipeline, each as a test
that fails on the code as it landed, and passing guards for cases the feature's own tests do not
cover (marked "passing guard").

The harness is ``tests.unit.test_pipeline``'s (an in-memory object, in-process senders).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random

import orjson
import pytest

from loader import pipeline
from loader.config import CsvSpec
from loader.errors import ConfigError, TooManyRejectsError, WriteFailedError
from loader.models import Counters, Item, Progress, Reject
from tests.unit.test_pipeline import (
    KEYS,
    SCHEMA,
    SENDERS,
    FakeSender,
    MemoryRejects,
    MemorySource,
    Recorder,
    assert_consistent,
    config,
    csv_of,
    load,
    row,
    row_starts,
    rows,
    table_of,
)

# -- helpers -----------------------------------------------------------------------------------


class BrokenRejects(MemoryRejects):
    """A rejects sink that cannot record anything (a destination that cannot be written)."""

    def add(self, reject: Reject) -> None:
        raise ConfigError("rejects destination: cannot write /nowhere/rejects.jsonl: Permission denied")


class YieldingSender(FakeSender):
    """``FakeSender`` whose calls take a few turns of the event loop (a seeded number), so batches
    finish out of order and the producer interleaves with them (no timing involved)."""

    rnd: random.Random = random.Random(0)

    async def send(self, table: str, items: list[Item], wire: list[bytes] | None = None) -> list[Item]:
        for _ in range(self.rnd.randrange(4)):
            await asyncio.sleep(0)
        return await FakeSender.send(self, table, items, wire)


class YieldingWireSender(YieldingSender):
    encode = staticmethod(orjson.dumps)


YIELDING = {"items": YieldingSender, "wire": YieldingWireSender}


def messy_lines(count: int, seed: int) -> list[str]:
    """Rows with bad numbers (rejected) and keys repeated near and far (the last row wins)."""
    rnd = random.Random(seed)
    lines = []
    for i in range(1, count + 1):
        k = rnd.randrange(count) if rnd.random() < 0.25 else i
        bad = rnd.random() < 0.04
        lines.append(f"k{k:05d},{'xbad' if bad else i},v{i}")
    return lines


def expected(lines: list[str]) -> tuple[dict[str, str], list[int]]:
    """The table a ``last`` load leaves, and the rows it rejects."""
    table: dict[str, str] = {}
    rejected = []
    for number, line in enumerate(lines, start=1):
        pk, n, v = line.split(",")
        if not n.isdigit():
            rejected.append(number)
            continue
        table[pk] = v
    return table, rejected


# -- defects -----------------------------------------------------------------------------------


async def test_a_rejects_sink_failure_while_the_last_window_is_cut_carries_the_result_and_a_checkpoint() -> (
    None
):
    """DEFECT: ``go()`` cuts the last window (``_send_window`` at the end of the data or at a stop)
    outside the read loop's ``try``. With ``on_duplicate error`` the batcher finds a duplicate
    there and records it; when the rejects sink raises (a destination that cannot be written), the
    error escapes ``run`` raw: no ``.result``, no final checkpoint handed to ``on_checkpoint``,
    the writer not drained and the stop watcher left running. ``run`` promises that a ConfigError
    carries ``.result`` after the final checkpoint was handed on (as it does without a window: the
    same object and sink give a result and a checkpoint)."""
    data = csv_of(rows(30, r6=row(6, pk="k002")))  # row 6 repeats row 2's key
    rejects = BrokenRejects()
    recorder = Recorder(rejects)
    with pytest.raises(ConfigError, match="cannot write") as info:
        await pipeline.run(
            source=MemorySource(data),
            config=config(shuffle_window=1000, on_duplicate="error"),
            csv_spec=CsvSpec(),
            schema=SCHEMA,
            keys=KEYS,
            sender=FakeSender(),
            rejects=rejects,
            on_checkpoint=recorder,
        )
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in leftover:  # do not leak them into the next test
        task.cancel()
    assert info.value.result is not None, "the error carries no RunResult"
    assert recorder.seen, "no final checkpoint was handed to on_checkpoint"
    assert recorder.seen[-1][0] == info.value.result.checkpoint
    assert leftover == [], f"tasks left running after run() raised: {leftover}"


async def test_progress_is_reported_while_a_windows_batches_are_written() -> None:
    """DEFECT (reporting): ``on_progress`` (the CLI's progress bar, the Lambda's last progress) and
    the periodic checkpoint are only reached from ``_checkpoint_or_stop``, which the window path
    calls once per window (and per chunk), never between the submits of ``_send_window``. A load
    spends nearly all its time in those submits (waiting for the writer), so with a large window
    the progress stands still for a whole window's writes; and the last window, sent by ``go()``,
    reports nothing at all. Without a window, progress comes after every batch. Here: 400
    batches in two windows, progress must come at least once per 40 calls."""
    lines = rows(10_000)
    data = csv_of(lines)
    sender = FakeSender()
    calls_at_report: list[int] = []

    def on_progress(_: Progress) -> None:
        calls_at_report.append(len(sender.calls))

    result = await pipeline.run(
        source=MemorySource(data),
        config=config(shuffle_window=5000, concurrency=4),
        csv_spec=CsvSpec(),
        schema=SCHEMA,
        keys=KEYS,
        sender=sender,
        rejects=MemoryRejects(),
        on_progress=on_progress,
    )
    assert result.complete and len(sender.calls) == 400
    marks = [0, *calls_at_report, len(sender.calls)]
    longest = max(b - a for a, b in itertools.pairwise(marks))
    assert longest <= 40, f"{longest} BatchWriteItem calls went by without a progress report"


@pytest.mark.parametrize("window", [1, 10, 26])
async def test_a_small_window_does_not_shrink_every_batch(window: int) -> None:
    """DEFECT (cost): every window is flushed as its own batches (the open batch never carries over
    to the next window), so a window of fewer than 25 rows makes every BatchWriteItem carry fewer
    than 25 items (``--shuffle-window 1``, which shuffles nothing, makes 25 times the calls) and a
    window of 26 makes a 1-item call for every 25-item one. The option is accepted from 1; either
    refuse windows too small to fill a batch, or keep batches full. Fixed: a window is at least
    1,000 rows (40 batches of 25), so a part-filled batch ends a window at most every 40 calls."""
    with pytest.raises(ConfigError, match=r"must be 0 \(off\) or in 1000\.\.1000000 rows"):
        config(shuffle_window=window)
    sender = FakeSender()
    result, _, _ = await load(csv_of(rows(2500)), sender=sender, cfg=config(shuffle_window=1001))
    assert result.complete and len(table_of(sender)) == 2500
    assert len(sender.calls) <= math.ceil(2500 / 25) + 3, [len(c) for c in sender.calls][:12]


# -- passing guards ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", YIELDING)
@pytest.mark.parametrize("window", [1000, 1025, 1026, 1512, 1513])
@pytest.mark.parametrize("stop_after", [0, 3, 17, 40, 90])
async def test_guard_stops_anywhere_with_rejects_and_repeats_then_a_resume_with_another_window_is_exact(
    kind: str, window: int, stop_after: int
) -> None:
    """Passing guard: windows at the batch and block sizes (1000, +25, +26, +512, +513) over rows with
    rejects and repeated keys, batches finishing out of order, stopped after any number of calls
    (the stop polled by the timer as well), then resumed with a different window: every checkpoint
    counts exactly the rows below it, no reject below the mark is recorded again, the last row of
    each key wins."""
    lines = messy_lines(5000, seed=window * 100 + stop_after)
    data = csv_of(lines)
    source = MemorySource(data)
    cls = YIELDING[kind]
    cls.rnd = random.Random(window + stop_after)
    cfg = config(
        shuffle_window=window, concurrency=5, chunk_bytes=4096, checkpoint_interval_s=0, stop_poll_s=1e-6
    )
    first = cls()
    one, _, rec1 = await load(
        source, sender=first, cfg=cfg, should_stop=lambda _p: len(first.calls) >= stop_after
    )
    assert_consistent(rec1, data)
    cp = one.checkpoint
    table, rejected = expected(lines)
    second = cls(landed=dict(first.landed))
    other = config(shuffle_window=1700, concurrency=3, checkpoint_interval_s=0)
    two, rejects2, rec2 = await load(source, sender=second, cfg=other, resume=cp)
    assert_consistent(rec2, data, resume=cp)
    assert two.complete
    c = two.checkpoint.counters
    assert c.rows_read == len(lines) and c.rows_rejected == len(rejected) and c.balanced
    assert sorted(r.row for r in rejects2.items) == [r for r in rejected if r >= cp.next_row]
    assert table_of(second) == table


@pytest.mark.parametrize("kind", SENDERS)
async def test_guard_a_key_throttled_in_one_window_is_not_overtaken_by_its_later_rows(kind: str) -> None:
    """Passing guard for the writer's per-key order under a shuffle: key ``hot`` has 100 rows in the
    first window (so it lands in several of its batches) and one in the second; the first call
    holding it is throttled and backs off. Its later batches (same window and next window) wait
    for it, so its last row wins."""
    lines = [f"hot,{i},v{i}" if i % 2 else row(i) for i in range(1, 1001)]
    lines += [row(i) for i in range(1001, 1990)] + ["hot,1990,final"]
    sender = SENDERS[kind](throttle_once={"hot"})
    result, _, _ = await load(csv_of(lines), sender=sender, cfg=config(shuffle_window=1000, concurrency=40))
    assert result.complete
    assert sum("hot" in call for call in sender.calls) >= 3  # throttled once, then in several batches
    assert table_of(sender)["hot"] == "final"
    c = result.checkpoint.counters
    assert c.rows_read == 1990 and c.balanced and c.throttle_events == 1


@pytest.mark.parametrize("kind", SENDERS)
async def test_guard_a_failed_batch_mid_window_keeps_the_mark_at_the_windows_start(kind: str) -> None:
    """Passing guard: a batch of the third window keeps failing: the run raises WriteFailedError,
    its checkpoint stops at the end of the second window (never inside the third, whatever else of
    it was written), counts exactly those rows, and a resume finishes exactly."""
    lines = rows(2700, r150=row(150, n="bad"), r1450=row(1450, n="bad"))  # rejects in windows 1 and 2
    data = csv_of(lines)
    starts = row_starts(data)
    source = MemorySource(data)
    first = SENDERS[kind](failing={"k2100"})
    cfg = config(shuffle_window=1000, concurrency=8, max_attempts=2)
    with pytest.raises(WriteFailedError) as info:
        await load(source, sender=first, cfg=cfg)
    cp = info.value.result.checkpoint
    # windows hold 1000 typed rows: rows 1..1001 (row 150 rejected), 1002..2002 (1450), then 2003..
    assert cp.next_row in (1, 1002, 2003) and cp.offset == starts[cp.next_row]
    rejected = sum(r < cp.next_row for r in (150, 1450))
    below = cp.next_row - 1
    assert cp.counters == Counters(
        rows_read=below, items_written=below - rejected, rows_rejected=rejected, write_units=below - rejected
    )
    assert {f"k{i:03d}" for i in range(1, cp.next_row) if i not in (150, 1450)} <= set(first.landed)
    second = SENDERS[kind](landed=dict(first.landed))
    two, rejects2, _ = await load(source, sender=second, cfg=cfg, resume=cp)
    assert two.complete and sorted(r.row for r in rejects2.items) == [
        r for r in (150, 1450) if r >= cp.next_row
    ]
    assert two.checkpoint.counters == Counters(
        rows_read=2700, items_written=2698, rows_rejected=2, write_units=2698
    )
    assert table_of(second) == {f"k{i:03d}": f"v{i:03d}" for i in range(1, 2701) if i not in (150, 1450)}


async def test_guard_max_rejects_reached_mid_window_fails_with_an_exact_checkpoint() -> None:
    """Passing guard: the limit is passed inside a window; the run fails with TooManyRejectsError
    and its checkpoint counts exactly the rows below it (rejects included only there)."""
    bad = {f"r{i}": row(i, n="bad") for i in range(1400, 1420)}
    lines = rows(3000, **bad)
    data = csv_of(lines)
    with pytest.raises(TooManyRejectsError) as info:
        await load(data, sender=FakeSender(), cfg=config(shuffle_window=1000, max_rejects=5))
    cp = info.value.result.checkpoint
    assert cp.counters.rows_read == cp.next_row - 1 and cp.counters.balanced
    assert cp.offset == row_starts(data)[cp.next_row]
    assert cp.counters.rows_rejected == sum(1400 <= r < 1420 for r in range(1, cp.next_row))


@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("window", [1000, 5000])
async def test_guard_a_header_only_object_with_a_window_is_complete(kind: str, window: int) -> None:
    """Passing guard: no data rows, with a window: complete at the object's end, nothing sent."""
    data = csv_of([])
    sender = SENDERS[kind]()
    result, _, _ = await load(data, sender=sender, cfg=config(shuffle_window=window))
    assert result.complete and sender.calls == [] and result.counters == Counters()
    assert (result.checkpoint.offset, result.checkpoint.next_row) == (len(data), 1)
