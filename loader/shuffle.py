"""The bounded shuffle of ``--shuffle-window ROWS``: spread input sorted by partition key over the
table's partitions.

DynamoDB gives each partition at most 1,000 write units per second. An object sorted by its
partition key sends every in-flight batch to the same one or two partitions, so a load runs at
about one partition's rate whatever the table's capacity (and throttles there). With a window,
the pipeline collects ``ROWS`` typed rows, puts them in a random order and only then cuts them into
batches: the ``concurrency`` batches in flight then hold keys from across the window, so a window
that spans many partition keys spreads the writes over many partitions.

What stays exact:

* rows with the same key keep their order in the file (``shuffled`` permutes the positions, then
  gives a key's positions back to its rows in file order), so the row that lands is the one a
  load without a window writes (``on_duplicate`` last, first and error alike);
* a window is one checkpoint segment (``loader.checkpoint.Accounting.close_window``): the low-water
  mark passes it only when every batch cut from it is written, and it stops at window boundaries
  (a resume re-reads, at most, the windows that were in flight).

The writer is not left idle while a window fills: the batches of the window last cut go out while
the next one is read (``loader.pipeline``'s ``_pump``), and at most one cut window waits.

Cost: up to two windows are held (the one being filled and the one being written), ~1 KB a row of
~250 bytes each (the row's text, its request JSON, its key): a load of the benchmark's rows peaks
at ~280 MB with ``--shuffle-window 100000`` against 71 MB without; and a stop (a Lambda deadline,
Ctrl-C) leaves those windows for the next run to read again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from loader.models import Entry, Key

__all__ = ["MAX_SHUFFLE_WINDOW", "MIN_SHUFFLE_WINDOW", "check_window", "shuffled"]

#: the largest window: ~2 GB held at 250-byte rows (two windows; see the module docstring)
MAX_SHUFFLE_WINDOW = 1_000_000
#: the smallest: the rows of 40 batches of 25 in flight (a smaller window cannot spread them, and
#: every window ends with a part-filled batch: a window of 26 would send a 1-item call every 25)
MIN_SHUFFLE_WINDOW = 1_000


def check_window(rows: object, option: str = "--shuffle-window") -> str | None:
    """Why ``rows`` is not a window (0 is off), or None: the one rule for every way to give one."""
    if isinstance(rows, bool) or not isinstance(rows, int):
        return f"{option} must be an integer (rows), got {rows!r}"
    if rows != 0 and not MIN_SHUFFLE_WINDOW <= rows <= MAX_SHUFFLE_WINDOW:
        return f"{option} must be 0 (off) or in {MIN_SHUFFLE_WINDOW}..{MAX_SHUFFLE_WINDOW} rows, got {rows}"
    return None


def shuffled(entries: Sequence[Entry], rng: random.Random) -> list[Entry]:
    """``entries`` in a random order in which the entries of one key keep their relative order."""
    n = len(entries)
    order = list(range(n))
    rng.shuffle(order)
    keys = [e.key for e in entries]
    if len(set(keys)) != n:
        # a key seen more than once: its slots in the shuffled order go back to its entries in file
        # order (slots are visited in ascending order, so sorting its indices is enough)
        slots: dict[Key, list[int]] = {}
        for slot, index in enumerate(order):
            slots.setdefault(keys[index], []).append(slot)
        for taken in slots.values():
            if len(taken) > 1:
                for slot, index in zip(taken, sorted(order[s] for s in taken), strict=True):
                    order[slot] = index
    return [entries[i] for i in order]
