"""``pipeline.run`` over an in-memory object and an in-process sender: exact counters and checkpoints.

The sender records every BatchWriteItem call and keeps what landed, keyed by ``pk``; it can hand
items back in ``UnprocessedItems``, throttle a call, refuse a batch holding a poison item, or fail a
call every time. Each case runs with a sender that takes items (rows typed one at a time) and one
that takes wire bytes (``encode``: clean blocks of rows typed at once), and some with none (a dry
run). The expected numbers are written out by hand, or (for the long stop-and-resume runs) come
from ``_model``, a few lines that batch rows as DynamoDB requires.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

import orjson
import pytest

from loader import pipeline
from loader.config import CsvSpec, DuplicatePolicy, LoadConfig, SchemaSpec
from loader.errors import (
    BatchValidationError,
    ConfigError,
    ThrottledError,
    TooManyRejectsError,
    TransientSendError,
    WriteFailedError,
)
from loader.models import Checkpoint, Counters, Item, KeySchema, Progress, Reject, RunResult, StopReason
from loader.source import Source, SourceInfo

HEADER = "pk,n,v"
KEYS = KeySchema(partition="pk", partition_type="S")
SCHEMA = SchemaSpec(columns={"n": "N"})
URI = "mem://rows.csv"


# -- the in-memory object, the sender and the rejects sink -----------------------------------------


class MemorySource(Source):
    """An object held in memory: ``open(offset)`` is a stream of its bytes from ``offset``."""

    def __init__(self, data: bytes) -> None:
        info = SourceInfo(
            uri=URI,
            bucket=None,
            key=None,
            path=None,
            version_id="v1",
            etag='"e1"',
            size=len(data),
            compression="none",
        )
        super().__init__(info, s3_client=None)
        self.data = data
        self.opened: list[int] = []

    def open(self, offset: int = 0) -> BinaryIO:
        self.opened.append(offset)
        return io.BytesIO(self.data[offset:])


@dataclass
class FakeSender:
    """Writes each call's items into ``landed`` unless told otherwise, and records every call.

    ``unprocessed_once`` / ``throttle_once``: the first call holding one of these keys hands that
    item back in UnprocessedItems / is throttled whole. ``poison``: a call holding one of these
    keys is refused as invalid, every time. ``failing``: a call holding one of these keys fails
    (a 5xx), every time.
    """

    landed: dict[str, Item] = field(default_factory=dict)
    unprocessed_once: set[str] = field(default_factory=set)
    throttle_once: set[str] = field(default_factory=set)
    poison: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)
    #: no item encoder: the pipeline hands this sender items (see ``BatchSender.encode``)
    encode: ClassVar[Callable[[Item], bytes] | None] = None

    async def send(self, table: str, items: list[Item], wire: list[bytes] | None = None) -> list[Item]:
        assert table == "t"
        if wire is not None:
            assert items == []
            items = [orjson.loads(w) for w in wire]
        keys = [item["pk"]["S"] for item in items]
        # what DynamoDB checks of every call
        assert 1 <= len(items) <= 25 and len(set(keys)) == len(keys), keys
        self.calls.append(keys)
        if self.failing & set(keys):
            raise TransientSendError("InternalServerError: injected", code="InternalServerError")
        if self.poison & set(keys):
            raise BatchValidationError(
                "One or more parameter values were invalid", code="ValidationException"
            )
        throttled = self.throttle_once & set(keys)
        if throttled:
            self.throttle_once -= throttled
            raise ThrottledError("ThrottlingException: injected", code="ThrottlingException")
        back = [item for item in items if item["pk"]["S"] in self.unprocessed_once]
        for item in items:
            if item not in back:
                self.landed[item["pk"]["S"]] = item
        self.unprocessed_once -= {item["pk"]["S"] for item in back}
        return back

    async def aclose(self) -> None:
        return None


@dataclass
class WireSender(FakeSender):
    """A sender that takes each item as JSON bytes, made as the entry is made (as the lean one does)."""

    encode: ClassVar[Callable[[Item], bytes] | None] = staticmethod(orjson.dumps)


class MemoryRejects:
    location = "mem://rejects"

    def __init__(self) -> None:
        self.items: list[Reject] = []
        self.flushed = 0  # rejects durable so far

    @property
    def count(self) -> int:
        return len(self.items)

    def add(self, reject: Reject) -> None:
        self.items.append(reject)

    def flush(self) -> None:
        self.flushed = len(self.items)

    def close(self) -> str | None:
        self.flush()
        return self.location if self.items else None


@dataclass
class Recorder:
    """``on_checkpoint``: every checkpoint, with how many rejects were durable when it came."""

    rejects: MemoryRejects
    seen: list[tuple[Checkpoint, int]] = field(default_factory=list)

    async def __call__(self, cp: Checkpoint) -> None:
        self.seen.append((cp, self.rejects.flushed))


# -- building objects and running -------------------------------------------------------------


def row(i: int, *, pk: str | None = None, n: str | None = None) -> str:
    return f"{f'k{i:03d}' if pk is None else pk},{i if n is None else n},v{i:03d}"


def rows(count: int, **special: str) -> list[str]:
    """``count`` clean rows, with row ``i`` replaced by ``special[f"r{i}"]``."""
    return [special.get(f"r{i}", row(i)) for i in range(1, count + 1)]


def csv_of(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in [HEADER, *lines]).encode()


def row_starts(data: bytes) -> dict[int, int]:
    """Row number -> the byte offset where it starts (no quoted newlines in these objects); one
    past the last row -> the object's size."""
    starts, pos = {}, 0
    for number, line in enumerate(data.split(b"\n")[:-1]):
        pos += len(line) + 1
        starts[number + 1] = pos
    return starts


