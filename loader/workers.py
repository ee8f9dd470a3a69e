"""One object's load over N worker processes (``s3ddb load --workers N``; a Lambda hop may use it too).

The object is cut into N record-aligned byte ranges (``loader.split.plan_split``, which reads the
header once); each range is a shard, a ``LoadSpec`` with ``byte_range`` and ``header_names``, run by
``loader.spec.run`` in its own process, so N cores type and send rows at once. The parent never
loads rows: it starts the workers, gathers their checkpoints into ONE checkpoint file (every
shard's low-water mark, written atomically as they advance), shows the total progress, shares the
load's ``--max-wcu`` among the workers still running (a worker that finishes hands its share on),
and adds up the result.

A worker is a ``multiprocessing`` process (spawn) talking to the parent over a ``Pipe`` (no
``Pool`` or ``Queue``: they need ``/dev/shm``, which Lambda does not have). Workers die with their
parent: each asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``) and checks
its parent is still the one that started it, so a killed load leaves nothing writing beside the
resumed one. Ctrl-C (or SIGTERM) reaches the parent, which tells every worker to stop at its next
record boundary and writes the checkpoint; the workers ignore the terminal's SIGINT themselves.

Resuming (``--resume FILE`` of a sharded checkpoint) runs the pinned spec over the pinned plan:
complete shards are skipped, the others continue from their own low-water marks.

Rejects: each worker writes its own file (``RUN-sK.jsonl``); a reject carries its exact absolute
byte offset and, while its shard's earlier rows are not yet counted, ``shard_start`` and a row
number within the shard. When the load completes into a local directory, the parent merges the
shards' files into one ``RUN.jsonl`` in object order, with the row numbers a one-process load
gives (``loader.spec.renumber``); an ``s3://`` destination keeps one object per shard.

The same machinery runs the worker processes of a Lambda hop (``lambda_src.chain``): there the
plan is a stretch of the object (``ShardedCheckpoint.end``: the chain's remaining range), the
sharded state is saved into the chain's ledger item instead of a file (``run_workers(save=...)``),
and the write budget is the chain's, which may change while the workers run.

Spawned children import the parent's ``__main__`` again (as ``__mp_main__``) before they unpickle
their target, unless it has no file or spec. The target lives in this module, which needs nothing
from ``__main__``, so workers are started with ``__main__`` hidden (``_main_not_imported``): a
command's or a Lambda runtime's bootstrap never runs again in a worker.

Duplicate keys: ``last`` (the default) is exact within a shard. A key repeated in two shards is
written by both, and the row that stays is whichever shard wrote it last (both are counted as
written). Load an object whose keys repeat far apart with ``--workers 1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from loader.errors import ConfigError, S3ddbError, SourceError
from loader.models import COUNTER_NAMES, Checkpoint, Counters, Progress, RunResult, StopReason
from loader.rejects import rejects_location
from loader.retry import WriteBudget
from loader.spec import LoadSpec, RunKnobs

__all__ = [
    "MIN_BYTES_PER_WORKER",
    "SHARDED_FORMAT",
    "ShardedCheckpoint",
    "WorkersFailed",
    "default_workers",
    "is_sharded",
    "plan",
    "run_workers",
]

#: a sharded checkpoint file (one object's shards); format 2 is one process's checkpoint
SHARDED_FORMAT = 3
#: below this many bytes per worker a process costs more (start-up, imports, a table describe)
#: than it brings: ``--workers`` defaults to 1 for smaller objects
MIN_BYTES_PER_WORKER = 64 << 20
#: how often the parent writes the checkpoint file while shards advance
_WRITE_EVERY_S = 1.0


def default_workers(size: int | None, *, compressed: bool, cores: int | None = None) -> int:
    """The number of cores when the object is large enough (``MIN_BYTES_PER_WORKER`` a worker)
    and can be cut by bytes; 1 otherwise."""
    if compressed or not size:
        return 1
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, size // MIN_BYTES_PER_WORKER))


# -- the checkpoint file ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ShardState:
    start: int
    end: int
    checkpoint: Checkpoint | None = None
    #: the local rejects files its runs wrote (merged, renumbered, when the load completes)
    rejects: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.complete

    def to_dict(self) -> dict[str, Any]:
        return {
            "range": [self.start, self.end],
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint is not None else None,
            "rejects": list(self.rejects),
        }


@dataclass(frozen=True, kw_only=True)
class ShardedCheckpoint:
    """Every shard's low-water mark, with the load's pinned spec (no range: the whole object; a
    Lambda chain's spec, with the chain's range) and the plan (where the shards start, the header
    every shard uses, the ranges, and where they end: ``end``, None for the object's end)."""

    spec: LoadSpec
    size: int
    data_start: int
    header_names: tuple[str, ...] | None
    shards: tuple[ShardState, ...]
    #: where the last shard ends when the plan is a stretch of the object; None: at ``size``
    end: int | None = None
    format_version: int = SHARDED_FORMAT

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.shards)

    @property
    def stop(self) -> int:
        """Where the shards end: ``end``, or the object's size."""
        return self.size if self.end is None else self.end

    def done_bytes(self) -> int:
        """The bytes of the shards below their low-water marks (every byte once all are complete)."""
        done = 0
        for s in self.shards:
            if s.complete:
                done += s.end - s.start
            elif s.checkpoint is not None:
                done += s.checkpoint.offset - s.start
        return done

    def shard_spec(self, index: int) -> LoadSpec:
        s = self.shards[index]
        return dataclasses.replace(
            self.spec,
            byte_range=(s.start, s.end),
            header_names=self.header_names if s.start > 0 else None,
        )

    def totals(self) -> Counters:
        total = Counters()
        for s in self.shards:
            if s.checkpoint is not None:
                total.add(s.checkpoint.counters)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "sharded": True,
            "spec": self.spec.to_dict(),
            "size": self.size,
            "data_start": self.data_start,
            "header_names": list(self.header_names) if self.header_names is not None else None,
            "shards": [s.to_dict() for s in self.shards],
            **({} if self.end is None else {"end": self.end}),
        }

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> ShardedCheckpoint:
        bad = f"{where}: damaged sharded checkpoint"
        try:
            if not isinstance(data, dict) or data.get("format_version") != SHARDED_FORMAT:
                raise ValueError(f"not a sharded checkpoint (format {SHARDED_FORMAT})")
            spec = LoadSpec.from_dict(data["spec"], where=f"{where}: spec")
            names = data["header_names"]
            if names is not None and (
                not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
            ):
                raise ValueError("header_names must be a list of column names")
            shards = []
            for raw in data["shards"]:
                if not isinstance(raw, dict):
                    raise ValueError("a shard must be an object")
                start, end = (int(v) for v in raw["range"])
                cp = raw["checkpoint"]
                if cp is not None and not isinstance(cp, dict):
                    raise ValueError(f"the checkpoint of bytes {start}-{end} must be an object")
                checkpoint = Checkpoint.from_dict(cp) if cp is not None else None
                if checkpoint is not None:
                    _check_shard_checkpoint(checkpoint, spec, start, end)
                files = raw.get("rejects", [])
                if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                    raise ValueError(f"the rejects of bytes {start}-{end} must be a list of paths")
                shards.append(ShardState(start=start, end=end, checkpoint=checkpoint, rejects=tuple(files)))
            out = cls(
                spec=spec,
                size=int(data["size"]),
                data_start=int(data["data_start"]),
                header_names=tuple(names) if names is not None else None,
                shards=tuple(shards),
                end=None if data.get("end") is None else int(data["end"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{bad} ({exc})") from None
        except ConfigError as exc:
            raise ConfigError(f"{bad} ({exc})") from None
        previous = out.data_start
        for s in out.shards:
            if s.start != previous or s.end <= s.start:
                raise ConfigError(f"{bad} (shards do not tile the object)")
            previous = s.end
        if previous != out.stop or out.stop > out.size:
            raise ConfigError(f"{bad} (shards end at {previous}, not {out.stop})")
        return out


def _check_shard_checkpoint(cp: Checkpoint, spec: LoadSpec, start: int, end: int) -> None:
    """A shard's checkpoint must be of this object, this table and this range, with its mark
    inside the range (at the range's end exactly when the shard is complete)."""
    where = f"the checkpoint of bytes {start}-{end}"
    if cp.source != spec.source or cp.table != spec.table:
        raise ValueError(f"{where} is of {cp.source} into {cp.table}")
    if cp.byte_range != (start, end):
        raise ValueError(f"{where} is of bytes {cp.byte_range}")
    if not start <= cp.offset <= end:
        raise ValueError(f"{where} has its mark at byte {cp.offset}, outside the range")
    if cp.complete and cp.offset != end:
        raise ValueError(f"{where} says complete at byte {cp.offset}, before the range's end")


def is_sharded(raw: bytes) -> bool:
    """Whether a checkpoint file's bytes are a sharded checkpoint (cheap: no full validation)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("sharded") is True


# -- the worker process ---------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux ``prctl``), and exit now if the parent is
    already gone (it died between fork and here)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Where PR_SET_PDEATHSIG is not available: notice the parent's death within a second."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(conn: multiprocessing.connection.Connection, job: dict[str, Any]) -> None:
    """One shard's load, in its own process. Sends ("checkpoint", cp), ("progress", p) and finally
    ("done", result) or ("error", message, exit_code, result-or-None, error type) to the parent; takes
    ("stop",) and ("budget", wcu) from it."""
    _die_with_parent(job["parent"])
    # The parent decides when the load stops: Ctrl-C and a SIGTERM sent to the whole process group
    # (a terminal, systemd, a CI job's cancel) reach it, and it stops the workers at a record
    # boundary. This process started with both ignored (see run_workers) and keeps them so.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    import uvloop

    from loader.retry import WriteBudget

    stop = threading.Event()
    budget = WriteBudget(job["budget"])
    send_lock = threading.Lock()

    def send(msg: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            conn.send(msg)

    def listen() -> None:
        while True:
            try:
                msg = conn.recv()
            except Exception:  # EOF: the parent is gone; anything else: the pipe was closed under us
                stop.set()
                return
            if msg[0] == "stop":
                stop.set()
            elif msg[0] == "budget":
                budget.set(msg[1])

    threading.Thread(target=listen, daemon=True).start()
    threading.Thread(target=_watch_parent, args=(job["parent"], threading.Event()), daemon=True).start()
    try:
        result = uvloop.run(_worker_load(job, stop=stop, budget=budget, send=send))
        send(("done", _result_to_dict(result)))
    except S3ddbError as exc:
        partial = _result_to_dict(exc.result) if exc.result else None
        send(("error", str(exc), exc.exit_code, partial, type(exc).__name__))
    except BaseException as exc:  # report it; the parent decides (it never leaves a silent shard)
        send(("error", f"worker crashed: {type(exc).__name__}: {exc}", 1, None, type(exc).__name__))
    finally:
        conn.close()


async def _worker_load(
    job: dict[str, Any], *, stop: threading.Event, budget: Any, send: Callable[[tuple[Any, ...]], None]
) -> RunResult:
    from loader import clients
    from loader import spec as load_spec
    from loader.schema import binary_attributes

    spec = LoadSpec.from_dict(job["spec"], where="shard")
    resume = Checkpoint.from_dict(job["resume"]) if job["resume"] is not None else None
    knobs = dataclasses.replace(RunKnobs(**job["knobs"]), write_budget=budget)
    session = clients.session()
    needs_s3 = spec.source.startswith("s3://") or (spec.rejects or "").startswith("s3://")
    s3 = clients.s3_client(session) if needs_s3 else None
    ddb = clients.dynamodb_client(session)
    keys = clients.describe_key_schema(ddb, spec.table)
    last = [0.0]

    async def on_checkpoint(cp: Checkpoint) -> None:
        send(("checkpoint", cp.to_dict()))

    def on_progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            send(("progress", dataclasses.asdict(p)))

    async def go(sender: Any) -> RunResult:
        return await load_spec.run(
            spec,
            keys=keys,
            sender=sender,
            run_id=job["run_id"],
            s3_client=s3,
            knobs=knobs,
            should_stop=lambda _p: stop.is_set(),
            resume=resume,
            on_checkpoint=on_checkpoint,
            on_progress=on_progress,
            pin_into_checkpoints=False,
        )

    if knobs.dry_run:
        return await go(None)
    binary = binary_attributes(spec.schema, keys)
    opened = clients.open_sender(job["sender"], concurrency=spec.concurrency, ddb=ddb, binary_attrs=binary)
    async with opened as sender:
        return await go(sender)


def _result_to_dict(result: RunResult) -> dict[str, Any]:
    return {
        "counters": result.counters.to_dict(),
        "checkpoint": result.checkpoint.to_dict(),
        "stopped": str(result.stopped),
        "seconds": result.seconds,
        "rejects_location": result.rejects_location,
        "error": result.error,
    }


def _result_from_dict(data: dict[str, Any]) -> RunResult:
    return RunResult(
        counters=Counters.from_dict(data["counters"]),
        checkpoint=Checkpoint.from_dict(data["checkpoint"]),
        stopped=StopReason(data["stopped"]),
        seconds=float(data["seconds"]),
        rejects_location=data["rejects_location"],
        error=data["error"],
    )


# -- the parent -------------------------------------------------------------------------------------


#: one thread at a time hides ``__main__`` (two at once would leave the bare one in place)
_MAIN_SWAP = threading.Lock()


@contextlib.contextmanager
def _main_not_imported() -> Iterator[None]:
    """While workers start: ``__main__`` is a bare module, so spawn gives the child no main module
    to import again (``multiprocessing.spawn.get_preparation_data`` reads its ``__spec__`` and
    ``__file__``). A Lambda runtime's bootstrap, or a command's script, never runs in a worker.
    Held under a lock: threads that start workers at once take turns."""
    with _MAIN_SWAP:
        real = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real


class WorkersFailed(S3ddbError):
    """A shard failed (its error says why); the others were stopped at a record boundary.
    ``error_type``: the class name of the shard's error (``SourceError``, ``WriteFailedError``,
    ``TooManyRejectsError`` for the load's limit), or ``WorkerDied`` when a worker process died."""

    def __init__(self, message: str, *, exit_code: int, result: RunResult, error_type: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result
        self.error_type = error_type


@dataclass
class _Worker:
    index: int
    process: Any
    conn: multiprocessing.connection.Connection
    progress: dict[str, Any] | None = None
    result: RunResult | None = None
    error: tuple[str, int] | None = None
    error_type: str = ""
    finished: bool = False
    counters_at_start: Counters = field(default_factory=Counters)


def run_workers(
    state: ShardedCheckpoint,
    *,
    knobs: RunKnobs,
    run_id: str,
    sender: str,
    save: Callable[[ShardedCheckpoint], None],
    should_stop: Callable[[], bool],
    should_abort: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] | None = None,
    save_every_s: float = _WRITE_EVERY_S,
    budget: WriteBudget | None = None,
    merge_rejects: bool = True,
) -> tuple[RunResult, ShardedCheckpoint]:
    """Run every incomplete shard of ``state`` in its own process; return the load's result (its
    counters are this run's, its checkpoint the whole object's) and the final sharded checkpoint.

    ``save(state)`` keeps the sharded checkpoint (the CLI writes its file, a Lambda hop its ledger
    item): once before any worker starts, at most every ``save_every_s`` while marks advance, and
    once at the end; an exception from it stops the workers and is raised. ``should_stop``: the
    workers stop at a record boundary; ``should_abort``: they are killed (the checkpoint keeps
    their last committed marks). ``knobs.max_rejects`` is the limit of the whole load: the parent
    adds up every shard's rejects. The load's write-unit ceiling is ``budget`` (read again while
    the workers run; None: the spec's ``max_wcu``), shared among the workers still running.
    ``merge_rejects``: local rejects files are listed in the checkpoint and merged into one when
    the load completes (else every run's own files are its ``rejects_location``). Raises
    ``WorkersFailed`` when a shard failed, a worker died or the rejects passed the limit, after
    stopping the others and saving the checkpoint."""
    ctx = multiprocessing.get_context("spawn")
    started = time.monotonic()
    shards = list(state.shards)
    pending = [i for i, s in enumerate(shards) if not s.complete]
    workers: list[_Worker] = []

    def total_wcu() -> float | None:
        return budget.wcu if budget is not None else state.spec.max_wcu

    shared_wcu = total_wcu()

    def share(active: int) -> float | None:
        total = total_wcu()
        return None if total is None else total / max(1, active)

    knobs_dict = {
        f.name: getattr(knobs, f.name) for f in dataclasses.fields(knobs) if f.name != "write_budget"
    }
    knobs_dict["max_rejects"] = None  # the load's limit, counted here over every shard
    local_rejects = merge_rejects and not (state.spec.rejects or "").startswith("s3://")
    for i in pending:
        if local_rejects:  # where the worker's sink will write (LocalRejects), known before it runs
            path = rejects_location(state.spec.rejects, run_id=f"{run_id}-s{i}")
            shards[i] = dataclasses.replace(shards[i], rejects=(*shards[i].rejects, path))
    save(dataclasses.replace(state, shards=tuple(shards)))
    # A Ctrl-C (or a SIGTERM to the process group) while a worker starts must not kill it before
    # it can ignore the signal: spawn resets the signal mask but keeps ignored signals ignored, and
    # Python installs no KeyboardInterrupt handler for an ignored SIGINT. Here the two are blocked
    # (one that comes meanwhile stays pending: Linux does not discard a blocked signal) and ignored
    # while the workers start, then this process's handlers are back and the pending one lands.
    # (the resource tracker first: starting it unblocks SIGINT/SIGTERM behind our back)
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    stops = {signal.SIGINT, signal.SIGTERM}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stops} if main else {}
    try:
        with _main_not_imported():
            for i in pending:
                parent_conn, child_conn = ctx.Pipe(duplex=True)
                s = shards[i]
                job = {
                    "parent": os.getpid(),
                    "spec": state.shard_spec(i).to_dict(),
                    "resume": s.checkpoint.to_dict() if s.checkpoint is not None else None,
                    "knobs": knobs_dict,
                    "run_id": f"{run_id}-s{i}",
                    "sender": sender,
                    "budget": share(len(pending)),
                }
                proc = ctx.Process(
                    target=_worker_main, args=(child_conn, job), name=f"s3ddb-shard-{i}", daemon=True
                )
                proc.start()
                child_conn.close()
                workers.append(
                    _Worker(
                        index=i,
                        process=proc,
                        conn=parent_conn,
                        counters_at_start=s.checkpoint.counters.copy()
                        if s.checkpoint is not None
                        else Counters(),
                    )
                )
    except BaseException:
        # a worker that could not start (EMFILE, EAGAIN): the ones started go with the error
        for w in workers:
            w.process.kill()
            w.process.join()
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal that came meanwhile lands now

    current = dataclasses.replace(state, shards=tuple(shards))
    too_many: list[int] = []
    dirty = False
    last_write = 0.0
    stop_sent = False

    def write(force: bool = False) -> None:
        nonlocal dirty, last_write, current
        current = dataclasses.replace(state, shards=tuple(shards))
        if force or (dirty and time.monotonic() - last_write >= save_every_s):
            save(current)
            dirty = False
            last_write = time.monotonic()

    def stop_all() -> None:
        nonlocal stop_sent
        if stop_sent:
            return
        stop_sent = True
        for w in workers:
            if not w.finished:
                with contextlib.suppress(OSError, ValueError):
                    w.conn.send(("stop",))

    def hand_on() -> None:
        nonlocal shared_wcu
        shared_wcu = total_wcu()
        active = [w for w in workers if not w.finished]
        for w in active:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(("budget", share(len(active))))

    try:
        while any(not w.finished for w in workers):
            if should_abort():
                for w in workers:
                    if not w.finished:
                        w.process.kill()
                break
            if should_stop():
                stop_all()
            if total_wcu() != shared_wcu:  # the load's ceiling changed: share it again
                hand_on()
            live = {w.conn: w for w in workers if not w.finished}
            ready = multiprocessing.connection.wait(list(live), timeout=0.25)
            for conn in ready:
                w = live[conn]  # type: ignore[index]
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    w.process.join(timeout=5)
                    w.finished = True
                    if w.result is None and w.error is None:
                        code = w.process.exitcode
                        w.error = (
                            f"the worker of bytes {shards[w.index].start}-{shards[w.index].end} died "
                            f"(exit {code})",
                            1,
                        )
                        w.error_type = "WorkerDied"
                    stop_all()
                    hand_on()
                    continue
                kind = msg[0]
                if kind == "checkpoint":
                    shards[w.index] = dataclasses.replace(
                        shards[w.index], checkpoint=Checkpoint.from_dict(msg[1])
                    )
                    dirty = True
                elif kind == "progress":
                    w.progress = msg[1]
                elif kind in ("done", "error"):
                    if kind == "done":
                        w.result = _result_from_dict(msg[1])
                    else:
                        w.error = (msg[1], int(msg[2]))
                        w.error_type = str(msg[4]) if len(msg) > 4 else ""
                        if msg[3] is not None:
                            w.result = _result_from_dict(msg[3])
                        stop_all()
                    if w.result is not None:
                        shards[w.index] = dataclasses.replace(shards[w.index], checkpoint=w.result.checkpoint)
                        dirty = True
                    w.finished = True
                    w.process.join(timeout=30)
                    hand_on()
            write()
            progress = _progress(current, workers, started)
            if knobs.max_rejects is not None and progress.rows_rejected > knobs.max_rejects and not too_many:
                too_many.append(progress.rows_rejected)
                stop_all()
            if on_progress is not None:
                on_progress(progress)
    finally:
        stop_all()
        for w in workers:
            w.process.join(timeout=0 if should_abort() else 30)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        write(force=True)

    counters = Counters()
    for w in workers:
        end = shards[w.index].checkpoint
        if end is not None:
            run = end.counters.copy()
            for name in COUNTER_NAMES:  # this run's: the shard's totals less what it resumed from
                setattr(run, name, getattr(run, name) - getattr(w.counters_at_start, name))
            counters.add(run)
    complete = current.complete
    total_rejected = current.totals().rows_rejected
    if knobs.max_rejects is not None and total_rejected > knobs.max_rejects and not too_many:
        too_many.append(total_rejected)
    rejects = sorted({w.result.rejects_location for w in workers if w.result and w.result.rejects_location})
    if complete and local_rejects and not too_many:
        merged = _merge_rejects(current, run_id)
        rejects = [merged] if merged else []
    failed = [w for w in workers if w.error is not None]
    stopped = (
        StopReason.FAILED if failed or too_many else StopReason.COMPLETE if complete else StopReason.STOPPED
    )
    result = RunResult(
        counters=counters,
        checkpoint=_whole_checkpoint(current),
        stopped=stopped,
        seconds=time.monotonic() - started,
        rejects_location=rejects[0] if len(rejects) == 1 else (", ".join(rejects) or None),
        error=failed[0].error[0] if failed and failed[0].error else None,
    )
    if too_many:
        from loader.errors import TooManyRejectsError

        raise WorkersFailed(
            f"more than --max-rejects {knobs.max_rejects} rows rejected ({too_many[0]} over the shards)",
            exit_code=TooManyRejectsError.exit_code,
            result=result,
            error_type=TooManyRejectsError.__name__,
        )
    if failed:
        message, code = failed[0].error or ("a worker failed", 1)
        s = shards[failed[0].index]
        raise WorkersFailed(
            f"shard bytes {s.start}-{s.end}: {message}",
            exit_code=code,
            result=result,
            error_type=failed[0].error_type,
        )
    return result, current


def _merge_rejects(state: ShardedCheckpoint, run_id: str) -> str | None:
    """One rejects file for the load, in object order, with the row numbers a one-process load
    gives (every shard is complete, so the rows before each are counted), from every run's files
    (a row rejected again by a resumed run is kept once); the shards' files are removed once it is
    written. None when no row was rejected."""
    from loader.models import Reject
    from loader.spec import renumber, row_bases

    bases = row_bases(
        ((s.start, s.end), s.checkpoint.counters.rows_read if s.checkpoint is not None else 0)
        for s in state.shards
    )
    files = [f for s in state.shards for f in s.rejects if os.path.exists(f)]
    if not files:
        return None
    out_path = os.path.join(os.path.dirname(files[0]), f"{run_id}.jsonl")
    tmp = f"{out_path}.tmp-{os.getpid()}"
    seen: set[int] = set()
    rows: list[Reject] = []
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                d = orjson.loads(line)
                if d["offset"] in seen:
                    continue
                seen.add(d["offset"])
                rows.append(
                    renumber(
                        Reject(
                            row=d["row"],
                            offset=d["offset"],
                            raw=d["raw"],
                            reason=d["reason"],
                            shard_start=d.get("shard_start"),
                        ),
                        bases,
                    )
                )
    rows.sort(key=lambda r: r.offset)
    with open(tmp, "wb") as out:
        for r in rows:
            out.write(r.to_json() + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, out_path)
    for path in files:
        if os.path.abspath(path) != os.path.abspath(out_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
    return out_path


def _whole_checkpoint(state: ShardedCheckpoint) -> Checkpoint:
    """One ``Checkpoint`` standing for the whole object (for the summary): counters add up, the
    offset is the lowest low-water mark of an incomplete shard (the object's size when all are)."""
    marks = [
        (s.checkpoint.offset if s.checkpoint is not None else s.start) for s in state.shards if not s.complete
    ]
    spec = state.spec
    return Checkpoint(
        source=spec.source,
        table=spec.table,
        version_id=spec.version_id,
        etag=spec.etag,
        size=state.size,
        header=list(state.header_names or ()),
        offset=min(marks) if marks else state.stop,
        next_row=0,
        counters=state.totals(),
        complete=not marks,
    )


def _progress(state: ShardedCheckpoint, workers: list[_Worker], started: float) -> Progress:
    """The load's progress: counters of the finished shards plus the running ones' latest; the
    offset counts the bytes read by every shard (as if one reader had read that far)."""
    rows = written = rejected = collapsed = inflight = 0
    read = state.data_start
    backoff = 0.0
    by_index = {w.index: w for w in workers}
    for i, s in enumerate(state.shards):
        w = by_index.get(i)
        p = w.progress if w is not None and not w.finished else None
        if p is not None:  # this run's rows, on top of what the shard had done before it
            base = w.counters_at_start if w is not None else Counters()
            rows += base.rows_read + p["rows_read"]
            written += base.items_written + p["items_written"]
            rejected += base.rows_rejected + p["rows_rejected"]
            collapsed += base.duplicates_collapsed + p["duplicates_collapsed"]
            inflight += p["inflight_batches"]
            backoff = max(backoff, p["max_backoff_s"])
            read += max(0, min(p["offset"], s.end) - s.start)
        elif s.checkpoint is not None:
            c = s.checkpoint.counters
            rows += c.rows_read
            written += c.items_written
            rejected += c.rows_rejected
            collapsed += c.duplicates_collapsed
            read += (s.end if s.complete else s.checkpoint.offset) - s.start
    elapsed = time.monotonic() - started
    return Progress(
        rows_read=rows,
        items_written=written,
        rows_rejected=rejected,
        duplicates_collapsed=collapsed,
        offset=read,
        object_size=state.size,
        inflight_batches=inflight,
        max_backoff_s=backoff,
        elapsed_s=elapsed,
        items_per_second=written / elapsed if elapsed > 0 else 0.0,
    )


def plan(
    spec: LoadSpec,
    *,
    n: int,
    size: int,
    s3_client: Any | None,
    start: int | None = None,
    end: int | None = None,
) -> tuple[ShardedCheckpoint, str | None]:
    """The shards of a pinned ``spec`` (its version/ETag set): the plan and the planner's note.
    ``start`` / ``end``: cut only that stretch of the data (``loader.split.plan_split``); the
    plan's ``data_start`` is then where the first shard starts, its ``end`` where the last ends."""
    from loader.split import local_range_reader, plan_split, s3_range_reader

    if spec.source.startswith("s3://"):
        bucket, _, key = spec.source[5:].partition("/")
        reader = s3_range_reader(
            s3_client, bucket=bucket, key=key, version_id=spec.version_id, etag=spec.etag
        )
        name = key
    else:
        reader = local_range_reader(spec.source)
        name = spec.source
    try:
        split = plan_split(reader, size=size, spec=spec.csv, n=n, name=name, start=start, end=end)
    except SourceError:
        raise
    shards = tuple(ShardState(start=r.start, end=r.end) for r in split.ranges)
    stretch = start is not None or end is not None
    return (
        ShardedCheckpoint(
            spec=spec,
            size=size,
            data_start=shards[0].start if stretch and shards else split.data_start,
            header_names=split.header_names,
            shards=shards,
            end=shards[-1].end if stretch and shards else None,
        ),
        split.note,
    )
