"""The low-water mark advances only over finished prefixes, with exact counters."""

from __future__ import annotations

import pytest

from loader.checkpoint import LowWaterMark
from loader.errors import ConfigError
from loader.models import Checkpoint, Counters


def test_out_of_order_completion_advances_only_over_the_finished_prefix() -> None:
    lwm = LowWaterMark(offset=10, next_row=1)
    lwm.close_segment(seq=0, end=100, next_row=26, counters=Counters(rows_read=25))
    lwm.close_segment(seq=1, end=200, next_row=52, counters=Counters(rows_read=26, rows_rejected=1))
    lwm.close_segment(seq=2, end=300, next_row=77, counters=Counters(rows_read=25))
    lwm.finish_batch(1, Counters(items_written=25))
    lwm.finish_batch(2, Counters(items_written=25))
    assert (lwm.offset, lwm.next_row, lwm.pending) == (10, 1, 3)
    lwm.finish_batch(0, Counters(items_written=24, rows_rejected=1))
    assert (lwm.offset, lwm.next_row, lwm.pending) == (300, 77, 0)
    assert lwm.counters.rows_read == 76
    assert lwm.counters.items_written == 74
    assert lwm.counters.rows_rejected == 2
    assert lwm.counters.balanced


def test_a_segment_without_a_batch_is_done_at_once() -> None:
    lwm = LowWaterMark(offset=0, next_row=1, counters=Counters(rows_read=5, items_written=5))
    lwm.close_segment(seq=None, end=50, next_row=4, counters=Counters(rows_read=3, rows_rejected=3))
    assert (lwm.offset, lwm.next_row) == (50, 4)
    assert lwm.counters.rows_read == 8 and lwm.counters.balanced


def test_an_unfinished_batch_holds_the_mark() -> None:
    lwm = LowWaterMark(offset=0, next_row=1)
    lwm.close_segment(seq=0, end=100, next_row=26, counters=Counters(rows_read=25))
    lwm.close_segment(seq=None, end=120, next_row=27, counters=Counters(rows_read=1, rows_rejected=1))
    assert lwm.offset == 0 and lwm.counters.rows_read == 0


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
