"""What an invocation did, as typed records: one frozen dataclass per kind of answer, each with the
fields it carries, and :meth:`HopOutcome.to_dict`, the one place that turns them into the JSON
answer of the handler (``s3ddb invoke`` and the tests read its ``status`` and ``reason``).

``status`` values (the strings of the answer)::

    COMPLETED, FAILED   Finished       the chain (or one shard of a load) ended in this invocation
    continued           Continued      the hop handed over and invoked the next one
    sharded             ShardsStarted  an object's load was cut into shard chains, or its unfinished
                                       shards were started again, each by an invoked first hop
    superseded          Superseded     the hop lost its claim: another request owns the chain now
    skipped             Skipped        nothing to run (a duplicate, a stale continuation, ...)
    already loaded      Skipped        the object version is COMPLETED in this table
                        AlreadyLoaded  (a backfill of one object: with the load it found)
    refused             Refused        not allowed, or not acceptable: nothing ran, nothing changed
    accepted            Accepted       a backfill's lanes were invoked
    empty               Empty          a prefix backfill found no objects
    lane-done           LaneDone       a backfill lane walked to its end
    lane-owned          LaneOwned      the same lane already runs the object it reached
    ignored             Ignored        S3's test event
    ok                  ObjectsHandled one answer per object of an S3 / EventBridge notification
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, Final

from loader.models import Counters

__all__ = [
    "UNSET",
    "Accepted",
    "AlreadyLoaded",
    "Continued",
    "Empty",
    "Finished",
    "HopOutcome",
    "Ignored",
    "LaneDone",
    "LaneOwned",
    "ObjectsHandled",
    "OutcomeStatus",
    "Refused",
    "ShardsStarted",
    "Skipped",
    "Superseded",
]


class OutcomeStatus(enum.StrEnum):
    """The ``status`` of an answer (a ``StrEnum``: a member equals the string the answer carries)."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CONTINUED = "continued"
    SHARDED = "sharded"
    SUPERSEDED = "superseded"
    SKIPPED = "skipped"
    ALREADY_LOADED = "already loaded"
    REFUSED = "refused"
    ACCEPTED = "accepted"
    EMPTY = "empty"
    LANE_DONE = "lane-done"
    LANE_OWNED = "lane-owned"
    IGNORED = "ignored"
    OK = "ok"


class _Unset(enum.Enum):
    UNSET = "unset"


#: A field left out of the answer (where ``None`` is itself a value the answer carries).
UNSET: Final = _Unset.UNSET


def _is_none(value: Any) -> bool:
    return value is None


def _is_unset(value: Any) -> bool:
    return value is UNSET


def _is_empty(value: Any) -> bool:
    return not value


# ``field(metadata=...)``: ``to_dict`` leaves a field out of the answer when ``omit(value)``, and an
# ``internal`` field always
_OMIT_NONE: Final = {"omit": _is_none}
_OMIT_UNSET: Final = {"omit": _is_unset}
_OMIT_EMPTY: Final = {"omit": _is_empty}
_INTERNAL: Final = {"internal": True}


def _plain(value: Any) -> Any:
    if isinstance(value, HopOutcome):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Counters):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class HopOutcome:
    """Base of every answer: ``status`` first, then the fields of the kind, in declaration order."""

    status: OutcomeStatus

    def to_dict(self) -> dict[str, Any]:
        """The handler's JSON answer: plain types only; ``internal`` fields never, optional ones only
        when set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            omit = f.metadata.get("omit")
            if omit is not None and omit(value):
                continue
            out[f.name] = _plain(value)
        return out


@dataclass(frozen=True, kw_only=True)
class Finished(HopOutcome):
    """The chain ended in this invocation: COMPLETED, or FAILED with ``reason``.

    A shard chain says which ``shard`` it is, ``parent_status`` (the load's status once this shard
    finished: COMPLETED or FAILED when it was the last, else RUNNING) and ``rejects_note`` when it
    rejected rows (its rejects files hold absolute byte offsets and ``shard_start``)."""

    object: str
    chain_id: str
    hops: int
    counters: Counters
    reason: str = ""
    shard: int | None = field(default=None, metadata=_OMIT_NONE)
    parent_status: str | None = field(default=None, metadata=_OMIT_NONE)
    rejects_note: str | None = field(default=None, metadata=_OMIT_NONE)

    def __post_init__(self) -> None:
        if self.status not in (OutcomeStatus.COMPLETED, OutcomeStatus.FAILED):
            raise ValueError(f"a finished chain is COMPLETED or FAILED, not {self.status}")


@dataclass(frozen=True, kw_only=True)
class Continued(HopOutcome):
    """The hop committed ``offset``, handed the chain to ``next_hop`` and invoked it."""

    status: OutcomeStatus = field(default=OutcomeStatus.CONTINUED, init=False)
    object: str
    chain_id: str
    hop: int
    next_hop: int
    offset: int
    payload_bytes: int


@dataclass(frozen=True, kw_only=True)
class ShardsStarted(HopOutcome):
    """The load of ``object`` runs as ``shards`` shard chains; ``started``: the shards whose hop this
    invocation invoked (new ones, or failed / stalled ones resumed from their checkpoints).
    ``note``: the planner's, when it cut fewer shards than asked for."""

    status: OutcomeStatus = field(default=OutcomeStatus.SHARDED, init=False)
    object: str
    chain_id: str
    shards: int
    started: tuple[int, ...]
    note: str | None = field(default=None, metadata=_OMIT_NONE)
    reason: str = field(default="", metadata=_OMIT_EMPTY)


