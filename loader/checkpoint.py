"""The low-water mark: the byte offset below which every row is written or rejected.

The file is cut into segments, one per batch: a segment is the run of records from the end of the
previous segment up to the record that opened the next batch, so it holds the batch's rows and the
rows rejected or collapsed while the batch was being built. Batches finish out of order; the mark
advances over the longest prefix of finished segments, and the checkpoint's counters count exactly
the rows of that prefix (plus what the resumed checkpoint had counted), so a resume neither skips
nor double-counts a row.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from loader.models import Counters


@dataclass(slots=True)
class Segment:
    seq: int | None
    end: int
    next_row: int
    counters: Counters = field(default_factory=Counters)
    done: bool = False


class LowWaterMark:
    """Tracks segments in file order. One owner (the pipeline's event loop); no locks."""

    def __init__(self, *, offset: int, next_row: int, counters: Counters | None = None) -> None:
        self.offset = offset
        self.next_row = next_row
        self.counters = counters.copy() if counters is not None else Counters()
        self._pending: deque[Segment] = deque()
        self._by_seq: dict[int, Segment] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close_segment(self, *, seq: int | None, end: int, next_row: int, counters: Counters) -> None:
        """The rows up to ``end`` are read; ``seq`` is the batch that holds their items (None: no items)."""
        seg = Segment(seq=seq, end=end, next_row=next_row, counters=counters, done=seq is None)
        self._pending.append(seg)
        if seq is not None:
            self._by_seq[seq] = seg
        self._advance()

    def finish_batch(self, seq: int, outcome: Counters) -> None:
        """The batch ``seq`` is finished: its written/rejected/retry counts are added to its segment."""
        seg = self._by_seq.pop(seq)
        seg.counters.add(outcome)
        seg.done = True
        self._advance()

    def _advance(self) -> None:
        pending = self._pending
        while pending and pending[0].done:
            seg = pending.popleft()
            self.counters.add(seg.counters)
            self.offset = seg.end
            self.next_row = seg.next_row
