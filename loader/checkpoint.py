"""A run's accounting: its counters, and the low-water mark below which every row is written or
rejected.

The file is cut into segments, one per batch: a segment is the run of records from the end of the
previous segment up to the record that opened the next batch, so it holds the batch's rows and the
rows rejected or collapsed while the batch was being built (with a shuffle window,
``loader.shuffle``, a segment is a window of rows and holds every batch cut from it). Batches
finish out of order; the mark advances over the longest prefix of finished segments, and the
checkpoint's counters count exactly the rows of that prefix (plus what the resumed checkpoint had
counted), so a resume neither skips nor double-counts a row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from loader.errors import ConfigError
from loader.models import Checkpoint, Counters
from loader.source import SourceInfo

__all__ = ["Accounting", "Segment"]


@dataclass(slots=True)
class Segment:
    #: batches of the segment not finished yet (it is done at 0)
    waiting: int
    end: int
    next_row: int
    counters: Counters = field(default_factory=Counters)


class Accounting:
    """What one run has counted, and where the next run resumes.

    The pipeline tells it, in file order, what happens to the rows it reads:

    * ``reject()``: a row of the open segment was rejected before it reached a batch;
    * ``add_rows(n)``: ``n`` rows joined the open segment;
    * ``close_segment(...)``: a batch left (or the run ended); the open segment closes with it;
    * ``close_window(...)``: a shuffle window was cut into batches; the open segment closes with all;
    * ``finish_batch(seq, outcome)``: batch ``seq`` was written (its rejects found), out of order.

    ``counters`` counts this run (rows read, rejected and collapsed as seen, batches as they end:
    the pipeline adds every batch outcome there, finished or not). ``offset``, ``next_row`` and
    ``marked`` are the low-water mark and the counters of every row below it, the resumed
    checkpoint's included: they are what ``checkpoint()`` hands to the next run.

    A checkpoint at offset 0 (a chain's first hop) starts the object afresh but keeps its hop and
    chain id. One owner (the pipeline's event loop); no locks.

    A shard (``source.byte_range`` is ``(start, end)``) starts at ``start`` with row 1 and the
    planner's ``header`` (when ``start`` is past the header row, which it cannot read); its marks
    are absolute offsets in the range. A resume must be a checkpoint of the same range, at an offset
    inside it: a checkpoint of another shard (or of the whole object) would skip or repeat rows.
    """

    def __init__(
        self,
        *,
        source: SourceInfo,
        table: str,
        resume: Checkpoint | None = None,
        max_rejects: int | None = None,
        header: list[str] | None = None,
    ) -> None:
        rng = source.byte_range
        if resume is not None:
            if resume.table != table:
                raise ConfigError(
                    f"checkpoint is for table {resume.table!r}, not {table!r}: use the same --table"
                )
            if resume.source != source.uri:
                raise ConfigError(f"checkpoint is for {resume.source}, not {source.uri}")
            _check_range(resume, rng)
        self._source = source
        self._table = table
        self._resume = resume
        self._max_rejects = max_rejects
        base = Counters()
        #: where this run starts reading: a record boundary, its row number, and the header a
        #: resumed run (or a shard past the header row) does not read (None: read it from the object)
        self.start_offset = 0 if rng is None else rng[0]
        self.first_row = 1
        self.header: list[str] | None = header
        if resume is not None and resume.offset != self.start_offset:
            self.start_offset = resume.offset
            self.first_row = resume.next_row
            self.header = resume.header
            base = resume.counters
        self._base_rejected = base.rows_rejected
        #: this run only
        self.counters = Counters()
        # the low-water mark, and the counters of every row below it
        self.offset = self.start_offset
        self.next_row = self.first_row
        self.marked = base.copy()
        # the open segment: rows and rejects since the last batch left; and how many rows the
        # batcher had collapsed when it left (the batcher keeps a running total)
        self._seg_rows = 0
        self._seg_rejected = 0
        self._collapsed = 0
        self._pending: deque[Segment] = deque()
        self._by_seq: dict[int, Segment] = {}

    @property
    def pending(self) -> int:
        """Closed segments above the mark (their batches not finished yet)."""
        return len(self._pending)

    @property
    def rejected_total(self) -> int:
        """Rows rejected by the whole load: the resumed checkpoint's and this run's."""
        return self._base_rejected + self.counters.rows_rejected

    def too_many_rejects(self) -> bool:
        limit = self._max_rejects
        return limit is not None and self._base_rejected + self.counters.rows_rejected > limit

    # -- the open segment -------------------------------------------------------------------

    def reject(self) -> None:
        """A row of the open segment was rejected (it joins the segment through ``add_rows`` or
        ``close_segment``, as every row does)."""
        self.counters.rows_rejected += 1
        self._seg_rejected += 1

    def add_rows(self, rows: int) -> None:
        """``rows`` more rows are in the open segment."""
        self._seg_rows += rows

    def close_segment(self, seq: int | None, *, end: int, next_row: int, rows: int, collapsed: int) -> None:
        """The open segment, with ``rows`` more rows, ends at byte ``end``, before row ``next_row``;
        ``seq`` is the batch that holds its items (None: it has none, and is done at once).
        ``collapsed`` is the batcher's running total of rows collapsed."""
        self.close_window(
            () if seq is None else (seq,), end=end, next_row=next_row, rows=rows, collapsed=collapsed
        )

    def close_window(
        self, seqs: Sequence[int], *, end: int, next_row: int, rows: int, collapsed: int
    ) -> None:
        """``close_segment`` for a segment whose items went into the batches ``seqs`` (a shuffle
        window's): the mark passes it when all of them are finished."""
        dup = collapsed - self._collapsed
        self._collapsed = collapsed
        self.counters.duplicates_collapsed += dup
        counters = Counters(
            rows_read=self._seg_rows + rows, rows_rejected=self._seg_rejected, duplicates_collapsed=dup
        )
        self._seg_rows = 0
        self._seg_rejected = 0
        seg = Segment(waiting=len(seqs), end=end, next_row=next_row, counters=counters)
        self._pending.append(seg)
        for seq in seqs:
            self._by_seq[seq] = seg
        self._advance()

    # -- batches ----------------------------------------------------------------------------

    def finish_batch(self, seq: int, outcome: Counters) -> None:
        """Batch ``seq`` is finished: its written/rejected/retry counts join its segment's.
        (A batch that did not finish is never finished here: its segment holds the mark.)"""
        seg = self._by_seq.pop(seq)
        seg.counters.add(outcome)
        seg.waiting -= 1
        if not seg.waiting:
            self._advance()

    def _advance(self) -> None:
        pending = self._pending
        while pending and not pending[0].waiting:
            seg = pending.popleft()
            self.marked.add(seg.counters)
            self.offset = seg.end
            self.next_row = seg.next_row

    # -- the checkpoint ---------------------------------------------------------------------

    def checkpoint(self, *, header: list[str] | None, complete: bool) -> Checkpoint:
        """The mark as a checkpoint; ``header`` is the one read (None: the resumed one, or none)."""
        info = self._source
        resume = self._resume
        if not header:
            header = resume.header if resume is not None else []
        return Checkpoint(
            source=info.uri,
            table=self._table,
            version_id=info.version_id,
            etag=info.etag,
            size=info.size,
            header=list(header),
            offset=self.offset,
            next_row=self.next_row,
            counters=self.marked.copy(),
            complete=complete,
            hop=resume.hop if resume is not None else 0,
            chain_id=resume.chain_id if resume is not None else "",
            byte_range=info.byte_range,
        )


def _show_range(rng: tuple[int, int] | None) -> str:
    return "the whole object" if rng is None else f"byte range [{rng[0]}, {rng[1]})"


def _check_range(resume: Checkpoint, rng: tuple[int, int] | None) -> None:
    """A ConfigError unless ``resume`` is a checkpoint of this range, at an offset inside it."""
    if (None if resume.byte_range is None else tuple(resume.byte_range)) != rng:
        raise ConfigError(
            f"checkpoint is of {_show_range(resume.byte_range)}, not of {_show_range(rng)}: "
            "resume each shard from its own checkpoint"
        )
    if rng is not None and not rng[0] <= resume.offset <= rng[1]:
        raise ConfigError(
            f"checkpoint offset {resume.offset} is outside its {_show_range(rng)}: the file is damaged"
        )