@dataclass(frozen=True, kw_only=True)
class Superseded(HopOutcome):
    """The hop lost its claim (``reason``: why it noticed, when it is not the plain case)."""

    status: OutcomeStatus = field(default=OutcomeStatus.SUPERSEDED, init=False)
    object: str
    hop: int
    reason: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class Skipped(HopOutcome):
    """Nothing to run for ``object``: ``skipped``, or ``already loaded`` when its load is COMPLETED.

    ``lane_advanced``: this request had finished the object, and its backfill lane was sent on
    again. ``lane_owned`` (never in the answer): the chain of the object runs in the very lane that
    reached it, so that lane's walker stops."""

    status: OutcomeStatus = OutcomeStatus.SKIPPED
    object: str
    reason: str
    lane_advanced: bool = field(default=False, metadata=_OMIT_EMPTY)
    lane_owned: bool = field(default=False, metadata=_INTERNAL)

    def __post_init__(self) -> None:
        if self.status not in (OutcomeStatus.SKIPPED, OutcomeStatus.ALREADY_LOADED):
            raise ValueError(f"a skip is skipped or already loaded, not {self.status}")


@dataclass(frozen=True, kw_only=True)
class Refused(HopOutcome):
    """Not allowed or not acceptable, with the ``reason`` and what it was about: nothing changed
    (except a chain held STALLED, said in the ledger). ``table`` is None when no table was named."""

    status: OutcomeStatus = field(default=OutcomeStatus.REFUSED, init=False)
    reason: str
    object: str | _Unset = field(default=UNSET, metadata=_OMIT_UNSET)
    source: str | _Unset = field(default=UNSET, metadata=_OMIT_UNSET)
    table: str | _Unset | None = field(default=UNSET, metadata=_OMIT_UNSET)
    hop: int | _Unset = field(default=UNSET, metadata=_OMIT_UNSET)

    def where(self) -> dict[str, Any]:
        """What the refusal was about (the fields that are set): for the log line."""
        return {k: v for k, v in self.to_dict().items() if k not in ("status", "reason")}


@dataclass(frozen=True, kw_only=True)
class AlreadyLoaded(HopOutcome):
    """A backfill of one object whose version is COMPLETED in ``table``: the load it found."""

    status: OutcomeStatus = field(default=OutcomeStatus.ALREADY_LOADED, init=False)
    source: str
    table: str
    version: str
    chain_id: str
    finished_at: str
    counters: Counters
    reason: str


@dataclass(frozen=True, kw_only=True)
class Accepted(HopOutcome):
    """A backfill whose ``lanes`` were invoked; ``changes``: how a reload's options differ from the
    last load's (left out when none).

    With ``parallel`` (left out when 1): for one object, ``shards`` is how many shard chains its
    load runs as (1: one chain, ``note`` says why: a compressed object, one too small), and
    ``resumed_shards`` the failed or stalled shards this backfill started again; for a prefix,
    each object is cut when its lane reaches it (``lanes`` is S3DDB_MAX_CHAINS // parallel)."""

    status: OutcomeStatus = field(default=OutcomeStatus.ACCEPTED, init=False)
    backfill_id: str
    source: str
    table: str
    lanes: int
    reload: bool
    changes: tuple[str, ...] = field(default=(), metadata=_OMIT_EMPTY)
    parallel: int | None = field(default=None, metadata=_OMIT_NONE)
    shards: int | None = field(default=None, metadata=_OMIT_NONE)
    resumed_shards: tuple[int, ...] = field(default=(), metadata=_OMIT_EMPTY)
    note: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class Empty(HopOutcome):
    """A prefix backfill with no objects under the prefix."""

    status: OutcomeStatus = field(default=OutcomeStatus.EMPTY, init=False)
    source: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class LaneOwned(HopOutcome):
    """A lane walker stopped at ``object``: its own lane already runs it (and advances the lane)."""

    status: OutcomeStatus = field(default=OutcomeStatus.LANE_OWNED, init=False)
    lane: int
    object: str
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True, kw_only=True)
class LaneDone(HopOutcome):
    """A lane walker found no further object of its lane; ``skipped``: the objects it walked past."""

    status: OutcomeStatus = field(default=OutcomeStatus.LANE_DONE, init=False)
    lane: int
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True, kw_only=True)
class Ignored(HopOutcome):
    """An event with nothing to load (S3's ``s3:S3TestEvent``)."""

    status: OutcomeStatus = field(default=OutcomeStatus.IGNORED, init=False)
    reason: str


@dataclass(frozen=True, kw_only=True)
class ObjectsHandled(HopOutcome):
    """A notification of one or more objects: the outcome of each, in the event's order."""

    status: OutcomeStatus = field(default=OutcomeStatus.OK, init=False)
    objects: tuple[HopOutcome, ...]
