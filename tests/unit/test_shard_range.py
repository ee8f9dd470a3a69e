"""A shard is a load spec with a byte range: the spec's checks and round trip, the checkpoint's range,
the renumbering of shard rows, and shards of a local object run dry through ``spec.run`` adding up
to the whole object exactly (rows, counters, rejects), ending loudly where a split is wrong."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import itertools
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader import spec as load_spec
from loader.checkpoint import Accounting
from loader.config import CsvSpec, SchemaSpec
from loader.errors import ConfigError, SourceError
from loader.models import Checkpoint, Counters, KeySchema, Progress, Reject, RunResult
from loader.source import SourceInfo, iter_chunks, open_source
from loader.spec import LoadSpec, RunKnobs, renumber, row_bases

HEADER = ["pk", "n", "s", "note"]
KEYS = KeySchema(partition="pk", partition_type="S")
SCHEMA = SchemaSpec(columns={"n": "N"})


# -- a realistic object, and its record boundaries as Python's csv module sees them ----------------


def make_object(rows: int, *, newline: str = "\n", seed: int = 14, terminated: bool = True) -> bytes:
    """``rows`` data records under a header: quoted fields with commas, quotes and embedded newlines,
    non-ASCII text, blank lines, numbers that do not parse (rejected), records that are not valid CSV
    (rejected), and keys repeated on the next record (collapsed, last wins)."""
    rnd = random.Random(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(HEADER)
    i = 0
    while i < rows:
        pk = f"k{i:07d}"
        if i % 1231 == 17:
            buf.write(f'{pk},"1"tail,s,x{newline}')  # not valid CSV: text after a closing quote
        elif i % 997 == 5:
            w.writerow([pk, f"x{i}", "bad number", ""])
        elif i % 50 == 3:
            w.writerow([pk, str(i), f'two\nlines, "quoted" ü {i}', f"a{newline}b"])
        else:
            w.writerow([pk, str(i * 3 - 7), "".join(rnd.choices("abcdef ü,", k=12)), ""])
        if i % 433 == 11 and i + 1 < rows:  # the same key again on the next record: collapsed
            i += 1
            w.writerow([pk, str(-i), "again", ""])
        if i % 2000 == 1999:
            buf.write(newline)  # a blank line is not a record
        i += 1
    data = buf.getvalue().encode()
    return data if terminated else data[: -len(newline)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """Where the records of an object are: the header's end, every data record's start and end
    (the Nth data record is row N), and ends that must not be a shard boundary in these tests (a
    boundary between a key and its repeat turns a collapse into a second write)."""

    header_end: int
    starts: list[int]
    ends: list[int]
    no_cut: frozenset[int]


def layout(data: bytes) -> Layout:
    """The records of ``data`` as Python's csv module reads them (strict, as the loader does)."""
    pos = 0

    def lines() -> Iterator[str]:
        nonlocal pos
        for m in re.finditer(rb"[^\n]*\n|[^\n]+$", data):
            pos = m.end()  # the line is consumed as csv pulls it: after a row, pos is its end
            yield m.group().decode()

    source = lines()
    starts: list[int] = []
    ends: list[int] = []
    keys: list[str | None] = []
    header_end = -1
    while True:
        before = pos
        reader = csv.reader(source, strict=True)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            row = None  # one line, rejected; a new reader goes on with the next line
        if row == []:
            continue
        if header_end < 0:
            header_end = pos
            continue
        starts.append(before)
        ends.append(pos)
        keys.append(row[0] if row else None)
    no_cut = frozenset(
        ends[i] for i in range(len(keys) - 1) if keys[i] is not None and keys[i] == keys[i + 1]
    )
    return Layout(header_end=header_end, starts=starts, ends=ends, no_cut=no_cut)


def plan(data: bytes, lay: Layout, n: int, *, first_at_header: bool = False) -> list[tuple[int, int]]:
    """``n`` byte ranges at record boundaries tiling the object (the first from byte 0, or from
    the header's end), each ending where the next starts, the last at the object's size."""
    size = len(data)
    cuts: list[int] = []
    candidates = [e for e in lay.ends[:-1] if e not in lay.no_cut]
    j = 0
    for k in range(1, n):
        target = size * k // n
        while candidates[j] < target or (cuts and candidates[j] <= cuts[-1]):
            j += 1
        cuts.append(candidates[j])
    bounds = [lay.header_end if first_at_header else 0, *cuts, size]
    return list(itertools.pairwise(bounds))


