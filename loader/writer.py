"""The bounded concurrent BatchWriteItem engine.

``submit(batch)`` starts one task per batch and returns; at most ``config.concurrency`` batches
are in flight (being sent, backing off, or waiting for an earlier batch), which bounds memory.
How many BatchWriteItem *calls* run at once is the rate controller's window (AIMD, never more
than ``concurrency``), and write units per second its token bucket (``max_wcu``).

Per batch: send; items returned in ``UnprocessedItems`` are resent alone after a full-jitter
backoff; a throttled or transient call is resent whole; a batch refused as invalid is split in
halves until each poison item stands alone and becomes a ``Reject``; its neighbours are written.
When a batch makes no progress for ``max_attempts`` calls in a row it gives up with
``WriteFailedError``, and the writer stops: ``failed`` is set, batches still retrying give up at
their next retry, the caller drains and checkpoints. ``ConfigError`` (table gone, access denied)
stops it at once.

Ordering: for any key, writes happen in ``seq`` order. ``submit`` records, per key, the seq of the
latest in-flight batch holding it; a batch that shares a key with an earlier in-flight batch waits
for that batch (in its own task, so the producer and unrelated batches go on) before its first
call. So "last row wins" holds across batches as it does within one.

Everything shared lives in the Writer on one event loop; no threads, no locks. Hot path: no
per-item logging or awaits, a couple of dict operations per item.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any, cast

import orjson

from loader.config import LoadConfig
from loader.errors import (
    BatchValidationError,
    ThrottledError,
    TransientSendError,
    WriteFailedError,
)
from loader.limits import total_write_units
from loader.models import Batch, Entry, Item, Key, KeySchema, Reject
from loader.retry import Backoff, RateController, RetryPolicy, UnprocessedItemsError
from loader.sender import BatchSender

_key = attrgetter("key")
_wire = attrgetter("wire")
log = logging.getLogger(__name__)

__all__ = ["Abandoned", "BatchOutcome", "Writer"]

_STOP = "s3ddb-writer-stop"


class Abandoned(Exception):
    """The batch was left unfinished because the writer was told to stop (not a failure: its rows
    stay above the low-water mark and are written again on resume)."""


@dataclass(slots=True)
class BatchOutcome:
    """What happened to one batch; handed to ``on_done`` exactly once per submitted batch."""

    seq: int
    #: items confirmed written
    written: int
    #: entries the service refused as invalid (isolated by bisection), its message as the reason
    rejected: list[Reject]
    #: extra BatchWriteItem calls made for this batch
    retries: int
    throttle_events: int
    #: sum of the write units of the written entries
    write_units: int
    #: set when the batch could not be finished: the load must stop
    error: BaseException | None


def _outcome(seq: int, error: BaseException | None = None) -> BatchOutcome:
    return BatchOutcome(
        seq=seq, written=0, rejected=[], retries=0, throttle_events=0, write_units=0, error=error
    )


class Writer:
    """Writes batches with bounded concurrency, retries, rate control and per-key ordering.

    ``key_schema`` (optional) lets the writer match ``UnprocessedItems`` to entries by their key
    attributes; without it they are matched by the whole item. Either way, an item that matches
    nothing makes the writer resend every pending entry of that batch (puts are idempotent and
    no later batch holding those keys can be in flight), so nothing is ever dropped.
    """

    def __init__(
        self,
        *,
        sender: BatchSender,
        table: str,
        config: LoadConfig,
        on_done: Callable[[BatchOutcome], None],
        rate: RateController | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        key_schema: KeySchema | None = None,
    ) -> None:
        self._sender = sender
        self._table = table
        self._on_done = on_done
        self._limit = config.concurrency
        self.rate = rate or RateController(
            max_concurrency=config.concurrency,
            max_wcu=config.max_wcu,
            clock=clock,
            sleep=sleep,
            budget=config.write_budget,
        )
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts,
            backoff=Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s, rng=rng),
        )
        self._sleep = sleep
        self._key_names = key_schema.names if key_schema is not None else None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: key -> seq of the latest in-flight batch holding it
        self._owner: dict[Key, int] = {}
        #: batches some of whose keys a later batch owns now (it waits for them)
        self._shared: set[int] = set()
        self._room: asyncio.Future[None] | None = None
        self._backoffs: dict[int, float] = {}
        self._last_seq: int | None = None
        #: the first fatal error (a batch gave up, a ConfigError, an on_done failure), if any
        self.failed: BaseException | None = None
        self._stopping = False
        #: batches whose task has taken its first step (only those may be cancelled by stop())
        self._started: set[int] = set()
        #: seqs of batches inside a BatchWriteItem call right now (a stop lets those finish)
        self._sending: set[int] = set()

    # -- what Progress reads ------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Batches submitted and not finished (sending, backing off, or waiting on a key)."""
        return len(self._tasks)

    @property
    def has_room(self) -> bool:
        """Whether ``submit`` would take a batch now, without waiting."""
        return len(self._tasks) < self._limit or self._stopping

    @property
    def max_backoff_s(self) -> float:
        """The longest backoff a batch is sleeping right now (0 when none is)."""
        return max(self._backoffs.values(), default=0.0)

    # -- the producer's side ------------------------------------------------------------

    async def submit(self, batch: Batch) -> None:
        """Accept ``batch`` (in file order, from one producer task) once there is room for it.

        Waits while ``concurrency`` batches are in flight. After a fatal error it sends nothing:
        the batch is finished at once, ``on_done`` gets it with ``error`` set (a
        ``WriteFailedError`` caused by ``failed``), so every submitted batch is still accounted for.
        """
        if self._last_seq is not None and batch.seq <= self._last_seq:
            raise ValueError(f"batch seq {batch.seq} submitted after {self._last_seq}: submit in file order")
        tasks = self._tasks
        while len(tasks) >= self._limit and not self._stopping:
            if self._room is not None and not self._room.done():
                raise RuntimeError("Writer.submit() was called from two tasks at once")
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self._last_seq = seq = batch.seq
        if self._stopping:
            self._done(_outcome(seq, Abandoned(f"batch {seq} not sent: the load is stopping")))
            return
        if self.failed is not None:
            self._refuse(batch)
            return
        owner = self._owner
        keys = list(map(_key, batch.entries))
        # C-level set and dict operations, not a loop per entry: this runs for every batch
        held = owner.keys() & keys
        deps = {owner[k] for k in held} if held else None
        if deps:
            self._shared.update(deps)
        owner.update(zip(keys, repeat(seq)))
        wait_for = [tasks[s] for s in deps] if deps else None
        tasks[seq] = asyncio.create_task(self._run(batch, wait_for), name=f"s3ddb-batch-{seq}")

    def _refuse(self, batch: Batch) -> None:
        assert self.failed is not None
        try:
            raise WriteFailedError(f"batch {batch.seq} not sent: the writer has stopped") from self.failed
        except WriteFailedError as exc:
            error = exc
        self._done(_outcome(batch.seq, error))

    async def drain(self) -> None:
        """Wait until every submitted batch has finished and ``on_done`` was called for it."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    def stop(self) -> None:
        """Stop soon: calls on the wire finish, nothing is sent or retried after them. Batches
        waiting (for room, a key, a backoff) end at once with ``Abandoned`` as their error."""
        if self._stopping:
            return
        self._stopping = True
        for seq, task in self._tasks.items():
            # a task that has not started yet is not cancelled: a cancel before its first step
            # would skip _run's handlers (no on_done, drain() waiting for ever); once it starts,
            # _write sees _stopping and ends it with Abandoned
            if seq in self._started and seq not in self._sending:
                task.cancel(_STOP)
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    # -- one batch ----------------------------------------------------------------------

    async def _run(self, batch: Batch, deps: list[asyncio.Task[None]] | None) -> None:
        outcome = _outcome(batch.seq)
        self._started.add(batch.seq)
        try:
            if deps:
                await asyncio.wait(deps)
            if self.failed is not None:
                raise WriteFailedError(f"batch {batch.seq} not sent: the writer has stopped") from self.failed
            await self._write(batch.entries, outcome, batch.seq)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if not (self._stopping and exc.args == (_STOP,) and task is not None):
                self._finish(batch)
                raise
            task.uncancel()
            outcome.error = Abandoned(f"batch {batch.seq} left unfinished: the load is stopping")
        except Abandoned as exc:
            outcome.error = exc
        except Exception as exc:  # ConfigError, WriteFailedError, or a sender bug: all stop the load
            outcome.error = exc
            if self.failed is None:
                self.failed = exc
                log.warning("batch %d failed, stopping the load: %s", batch.seq, exc)
        self._finish(batch)
        self._done(outcome)

    def _done(self, outcome: BatchOutcome) -> None:
        try:
            self._on_done(outcome)
        except Exception as exc:
            if self.failed is None:
                self.failed = exc
            log.exception("on_done failed for batch %d", outcome.seq)

    def _finish(self, batch: Batch) -> None:
        seq = batch.seq
        owner = self._owner
        if seq in self._shared:  # a later batch took over some of its keys
            self._shared.discard(seq)
            for entry in batch.entries:
                if owner.get(entry.key) == seq:
                    del owner[entry.key]
        else:
            deque(map(owner.pop, map(_key, batch.entries), repeat(None)), maxlen=0)
        del self._tasks[seq]
        self._started.discard(seq)
        self._backoffs.pop(seq, None)
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    async def _write(self, entries: list[Entry], outcome: BatchOutcome, seq: int) -> None:
        """Write ``entries`` (part of batch ``seq``) until written, rejected, or the policy gives up."""
        rate = self.rate
        policy = self.policy
        pending = entries
        stalled = 0  # calls in a row that left the pending items as they were
        exponent = 0  # backoff exponent: keeps growing while this set is being retried
        last: BaseException | None = None
        while True:
            if self._stopping:
                raise Abandoned(f"batch {seq} left unfinished: the load is stopping")
            if last is not None:
                if policy.exhausted(stalled):
                    raise policy.give_up(attempts=stalled, what=f"batch {seq}", last=last) from last
                if self.failed is not None:
                    raise WriteFailedError(f"batch {seq} stopped: the writer has stopped") from last
                delay = policy.next_delay(stalled, exponent=exponent, what=f"batch {seq}", last=last)
                exponent += 1
                outcome.retries += 1
                self._backoffs[seq] = delay
                try:
                    await self._sleep(delay)
                finally:
                    self._backoffs.pop(seq, None)
            if rate.max_wcu is not None:
                await rate.acquire_units(total_write_units(pending))
            slot = await rate.acquire_slot()
            try:
                unprocessed = await self._send(seq, pending)
            except ThrottledError as exc:
                rate.release_slot(slot, ok=False, throttled=True)
                outcome.throttle_events += 1
                last = exc
                stalled += 1
                continue
            except TransientSendError as exc:
                rate.release_slot(slot, ok=False)
                last = exc
                stalled += 1
                continue
            except BatchValidationError as exc:
                rate.release_slot(slot, ok=False)
                await self._isolate(pending, exc, outcome, seq)
                return
            except BaseException:
                rate.release_slot(slot, ok=False)
                raise
            if not unprocessed:
                rate.release_slot(slot, ok=True)
                self._written(pending, outcome)
                return
            rate.release_slot(slot, ok=False, throttled=True)
            outcome.throttle_events += 1
            still = self._match(pending, unprocessed)
            if len(still) < len(pending):
                done = {id(e) for e in still}
                self._written([e for e in pending if id(e) not in done], outcome)
                stalled = 1
            else:
                stalled += 1
            last = UnprocessedItemsError(
                f"{len(still)} of {len(pending)} items came back in UnprocessedItems", code="UnprocessedItems"
            )
            pending = still

    async def _send(self, seq: int, entries: list[Entry]) -> list[Item]:
        wire = list(map(_wire, entries))
        if None in wire:  # entries made without the sender's encode: it serializes the items
            items, ready = [e.item_of() for e in entries], None
        else:  # the entries kept only their bytes (BatchSender.send takes them instead of items)
            items, ready = [], cast(list[bytes], wire)
        # a batch on the wire is not cancelled by stop(): its call finishes and is accounted for
        self._sending.add(seq)
        try:
            return await self._sender.send(self._table, items, ready)
        finally:
            self._sending.discard(seq)

    async def _isolate(
        self, entries: list[Entry], exc: BatchValidationError, outcome: BatchOutcome, seq: int
    ) -> None:
        """Bisect a refused set until each poison item is alone; write the rest."""
        if len(entries) == 1:
            e = entries[0]
            outcome.rejected.append(
                Reject(row=e.number, offset=e.offset, raw=e.raw, reason=f"DynamoDB refused the item: {exc}")
            )
            return
        mid = len(entries) // 2
        await self._write(entries[:mid], outcome, seq)
        await self._write(entries[mid:], outcome, seq)

    @staticmethod
    def _written(entries: list[Entry], outcome: BatchOutcome) -> None:
        outcome.written += len(entries)
        outcome.write_units += total_write_units(entries)

    def _match(self, pending: list[Entry], unprocessed: list[Item]) -> list[Entry]:
        """The pending entries the service handed back.

        The service returns the put requests exactly as they were sent, so an item is matched on
        the wire values of its key attributes (or, without a key schema, on the whole item in
        canonical JSON). Anything that does not match makes every pending entry be resent.
        """
        if len(unprocessed) >= len(pending):
            return pending
        fingerprint = self._fingerprint
        try:
            index = {fingerprint(e.item_of()): e for e in pending}
            still = [index[fingerprint(item)] for item in unprocessed]
        except (KeyError, TypeError, orjson.JSONEncodeError):
            log.warning("UnprocessedItems did not match the items sent; resending all %d", len(pending))
            return pending
        if len(set(map(id, still))) != len(still):
            return pending
        return still

    def _fingerprint(self, item: Item) -> Any:
        names = self._key_names
        if names is None:
            return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        return tuple(tuple(item[name].items()) for name in names)