def config(**kw: Any) -> LoadConfig:
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("backoff_cap_s", 0.002)
    kw.setdefault("stop_poll_s", 3600.0)  # stops come from should_stop between batches only
    return LoadConfig(table="t", **kw)


async def load(
    data: bytes | MemorySource,
    *,
    sender: FakeSender | None,
    cfg: LoadConfig | None = None,
    resume: Checkpoint | None = None,
    should_stop: Callable[[Progress], bool] | None = None,
) -> tuple[RunResult, MemoryRejects, Recorder]:
    source = data if isinstance(data, MemorySource) else MemorySource(data)
    rejects = MemoryRejects()
    recorder = Recorder(rejects)
    kw: dict[str, Any] = {} if should_stop is None else {"should_stop": should_stop}
    result = await pipeline.run(
        source=source,
        config=cfg or config(),
        csv_spec=CsvSpec(),
        schema=SCHEMA,
        keys=KEYS,
        sender=sender,
        rejects=rejects,
        resume=resume,
        on_checkpoint=recorder,
        **kw,
    )
    return result, rejects, recorder


def assert_consistent(recorder: Recorder, data: bytes, resume: Checkpoint | None = None) -> None:
    """Every checkpoint handed out is a record boundary that counts exactly the rows before it,
    after the rejects it counts were made durable (this run's, beside those the resumed checkpoint
    counted); the mark never goes back."""
    starts = row_starts(data)
    last = 0 if resume is None else resume.offset
    earlier = 0 if resume is None else resume.counters.rows_rejected
    for cp, durable in recorder.seen:
        c = cp.counters
        assert c.balanced, cp
        assert cp.offset == starts[cp.next_row] or cp.offset == cp.next_row - 1 == 0, cp
        assert c.rows_read == cp.next_row - 1, cp
        assert c.rows_rejected <= earlier + durable
        assert cp.offset >= last
        last = cp.offset
        assert (cp.source, cp.table, cp.version_id, cp.etag, cp.size) == (URI, "t", "v1", '"e1"', len(data))
        assert cp.header == ["pk", "n", "v"]


