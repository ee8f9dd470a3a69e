"""Worker processes inside one hop: a chain's remaining range cut into sub-ranges, each loaded by a
process of its own, so a function with more than one vCPU uses them all.

One Python process types and sends rows on one core. Lambda gives a function one vCPU per
1,769 MB (up to 6 at 10,240 MB); ``Settings.workers_per_hop`` says how many processes a hop may
run (S3DDB_HOP_WORKERS, or ``auto``: from the memory). The processes are ``loader.workers``' (spawn,
a ``Pipe`` each: Lambda has no ``/dev/shm`` for a ``Pool`` or a ``Queue``), the same the CLI's
``--workers`` runs.

The state. The first hop of a chain that runs with W > 1 plans the sub-ranges once, from the
chain's committed low-water mark to the end of its range (``loader.workers.plan`` over
``loader.split``), and keeps them in the chain's ledger item (``sub_ranges``) beside ``base``, the
chain's checkpoint when they were planned (its counters count the rows before them). The sub-ranges
stop at different places at a deadline, so each keeps its own low-water mark (a
``loader.workers.ShardedCheckpoint`` without its spec, which is the chain's pinned one); every later
hop resumes each incomplete sub-range from its own mark, with as many processes as sub-ranges are
left. The chain's ``checkpoint`` then stands for the whole (``HopSplit.checkpoint``): counters are
``base`` plus the sub-ranges', ``offset`` the lowest mark of an incomplete sub-range (every row
before it is written or rejected), ``complete`` once every sub-range is.

What stays one in-process run: W = 1; a compressed object (no byte can be cut); ``on_duplicate``
first or error (they remember every key, which one process only can); a remaining range under
``MIN_BYTES_PER_WORKER`` a process (starting one costs a second or two of imports and a table
describe); a plan that finds no cut. A chain never goes back from sub-ranges to one run.

Rejects of a sub-range carry their exact absolute byte offset, ``shard_start`` (the sub-range's
start) and a row number counted from the sub-range's first row, as a shard's do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loader.models import Checkpoint, Counters, Progress, RunResult
from loader.retry import WriteBudget
from loader.spec import LoadSpec, RunKnobs
from loader.workers import ShardedCheckpoint

__all__ = [
    "HOP_SPLIT_FORMAT",
    "MIN_BYTES_PER_WORKER",
    "HopSplit",
    "HopWorkersRequest",
    "plan_hop_split",
    "run_hop_workers",
    "workers_for_range",
]

#: the ledger's ``sub_ranges`` attribute format
HOP_SPLIT_FORMAT = 1
#: below this many remaining bytes a worker process costs more than it brings
MIN_BYTES_PER_WORKER = 8 << 20


@dataclass(frozen=True, kw_only=True)
class HopSplit:
    """A chain's sub-ranges: ``base`` (the chain's checkpoint when they were planned) and
    ``state`` (every sub-range's low-water mark, with the chain's pinned spec)."""

    base: Checkpoint
    state: ShardedCheckpoint

    @property
    def complete(self) -> bool:
        return self.state.complete

    def progress_offset(self) -> int:
        """How far the chain has read, as if one reader had: where the sub-ranges start plus
        their bytes below their marks (a measure of progress, not a resume point)."""
        return self.state.data_start + self.state.done_bytes()

    def counters(self) -> Counters:
        total = self.base.counters.copy()
        total.add(self.state.totals())
        return total

    def checkpoint(self, *, hop: int, chain_id: str) -> Checkpoint:
        """The chain's checkpoint that stands for the sub-ranges (see the module docstring)."""
        marks = [
            s.checkpoint.offset if s.checkpoint is not None else s.start
            for s in self.state.shards
            if not s.complete
        ]
        counters = self.counters()
        rows_after = counters.rows_read - self.base.counters.rows_read
        return dataclasses.replace(
            self.base,
            offset=min(marks) if marks else self.state.stop,
            # the row after the last one counted (the row number at ``offset`` once complete)
            next_row=self.base.next_row + rows_after,
            counters=counters,
            complete=not marks,
            header=self.base.header or list(self.state.header_names or ()),
            hop=hop,
            chain_id=chain_id,
        )

    def with_state(self, state: ShardedCheckpoint) -> HopSplit:
        return dataclasses.replace(self, state=state)

    def to_ledger(self) -> dict[str, Any]:
        """The ledger's ``sub_ranges`` attribute: the pinned spec is left out (the item holds it),
        and so is each sub-range checkpoint's header when it is the plan's ``header_names`` (kept
        once): a wide header would otherwise be stored once per worker, and the state must fit the
        item whatever W is."""
        state = self.state.to_dict()
        del state["spec"]
        names = state.get("header_names")
        for sub in state["shards"]:
            cp = sub.get("checkpoint")
            if cp is not None and names and cp.get("header") == names:
                del cp["header"]
        return {"format": HOP_SPLIT_FORMAT, "base": self.base.to_dict(), "state": state}

    @classmethod
    def from_ledger(cls, raw: dict[str, Any], *, spec: dict[str, Any], where: str) -> HopSplit:
        """Read a ledger item's ``sub_ranges`` with its pinned ``spec``; a ConfigError when damaged."""
        from loader.errors import ConfigError

        if not isinstance(raw, dict) or "damaged" in raw:
            why = raw.get("damaged") if isinstance(raw, dict) else type(raw).__name__
            raise ConfigError(f"{where}: damaged ({why})")
        if raw.get("format") != HOP_SPLIT_FORMAT:
            raise ConfigError(f"{where}: the sub-ranges are not of format {HOP_SPLIT_FORMAT}")
        try:
            base = Checkpoint.from_dict(raw["base"])
            if not isinstance(raw["state"], dict):
                raise TypeError("'state' is not an object")
            names = raw["state"].get("header_names")
            shards = []
            for sub in raw["state"]["shards"]:
                cp = sub.get("checkpoint") if isinstance(sub, dict) else None
                if isinstance(cp, dict) and "header" not in cp:  # kept once (see to_ledger)
                    sub = {**sub, "checkpoint": {**cp, "header": names}}
                shards.append(sub)
            state = ShardedCheckpoint.from_dict({**raw["state"], "shards": shards, "spec": spec}, where=where)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{where}: damaged ({type(exc).__name__}: {exc})") from None
        return cls(base=base, state=state)