# -- the spec ------------------------------------------------------------------------------------


def shard(**kw: Any) -> LoadSpec:
    base: dict[str, Any] = {"source": "s3://b/k.csv", "table": "t", "schema": SCHEMA}
    return LoadSpec(**{**base, **kw})


def test_a_shard_spec_round_trips_and_a_whole_object_spec_reads_as_before() -> None:
    spec = shard(byte_range=(120, 4567), header_names=("pk", "n"), version_id="v1")
    data = spec.to_dict()
    assert data["byte_range"] == [120, 4567] and data["header_names"] == ["pk", "n"]
    assert LoadSpec.from_dict(data) == spec
    assert LoadSpec.loads(spec.dumps()) == spec
    whole = shard()
    assert (whole.to_dict()["byte_range"], whole.to_dict()["header_names"]) == (None, None)
    old = {k: v for k, v in whole.to_dict().items() if k not in ("byte_range", "header_names")}
    assert LoadSpec.from_dict(old) == whole  # a spec pinned before shards: the whole object
    assert {"byte_range", "header_names"} <= set(load_spec.DATA_FIELDS)
    assert spec.differences(dataclasses.replace(spec, byte_range=(120, 4568))) == [
        "byte_range: [120,4567] pinned, [120,4568] given"
    ]
    assert spec.differences(dataclasses.replace(whole, version_id="v1")) == [
        "byte_range: [120,4567] pinned, null given",
        'header_names: ["pk","n"] pinned, null given',
    ]
    # a shard from byte 0 may read its header itself; one of an object without a header needs none
    assert shard(byte_range=(0, 10)).byte_range == (0, 10)
    no_header = CsvSpec(header=False, columns=("pk", "n"))
    assert shard(byte_range=(5, 10), csv=no_header).header_names is None
    assert shard(byte_range=(7, 7), header_names=("pk",)).byte_range == (7, 7)  # an empty shard


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"byte_range": [1, 2, 3]}, "byte_range must be \\[start, end\\], two integers"),
        ({"byte_range": [1.0, 2]}, "two integers"),
        ({"byte_range": [True, 2]}, "two integers"),
        ({"byte_range": ["0", "2"]}, "two integers"),
        ({"byte_range": "0-2"}, "'byte_range' must be \\[start, end\\]"),
        ({"byte_range": [-1, 2]}, "needs 0 <= start <= end"),
        ({"byte_range": [9, 2]}, "needs 0 <= start <= end"),
        (
            {"byte_range": [0, 9], "source": "s3://b/k.csv.gz"},
            "gzip-compressed object cannot be split by bytes",
        ),
        ({"byte_range": [0, 9], "source": "/data/k.csv.zst"}, "zstd-compressed object cannot be split"),
        ({"byte_range": [0, 9], "csv": {"compression": "bz2"}}, "bz2-compressed object cannot be split"),
        ({"byte_range": [0, 9], "source": "s3://b/prefix/"}, "a prefix"),
        ({"byte_range": [5, 9]}, "starts at byte 5, past the header row it cannot read: give header_names"),
        ({"header_names": ["pk"]}, "header_names is the header of a shard: it goes with byte_range"),
        ({"byte_range": [5, 9], "header_names": []}, "header_names must be the header row's column names"),
        ({"byte_range": [5, 9], "header_names": ["pk", ""]}, "header_names must be"),
        ({"byte_range": [5, 9], "header_names": "pk,n"}, "'header_names' must be a list"),
        (
            {"byte_range": [5, 9], "header_names": ["pk"], "csv": {"header": False, "columns": ["pk"]}},
            "header_names is for an object with a header row",
        ),
    ],
)
def test_a_bad_range_is_refused_in_one_line(changes: dict[str, Any], message: str) -> None:
    data = {**shard().to_dict(), **changes}
    with pytest.raises(ConfigError, match=message) as info:
        LoadSpec.from_dict(data)
    assert "\n" not in str(info.value)


# -- the checkpoint --------------------------------------------------------------------------------