def table_of(sender: FakeSender) -> dict[str, str]:
    return {pk: item["v"]["S"] for pk, item in sender.landed.items()}


def clean_table(count: int, **special: str) -> dict[str, str]:
    return {f"k{i:03d}": f"v{i:03d}" for i in range(1, count + 1) if f"r{i}" not in special}


SENDERS = {"items": FakeSender, "wire": WireSender}


# -- one run, start to end: exact counters, calls, rejects and checkpoint ---------------------------


@dataclass(frozen=True)
class Case:
    lines: list[str]
    counters: Counters
    calls: list[int]  # items per BatchWriteItem call, in order
    table: dict[str, str]
    rejects: dict[int, str] = field(default_factory=dict)  # row -> the start of its reason
    policy: DuplicatePolicy = "last"
    sender: dict[str, set[str]] = field(default_factory=dict)
    #: False when batches back off: they are resent in the order their (jittered) backoffs end
    ordered: bool = True


BAD = {"r3": row(3, n="abc"), "r10": row(10, pk=""), "r17": '"k017"x,17,v017'}
DUP_IN = {"r6": row(6, pk="k002")}  # row 2 and row 6 in the same batch
DUP_ACROSS = {"r28": row(28, pk="k002")}  # row 2 in the first batch, row 28 in the second

CASES = {
    "clean rows": Case(
        lines=rows(60),
        counters=Counters(rows_read=60, items_written=60, write_units=60),
        calls=[25, 25, 10],
        table=clean_table(60),
    ),
    "bad rows are rejected, their neighbours written": Case(
        lines=rows(30, **BAD),
        counters=Counters(rows_read=30, items_written=27, rows_rejected=3, write_units=27),
        calls=[25, 2],
        table=clean_table(30, **BAD),
        rejects={
            3: "'abc' in column 'n' is not a number",
            10: "empty partition key 'pk'",
            17: "not valid CSV: ",
        },
    ),
    "last: a duplicate in the open batch is collapsed, the later row wins": Case(
        lines=rows(30, **DUP_IN),
        counters=Counters(rows_read=30, items_written=29, duplicates_collapsed=1, write_units=29),
        calls=[25, 4],
        table={**clean_table(30, **DUP_IN), "k002": "v006"},
    ),
    "last: a duplicate in a later batch is written after the earlier one": Case(
        lines=rows(30, **DUP_ACROSS),
        counters=Counters(rows_read=30, items_written=30, write_units=30),
        calls=[25, 5],
        table={**clean_table(30, **DUP_ACROSS), "k002": "v028"},
    ),
    "first: a duplicate in the open batch is collapsed, the earlier row wins": Case(
        lines=rows(30, **DUP_IN),
        counters=Counters(rows_read=30, items_written=29, duplicates_collapsed=1, write_units=29),
        calls=[25, 4],
        table=clean_table(30, **DUP_IN),
        policy="first",
    ),
    "first: a duplicate in a later batch is collapsed": Case(
        lines=rows(30, **DUP_ACROSS),
        counters=Counters(rows_read=30, items_written=29, duplicates_collapsed=1, write_units=29),
        calls=[25, 4],
        table=clean_table(30, **DUP_ACROSS),
        policy="first",
    ),
    "error: a duplicate in the open batch is rejected": Case(
        lines=rows(30, **DUP_IN),
        counters=Counters(rows_read=30, items_written=29, rows_rejected=1, write_units=29),
        calls=[25, 4],
        table=clean_table(30, **DUP_IN),
        rejects={6: "duplicate key 'k002', first seen at row 2"},
        policy="error",
    ),
    "error: a duplicate in a later batch is rejected": Case(
        lines=rows(30, **DUP_ACROSS),
        counters=Counters(rows_read=30, items_written=29, rows_rejected=1, write_units=29),
        calls=[25, 4],
        table=clean_table(30, **DUP_ACROSS),
        rejects={28: "duplicate key 'k002', first seen at row 2"},
        policy="error",
    ),
    "UnprocessedItems are resent alone": Case(
        lines=rows(60),
        counters=Counters(rows_read=60, items_written=60, retries=2, throttle_events=2, write_units=60),
        calls=[25, 25, 10, 1, 1],  # each batch's one item is resent after its backoff
        table=clean_table(60),
        sender={"unprocessed_once": {"k005", "k030"}},
        ordered=False,
    ),
    "a throttled call is resent whole": Case(
        lines=rows(30),
        counters=Counters(rows_read=30, items_written=30, retries=1, throttle_events=1, write_units=30),
        calls=[25, 25, 5],
        table=clean_table(30),
        sender={"throttle_once": {"k005"}},
        ordered=False,
    ),
    "a poison item is bisected out and rejected, its neighbours written": Case(
        lines=rows(30),
        counters=Counters(rows_read=30, items_written=29, rows_rejected=1, write_units=29),
        # rows 1-25 refused, 1-12 refused, 1-6 written, 7-12 refused, 7-9 refused, row 7 alone
        # refused (a reject), 8-9 written, 10-12 written, 13-25 written; then rows 26-30
        calls=[25, 12, 6, 6, 3, 1, 2, 3, 13, 5],
        table=clean_table(30, r7=""),
        rejects={7: "DynamoDB refused the item: One or more parameter values were invalid"},
        sender={"poison": {"k007"}},
    ),
}


