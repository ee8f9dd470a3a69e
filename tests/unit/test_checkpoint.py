"""A run's accounting: the low-water mark advances only over finished prefixes, with exact
counters; the rejects limit counts earlier runs; the checkpoint carries the mark and the pin."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from loader.checkpoint import Accounting
from loader.errors import ConfigError
from loader.models import Checkpoint, Counters
from loader.source import SourceInfo

INFO = SourceInfo(
    uri="s3://b/k.csv",
    bucket="b",
    key="k.csv",
    path=None,
    version_id="v1",
    etag='"abc"',
    size=1234,
    compression="none",
)


RESUMED = Checkpoint(
    source=INFO.uri,
    table="t",
    version_id="v1",
    etag='"abc"',
    size=1234,
    header=["pk", "a"],
    offset=10,
    next_row=1,
    counters=Counters(),
    hop=2,
    chain_id="c",
)


def resumed(**kw: Any) -> Checkpoint:
    return dataclasses.replace(RESUMED, **kw)


def books(*, resume: Checkpoint | None = None, max_rejects: int | None = None) -> Accounting:
    return Accounting(source=INFO, table="t", resume=resume, max_rejects=max_rejects)


def mark(acc: Accounting) -> tuple[int, int, int]:
    return acc.offset, acc.next_row, acc.pending


def test_out_of_order_completion_advances_only_over_the_finished_prefix() -> None:
    acc = books(resume=resumed(offset=10, next_row=1))
    acc.close_segment(0, end=100, next_row=26, rows=25, collapsed=0)
    acc.reject()
    acc.close_segment(1, end=200, next_row=52, rows=26, collapsed=0)
    acc.close_segment(2, end=300, next_row=77, rows=25, collapsed=0)
    acc.finish_batch(1, Counters(items_written=25))
    acc.finish_batch(2, Counters(items_written=25))
    assert mark(acc) == (10, 1, 3)
    acc.finish_batch(0, Counters(items_written=24, rows_rejected=1))
    assert mark(acc) == (300, 77, 0)
    assert acc.marked == Counters(rows_read=76, items_written=74, rows_rejected=2)
    # the run's own counters hold only what the accounting saw (batch outcomes are the caller's)
    assert acc.counters == Counters(rows_rejected=1)


def test_a_segment_without_a_batch_is_done_at_once() -> None:
    acc = books(resume=resumed(offset=40, next_row=6, counters=Counters(rows_read=5, items_written=5)))
    for _ in range(3):
        acc.reject()
    acc.close_segment(None, end=50, next_row=9, rows=3, collapsed=0)
    assert mark(acc) == (50, 9, 0)
    assert acc.marked == Counters(rows_read=8, items_written=5, rows_rejected=3)


def test_an_unfinished_batch_holds_the_mark() -> None:
    acc = books()
    acc.close_segment(0, end=100, next_row=26, rows=25, collapsed=0)
    acc.reject()
    acc.close_segment(None, end=120, next_row=27, rows=1, collapsed=0)
    assert mark(acc) == (0, 1, 2) and acc.marked == Counters()


@pytest.mark.parametrize(
    ("steps", "segments"),
    [
        # rows arrive in pieces (chunks, blocks) before the batch leaves; the last piece with it
        ([("rows", 10), ("rows", 14), ("close", 1, 0)], [Counters(rows_read=25)]),
        # a rejected row is counted as a row too (it joins through add_rows / close like any other)
        ([("reject",), ("rows", 3), ("close", 23, 0)], [Counters(rows_read=26, rows_rejected=1)]),
        # collapsed is the batcher's running total: each segment takes its difference
        (
            [("rows", 2), ("close", 25, 2), ("close", 27, 2), ("close", 26, 5)],
            [
                Counters(rows_read=27, duplicates_collapsed=2),
                Counters(rows_read=27),
                Counters(rows_read=26, duplicates_collapsed=3),
            ],
        ),
        # a segment's rejects stay with it
        (
            [("reject",), ("close", 26, 0), ("reject",), ("reject",), ("close", 27, 0)],
            [Counters(rows_read=26, rows_rejected=1), Counters(rows_read=27, rows_rejected=2)],
        ),
    ],
)
def test_each_segment_counts_its_own_rows_rejects_and_collapsed(
    steps: list[tuple[Any, ...]], segments: list[Counters]
) -> None:
    """Steps: ("rows", n), ("reject",), ("close", rows, the batcher's collapsed total)."""
    acc = books()
    seq = 0
    for step in steps:
        if step[0] == "rows":
            acc.add_rows(step[1])
        elif step[0] == "reject":
            acc.reject()
        else:
            before = acc.marked.copy()
            acc.close_segment(seq, end=100 * (seq + 1), next_row=seq + 2, rows=step[1], collapsed=step[2])
            acc.finish_batch(seq, Counters())
            got = acc.marked.copy()
            for name in ("rows_read", "rows_rejected", "duplicates_collapsed"):
                setattr(got, name, getattr(got, name) - getattr(before, name))
            assert got == segments[seq], step
            seq += 1
    assert seq == len(segments)
    assert acc.counters.rows_rejected == sum(s.rows_rejected for s in segments)
    assert acc.counters.duplicates_collapsed == sum(s.duplicates_collapsed for s in segments)


@pytest.mark.parametrize(
    ("limit", "earlier", "now", "over"),
    [
        (None, 50, 50, False),
        (0, 0, 0, False),
        (0, 0, 1, True),
        (0, 1, 0, True),  # a resumed load over the limit already
        (3, 1, 2, False),  # the limit itself is allowed
        (3, 1, 3, True),
        (3, 4, 0, True),
    ],
)
def test_the_rejects_limit_counts_the_rejects_of_earlier_runs(
    limit: int | None, earlier: int, now: int, over: bool
) -> None:
    base = Counters(rows_read=earlier, rows_rejected=earlier)
    acc = books(resume=resumed(offset=99, next_row=earlier + 1, counters=base), max_rejects=limit)
    for _ in range(now):
        acc.reject()
    assert acc.too_many_rejects() is over
    assert acc.rejected_total == earlier + now


@pytest.mark.parametrize(
    ("resume", "start"),
    [
        (None, (0, 1, None)),
        # a chain's first hop: a checkpoint at offset 0 starts afresh (its header is read again)
        (resumed(offset=0, next_row=1), (0, 1, None)),
        (
            resumed(offset=99, next_row=7, counters=Counters(rows_read=6, items_written=5, rows_rejected=1)),
            (99, 7, ["pk", "a"]),
        ),
    ],
)
def test_where_a_run_starts(resume: Checkpoint | None, start: tuple[int, int, list[str] | None]) -> None:
    acc = books(resume=resume)
    assert (acc.start_offset, acc.first_row, acc.header) == start
    assert (acc.offset, acc.next_row) == start[:2]
    resumed_counters = resume.counters if resume is not None and resume.offset else Counters()
    assert acc.marked == resumed_counters and acc.marked is not resumed_counters
    assert acc.counters == Counters()


def test_the_checkpoint_is_the_mark_with_the_pin_the_header_and_the_chain() -> None:
    base = Counters(rows_read=6, items_written=5, rows_rejected=1)
    acc = books(resume=resumed(offset=99, next_row=7, counters=base))
    acc.close_segment(0, end=150, next_row=9, rows=2, collapsed=0)
    acc.finish_batch(0, Counters(items_written=2, retries=1, write_units=2))
    cp = acc.checkpoint(header=["pk", "a"], complete=False)
    assert cp == Checkpoint(
        source="s3://b/k.csv",
        table="t",
        version_id="v1",
        etag='"abc"',
        size=1234,
        header=["pk", "a"],
        offset=150,
        next_row=9,
        counters=Counters(rows_read=8, items_written=7, rows_rejected=1, retries=1, write_units=2),
        complete=False,
        hop=2,
        chain_id="c",
    )
    assert Checkpoint.loads(cp.dumps()) == cp  # a checkpoint it makes passes the checks on read
    cp.counters.rows_read += 1  # the checkpoint holds a copy
    assert acc.marked.rows_read == 8
    # no header read (a resumed run does not read it again): the resumed one
    assert acc.checkpoint(header=None, complete=True).header == ["pk", "a"]
    assert acc.checkpoint(header=[], complete=True).header == ["pk", "a"]
    fresh = books().checkpoint(header=None, complete=False)
    assert (fresh.header, fresh.offset, fresh.next_row, fresh.hop, fresh.chain_id) == ([], 0, 1, 0, "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"table": "other"}, r"checkpoint is for table 'other', not 't': use the same --table"),
        ({"source": "s3://b/other.csv"}, r"checkpoint is for s3://b/other\.csv, not s3://b/k\.csv"),
    ],
)
def test_a_checkpoint_of_another_load_is_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        books(resume=dataclasses.replace(resumed(), **change))