def workers_for_range(
    spec: LoadSpec, *, wanted: int, start: int, end: int, compression: str, min_bytes: int
) -> int:
    """How many worker processes a hop of ``spec`` runs over the bytes ``[start, end)``: at most
    ``wanted``, at least ``min_bytes`` each; 1 (one in-process run) for a compressed object or a
    duplicate policy other than ``last``."""
    if wanted <= 1 or compression != "none" or spec.on_duplicate != "last":
        return 1
    return max(1, min(wanted, (end - start) // max(1, min_bytes)))


def plan_hop_split(
    spec: LoadSpec, *, base: Checkpoint, n: int, size: int, start: int, end: int, s3_client: Any
) -> tuple[HopSplit | None, str | None]:
    """Cut ``[start, end)`` of the chain's object into at most ``n`` sub-ranges; None (and why)
    when the planner finds fewer than two. Raises SourceError / ConfigError as the planner does."""
    from loader import workers

    state, note = workers.plan(spec, n=n, size=size, s3_client=s3_client, start=start, end=end)
    if len(state.shards) < 2:
        return None, note or "no record boundary to cut at"
    return HopSplit(base=base, state=state), note


@dataclass(frozen=True, kw_only=True)
class HopWorkersRequest:
    """One hop's worker processes: the sub-ranges (their spec with the hop's knobs), and the hop's
    callbacks (see ``loader.workers.run_workers``)."""

    state: ShardedCheckpoint
    knobs: RunKnobs
    run_id: str
    sender: str
    save: Callable[[ShardedCheckpoint], None]
    should_stop: Callable[[], bool]
    should_abort: Callable[[], bool]
    on_progress: Callable[[Progress], None]
    save_every_s: float
    budget: WriteBudget | None = None


#: ``engine(request) -> (result, final state)``; raises ``loader.workers.WorkersFailed``
HopWorkersEngine = Callable[[HopWorkersRequest], tuple[RunResult, ShardedCheckpoint]]


def run_hop_workers(req: HopWorkersRequest) -> tuple[RunResult, ShardedCheckpoint]:
    """The sub-ranges in worker processes (``loader.workers.run_workers``); every run's rejects
    stay where it wrote them (the ledger lists them)."""
    from loader.workers import run_workers

    return run_workers(
        req.state,
        knobs=req.knobs,
        run_id=req.run_id,
        sender=req.sender,
        save=req.save,
        should_stop=req.should_stop,
        should_abort=req.should_abort,
        on_progress=req.on_progress,
        save_every_s=req.save_every_s,
        budget=req.budget,
        merge_rejects=False,
    )