@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("name", CASES)
async def test_a_run_accounts_for_every_row_exactly(name: str, kind: str) -> None:
    case = CASES[name]
    data = csv_of(case.lines)
    sender = SENDERS[kind](**{k: set(v) for k, v in case.sender.items()})
    result, rejects, recorder = await load(data, sender=sender, cfg=config(on_duplicate=case.policy))

    assert result.stopped is StopReason.COMPLETE and result.complete and result.error is None
    assert result.counters == case.counters
    sizes = [len(call) for call in sender.calls]
    assert sizes == case.calls if case.ordered else sorted(sizes) == sorted(case.calls)
    assert table_of(sender) == case.table
    assert {r.row: r.reason[: len(case.rejects[r.row])] for r in rejects.items if r.row in case.rejects} == (
        case.rejects
    )
    assert sorted(r.row for r in rejects.items) == sorted(case.rejects)
    starts = row_starts(data)
    for r in rejects.items:  # a reject says where its row is and what it was
        assert (r.offset, r.raw) == (starts[r.row], case.lines[r.row - 1])
    cp = result.checkpoint
    assert (cp.offset, cp.next_row, cp.complete) == (len(data), len(case.lines) + 1, True)
    assert cp.counters == case.counters  # a fresh run: the checkpoint counts what the run did
    assert (cp.hop, cp.chain_id) == (0, "")
    assert recorder.seen[-1] == (cp, len(case.rejects))
    assert_consistent(recorder, data)


async def test_a_dry_run_counts_without_sending() -> None:
    data = csv_of(rows(30, **BAD))
    result, rejects, _ = await load(data, sender=None)
    assert result.counters == Counters(rows_read=30, items_written=27, rows_rejected=3, write_units=27)
    assert [r.row for r in rejects.items] == [3, 10, 17]
    assert result.complete and result.checkpoint.offset == len(data)


@pytest.mark.parametrize("kind", SENDERS)
async def test_a_header_only_object_is_complete_with_nothing_read(kind: str) -> None:
    data = csv_of([])
    sender = SENDERS[kind]()
    result, _, _ = await load(data, sender=sender)
    assert result.counters == Counters() and sender.calls == []
    assert (result.checkpoint.offset, result.checkpoint.next_row, result.complete) == (len(data), 1, True)


# -- a stop, then a resume from its checkpoint ------------------------------------------------------


