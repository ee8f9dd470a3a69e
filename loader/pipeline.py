"""One run of a load: source → decode → schema → batching → writer → low-water-mark checkpoint.

``run`` is a pure step over plain state: it reads from ``resume`` (or the start), stops when the
object ends or ``should_stop`` says so, and returns a RunResult whose checkpoint is where the next
run resumes. It never reads the environment or builds clients; the CLI and the Lambda handler do.

Memory is bounded by the config: one chunk being parsed plus one read ahead (``chunk_bytes``),
the open batch, and at most ``concurrency`` batches in the writer.

A shard (the source has a ``byte_range``) runs the same way over bytes ``[start, end)``: ``end`` is
the end of its data, row numbers count from 1 at ``start``, and its rejects carry ``shard_start``.
The range is trusted to start at a record boundary; its end is checked once, at the end of the
data: a record still open there (no newline before ``end``, or a quoted field left open) when
``end`` is not the end of the object is a SourceError, never a record joined to the next shard's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from loader.batching import Batcher
from loader.blocks import BlockTyper, TypedBlock
from loader.checkpoint import Accounting
from loader.config import CsvSpec, LoadConfig, SchemaSpec
from loader.csvdecode import CsvDecoder
from loader.errors import (
    RowError,
    S3ddbError,
    SourceError,
    TooManyRejectsError,
    WriteFailedError,
)
from loader.limits import total_write_units
from loader.models import (
    Batch,
    Checkpoint,
    Counters,
    Entry,
    Item,
    KeySchema,
    Progress,
    RecordChunk,
    Reject,
    RunResult,
    StopReason,
    entries_of,
)
from loader.rejects import RejectSink
from loader.schema import RowConverter
from loader.sender import BatchSender
from loader.shuffle import shuffled
from loader.source import Source
from loader.writer import Abandoned, BatchOutcome, Writer

__all__ = ["run"]

#: Rows typed at once by the block typer. A block with one row it declines (a reject, an empty
#: key) goes row by row, so this bounds what one bad row costs; 512 keeps the per-block work
#: (~40 C calls) under 0.1 us a row.
_BLOCK_ROWS = 512
#: A read chunk is decoded this much at a time, each piece typed and batched before the next is
#: decoded: its rows are still in the CPU caches when they are typed. Against whole 1 MB chunks,
#: 30% fewer last-level cache misses (cachegrind) and ~10% less CPU on simple rows (noisy A/B).
_FEED_BYTES = 64 * 1024


def _never(_: Progress) -> bool:
    return False


class _Halt(enum.Enum):
    """Why the read loop ended before the end of the object."""

    #: ``should_stop`` said so (polled between batches and on a timer): the run hands on its checkpoint
    STOP = enum.auto()
    #: a batch could not be written (the writer's error): the open batch is not sent
    WRITE_FAILED = enum.auto()
    #: more rows rejected than ``max_rejects``: what was read is still written, then the run fails
    REJECTS = enum.auto()
    #: the source or the rejects sink raised: the open batch is not sent
    ERROR = enum.auto()


class _DryRunWriter:
    """Stands in for the writer in ``validate``: every valid item counts as written, nothing is sent."""

    inflight = 0
    max_backoff_s = 0.0
    failed: BaseException | None = None
    has_room = True

    def __init__(self, on_done: Callable[[BatchOutcome], None]) -> None:
        self._on_done = on_done

    async def submit(self, batch: Batch) -> None:
        units = total_write_units(batch.entries)
        self._on_done(
            BatchOutcome(
                seq=batch.seq,
                written=len(batch.entries),
                rejected=[],
                retries=0,
                throttle_events=0,
                write_units=units,
                error=None,
            )
        )

    async def drain(self) -> None:
        return None

    def stop(self) -> None:
        return None


async def run(
    *,
    source: Source,
    config: LoadConfig,
    csv_spec: CsvSpec,
    schema: SchemaSpec,
    keys: KeySchema,
    sender: BatchSender | None,
    rejects: RejectSink,
    should_stop: Callable[[Progress], bool] = _never,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], Awaitable[None]] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    header: list[str] | None = None,
) -> RunResult:
    """Load ``source`` into ``config.table`` from ``resume`` (or the start).

    Returns when the object is fully accounted for (``stopped=StopReason.COMPLETE``) or when
    ``should_stop`` returned True (``StopReason.STOPPED``: in-flight batches were drained first). Raises
    TooManyRejectsError, WriteFailedError, SourceError or ConfigError when the load cannot go on;
    those carry ``.result`` and the final checkpoint was handed to ``on_checkpoint`` first.

    ``header``: the header row a shard uses (``source.info.byte_range`` starts past it), or checks
    the header row against (its range starts at byte 0).
    """
    return await _Run(
        source=source,
        config=config,
        csv_spec=csv_spec,
        schema=schema,
        keys=keys,
        sender=sender,
        rejects=rejects,
        should_stop=should_stop,
        resume=resume,
        on_checkpoint=on_checkpoint,
        on_progress=on_progress,
        clock=clock,
        header=header,
    ).go()


class _Run:
    """One run's orchestration: read, decode, type and batch the rows, drive the writer, poll for a
    stop. What the run counts, and where the next run resumes, is ``self.accounting``'s."""

    def __init__(
        self,
        *,
        source: Source,
        config: LoadConfig,
        csv_spec: CsvSpec,
        schema: SchemaSpec,
        keys: KeySchema,
        sender: BatchSender | None,
        rejects: RejectSink,
        should_stop: Callable[[Progress], bool],
        resume: Checkpoint | None,
        on_checkpoint: Callable[[Checkpoint], Awaitable[None]] | None,
        on_progress: Callable[[Progress], None] | None,
        clock: Callable[[], float],
        header: list[str] | None = None,
    ) -> None:
        rng = source.info.byte_range
        #: where a shard starts (its rejects carry it); None for the whole object
        self.shard_start = None if rng is None else rng[0]
        #: a shard that ends before the object does: every record must end at its end (see _check_end)
        self.cut = rng is not None and rng[1] != source.info.size
        #: the header the planner read: a shard past the header row uses it, one at byte 0 checks it
        self.expected_header = header
        #: the counters and the low-water mark (checks that ``resume`` is this load's)
        self.accounting = acc = Accounting(
            source=source.info,
            table=config.table,
            resume=resume,
            max_rejects=config.max_rejects,
            header=header if self.shard_start else None,
        )
        self.source = source
        self.config = config
        self.csv_spec = csv_spec
        self.schema = schema
        self.keys = keys
        self.rejects = rejects
        self.should_stop = should_stop
        self.resume = resume
        self.on_checkpoint = on_checkpoint
        self.on_progress = on_progress
        self.clock = clock
        self.started = clock()

        self.offset = acc.start_offset
        self.first_row = acc.first_row
        self.decoder = CsvDecoder(csv_spec, offset=self.offset, first_row=self.first_row, header=acc.header)
        self.batcher = Batcher(policy=config.on_duplicate)
        #: the rows of the open shuffle window (None: no window, rows go straight to the batcher)
        self.window: list[Entry] | None = [] if config.shuffle_window else None
        self.window_rows = config.shuffle_window
        self.rng = random.Random()
        #: batches of the last window cut, not submitted yet: they go out while the next window is
        #: read (``_pump``), so the writer is not idle while a window fills
        self.queued: deque[Batch] = deque()
        self.converter: RowConverter | None = None
        self.typer: BlockTyper | None = None
        self.fatal: BaseException | None = None
        self.last_checkpoint_at = self.started
        self.last_checkpoint_offset = -1
        self.last_number: int | None = None
        self.halt: _Halt | None = None
        self.stop_requested = False
        self.pos = self.offset  # the record boundary after the last record taken from the decoder
        self.consumed = self.offset  # decompressed bytes fed to the decoder
        self.writer: Writer | _DryRunWriter
        #: the sender's item encoder, applied as entries are made (see BatchSender.encode)
        self.encode: Callable[[Item], bytes] | None = None
        if config.dry_run or sender is None:
            self.writer = _DryRunWriter(self._on_done)
        else:
            self.encode = sender.encode
            self.writer = Writer(
                sender=sender, table=config.table, config=config, on_done=self._on_done, key_schema=keys
            )

    # -- writer callbacks ---------------------------------------------------------------------

    def _on_done(self, outcome: BatchOutcome) -> None:
        c = Counters(
            items_written=outcome.written,
            rows_rejected=len(outcome.rejected),
            retries=outcome.retries,
            throttle_events=outcome.throttle_events,
            write_units=outcome.write_units,
        )
        acc = self.accounting
        acc.counters.add(c)
        shard = self.shard_start
        for rej in outcome.rejected:
            self.rejects.add(rej if shard is None else dataclasses.replace(rej, shard_start=shard))
        if isinstance(outcome.error, Abandoned):
            return  # left for the next run: its segment holds the low-water mark
        if outcome.error is not None:
            # the batch did not finish: its segment stays open and holds the low-water mark
            if self.fatal is None:
                self.fatal = outcome.error
            return
        acc.finish_batch(outcome.seq, c)

    # -- the read loop ------------------------------------------------------------------------

    async def go(self) -> RunResult:
        resume = self.resume
        if resume is not None and resume.complete:
            return self._result(StopReason.COMPLETE, resume)
        if self.should_stop(self.progress()):
            # no time for even one batch (a Lambda hop that starts too late): hand the checkpoint on
            checkpoint = self._checkpoint(complete=False)
            return self._result(StopReason.STOPPED, checkpoint)
        loop = asyncio.get_running_loop()
        try:
            stream: BinaryIO = await loop.run_in_executor(None, self.source.open, self.offset)
        except S3ddbError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.source.info.uri}: cannot open at byte {self.offset}: {exc}") from exc
        stop: _Halt | None = None
        error: BaseException | None = None
        read = functools.partial(stream.read, self.config.chunk_bytes)
        watcher = asyncio.create_task(self._watch_stop())
        pending: asyncio.Future[bytes] | None = None
        last = b""  # the last chunk read: whether the data ends with a newline
        at_end = False
        try:
            pending = loop.run_in_executor(None, read)
            while True:
                try:
                    chunk = await pending
                except Exception as exc:
                    pending = None
                    raise SourceError(
                        f"{self.source.info.uri}: read failed near byte {self.consumed}: {exc}"
                    ) from exc
                pending = None
                if not chunk:
                    at_end = True
                    tail = self.decoder.finish()
                    if self.cut:
                        self._check_end(tail, last)
                    if not await self._records(tail):
                        break
                    stop = self.halt
                    break
                last = chunk
                # read ahead one chunk while this one is parsed
                pending = loop.run_in_executor(None, read)
                self.consumed += len(chunk)
                if await self._feed(chunk) or await self._checkpoint_or_stop():
                    stop = self.halt
                    break
        except S3ddbError as exc:
            error = exc
            stop = _Halt.ERROR
        finally:
            if stop is not None or not at_end:
                # at the end of the data the watcher stays: the final drain of up to
                # ``concurrency`` batches can outlast a Lambda hop under a low --max-wcu, and a
                # deadline must still stop it (the batches left are resumed from the checkpoint)
                watcher.cancel()
            if pending is not None:
                try:
                    await pending
                except Exception:
                    pass
            await loop.run_in_executor(None, stream.close)

        eof = stop is None
        if eof and self.converter is None:
            # no data rows: the header (or its absence) must still fit the table and the schema
            self._make_converter()
        if not eof:
            # nothing more is sent or retried; calls on the wire finish and are counted
            self.writer.stop()
        # everything read so far goes out, then the writer drains
        end = self.consumed if eof else self.pos
        acc = self.accounting
        if self.window is not None and stop is not _Halt.WRITE_FAILED and stop is not _Halt.ERROR:
            try:
                await self._send_window(end=end, next_row=self._next_row(), rows=0)
                await self._flush_queued()
            except S3ddbError as exc:
                # the rejects sink failed while the window was cut: its rows stay above the mark
                error = exc
                stop = _Halt.ERROR
                self.writer.stop()
        elif stop is not _Halt.WRITE_FAILED and stop is not _Halt.ERROR:
            batch = self.batcher.flush()
            acc.close_segment(
                None if batch is None else batch.seq,
                end=end,
                next_row=self._next_row(),
                rows=0,
                collapsed=self.batcher.collapsed,
            )
            if batch is not None:
                await self.writer.submit(batch)
        else:
            # no more submissions; the open batch's rows stay above the low-water mark
            pass
        await self.writer.drain()
        watcher.cancel()
        if self.fatal is not None and error is None:
            error = self.fatal

        if error is None and acc.too_many_rejects():
            stop = _Halt.REJECTS
        complete = eof and error is None and acc.pending == 0
        checkpoint = self._checkpoint(complete=complete)
        await self._emit_checkpoint(checkpoint, force=True)
        if error is not None or stop is _Halt.REJECTS:
            result = self._result(StopReason.FAILED, checkpoint, error=str(error) if error else None)
            if stop is _Halt.REJECTS:
                exc_out: S3ddbError = TooManyRejectsError(
                    f"{acc.rejected_total} rows rejected, "
                    f"more than --max-rejects {self.config.max_rejects}; see {self.rejects.location}"
                )
            elif isinstance(error, S3ddbError):
                exc_out = error
            else:
                exc_out = WriteFailedError(f"writes failed: {error}")
            exc_out.result = result
            if exc_out is error:
                raise exc_out
            raise exc_out from error
        return self._result(StopReason.COMPLETE if complete else StopReason.STOPPED, checkpoint)

    async def _feed(self, chunk: bytes) -> bool:
        """Decode, type and batch ``chunk`` a piece at a time; True when the run must stop."""
        step = _FEED_BYTES
        for i in range(0, len(chunk), step):  # a chunk of one piece is not copied: chunk[0:n] is chunk
            if await self._records(self.decoder.feed(chunk[i : i + step])):
                return True
        return False

    async def _records(self, rc: RecordChunk) -> bool:
        """Type and batch a chunk's records; True when the run must stop (``halt`` says why)."""
        n = len(rc.rows)
        if not n:
            if self.decoder.header_end is not None and self.pos < self.decoder.header_end:
                self.pos = self.decoder.header_end
            return False
        conv = self.converter
        if conv is None:
            conv = self._make_converter()
        typer = self.typer
        if typer is None:
            if await self._add_rows(rc, 0, n, conv, None):
                return True
            if self.queued:
                await self._pump()
                if self.stop_requested:
                    return self._stopped_after(rc, n)
        else:
            rows = rc.rows
            for lo in range(0, n, _BLOCK_ROWS):
                hi = min(lo + _BLOCK_ROWS, n)
                block = typer.type_rows(rows[lo:hi])
                if block is None:
                    # a row the block typer declines (an error, an empty key...): row by row
                    stop = await self._add_rows(rc, lo, hi, conv, None)
                else:
                    stop = await self._add_block(rc, lo, hi, block, conv)
                if stop:
                    return True
                if self.queued:
                    await self._pump()
                    if self.stop_requested:  # seen between the queued batches: stop reading now
                        return self._stopped_after(rc, hi)
        self.accounting.counters.rows_read += n
        self.pos = rc.ends[-1]
        self.last_number = rc.first_number + n - 1
        return False

    async def _add_block(
        self, rc: RecordChunk, lo: int, hi: int, block: TypedBlock, conv: RowConverter
    ) -> bool:
        """Rows ``lo:hi`` of the chunk, typed at once, into batches; True when the run must stop."""
        first = rc.first_number
        starts = rc.starts
        numbers = range(first + lo, first + hi)
        entries = entries_of(block.keys, block.sizes, numbers, starts[lo:hi], rc.raws[lo:hi], block.wires)
        if self.window is not None:
            return await self._window_block(rc, lo, hi, entries)
        batcher = self.batcher
        if not batcher.takes_whole(block.keys, block.sizes):  # a repeated key, or very large items
            return await self._add_rows(rc, lo, hi, conv, entries)
        acc = self.accounting
        close = acc.close_segment
        opened = 0  # where in the block the open segment starts
        for j, batch in batcher.add_block(entries, block.keys, block.sizes):
            # entries[j] opened the next batch: as in _add_rows, the segment closes before it
            i = lo + j
            close(batch.seq, end=starts[i], next_row=first + i, rows=j - opened, collapsed=batcher.collapsed)
            opened = j
            await self.writer.submit(batch)
            if await self._checkpoint_or_stop():
                self._stopped_at(rc, i)
                return True
        acc.add_rows(hi - lo - opened)
        return False

    async def _add_rows(
        self, rc: RecordChunk, lo: int, hi: int, conv: RowConverter, typed: list[Entry] | None
    ) -> bool:
        """Rows ``lo:hi`` of the chunk one at a time (converted here unless ``typed`` holds their
        entries): rejects recorded, duplicates collapsed. True when the run must stop."""
        convert = conv.convert
        encode = self.encode
        batcher = self.batcher
        add = batcher.add
        acc = self.accounting
        close = acc.close_segment
        rows, starts, raws = rc.rows, rc.starts, rc.raws
        first = rc.first_number
        seg_rows = 0  # rows of the open segment taken here (the accounting holds those before)
        for i in range(lo, hi):
            number = first + i
            if typed is not None:
                entry = typed[i - lo]
            else:
                fields = rows[i]
                if fields is None:
                    self._reject(number, starts[i], raws[i], rc.errors.get(i, "not valid CSV"))
                    seg_rows += 1
                    continue
                try:
                    item, key, size = convert(fields)
                except RowError as exc:
                    self._reject(number, starts[i], raws[i], exc.reason)
                    seg_rows += 1
                    continue
                if encode is not None:
                    # the bytes are all the lean sender needs: the item's dicts are freed now, while
                    # they are hot, not by the writer 40 batches later (and ~15 fewer objects per row
                    # are alive in flight)
                    entry = Entry(None, key, size, number, starts[i], raws[i], encode(item))
                else:
                    entry = Entry(item, key, size, number, starts[i], raws[i])
            if self.window is not None:
                if len(self.window) >= self.window_rows:
                    # the full window leaves, cut into batches; this row opens the next one
                    await self._send_window(end=starts[i], next_row=number, rows=seg_rows)
                    seg_rows = 0
                    self.window.append(entry)
                    if await self._checkpoint_or_stop():
                        self._stopped_at(rc, i)
                        return True
                else:
                    self.window.append(entry)
                seg_rows += 1
                continue
            batch = add(entry)
            if batch is not None:
                # the full batch leaves; this row opens the next segment
                close(batch.seq, end=starts[i], next_row=number, rows=seg_rows, collapsed=batcher.collapsed)
                seg_rows = 0
                await self.writer.submit(batch)
                if await self._checkpoint_or_stop():
                    self._stopped_at(rc, i)
                    return True
            elif batcher.rejects:
                for rej in batcher.rejects:
                    self._reject(rej.row, rej.offset, rej.raw, rej.reason)
                batcher.rejects.clear()
            seg_rows += 1
        acc.add_rows(seg_rows)
        return False

    async def _window_block(self, rc: RecordChunk, lo: int, hi: int, entries: list[Entry]) -> bool:
        """``_add_block`` with a shuffle window: the block's entries join the open window, which
        leaves each time it is full (as a batch does, before the entry that opens the next)."""
        assert self.window is not None
        starts = rc.starts
        first = rc.first_number
        size = self.window_rows
        n = hi - lo
        opened = 0  # where in the block the open window's rows start
        j = 0
        while j < n:
            room = size - len(self.window)
            if room > 0:
                take = min(room, n - j)
                self.window.extend(entries[j : j + take])
                j += take
                continue
            i = lo + j
            await self._send_window(end=starts[i], next_row=first + i, rows=j - opened)
            opened = j
            self.window.append(entries[j])
            j += 1
            if await self._checkpoint_or_stop():
                self._stopped_at(rc, i)
                return True
        self.accounting.add_rows(n - opened)
        return False

    async def _send_window(self, *, end: int, next_row: int, rows: int) -> None:
        """The open window, with ``rows`` more rows, ends at byte ``end`` before row ``next_row``:
        its rows in a random order (a key's rows keep theirs) are cut into batches, which become one
        segment and are queued; the previous window's batches still queued are sent first (at most
        one window waits), then as many as the writer takes at once."""
        assert self.window is not None
        entries, self.window = self.window, []
        batcher = self.batcher
        batches = []
        for entry in shuffled(entries, self.rng):
            batch = batcher.add(entry)
            if batch is not None:
                batches.append(batch)
            elif batcher.rejects:
                for rej in batcher.rejects:
                    self._reject(rej.row, rej.offset, rej.raw, rej.reason)
                batcher.rejects.clear()
        last = batcher.flush()
        if last is not None:
            batches.append(last)
        self.accounting.close_window(
            [b.seq for b in batches], end=end, next_row=next_row, rows=rows, collapsed=batcher.collapsed
        )
        await self._flush_queued()
        self.queued.extend(batches)
        await self._pump()

    async def _flush_queued(self) -> None:
        """Send every queued batch, waiting for the writer's room."""
        queued = self.queued
        while queued:
            await self.writer.submit(queued.popleft())
            await self._between_batches()

    async def _pump(self) -> None:
        """Send the queued batches the writer takes without waiting, then let its tasks run."""
        queued, writer = self.queued, self.writer
        while queued and writer.has_room:
            await writer.submit(queued.popleft())
            await self._between_batches()
        await asyncio.sleep(0)

    async def _between_batches(self) -> None:
        """What ``_checkpoint_or_stop`` does between batches, for a window's batches: progress, a
        stop (the writer abandons the rest, and the read loop stops at its next check), and the
        periodic checkpoint."""
        progress = self.progress()
        if self.on_progress is not None:
            self.on_progress(progress)
        if not self.stop_requested and self.should_stop(progress):
            self.stop_requested = True
            self.writer.stop()
        await self._maybe_checkpoint()

    def _stopped_after(self, rc: RecordChunk, hi: int) -> bool:
        """A stop seen while queued batches went out after rows ``:hi`` of ``rc`` (all of them in
        the open window): the run stops there; the rest of the chunk is read again on resume."""
        self.halt = _Halt.STOP
        self.accounting.counters.rows_read += hi
        self.pos = rc.ends[hi - 1]
        self.last_number = rc.first_number + hi - 1
        return True

    def _stopped_at(self, rc: RecordChunk, i: int) -> None:
        """The run stops just after record ``i`` of ``rc`` opened a batch (the only one in it):
        the rest of the chunk is read again on resume."""
        acc = self.accounting
        acc.add_rows(1)  # the open segment: record ``i``, in the open batch
        acc.counters.rows_read += i + 1
        self.pos = rc.ends[i]
        self.last_number = rc.first_number + i

    async def _watch_stop(self) -> None:
        """Ask ``should_stop`` on a timer too, so a stop (a deadline, Ctrl-C) is seen while the
        producer waits for the writer, e.g. when every batch is backing off from throttling."""
        while True:
            await asyncio.sleep(self.config.stop_poll_s)
            if self.should_stop(self.progress()):
                self.stop_requested = True
                self.writer.stop()
                return

    async def _checkpoint_or_stop(self) -> bool:
        """Between batches: report progress, take a periodic checkpoint, and say whether to stop."""
        if self.stop_requested:
            self.halt = _Halt.STOP
            return True
        if self.fatal is not None:
            self.halt = _Halt.WRITE_FAILED
            return True
        if self.accounting.too_many_rejects():
            self.halt = _Halt.REJECTS
            return True
        progress = self.progress()
        if self.on_progress is not None:
            self.on_progress(progress)
        if self.should_stop(progress):
            self.halt = _Halt.STOP
            return True
        await self._maybe_checkpoint()
        return False

    def _check_end(self, tail: RecordChunk, last: bytes) -> None:
        """At the end of a shard's range, which is not the end of the object: a record left open
        there (no newline before ``end``, or a quoted field still open) would be cut in two, its
        rest read by the next shard. A planner bug: stop loudly instead."""
        if tail.rows or (last and not last.endswith(b"\n")):
            start, end = self.source.info.byte_range or (0, 0)
            at = tail.starts[0] if tail.starts else self.pos
            raise SourceError(
                f"{self.source.info.uri}: the record at byte {at} does not end by byte {end}, the end "
                f"of this shard's byte range [{start}, {end}): a shard must end at a record boundary "
                "(the split is wrong)"
            )

    def _make_converter(self) -> RowConverter:
        header = self.decoder.header
        if header is None:
            raise SourceError(f"{self.source.info.uri}: the object is empty: no header row")
        expected = self.expected_header
        if expected is not None and header != expected:
            raise SourceError(
                f"{self.source.info.uri}: the header row is {header} but the shard was planned with "
                f"header_names {expected}: the split was planned on another object"
            )
        self.converter = RowConverter(self.schema, header, self.keys)
        if self.encode is not None:
            # the lean sender takes wire bytes: clean blocks of rows are typed at once
            typer = BlockTyper(self.converter.plan)
            self.typer = typer if typer.usable else None
        return self.converter

    def _reject(self, number: int, offset: int, raw: str, reason: str) -> None:
        self.rejects.add(
            Reject(row=number, offset=offset, raw=raw, reason=reason, shard_start=self.shard_start)
        )
        self.accounting.reject()

    def _next_row(self) -> int:
        return self.first_row if self.last_number is None else self.last_number + 1

    # -- checkpoints and reporting ------------------------------------------------------------

    def _checkpoint(self, *, complete: bool) -> Checkpoint:
        return self.accounting.checkpoint(header=self.decoder.header, complete=complete)

    async def _maybe_checkpoint(self) -> None:
        if self.on_checkpoint is None:
            return
        now = self.clock()
        if now - self.last_checkpoint_at < self.config.checkpoint_interval_s:
            return
        if self.accounting.offset == self.last_checkpoint_offset:
            return
        await self._emit_checkpoint(self._checkpoint(complete=False))

    async def _emit_checkpoint(self, checkpoint: Checkpoint, *, force: bool = False) -> None:
        # rejects must be durable before a checkpoint counts them as done
        await asyncio.get_running_loop().run_in_executor(None, self.rejects.flush)
        self.last_checkpoint_at = self.clock()
        self.last_checkpoint_offset = checkpoint.offset
        if self.on_checkpoint is not None:
            await self.on_checkpoint(checkpoint)

    def progress(self) -> Progress:
        elapsed = max(self.clock() - self.started, 1e-9)
        c = self.accounting.counters
        size = self.source.info.size if self.source.info.compression == "none" else None
        return Progress(
            # rows are counted per chunk; rows already accounted for are a lower bound within one
            rows_read=max(c.rows_read, c.items_written + c.rows_rejected + c.duplicates_collapsed),
            items_written=c.items_written,
            rows_rejected=c.rows_rejected,
            duplicates_collapsed=c.duplicates_collapsed,
            offset=self.consumed,
            object_size=size,
            inflight_batches=self.writer.inflight,
            max_backoff_s=self.writer.max_backoff_s,
            elapsed_s=elapsed,
            items_per_second=c.items_written / elapsed,
        )

    def _result(self, stopped: StopReason, checkpoint: Checkpoint, *, error: str | None = None) -> RunResult:
        location = self.rejects.location if self.rejects.count else None
        return RunResult(
            counters=self.accounting.counters.copy(),
            checkpoint=checkpoint,
            stopped=stopped,
            seconds=self.clock() - self.started,
            rejects_location=location,
            error=error,
        )