INFO = SourceInfo(
    uri="s3://b/k.csv",
    bucket="b",
    key="k.csv",
    path=None,
    version_id="v1",
    etag='"e"',
    size=10_000,
    compression="none",
)


def checkpoint(**kw: Any) -> Checkpoint:
    base = Checkpoint(
        source=INFO.uri,
        table="t",
        version_id="v1",
        etag='"e"',
        size=10_000,
        header=["pk", "n"],
        offset=3_000,
        next_row=41,
        counters=Counters(rows_read=40, items_written=40),
        byte_range=(2_000, 5_000),
    )
    return dataclasses.replace(base, **kw)


def test_a_shard_checkpoint_carries_its_range_and_a_whole_object_one_keeps_its_shape() -> None:
    cp = checkpoint()
    assert cp.to_dict()["byte_range"] == [2_000, 5_000]
    assert Checkpoint.loads(cp.dumps()) == cp
    whole = checkpoint(byte_range=None)
    assert "byte_range" not in whole.to_dict()
    assert Checkpoint.loads(whole.dumps()) == whole
    for bad, message in [
        ([1, 2, 3], "byte_range"),
        ([5, 1], "byte_range"),
        ("2000-5000", "byte_range"),
        ([2_000, 2_500], "offset 3000 is outside its byte range \\[2000, 2500\\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Checkpoint.from_dict({**cp.to_dict(), "byte_range": bad})


def test_a_resume_must_be_a_checkpoint_of_the_same_range() -> None:
    ranged = dataclasses.replace(INFO, byte_range=(2_000, 5_000))
    acc = Accounting(source=ranged, table="t", resume=checkpoint())
    assert (acc.start_offset, acc.first_row, acc.header) == (3_000, 41, ["pk", "n"])
    fresh = Accounting(source=ranged, table="t", header=["pk", "n"])
    assert (fresh.start_offset, fresh.first_row, fresh.header) == (2_000, 1, ["pk", "n"])
    assert fresh.checkpoint(header=None, complete=False).byte_range == (2_000, 5_000)
    refusals = [
        # the shard before this one, complete: its offset is this shard's start
        (checkpoint(byte_range=(0, 2_000), offset=2_000, complete=True), "of byte range \\[0, 2000\\)"),
        (checkpoint(byte_range=None), "of the whole object, not of byte range \\[2000, 5000\\)"),
        (checkpoint(offset=6_000), "offset 6000 is outside its byte range"),
    ]
    for resume, message in refusals:
        with pytest.raises(ConfigError, match=message):
            Accounting(source=ranged, table="t", resume=resume)
    with pytest.raises(ConfigError, match="of byte range \\[2000, 5000\\), not of the whole object"):
        Accounting(source=INFO, table="t", resume=checkpoint())


# -- renumbering -----------------------------------------------------------------------------------


def test_rows_of_shards_renumber_to_the_objects() -> None:
    bases = row_bases([((700, 900), 5), ((12, 300), 10), ((300, 700), 0)])
    assert bases == {12: 0, 300: 10, 700: 10}
    rej = Reject(row=3, offset=750, raw="x", reason="r", shard_start=700)
    assert renumber(rej, bases) == Reject(row=13, offset=750, raw="x", reason="r")
    whole = Reject(row=3, offset=750, raw="x", reason="r")
    assert renumber(whole, bases) is whole
    with pytest.raises(ValueError, match="no shard starts at byte 5"):
        renumber(dataclasses.replace(rej, shard_start=5), bases)
    with pytest.raises(ValueError, match="a gap at bytes 300-310"):
        row_bases([((0, 300), 1), ((310, 400), 1)])
    with pytest.raises(ValueError, match="an overlap at bytes 300-290"):
        row_bases([((0, 300), 1), ((290, 400), 1)])
    assert orjson.loads(rej.to_json()) == {
        "row": 3,
        "offset": 750,
        "raw": "x",
        "reason": "r",
        "shard_start": 700,
    }
    assert "shard_start" not in orjson.loads(whole.to_json())


# -- shards of a local object, run dry through spec.run ------------------------------------------


def run_dry(
    spec: LoadSpec,
    *,
    run_id: str,
    resume: Checkpoint | None = None,
    should_stop: Callable[[Progress], bool] | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> RunResult:
    async def save(cp: Checkpoint) -> None:
        if on_checkpoint is not None:
            on_checkpoint(cp)

    return asyncio.run(
        load_spec.run(
            spec,
            keys=KEYS,
            sender=None,
            run_id=run_id,
            s3_client=None,
            knobs=RunKnobs(dry_run=True, chunk_bytes=4096),
            should_stop=should_stop,
            resume=resume,
            on_checkpoint=save,
        )
    )


def rejects_of(directory: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    pattern = f"{run_id}.jsonl" if run_id else "*.jsonl"
    return [
        orjson.loads(line) for f in sorted(directory.glob(pattern)) for line in f.read_bytes().splitlines()
    ]


def totals(results: Sequence[RunResult]) -> tuple[int, int, int, int]:
    c = [r.counters for r in results]
    return (
        sum(x.rows_read for x in c),
        sum(x.items_written for x in c),
        sum(x.rows_rejected for x in c),
        sum(x.duplicates_collapsed for x in c),
    )


@pytest.mark.parametrize(("newline", "terminated"), [("\n", True), ("\r\n", False)])
def test_shards_of_a_local_object_add_up_to_the_whole_object(
    tmp_path: Path, newline: str, terminated: bool
) -> None:
    data = make_object(4_000, newline=newline, terminated=terminated)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    lay = layout(data)
    whole_spec = LoadSpec(source=str(path), table="t", schema=SCHEMA, rejects=str(tmp_path / "whole"))
    whole = run_dry(whole_spec, run_id="whole")
    expected = rejects_of(tmp_path / "whole")
    assert whole.complete and whole.counters.rows_read == len(lay.ends) == 4_000
    assert whole.counters.rows_rejected == len(expected) > 5 and whole.counters.duplicates_collapsed > 5
    assert all(lay.starts[r["row"] - 1] == r["offset"] for r in expected)  # row N is the Nth record
    for n, first_at_header in [(1, False), (3, False), (5, True)]:
        ranges = plan(data, lay, n, first_at_header=first_at_header)
        results = []
        for i, rng in enumerate(ranges):
            spec = dataclasses.replace(
                whole_spec, byte_range=rng, header_names=tuple(HEADER), rejects=str(tmp_path / f"n{n}")
            )
            result = run_dry(spec, run_id=f"shard{i}")
            assert result.complete and result.checkpoint.byte_range == rng
            assert result.checkpoint.offset == rng[1]
            results.append(result)
        assert totals(results) == totals([whole])
        bases = row_bases((rng, r.counters.rows_read) for rng, r in zip(ranges, results, strict=True))
        got = [orjson.loads(renumber(Reject(**r), bases).to_json()) for r in rejects_of(tmp_path / f"n{n}")]
        assert sorted(got, key=lambda r: r["offset"]) == expected


def test_a_key_repeated_across_a_cut_is_written_twice_not_collapsed(tmp_path: Path) -> None:
    data = make_object(1_000)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    lay = layout(data)
    cut = min(lay.no_cut)  # between a key and its repeat on the next record
    spec = LoadSpec(source=str(path), table="t", schema=SCHEMA, rejects=str(tmp_path / "r"))
    whole = run_dry(spec, run_id="whole")
    shards = [
        run_dry(dataclasses.replace(spec, byte_range=rng, header_names=tuple(HEADER)), run_id=f"s{i}")
        for i, rng in enumerate([(0, cut), (cut, len(data))])
    ]
    read, written, rejected, collapsed = totals(shards)
    c = whole.counters
    assert (read, rejected) == (c.rows_read, c.rows_rejected)
    assert (written, collapsed) == (c.items_written + 1, c.duplicates_collapsed - 1)


def test_a_shard_stopped_midway_resumes_exactly_and_refuses_another_ranges_checkpoint(tmp_path: Path) -> None:
    data = make_object(3_000)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    ranges = plan(data, layout(data), 3)
    base = LoadSpec(source=str(path), table="t", schema=SCHEMA)
    specs = [
        dataclasses.replace(base, byte_range=r, header_names=tuple(HEADER), rejects=str(tmp_path / f"s{i}"))
        for i, r in enumerate(ranges)
    ]
    straight = run_dry(specs[1], run_id="straight")
    saved: list[Checkpoint] = []
    calls: list[int] = []

    def stop(_: Progress) -> bool:
        calls.append(1)
        return len(calls) > 12

    first = run_dry(specs[1], run_id="first", should_stop=stop, on_checkpoint=saved.append)
    cp = Checkpoint.loads(saved[-1].dumps())
    assert first.stopped == "stopped" and cp == first.checkpoint
    assert ranges[1][0] < cp.offset < ranges[1][1] and cp.byte_range == ranges[1]
    assert 1 < cp.next_row <= straight.counters.rows_read  # rows count from the shard's start
    for other in (specs[2], specs[0], base):
        with pytest.raises(ConfigError, match="resume each shard from its own checkpoint"):
            run_dry(other, run_id="refused", resume=cp)
    second = run_dry(specs[1], run_id="second", resume=cp)
    assert second.complete and second.checkpoint.offset == ranges[1][1]
    assert second.checkpoint.counters == straight.checkpoint.counters
    assert second.checkpoint.next_row == straight.checkpoint.next_row
    # a resumed run may repeat rejects beyond its checkpoint: the offset tells them apart
    both = {
        r["offset"]: r for r in rejects_of(tmp_path / "s1", "first") + rejects_of(tmp_path / "s1", "second")
    }
    assert sorted(both.values(), key=lambda r: r["offset"]) == rejects_of(tmp_path / "s1", "straight")


@pytest.mark.parametrize(
    ("body", "cut", "at"),
    [
        (b"pk,n,s,note\nk1,1,a,\nk2,2,b,\nk3,3,c,\n", 24, 20),  # mid-record
        (b'pk,n,s,note\nk1,1,a,\nk2,2,"b\nc",\nk3,3,c,\n', 28, 20),  # at a newline inside quotes
        (b"pk,n,s,note\r\nk1,1,a,\r\nk2,2,b,\r\n", 21, 13),  # between the CR and the LF
        (b"pk,n,s,note\nk1,1,a,\n", 4, 0),  # inside the header
    ],
    ids=["mid-record", "inside-quotes", "between-cr-and-lf", "inside-the-header"],
)
def test_a_range_that_ends_inside_a_record_is_a_source_error(
    tmp_path: Path, body: bytes, cut: int, at: int
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(body)
    spec = LoadSpec(source=str(path), table="t", byte_range=(0, cut), rejects=str(tmp_path / "r"))
    with pytest.raises(SourceError, match=f"the record at byte {at} does not end by byte {cut}") as info:
        run_dry(spec, run_id="bad")
    assert info.value.result is not None and not info.value.result.checkpoint.complete
    # the last shard of an object may end without a newline, as the object may
    path.write_bytes(body.rstrip(b"\n"))
    last = dataclasses.replace(spec, byte_range=(0, len(body) - 1))
    assert run_dry(last, run_id="last").complete


def test_a_shard_checks_the_header_and_the_objects_size(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"pk,n\nk1,1\nk2,2\n")
    spec = LoadSpec(source=str(path), table="t", byte_range=(0, 10), header_names=("pk", "x"))
    with pytest.raises(SourceError, match="the header row is \\['pk', 'n'\\] but the shard was planned with"):
        run_dry(spec, run_id="h")
    with pytest.raises(
        SourceError, match="byte range \\[10, 16\\) ends past the end of the object \\(15 bytes\\)"
    ):
        run_dry(dataclasses.replace(spec, byte_range=(10, 16)), run_id="s")
    empty = run_dry(dataclasses.replace(spec, byte_range=(10, 10), header_names=("pk", "n")), run_id="e")
    assert empty.complete and empty.counters == Counters()


def test_a_local_range_reads_exactly_its_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    src = open_source(str(path), s3_client=None, spec=CsvSpec(), byte_range=(1_000, 20_000))
    for offset in (1_000, 1_001, 19_999, 20_000):
        with src.open(offset) as stream:
            assert b"".join(iter_chunks(stream, 777)) == data[offset:20_000]
    for offset in (999, 20_001):
        with pytest.raises(SourceError, match="outside the byte range \\[1000, 20000\\)"):
            src.open(offset)
    packed = tmp_path / "in.csv.gz"
    packed.write_bytes(b"")
    with pytest.raises(ConfigError, match="gzip-compressed object cannot be split by bytes"):
        open_source(str(packed), s3_client=None, spec=CsvSpec(), byte_range=(0, 0))