def long_object(*, clean: bool = False) -> tuple[list[str], bytes]:
    """1000 rows (about four 4 KB chunks): unless ``clean``, every 97th has a bad number and every
    101st repeats the previous row's key (collapsed when both are in the open batch). Clean rows
    are typed a block at a time for a sender that takes wire bytes."""
    lines = []
    for i in range(1, 1001):
        if clean:
            lines.append(row(i))
        elif i % 97 == 0:
            lines.append(row(i, n="xbad"))
        elif i % 101 == 0:
            lines.append(row(i, pk=f"k{i - 1:03d}"))
        else:
            lines.append(row(i))
    return lines, csv_of(lines)


@dataclass
class Model:
    """What a run over ``lines`` from row ``first`` does under the ``last`` policy (no faults)."""

    batch_first_rows: list[int]  # the row that opened each batch
    rejected: list[int]
    collapsed: list[int]
    table: dict[str, str]

    def counters_below(self, next_row: int) -> Counters:
        """Exactly the rows before ``next_row``."""
        rejected = sum(r < next_row for r in self.rejected)
        collapsed = sum(r < next_row for r in self.collapsed)
        written = next_row - 1 - rejected - collapsed
        return Counters(
            rows_read=next_row - 1,
            items_written=written,
            rows_rejected=rejected,
            duplicates_collapsed=collapsed,
            write_units=written,
        )


def _model(lines: list[str]) -> Model:
    firsts: list[int] = []
    rejected: list[int] = []
    collapsed: list[int] = []
    table: dict[str, str] = {}
    open_: set[str] = set()
    for number, line in enumerate(lines, start=1):
        pk, n, v = line.split(",")
        if not n.isdigit():
            rejected.append(number)
            continue
        table[pk] = v
        if pk in open_:
            collapsed.append(number)
            continue
        if not open_ or len(open_) == 25:
            open_ = set()
            firsts.append(number)
        open_.add(pk)
    return Model(firsts, rejected, collapsed, table)


class StopAfterCalls:
    """``should_stop``: True once the sender has made ``calls`` BatchWriteItem calls.

    With ``concurrency=1`` batch ``k`` runs while the reader waits to submit batch ``k + 1``, so
    this is asked right after batch ``calls`` was submitted: that batch is written while the run
    stops, and the one row read past it (which opened the next batch) is left above the mark.
    """

    def __init__(self, sender: FakeSender, calls: int) -> None:
        self.sender = sender
        self.calls = calls
        self.asked = 0

    def __call__(self, _: Progress) -> bool:
        self.asked += 1
        return len(self.sender.calls) >= self.calls


@pytest.mark.parametrize("clean", [False, True], ids=["bad-and-duplicate-rows", "clean-rows"])
@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("calls", [1, 9, 10, 23, 38])
async def test_a_stop_then_a_resume_from_its_checkpoint_gives_the_exact_union(
    kind: str, calls: int, clean: bool
) -> None:
    lines, data = long_object(clean=clean)
    model = _model(lines)
    starts = row_starts(data)
    source = MemorySource(data)
    cfg = config(concurrency=1, chunk_bytes=4096)
    first = SENDERS[kind]()
    stop = StopAfterCalls(first, calls)
    one, rejects1, rec1 = await load(source, sender=first, cfg=cfg, should_stop=stop)

    assert one.stopped is StopReason.STOPPED and one.stopped == "stopped" and not one.complete
    cp = one.checkpoint
    mark = model.batch_first_rows[calls + 1]  # batches 0..calls written; the row that opened the next is not
    assert (cp.offset, cp.next_row, cp.complete) == (starts[mark], mark, False)
    assert cp.counters == model.counters_below(mark)
    assert one.counters.rows_read == mark  # that row was read; it is read again on resume
    assert one.counters.items_written == cp.counters.items_written == sum(map(len, first.calls))
    assert len(first.calls) == calls + 1
    assert rec1.seen[-1][0] == cp
    assert_consistent(rec1, data)

    second = SENDERS[kind](landed=first.landed)
    two, rejects2, rec2 = await load(source, sender=second, cfg=cfg, resume=cp)
    assert source.opened == [0, cp.offset]
    assert two.stopped is StopReason.COMPLETE
    total = model.counters_below(len(lines) + 1)
    assert (two.checkpoint.offset, two.checkpoint.next_row) == (len(data), len(lines) + 1)
    assert two.checkpoint.counters == total
    assert two.counters.rows_read == len(lines) - (mark - 1)
    assert one.counters.items_written + two.counters.items_written == total.items_written
    assert table_of(second) == model.table
    # rejects: each run's file holds its own; together every rejected row, none below the mark twice
    assert {r.row for r in rejects1.items + rejects2.items} == set(model.rejected)
    assert [r.row for r in rejects2.items] == [r for r in model.rejected if r >= mark]
    assert_consistent(rec2, data, resume=cp)