def test_checkpoint_round_trips_and_checks_its_format() -> None:
    cp = Checkpoint(
        source="s3://b/k.csv",
        table="t",
        version_id="v1",
        etag='"abc"',
        size=1234,
        header=["pk", "a"],
        offset=99,
        next_row=7,
        counters=Counters(rows_read=6, items_written=5, rows_rejected=1),
        hop=2,
        chain_id="c",
    )
    assert Checkpoint.loads(cp.dumps()) == cp
    data = cp.to_dict()
    data["format_version"] = 99
    with pytest.raises(ConfigError, match="format_version"):
        Checkpoint.from_dict(data)
    with pytest.raises(ConfigError, match="not JSON"):
        Checkpoint.loads(b"{nope")
    del data["offset"]
    data["format_version"] = 1
    with pytest.raises(ConfigError, match="malformed"):
        Checkpoint.from_dict(data)


def test_counters_add_adds_every_field() -> None:
    import dataclasses

    from loader.models import Counters

    names = [f.name for f in dataclasses.fields(Counters)]
    a = Counters(**{n: i + 1 for i, n in enumerate(names)})
    b = Counters(**{n: 100 * (i + 1) for i, n in enumerate(names)})
    a.add(b)
    assert a.to_dict() == {n: 101 * (i + 1) for i, n in enumerate(names)}
