"""Typed rows into batches that DynamoDB accepts: at most 25 items, 16 MB, and one request per key.

Duplicate keys inside the batch being built are collapsed by the policy:

- ``last`` (default): the later row replaces the earlier one. Across batches the writer orders
  writes per key (a batch waits while an earlier in-flight batch holds one of its keys), so the
  row that comes last in the file wins everywhere. Streaming: no memory beyond the open batch.
- ``first``: the earlier row wins; later rows with a key seen before are collapsed. This needs every
  key seen in the run, so memory grows with the number of distinct keys (roughly 100 bytes each).
- ``error``: a row whose key was seen before is rejected ("duplicate key, first seen at row N").
  Same memory as ``first``.

``first`` and ``error`` remember keys for one run: a resumed run (or the next Lambda hop) starts
with an empty memory, so a duplicate on either side of a checkpoint is written twice (the later
value wins). ``last`` has no such gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import attrgetter

from loader.config import MAX_BATCH_ITEMS, MAX_REQUEST_BYTES, DuplicatePolicy
from loader.models import Batch, Entry, Key, Reject

#: JSON framing per PutRequest: {"PutRequest":{"Item":...}}, type tags, quotes and escapes. Item size
#: counts value bytes only; the request carries JSON, which can be up to ~2x that for text full of
#: characters JSON escapes, so the request limit is checked against a conservative estimate.
_PER_ITEM_OVERHEAD = 64
_REQUEST_SLACK = 4096


def request_bytes_estimate(item_size: int) -> int:
    """An upper bound on what an item of ``item_size`` adds to a BatchWriteItem request body."""
    return 2 * item_size + _PER_ITEM_OVERHEAD


def request_bytes_total(item_sizes: list[int]) -> int:
    """``request_bytes_estimate`` summed over items, in one expression (a slice of a block at once)."""
    return 2 * sum(item_sizes) + _PER_ITEM_OVERHEAD * len(item_sizes)


class Batcher:
    """Builds batches in file order. Not thread-safe; one producer.

    After each :meth:`add`, ``collapsed`` counts rows collapsed so far and ``rejects`` holds
    duplicate-key rejects (policy ``error``) not yet taken by the caller.
    """

    def __init__(
        self,
        *,
        policy: DuplicatePolicy = "last",
        max_items: int = MAX_BATCH_ITEMS,
        max_bytes: int = MAX_REQUEST_BYTES - _REQUEST_SLACK,
        first_seq: int = 0,
    ) -> None:
        if not 1 <= max_items <= MAX_BATCH_ITEMS:
            raise ValueError(f"max_items must be 1..{MAX_BATCH_ITEMS}")
        self._policy = policy
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._seq = first_seq
        self._open: dict[Key, Entry] = {}
        self._nbytes = 0
        # key -> first row number, for policies that look across batches
        self._seen: dict[Key, int] | None = None if policy == "last" else {}
        self.collapsed = 0
        self.rejects: list[Reject] = []

    def __len__(self) -> int:
        return len(self._open)

    def add(self, entry: Entry) -> Batch | None:
        """Add a typed row. Returns the previous batch when it is full: the batch never holds
        ``entry``, which opens the next batch. A collapsed or rejected entry returns None."""
        key = entry.key
        open_ = self._open
        seen = self._seen
        if seen is None:
            old = open_.get(key)
            if old is not None:
                # last wins: the later row takes the earlier one's place
                self.collapsed += 1
                self._nbytes += request_bytes_estimate(entry.size) - request_bytes_estimate(old.size)
                open_[key] = entry
                return None
        else:
            first = seen.get(key)
            if first is not None:
                if self._policy == "first":
                    self.collapsed += 1
                else:
                    self.rejects.append(
                        Reject(
                            row=entry.number,
                            offset=entry.offset,
                            raw=entry.raw,
                            reason=f"duplicate key {_show(key)}, first seen at row {first}",
                        )
                    )
                return None
            seen[key] = entry.number
        cost = request_bytes_estimate(entry.size)
        done = None
        if open_ and (len(open_) >= self._max_items or self._nbytes + cost > self._max_bytes):
            # the open batch is full: it leaves before this entry, which starts the next one
            done = self._emit()
            open_ = self._open
        open_[key] = entry
        self._nbytes += cost
        return done

    def takes_whole(self, keys: list[Key], sizes: list[int]) -> bool:
        """Whether ``add_block`` may take these entries: their keys are distinct, none is in the
        open batch (or, for ``first``/``error``, seen before), and no batch of them can reach
        the request size limit. Otherwise add them one by one. Changes nothing."""
        if len(set(keys)) != len(keys) or not self._open.keys().isdisjoint(keys):
            return False
        if self._seen is not None and not self._seen.keys().isdisjoint(keys):
            return False
        largest = request_bytes_estimate(max(sizes, default=0))
        room = self._max_items - len(self._open)
        limit = self._max_bytes
        return largest * self._max_items <= limit and self._nbytes + largest * room <= limit

    def add_block(
        self, entries: list[Entry], keys: list[Key], sizes: list[int]
    ) -> Iterator[tuple[int, Batch]]:
        """``add`` for each entry in turn, for entries ``takes_whole`` accepted, a slice at a time.

        Yields ``(j, batch)`` each time a batch is full: ``entries[j]`` opened the next batch and is
        the last entry added so far, exactly as if ``add(entries[j])`` had returned ``batch``. A
        caller that stops consuming leaves the batcher as ``add`` would have left it at ``j``.
        """
        j = 0
        n = len(entries)
        while True:
            room = self._max_items - len(self._open)
            if n - j <= room:
                self._put(entries, keys, sizes, j, n)
                return
            self._put(entries, keys, sizes, j, j + room)
            j += room
            batch = self._emit()
            self._put(entries, keys, sizes, j, j + 1)
            yield j, batch
            j += 1

    def _put(self, entries: list[Entry], keys: list[Key], sizes: list[int], lo: int, hi: int) -> None:
        if lo == hi:
            return
        part = entries[lo:hi]
        self._open.update(zip(keys[lo:hi], part, strict=True))
        self._nbytes += request_bytes_total(sizes[lo:hi])
        if self._seen is not None:
            self._seen.update(zip(keys[lo:hi], map(_number, part), strict=True))

    def flush(self) -> Batch | None:
        """The open batch, if any (at the end of the input or when the run stops)."""
        return self._emit() if self._open else None

    def _emit(self) -> Batch:
        batch = Batch(seq=self._seq, entries=list(self._open.values()), nbytes=self._nbytes)
        self._seq += 1
        self._open = {}
        self._nbytes = 0
        return batch


_number = attrgetter("number")


def _show(key: Key) -> str:
    text = "/".join(key)
    return repr(text if len(text) <= 80 else text[:77] + "...")