@pytest.mark.parametrize("kind", SENDERS)
async def test_a_stop_before_the_first_batch_reads_nothing_and_a_resume_starts_afresh(kind: str) -> None:
    lines, data = long_object()
    source = MemorySource(data)
    sender = SENDERS[kind]()
    one, _, _ = await load(source, sender=sender, should_stop=lambda _: True)
    assert one.stopped is StopReason.STOPPED and source.opened == [] and sender.calls == []
    cp = one.checkpoint
    assert (cp.offset, cp.next_row, cp.counters, cp.header) == (0, 1, Counters(), [])

    resumed = dataclasses.replace(cp, hop=3, chain_id="c")  # a chain's next hop carries them
    two, _, _ = await load(source, sender=sender, resume=resumed)
    assert two.complete and source.opened == [0]
    assert two.checkpoint.counters == _model(lines).counters_below(len(lines) + 1)
    assert (two.checkpoint.hop, two.checkpoint.chain_id) == (3, "c")


async def test_a_batch_that_keeps_failing_stops_the_run_below_it_and_a_resume_finishes() -> None:
    lines, data = long_object()
    model = _model(lines)
    starts = row_starts(data)
    source = MemorySource(data)
    bad_batch = 12
    bad_key = f"k{model.batch_first_rows[bad_batch]:03d}"
    first = FakeSender(failing={bad_key})
    cfg = config(concurrency=1, chunk_bytes=4096, max_attempts=2)
    with pytest.raises(WriteFailedError, match="batch 12") as info:
        await load(source, sender=first, cfg=cfg)
    one = info.value.result
    assert isinstance(one, RunResult)
    assert one.stopped is StopReason.FAILED and one.stopped == "failed" and "batch 12" in (one.error or "")
    mark = model.batch_first_rows[bad_batch]
    assert (one.checkpoint.offset, one.checkpoint.next_row) == (starts[mark], mark)
    assert one.checkpoint.counters == model.counters_below(mark)

    second = FakeSender(landed=first.landed)
    two, _, _ = await load(source, sender=second, cfg=cfg, resume=one.checkpoint)
    assert two.complete
    assert two.checkpoint.counters == model.counters_below(len(lines) + 1)
    assert table_of(second) == model.table


@pytest.mark.parametrize(
    ("max_rejects", "fails"),
    [(None, False), (10, False), (9, True), (0, True)],
)
async def test_max_rejects_counts_the_rejects_of_earlier_runs(max_rejects: int | None, fails: bool) -> None:
    lines, data = long_object()  # rows 97, 194, ... 970: 10 bad rows
    model = _model(lines)
    source = MemorySource(data)
    first = FakeSender()
    one, _, _ = await load(
        source, sender=first, should_stop=StopAfterCalls(first, 20), cfg=config(concurrency=1)
    )
    below = one.checkpoint.counters.rows_rejected
    assert 0 < below < 10

    cfg = config(concurrency=1, max_rejects=max_rejects)
    second = FakeSender(landed=first.landed)
    if not fails:
        two, _, _ = await load(source, sender=second, cfg=cfg, resume=one.checkpoint)
        assert two.complete and two.checkpoint.counters == model.counters_below(len(lines) + 1)
        return
    if max_rejects == 0:  # over the limit already: the run stops at its first batch
        with pytest.raises(TooManyRejectsError, match=rf"^{below} rows rejected, more than --max-rejects 0"):
            await load(source, sender=second, cfg=cfg, resume=one.checkpoint)
        return
    with pytest.raises(
        TooManyRejectsError, match=r"^10 rows rejected, more than --max-rejects 9; see mem://"
    ):
        await load(source, sender=second, cfg=cfg, resume=one.checkpoint)


async def test_a_checkpoint_of_another_table_or_object_is_refused() -> None:
    data = csv_of(rows(3))
    done, _, _ = await load(data, sender=FakeSender())
    with pytest.raises(ConfigError, match="checkpoint is for table 'other'"):
        await load(data, sender=FakeSender(), resume=dataclasses.replace(done.checkpoint, table="other"))
    with pytest.raises(ConfigError, match=r"checkpoint is for s3://b/k\.csv, not mem://rows\.csv"):
        await load(
            data, sender=FakeSender(), resume=dataclasses.replace(done.checkpoint, source="s3://b/k.csv")
        )
    again, _, _ = await load(data, sender=(sender := FakeSender()), resume=done.checkpoint)
    assert again.stopped is StopReason.COMPLETE and again.checkpoint == done.checkpoint and sender.calls == []


# -- the stop reason --------------------------------------------------------------------------------


def test_stop_reasons_are_their_strings() -> None:
    cp = Checkpoint(
        source=URI,
        table="t",
        version_id=None,
        etag=None,
        size=0,
        header=[],
        offset=0,
        next_row=1,
        counters=Counters(),
    )
    for reason in StopReason:
        value: Any = reason.value  # a plain string, as a caller may pass
        r = RunResult(counters=Counters(), checkpoint=cp, stopped=value, seconds=0.0, rejects_location=None)
        assert r.stopped is reason and r.stopped == reason.value and f"{r.stopped}" == reason.value
        assert (
            orjson.loads(orjson.dumps({"s": r.stopped}))
            == json.loads(json.dumps({"s": r.stopped}))
            == {"s": reason.value}
        )
        assert r.complete is (reason == "complete")
    assert [r.value for r in StopReason] == ["complete", "stopped", "failed"]
    bogus: Any = "done"
    with pytest.raises(ValueError, match="'done' is not a valid StopReason"):
        RunResult(counters=Counters(), checkpoint=cp, stopped=bogus, seconds=0.0, rejects_location=None)


async def test_a_stop_during_the_final_drain_is_seen_and_the_rest_resumes_exactly() -> None:
    """At the end of the data the writer may still hold up to ``concurrency`` batches (here each
    waits a second for write units under a low --max-wcu): a deadline in that drain must stop the
    run (a Lambda hop would otherwise run past its timeout, every attempt), not wait it out."""
    lines = rows(100)
    data = csv_of(lines)
    source = MemorySource(data)
    sender = FakeSender()
    cfg = config(concurrency=4, max_wcu=25.0, stop_poll_s=0.01)  # 4 batches of 25: one a second
    one, _, _ = await load(source, sender=sender, cfg=cfg, should_stop=lambda _p: len(sender.calls) >= 1)
    assert one.stopped is StopReason.STOPPED and not one.checkpoint.complete
    assert len(sender.calls) < 4  # it did not wait for every batch's write units
    cp = one.checkpoint
    assert cp.counters.items_written == sum(map(len, sender.calls))
    two, _, _ = await load(source, sender=FakeSender(landed=sender.landed), resume=cp)
    assert two.complete and two.checkpoint.counters.items_written == 100
    assert sorted(FakeSender(landed=sender.landed).landed) == [f"k{i:03d}" for i in range(1, 101)]
