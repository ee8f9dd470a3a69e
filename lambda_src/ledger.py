"""The ledger: one DynamoDB item per load (object version and target table), the fence that keeps
each chain single, and the chain's state: a continuation event only points at it.

Key: ``object`` (``s3://bucket/key``, HASH) and ``target`` (``<table>#<version>``, RANGE, see
:func:`target_key`; the version is the VersionId, else ``etag:<ETag>``): the same object version
loaded into another table is another chain. Attributes: ``version``, ``table``, ``spec`` (the
pinned ``LoadSpec`` as JSON: every hop runs it), ``token`` (a random secret per hop: a continuation
must carry it; never logged or shown), ``status`` (RUNNING, COMPLETED, FAILED, STALLED),
``chain_id``, ``hop`` (the hop that owns the chain, or will own it once its continuation arrives),
``hops`` (hops begun),
``claim`` (the request id running ``hop``, or ``pending`` between a handover and the next hop's
start), ``handed_by``, ``lease_until`` (epoch seconds after which an unfinished claim may be taken
over), ``checkpoint`` (the last committed low-water mark, JSON), ``offset``, the counters,
``object_size``, ``lane``, ``rejects`` (one location per hop that rejected rows), ``reloaded_by``
(the reload request that restarted a finished chain), ``idle_hops`` (hops in a row that made no
progress), ``invoke_s`` (the last measured self-invoke,
for the next hop's deadline), ``reclaims`` (hops resumed after a crash or timeout),
``started_at`` / ``updated_at`` / ``finished_at``, ``finished_by`` (the request that ended the
chain: its Lambda retry still advances a backfill lane), ``last_error``, ``reason`` and ``rev``.

A chain whose hops run worker processes (``lambda_src.hopworkers``) also keeps ``sub_ranges``: the
sub-ranges of its remaining range, planned once, with every sub-range's low-water mark (JSON;
written by the same conditional writes as ``checkpoint``, which then stands for the whole chain:
its counters add up the sub-ranges', its offset is their lowest mark).

A load cut into shards (a backfill's ``parallel``) is a parent item and one item per shard. The
parent keeps the key above and holds the pinned spec of the whole object, ``shards`` (the plan,
made once against the pinned version: ``data_start``, ``header_names``, ``ranges``, ``size``,
``note``) and ``knobs``; it runs no hop itself (``claim`` is ``shards``, no lease). Shard ``K`` is a
chain like any other, keyed ``<table>#<version>#shard=KKK`` (:func:`shard_target`) under the same
``object``, with its own spec (the parent's plus ``byte_range`` and ``header_names``), token, hops,
checkpoint and counters, and ``parent`` (the parent's target), ``shard`` (K), ``shard_count``,
``parent_chain`` (the parent's ``chain_id``: a reload's new shards replace an earlier load's finished
ones). The function reads shards by key (it has no Query on the ledger).
:meth:`Ledger.settle` ends the parent once every shard is finished: COMPLETED with the shards'
counters summed when all are, else FAILED with the first failed shard's reason; a conditional write
on the parent's ``rev``, so exactly one of two shards finishing at once settles it.
:meth:`Ledger.rearm_shard` starts a failed or stalled shard again from its own checkpoint.

A prefix backfill also keeps a record under ``object`` = the prefix's URI: one row per backfill
(``<table>#backfill=<id>``: lanes, lanes walked to their end, parallel) and one per object its lanes
reached (``...#obj=<hash>``: the object and its load's key), written by the function; ``s3ddb
status s3://b/prefix/`` queries them (:func:`backfill_records`) and adds up the backfill's loads
without listing the bucket or scanning the ledger.

A RUNNING item whose lease ran out has no live hop (Lambda killed it, or its continuation was
lost): :meth:`Ledger.mark_stalled` turns it STALLED when someone looks (``s3ddb status``), and
any event of the object (re-send the notification, or ``s3ddb invoke``) resumes it from the last
committed checkpoint. A chain FAILED by ``S3DDB_MAX_HOPS`` resumes the same way once the limit is
raised (:meth:`Ledger.resume_failed`).

Every write is conditional: creation on the item being absent, a claim on the ``rev`` that was
read, and the owner's own writes (progress, handover, completion, failure) on still holding the
claim of its hop. A write whose condition fails returns False: someone else owns the chain now.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from loader.errors import S3ddbError
from loader.models import COUNTER_NAMES, Checkpoint, Counters

__all__ = [
    "COMPLETED",
    "FAILED",
    "MAX_HOPS_REASON",
    "PENDING",
    "RUNNING",
    "SHARDS",
    "SHARD_REJECTS_NOTE",
    "STALLED",
    "BackfillRecord",
    "ChainStatus",
    "Ledger",
    "LedgerError",
    "LedgerItem",
    "backfill_records",
    "backfill_target",
    "ensure_ledger_table",
    "is_backfill_record",
    "shard_target",
    "sharded_offset",
    "target_key",
    "version_key",
]

#: The fields ``s3ddb status --json`` adds about the lease: ``lease_until`` (ISO, or "") and
#: ``stale`` (RUNNING with its lease run out: no hop is alive to finish it).


class ChainStatus(enum.StrEnum):
    """A chain's ``status`` in the ledger. A ``StrEnum``: the values are the strings stored in the
    item and shown by ``s3ddb status``, and a member equals its string."""

    RUNNING = "RUNNING"  # a hop runs it, or its continuation is on the way (``claim`` is pending)
    COMPLETED = "COMPLETED"  # every row is written or rejected
    FAILED = "FAILED"  # stopped with ``reason``; only S3DDB_MAX_HOPS failures resume
    STALLED = "STALLED"  # nobody runs it; any event of the object resumes it from the ledger

    @property
    def finished(self) -> bool:
        return self in (ChainStatus.COMPLETED, ChainStatus.FAILED)


RUNNING = ChainStatus.RUNNING
COMPLETED = ChainStatus.COMPLETED
FAILED = ChainStatus.FAILED
STALLED = ChainStatus.STALLED
#: ``claim`` between a handover and the start of the next hop
PENDING = "pending"
#: what a shard's answer and a sharded load's status say about rejects (the engine's shard rejects)
SHARD_REJECTS_NOTE = (
    "rejects of a shard: one file per hop that rejected rows; each reject has its exact absolute "
    "byte offset and shard_start, and a row number counted from the shard's first row "
    "(loader.spec.renumber gives the whole object's once every shard is complete)"
)
#: ``claim`` of a parent item: its shards run it, it has no hop of its own
SHARDS = "shards"
#: between a parent's target and a shard's number (a version never holds it)
SHARD_SEP = "#shard="
#: between a table and a backfill's id in the backfill rows of a prefix
BACKFILL_SEP = "#backfill="
_MEMBER_SEP = "#obj="


def is_backfill_record(target: str) -> bool:
    """Whether ``target`` keys a prefix backfill's record (its row, or one of its objects' rows)."""
    return BACKFILL_SEP in target or _MEMBER_SEP in target


#: the prefix of a FAILED reason that a higher S3DDB_MAX_HOPS and a new event may resume
MAX_HOPS_REASON = "S3DDB_MAX_HOPS="


class LedgerError(S3ddbError):
    """A ledger item that this code cannot read (an unknown ``status``): the ledger holds something
    this version did not write, and acting on a guess could fork or restart a chain."""


def _status(raw: dict[str, Any], obj: str, target: str) -> ChainStatus:
    """The item's status, checked on read (as powertools' idempotency ``DataRecord`` checks its own)."""
    value = raw.get("status", {}).get("S")
    try:
        return ChainStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in ChainStatus)
        raise LedgerError(
            f"ledger item {obj} ({target}): unknown status {value!r} (expected one of {known}); "
            "was it written by another version of s3ddb?"
        ) from None


def version_key(version_id: str | None, etag: str | None) -> str:
    """The ledger's range key for one object version."""
    if version_id:
        return version_id
    if etag:
        return f"etag:{etag.strip(chr(34))}"
    return "unversioned"


def target_key(table: str, version: str) -> str:
    """The ledger's range key of one load: the table (which cannot contain ``#``), then the version."""
    return f"{table}#{version}"


def shard_target(parent_target: str, shard: int) -> str:
    """The ledger's range key of shard ``shard`` of the load keyed ``parent_target``."""
    return f"{parent_target}{SHARD_SEP}{shard:03d}"


def backfill_target(table: str, backfill_id: str) -> str:
    """The range key of a prefix backfill's row, under ``object`` = the prefix's URI."""
    return f"{table}{BACKFILL_SEP}{backfill_id}"


def sharded_offset(parent: LedgerItem, shards: list[LedgerItem]) -> int:
    """How far a sharded load has read, as one offset: the bytes before the first shard plus each
    shard's bytes below its low-water mark (the object's size once every shard is complete)."""
    plan = parent.shards or {}
    done = int(plan.get("data_start") or 0)
    for s in shards:
        rng = s.byte_range
        if rng is None:
            continue
        if s.status == COMPLETED:
            done += rng[1] - rng[0]
        else:
            done += max(0, min(s.offset, rng[1]) - rng[0])
    return done


def _sub_ranges_of(raw: str) -> dict[str, Any] | None:
    """The ``sub_ranges`` attribute; one that is not a JSON object reads as ``{"damaged": why}``,
    which the hop refuses (the chain FAILS saying so) while the item stays readable (status)."""
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {"damaged": f"not JSON: {exc}"}
    return value if isinstance(value, dict) else {"damaged": f"not a JSON object: {type(value).__name__}"}


def _sub_range_status(sub_ranges: dict[str, Any]) -> list[dict[str, Any]]:
    """A chain's sub-ranges as ``s3ddb status --json`` shows them (``workers``): each one's range,
    low-water mark, rows read and whether it is complete (nothing for damaged ones)."""
    out = []
    state = sub_ranges.get("state")
    shards = state.get("shards") if isinstance(state, dict) else None
    for sub in shards if isinstance(shards, list) else []:
        if not isinstance(sub, dict) or not isinstance(sub.get("range"), list) or len(sub["range"]) != 2:
            continue
        found = sub.get("checkpoint")
        cp: dict[str, Any] = found if isinstance(found, dict) else {}
        start, end = sub["range"]
        out.append(
            {
                "range": [start, end],
                "offset": cp.get("offset", start),
                "rows_read": (cp.get("counters") or {}).get("rows_read", 0),
                "complete": bool(cp.get("complete", False)),
            }
        )
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, kw_only=True)
class LedgerItem:
    object: str
    target: str
    version: str
    status: ChainStatus
    chain_id: str
    hop: int
    hops: int
    claim: str
    handed_by: str
    lease_until: float
    rev: int
    checkpoint: Checkpoint | None
    table: str
    spec: dict[str, Any] | None
    token: str
    lane: dict[str, Any] | None
    object_size: int | None
    offset: int
    counters: Counters
    rejects: list[str] = field(default_factory=list)
    reclaims: int = 0
    started_at: str = ""
    updated_at: str = ""
    finished_at: str = ""
    finished_by: str = ""
    last_error: str = ""
    reason: str = ""
    reloaded_by: str = ""
    invoke_s: float | None = None
    idle_hops: int = 0
    #: run knobs given by the backfill (``max_wcu``, ``max_rejects``, ``shuffle_window``)
    knobs: dict[str, Any] = field(default_factory=dict)
    #: a parent: the shard plan (``data_start``, ``header_names``, ``ranges``, ``size``, ``note``)
    shards: dict[str, Any] | None = None
    #: a shard: its parent's target, its number, its parent's chain id and how many shards it has
    parent: str = ""
    shard: int | None = None
    parent_chain: str = ""
    shard_count: int | None = None
    #: a shard: its write-unit share and the shards running when it was last worked out
    wcu_share: float | None = None
    shards_running: int | None = None
    #: a chain whose hops run worker processes: its sub-ranges and their marks (see hopworkers)
    sub_ranges: dict[str, Any] | None = None

    @property
    def is_parent(self) -> bool:
        return self.shards is not None

    @property
    def is_shard(self) -> bool:
        return self.shard is not None

    @property
    def byte_range(self) -> tuple[int, int] | None:
        """A shard's bytes ``[start, end)`` (from its pinned spec); None for a whole object."""
        rng = (self.spec or {}).get("byte_range")
        if isinstance(rng, list) and len(rng) == 2:
            return int(rng[0]), int(rng[1])
        return None

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> LedgerItem:
        """The item as DynamoDB returns it; raises LedgerError if its status is not a ChainStatus."""

        def s(name: str) -> str:
            return str(raw[name]["S"]) if name in raw and "S" in raw[name] else ""

        def n(name: str, default: float = 0) -> float:
            return float(raw[name]["N"]) if name in raw and "N" in raw[name] else default

        cp = s("checkpoint")
        spec, lane, knobs, shards = s("spec"), s("lane"), s("knobs"), s("shards")
        sub_ranges = s("sub_ranges")
        size = raw.get("object_size", {}).get("N")
        return cls(
            object=s("object"),
            target=s("target"),
            version=s("version"),
            status=_status(raw, s("object"), s("target")),
            chain_id=s("chain_id"),
            hop=int(n("hop")),
            hops=int(n("hops")),
            claim=s("claim"),
            handed_by=s("handed_by"),
            lease_until=n("lease_until"),
            rev=int(n("rev")),
            checkpoint=Checkpoint.loads(cp) if cp else None,
            table=s("table"),
            spec=orjson.loads(spec) if spec else None,
            token=s("token"),
            lane=orjson.loads(lane) if lane else None,
            object_size=None if size is None else int(size),
            offset=int(n("offset")),
            counters=Counters.from_dict({c: n(c) for c in COUNTER_NAMES}),
            rejects=[v["S"] for v in raw.get("rejects", {}).get("L", [])],
            reclaims=int(n("reclaims")),
            started_at=s("started_at"),
            updated_at=s("updated_at"),
            finished_at=s("finished_at"),
            finished_by=s("finished_by"),
            last_error=s("last_error"),
            reason=s("reason"),
            reloaded_by=s("reloaded_by"),
            invoke_s=n("invoke_s") if "invoke_s" in raw else None,
            idle_hops=int(n("idle_hops")),
            knobs=orjson.loads(knobs) if knobs else {},
            shards=orjson.loads(shards) if shards else None,
            parent=s("parent"),
            shard=int(n("shard")) if "shard" in raw else None,
            parent_chain=s("parent_chain"),
            shard_count=int(n("shard_count")) if "shard_count" in raw else None,
            wcu_share=n("wcu_share") if "wcu_share" in raw else None,
            shards_running=int(n("shards_running")) if "shards_running" in raw else None,
            sub_ranges=_sub_ranges_of(sub_ranges),
        )

    def stale(self, now: float) -> bool:
        """RUNNING with its lease run out: no hop is alive to move it on."""
        return self.status == RUNNING and 0 < self.lease_until < now

    def failed_for_max_hops(self) -> bool:
        return self.status == FAILED and self.reason.startswith(MAX_HOPS_REASON)

    def to_status(self, now: float | None = None) -> dict[str, Any]:
        """The ``s3ddb status --json`` form (``now`` decides ``stale``; default: the clock). The
        hop token is not in it: whoever can read a status must not be able to continue a chain."""
        now = time.time() if now is None else now
        return {
            "object": self.object,
            "version": self.version,
            "status": self.status.value,
            "chain_id": self.chain_id,
            "hops": self.hops,
            "hop": self.hop,
            **self.counters.to_dict(),
            "offset": self.offset,
            "object_size": self.object_size,
            "table": self.table,
            "rejects": list(self.rejects),
            "reclaims": self.reclaims,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "lease_until": _iso(self.lease_until) if self.lease_until > 0 else "",
            "stale": self.stale(now),
            "last_error": self.last_error,
            "reason": self.reason,
            **({"workers": _sub_range_status(self.sub_ranges)} if self.sub_ranges else {}),
        }

    def to_shard_status(self, now: float | None = None) -> dict[str, Any]:
        """One shard's line of ``s3ddb status --json`` (``shards: [...]``)."""
        full = self.to_status(now)
        rng = self.byte_range
        out: dict[str, Any] = {"shard": self.shard, "range": list(rng) if rng is not None else None}
        out.update({k: v for k, v in full.items() if k not in ("object", "version", "table", "object_size")})
        if self.wcu_share is not None:
            out["wcu_share"] = self.wcu_share
        return out


@dataclass(frozen=True, kw_only=True)
class BackfillRecord:
    """A prefix backfill as the ledger keeps it: its row and the objects its lanes reached (each
    ``(object, load's target or "", why it was skipped or "")``)."""

    source: str
    table: str
    backfill_id: str
    lanes: int
    lanes_done: frozenset[int]
    parallel: int
    started_at: str
    accepted_at: str
    members: tuple[tuple[str, str, str], ...] = ()

    @property
    def walked(self) -> bool:
        """Every lane walked to its end: no object of the prefix is left to start."""
        return len(self.lanes_done) >= self.lanes


def backfill_records(source: str, raws: list[dict[str, Any]]) -> list[BackfillRecord]:
    """The prefix backfills among the ledger items ``raws`` of ``object`` = ``source`` (as a Query
    returns them), oldest first."""
    rows: dict[str, dict[str, Any]] = {}
    members: dict[str, list[tuple[str, str, str]]] = {}
    for raw in raws:
        kind = raw.get("kind", {}).get("S")
        target = raw["target"]["S"]
        if kind == "backfill":
            rows[target] = raw
        elif kind == "member":
            owner = target.split(_MEMBER_SEP, 1)[0]
            members.setdefault(owner, []).append(
                (
                    raw.get("chain_object", {}).get("S", ""),
                    raw.get("chain_target", {}).get("S", ""),
                    raw.get("skipped", {}).get("S", ""),
                )
            )
    out = [
        BackfillRecord(
            source=source,
            table=raw.get("table", {}).get("S", ""),
            backfill_id=raw.get("backfill_id", {}).get("S", ""),
            lanes=int(raw.get("lanes", {}).get("N", "0")),
            lanes_done=frozenset(int(v) for v in raw.get("lanes_done", {}).get("NS", [])),
            parallel=int(raw.get("parallel", {}).get("N", "1")),
            started_at=raw.get("started_at", {}).get("S", ""),
            accepted_at=raw.get("accepted_at", {}).get("S", ""),
            members=tuple(sorted(members.get(target, []))),
        )
        for target, raw in rows.items()
    ]
    return sorted(out, key=lambda b: b.accepted_at)


def _progress_values(cp: Checkpoint, sub_ranges: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        ":cp": {"S": cp.dumps().decode()},
        ":offset": {"N": str(cp.offset)},
    }
    for c in COUNTER_NAMES:
        values[f":{c}"] = {"N": str(getattr(cp.counters, c))}
    if sub_ranges is not None:
        values[":sub_ranges"] = {"S": orjson.dumps(sub_ranges).decode()}
    return values


def _sub_ranges_set(sub_ranges: dict[str, Any] | None) -> str:
    """The SET clause of a chain's sub-ranges, when a write carries them."""
    return "" if sub_ranges is None else ", sub_ranges = :sub_ranges"


_PROGRESS_SET = "checkpoint = :cp, #offset = :offset, " + ", ".join(f"{c} = :{c}" for c in COUNTER_NAMES)


class Ledger:
    """Conditional reads and writes of ledger items over a sync boto3 DynamoDB client."""

    def __init__(self, client: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.table = table
        self.clock = clock

    # -- reads -------------------------------------------------------------------------------

    def get(self, obj: str, target: str) -> LedgerItem | None:
        resp = self.client.get_item(TableName=self.table, Key=self._key(obj, target), ConsistentRead=True)
        return LedgerItem.from_wire(resp["Item"]) if "Item" in resp else None

    def chains(self, obj: str) -> list[LedgerItem]:
        """Every load of ``obj`` in the ledger (each version, each table), oldest start first. A
        sharded load is its parent item (see :meth:`shards_of`). The one Query of the ledger: the
        CLI's (``s3ddb status``); the function reads items by their key."""
        items: list[LedgerItem] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "object"},
            "ExpressionAttributeValues": {":o": {"S": obj}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(
                LedgerItem.from_wire(raw)
                for raw in page["Items"]
                if "kind" not in raw and "shard" not in raw  # a prefix backfill's rows; a shard
            )
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(items, key=lambda i: i.started_at)

    def shards_of(self, parent: LedgerItem) -> list[LedgerItem]:
        """The shards of the load ``parent`` that exist (this load's: a reload's earlier ones are
        not), by number; read by key, one consistent GetItem each."""
        n = len((parent.shards or {}).get("ranges") or [])
        return self._shards(parent.object, parent.target, parent.chain_id, n)

    def siblings(self, shard: LedgerItem) -> list[LedgerItem]:
        """Every shard of the load ``shard`` belongs to (itself included), by number."""
        return self._shards(shard.object, shard.parent, shard.parent_chain, shard.shard_count or 0)

    def _shards(self, obj: str, parent_target: str, parent_chain: str, n: int) -> list[LedgerItem]:
        found = (self.get(obj, shard_target(parent_target, k)) for k in range(n))
        return [i for i in found if i is not None and i.parent_chain == parent_chain]

    # -- transitions -------------------------------------------------------------------------

    def create(
        self,
        obj: str,
        *,
        version: str,
        chain_id: str,
        request_id: str,
        lease_until: float,
        table: str,
        spec: dict[str, Any],
        lane: dict[str, Any] | None,
        object_size: int | None,
        knobs: dict[str, Any] | None = None,
        shards: dict[str, Any] | None = None,
    ) -> bool:
        """Start a chain at hop 0, claimed by ``request_id``, with its pinned ``spec``; False if
        the load's item already exists. With ``shards`` (the plan) the item is a parent: it runs
        no hop (claim ``shards``, no lease), its shards are created with :meth:`create_shard`."""
        now = _iso(self.clock())
        item: dict[str, Any] = {
            **self._key(obj, target_key(table, version)),
            "version": {"S": version},
            "table": {"S": table},
            "spec": {"S": orjson.dumps(spec).decode()},
            "status": {"S": RUNNING.value},
            "chain_id": {"S": chain_id},
            "hop": {"N": "0"},
            "hops": {"N": "1"},
            "claim": {"S": request_id},
            "lease_until": {"N": f"{lease_until:.3f}"},
            "rev": {"N": "1"},
            "offset": {"N": "0"},
            "reclaims": {"N": "0"},
            "started_at": {"S": now},
            "updated_at": {"S": now},
            **{c: {"N": "0"} for c in COUNTER_NAMES},
        }
        if lane is not None:
            item["lane"] = {"S": orjson.dumps(lane).decode()}
        if object_size is not None:
            item["object_size"] = {"N": str(object_size)}
        if knobs:
            item["knobs"] = {"S": orjson.dumps(knobs).decode()}
        if shards is not None:
            item.update(
                shards={"S": orjson.dumps(shards).decode()},
                claim={"S": SHARDS},
                lease_until={"N": "0"},
                hops={"N": "0"},
            )
        return self._write(
            self.client.put_item,
            TableName=self.table,
            Item=item,
            ConditionExpression="attribute_not_exists(#o)",
            ExpressionAttributeNames={"#o": "object"},
        )

    def create_shard(
        self,
        parent: LedgerItem,
        *,
        shard: int,
        chain_id: str,
        spec: dict[str, Any],
        token: str,
        request_id: str,
        lease_until: float,
    ) -> bool:
        """Shard ``shard`` of ``parent``: a chain RUNNING at hop 0, pending its first continuation
        (which must carry ``token``; ``request_id`` sends it). Replaces a finished shard of an
        earlier load of the same key (a reload); False if the shard exists otherwise."""
        now = _iso(self.clock())
        rng = spec.get("byte_range") or [0, 0]
        item: dict[str, Any] = {
            **self._key(parent.object, shard_target(parent.target, shard)),
            "version": {"S": parent.version},
            "table": {"S": parent.table},
            "spec": {"S": orjson.dumps(spec).decode()},
            "status": {"S": RUNNING.value},
            "chain_id": {"S": chain_id},
            "hop": {"N": "0"},
            "hops": {"N": "1"},
            "claim": {"S": PENDING},
            "handed_by": {"S": request_id},
            "token": {"S": token},
            "lease_until": {"N": f"{lease_until:.3f}"},
            "rev": {"N": "1"},
            "offset": {"N": str(int(rng[0]))},
            "reclaims": {"N": "0"},
            "started_at": {"S": now},
            "updated_at": {"S": now},
            "parent": {"S": parent.target},
            "shard": {"N": str(shard)},
            "parent_chain": {"S": parent.chain_id},
            "shard_count": {"N": str(len((parent.shards or {}).get("ranges") or []))},
            **{c: {"N": "0"} for c in COUNTER_NAMES},
        }
        if parent.object_size is not None:
            item["object_size"] = {"N": str(parent.object_size)}
        if parent.knobs:
            item["knobs"] = {"S": orjson.dumps(parent.knobs).decode()}
        return self._write(
            self.client.put_item,
            TableName=self.table,
            Item=item,
            ConditionExpression=(
                "attribute_not_exists(#o) OR "
                "(parent_chain <> :pc AND (#status = :completed OR #status = :failed))"
            ),
            ExpressionAttributeNames={"#o": "object", "#status": "status"},
            ExpressionAttributeValues={
                ":pc": {"S": parent.chain_id},
                ":completed": {"S": COMPLETED.value},
                ":failed": {"S": FAILED.value},
            },
        )

    def rearm_shard(
        self,
        item: LedgerItem,
        *,
        request_id: str,
        token: str,
        lease_until: float,
        knobs: dict[str, Any] | None = None,
    ) -> bool:
        """Start shard ``item`` again from its checkpoint, as read: FAILED (at the next hop, its
        reason cleared), STALLED, or RUNNING with its lease run out (at the same hop). It is pending
        the continuation ``request_id`` sends, which must carry ``token``; ``knobs`` (when given)
        replace the shard's. False if it moved meanwhile, or is none of these."""
        failed = item.status == FAILED
        values: dict[str, Any] = {
            ":running": {"S": RUNNING.value},
            ":pending": {"S": PENDING},
            ":rid": {"S": request_id},
            ":token": {"S": token},
            ":lease": {"N": f"{lease_until:.3f}"},
            ":rev": {"N": str(item.rev)},
            ":one": {"N": "1"},
            ":was": {"S": item.status.value},
        }
        expr = (
            "SET #status = :running, claim = :pending, handed_by = :rid, #token = :token, "
            "lease_until = :lease, idle_hops = :zero, updated_at = :now, rev = rev + :one"
        )
        values[":zero"] = {"N": "0"}
        cond = "rev = :rev AND #status = :was"
        if item.status == RUNNING:
            cond += " AND lease_until < :t"
            values[":t"] = {"N": f"{self.clock():.3f}"}
        elif item.status not in (FAILED, STALLED):
            return False
        if failed:
            expr += ", hop = :next, hops = :hops, reason = :empty"
            values.update(
                {":next": {"N": str(item.hop + 1)}, ":hops": {"N": str(item.hops + 1)}, ":empty": {"S": ""}}
            )
        if knobs is not None:
            expr += ", knobs = :knobs"
            values[":knobs"] = {"S": orjson.dumps(knobs).decode()}
        # what stopped it is history once it runs again (the parent's status keeps the story)
        expr += " REMOVE last_error" + (", finished_at, finished_by" if failed else "")
        return self._update(item.object, item.target, expr, cond, values)

    def settle(
        self,
        parent: LedgerItem,
        *,
        status: ChainStatus,
        counters: Counters,
        offset: int,
        request_id: str,
        reason: str = "",
    ) -> bool:
        """End the sharded load ``parent`` (as read: its ``rev``) once every shard is finished:
        COMPLETED with the shards' ``counters`` summed (from RUNNING, or from FAILED after a failed
        shard was resumed), or FAILED with ``reason`` (from RUNNING). Conditional on ``rev``: of two
        shards that finish at once and both find every shard finished, exactly one settles it."""
        if not status.finished:
            raise ValueError(f"a load settles COMPLETED or FAILED, not {status}")
        values: dict[str, Any] = {
            ":status": {"S": status.value},
            ":offset": {"N": str(offset)},
            ":rid": {"S": request_id},
            ":rev": {"N": str(parent.rev)},
            ":one": {"N": "1"},
        }
        for c in COUNTER_NAMES:
            values[f":{c}"] = {"N": str(getattr(counters, c))}
        expr = (
            "SET #status = :status, #offset = :offset, "
            + ", ".join(f"{c} = :{c}" for c in COUNTER_NAMES)
            + ", finished_at = :now, finished_by = :rid, updated_at = :now, rev = rev + :one"
        )
        if status == COMPLETED:
            cond = "rev = :rev AND #status <> :completed"
            expr += ", reason = :empty REMOVE last_error"
            values.update({":empty": {"S": ""}, ":completed": {"S": COMPLETED.value}})
        else:
            cond = "rev = :rev AND #status = :running"
            expr += ", reason = :reason, last_error = :reason"
            values.update({":reason": {"S": reason[:2000]}, ":running": {"S": RUNNING.value}})
        return self._update(parent.object, parent.target, expr, cond, values)

    def reopen(self, parent: LedgerItem) -> bool:
        """A sharded load settled FAILED (as read) is RUNNING again: one of its failed shards was
        started again. False if it moved meanwhile."""
        return self._update(
            parent.object,
            parent.target,
            "SET #status = :running, reason = :empty, updated_at = :now, rev = rev + :one "
            "REMOVE finished_at, finished_by, last_error",
            "rev = :rev AND #status = :failed",
            {
                ":running": {"S": RUNNING.value},
                ":empty": {"S": ""},
                ":rev": {"N": str(parent.rev)},
                ":failed": {"S": FAILED.value},
                ":one": {"N": "1"},
            },
        )

    def touch(self, parent: LedgerItem) -> bool:
        """Move a RUNNING sharded load's ``rev`` (as read) on without changing anything else: a
        settlement computed from a read taken before one of its shards was started again then
        fails its condition. False if it moved meanwhile."""
        return self._update(
            parent.object,
            parent.target,
            "SET rev = rev + :one, updated_at = :now",
            "rev = :rev AND #status = :running",
            {":rev": {"N": str(parent.rev)}, ":running": {"S": RUNNING.value}, ":one": {"N": "1"}},
        )

    def note_budget(self, item: LedgerItem, *, share: float, running: int) -> None:
        """Remember a shard's write-unit share and the shards it was shared with. Leaves ``rev``
        alone (it decides nothing), so it cannot make the chain's own writes fail."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(item.object, item.target),
                UpdateExpression="SET wcu_share = :s, shards_running = :n",
                ConditionExpression="chain_id = :chain",
                ExpressionAttributeValues={
                    ":s": {"N": f"{share:.6g}"},
                    ":n": {"N": str(running)},
                    ":chain": {"S": item.chain_id},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass

    # -- a prefix backfill's record ------------------------------------------------------------

    def start_backfill(self, source: str, *, table: str, backfill_id: str, lanes: int, parallel: int) -> None:
        """The row of a prefix backfill whose lanes are being sent; sent again, its lanes walk again."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(source, backfill_target(table, backfill_id)),
            UpdateExpression=(
                "SET kind = :kind, #table = :table, backfill_id = :bid, lanes = :lanes, "
                "#parallel = :parallel, started_at = if_not_exists(started_at, :now), accepted_at = :now, "
                "updated_at = :now REMOVE lanes_done"
            ),
            ExpressionAttributeNames={"#table": "table", "#parallel": "parallel"},
            ExpressionAttributeValues={
                ":kind": {"S": "backfill"},
                ":table": {"S": table},
                ":bid": {"S": backfill_id},
                ":lanes": {"N": str(lanes)},
                ":parallel": {"N": str(parallel)},
                ":now": {"S": _iso(self.clock())},
            },
        )

    def backfill_member(
        self, source: str, *, table: str, backfill_id: str, obj: str, target: str, skipped: str = ""
    ) -> None:
        """An object a lane of the backfill reached, with its load's target ("" and why, when the
        lane could not read it). Written again, it is the same row."""
        import hashlib

        digest = hashlib.sha256(obj.encode()).hexdigest()[:24]
        item: dict[str, Any] = {
            **self._key(source, f"{backfill_target(table, backfill_id)}{_MEMBER_SEP}{digest}"),
            "kind": {"S": "member"},
            "chain_object": {"S": obj},
            "chain_target": {"S": target},
        }
        if skipped:
            item["skipped"] = {"S": skipped[:2000]}
        self.client.put_item(TableName=self.table, Item=item)

    def backfill_lane_done(self, source: str, *, table: str, backfill_id: str, lane: int) -> None:
        """Lane ``lane`` of the backfill walked to its end."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(source, backfill_target(table, backfill_id)),
            UpdateExpression="ADD lanes_done :lane SET updated_at = :now",
            ExpressionAttributeValues={":lane": {"NS": [str(lane)]}, ":now": {"S": _iso(self.clock())}},
        )

    def restart(
        self,
        item: LedgerItem,
        *,
        chain_id: str,
        request_id: str,
        lease_until: float,
        spec: dict[str, Any],
        lane: dict[str, Any] | None,
        reloaded_by: str,
        knobs: dict[str, Any] | None = None,
        shards: dict[str, Any] | None = None,
    ) -> bool:
        """A reload: a finished (COMPLETED or FAILED, as read) load starts again from offset 0 as a
        new chain with ``spec``, claimed by ``request_id``; with ``shards``, as a parent whose new
        shards (:meth:`create_shard`) replace the earlier load's."""
        parent = shards is not None
        values: dict[str, Any] = {
            ":spec": {"S": orjson.dumps(spec).decode()},
            ":running": {"S": RUNNING.value},
            ":chain": {"S": chain_id},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":hops": {"N": "0" if parent else "1"},
            ":claim": {"S": SHARDS if parent else request_id},
            ":lease": {"N": "0" if parent else f"{lease_until:.3f}"},
            ":reloaded": {"S": reloaded_by},
            ":empty": {"S": ""},
            ":rev": {"N": str(item.rev)},
            ":completed": {"S": COMPLETED.value},
            ":failed": {"S": FAILED.value},
        }
        counters = ", ".join(f"{c} = :zero" for c in COUNTER_NAMES)
        expr = (
            "SET spec = :spec, #status = :running, chain_id = :chain, hop = :zero, hops = :hops, "
            f"claim = :claim, lease_until = :lease, #offset = :zero, {counters}, reclaims = :zero, "
            "idle_hops = :zero, "
            "started_at = :now, updated_at = :now, reloaded_by = :reloaded, reason = :empty, "
            "rev = rev + :one"
        )
        remove = [
            "checkpoint",
            "finished_at",
            "finished_by",
            "last_error",
            "rejects",
            "handed_by",
            "#token",
            "sub_ranges",
        ]
        for name, value in (("lane", lane), ("knobs", knobs or None), ("shards", shards)):
            if value is None:
                remove.append(name)
            else:
                expr += f", {name} = :{name}"
                values[f":{name}"] = {"S": orjson.dumps(value).decode()}
        return self._update(
            item.object,
            item.target,
            f"{expr} REMOVE {', '.join(remove)}",
            "rev = :rev AND (#status = :completed OR #status = :failed)",
            values,
        )

    def claim(self, item: LedgerItem, *, request_id: str, lease_until: float, reclaim: bool) -> bool:
        """Take ``item.hop`` for ``request_id`` if the item is still exactly as read (``rev``)."""
        return self._update(
            item.object,
            item.target,
            "SET claim = :rid, lease_until = :lease, #status = :running, rev = rev + :one, "
            "updated_at = :now, reclaims = reclaims + :reclaim",
            "rev = :rev",
            {
                ":rid": {"S": request_id},
                ":lease": {"N": f"{lease_until:.3f}"},
                ":running": {"S": RUNNING.value},
                ":one": {"N": "1"},
                ":reclaim": {"N": "1" if reclaim else "0"},
                ":rev": {"N": str(item.rev)},
            },
        )

    def commit_progress(
        self,
        item: LedgerItem,
        *,
        hop: int,
        request_id: str,
        checkpoint: Checkpoint,
        sub_ranges: dict[str, Any] | None = None,
    ) -> bool:
        """Record a low-water mark of the running hop (with ``sub_ranges``: their marks it
        stands for); False if the claim was lost."""
        return self._update(
            item.object,
            item.target,
            f"SET {_PROGRESS_SET}{_sub_ranges_set(sub_ranges)}, updated_at = :now, rev = rev + :one",
            self._owner(),
            {
                **_progress_values(checkpoint, sub_ranges),
                **self._owner_values(item, hop, request_id),
                ":one": {"N": "1"},
            },
        )

    def handover(
        self,
        item: LedgerItem,
        *,
        hop: int,
        request_id: str,
        checkpoint: Checkpoint,
        lease_until: float,
        token: str,
        idle_hops: int = 0,
        sub_ranges: dict[str, Any] | None = None,
    ) -> bool:
        """Commit ``checkpoint`` (already numbered ``hop + 1``; with ``sub_ranges``, the sub-ranges'
        marks) and pass the chain to that hop: only a continuation that carries ``token`` may take it."""
        return self._update(
            item.object,
            item.target,
            f"SET {_PROGRESS_SET}{_sub_ranges_set(sub_ranges)}, hop = :next, hops = :hops, claim = :pending, "
            "handed_by = :rid, lease_until = :lease, #token = :token, idle_hops = :idle, updated_at = :now, "
            "rev = rev + :one",
            self._owner(),
            {
                **_progress_values(checkpoint, sub_ranges),
                **self._owner_values(item, hop, request_id),
                ":next": {"N": str(hop + 1)},
                ":hops": {"N": str(hop + 2)},
                ":pending": {"S": PENDING},
                ":lease": {"N": f"{lease_until:.3f}"},
                ":token": {"S": token},
                ":idle": {"N": str(idle_hops)},
                ":one": {"N": "1"},
            },
        )

    def note_invoke(self, item: LedgerItem, *, seconds: float) -> None:
        """Remember how long the self-invoke took, for the next hop's deadline. Leaves ``rev``
        alone (it decides nothing), so it cannot make the next hop's claim fail."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(item.object, item.target),
                UpdateExpression="SET invoke_s = :s",
                ConditionExpression="chain_id = :chain",
                ExpressionAttributeValues={":s": {"N": f"{seconds:.3f}"}, ":chain": {"S": item.chain_id}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass

    def mark_stalled(self, item: LedgerItem, *, error: str) -> bool:
        """A RUNNING item whose lease ran out (as read) becomes STALLED; False if it moved meanwhile."""
        return self._update(
            item.object,
            item.target,
            "SET #status = :stalled, last_error = :err, updated_at = :now, rev = rev + :one",
            "rev = :rev AND #status = :running AND lease_until < :t",
            {
                ":stalled": {"S": STALLED.value},
                ":err": {"S": error[:2000]},
                ":rev": {"N": str(item.rev)},
                ":running": {"S": RUNNING.value},
                ":t": {"N": f"{self.clock():.3f}"},
                ":one": {"N": "1"},
            },
        )

    def resume_failed(self, item: LedgerItem, *, request_id: str, lease_until: float) -> bool:
        """Reopen a chain FAILED by S3DDB_MAX_HOPS (as read): RUNNING again at the next hop, claimed
        by ``request_id``, from the checkpoint it failed at."""
        return self._update(
            item.object,
            item.target,
            "SET #status = :running, claim = :rid, lease_until = :lease, hop = :next, hops = :hops, "
            "rev = rev + :one, updated_at = :now, reason = :empty REMOVE finished_at, finished_by",
            "rev = :rev AND #status = :failed",
            {
                ":running": {"S": RUNNING.value},
                ":rid": {"S": request_id},
                ":lease": {"N": f"{lease_until:.3f}"},
                ":next": {"N": str(item.hop + 1)},
                ":hops": {"N": str(item.hops + 1)},
                ":empty": {"S": ""},
                ":rev": {"N": str(item.rev)},
                ":failed": {"S": FAILED.value},
                ":one": {"N": "1"},
            },
        )

    def hold(self, item: LedgerItem, *, error: str) -> bool:
        """A chain that may not run now (its pinned bucket or table left the allow-lists): STALLED
        with the reason, if the item is still as read; an event of the chain resumes it later."""
        return self._update(
            item.object,
            item.target,
            "SET #status = :stalled, last_error = :err, updated_at = :now, rev = rev + :one",
            "rev = :rev AND (#status = :running OR #status = :stalled)",
            {
                ":stalled": {"S": STALLED.value},
                ":running": {"S": RUNNING.value},
                ":err": {"S": error[:2000]},
                ":rev": {"N": str(item.rev)},
                ":one": {"N": "1"},
            },
        )

    def stall(self, item: LedgerItem, *, next_hop: int, request_id: str, error: str) -> bool:
        """The continuation of ``next_hop`` could not be sent: STALLED (a retry or a notify resumes)."""
        return self._update(
            item.object,
            item.target,
            "SET #status = :stalled, last_error = :err, updated_at = :now, rev = rev + :one",
            "chain_id = :chain AND hop = :hop AND claim = :pending AND handed_by = :rid",
            {
                ":stalled": {"S": STALLED.value},
                ":err": {"S": error[:2000]},
                ":chain": {"S": item.chain_id},
                ":hop": {"N": str(next_hop)},
                ":pending": {"S": PENDING},
                ":rid": {"S": request_id},
                ":one": {"N": "1"},
            },
        )

    def finish(
        self,
        item: LedgerItem,
        *,
        hop: int,
        request_id: str,
        checkpoint: Checkpoint,
        status: ChainStatus,
        reason: str = "",
        sub_ranges: dict[str, Any] | None = None,
    ) -> bool:
        """COMPLETED or FAILED (with ``reason``) with the final checkpoint (and ``sub_ranges``, their
        marks); the claim is released.

        A COMPLETED chain keeps no ``last_error`` (a resumed chain's old error is not its outcome)."""
        if not status.finished:
            raise ValueError(f"a chain finishes COMPLETED or FAILED, not {status}")
        values = {
            **_progress_values(checkpoint, sub_ranges),
            **self._owner_values(item, hop, request_id),
            ":status": {"S": status.value},
            ":one": {"N": "1"},
        }
        expr = (
            f"SET {_PROGRESS_SET}{_sub_ranges_set(sub_ranges)}, #status = :status, finished_at = :now, "
            "finished_by = :rid, "
            "updated_at = :now, rev = rev + :one"
        )
        remove = " REMOVE claim, lease_until"
        if reason:
            expr += ", reason = :reason, last_error = :reason"
            values[":reason"] = {"S": reason[:2000]}
        else:
            expr += ", reason = :empty"
            values[":empty"] = {"S": ""}
            remove += ", last_error"
        return self._update(item.object, item.target, expr + remove, self._owner(), values)

    def add_rejects(self, item: LedgerItem, *, location: str) -> None:
        """Remember where a hop's rejected rows are (unconditional: a location is never wrong)."""
        self.client.update_item(
            TableName=self.table,
            Key=self._key(item.object, item.target),
            UpdateExpression="SET rejects = list_append(if_not_exists(rejects, :empty), :loc)",
            ExpressionAttributeValues={":empty": {"L": []}, ":loc": {"L": [{"S": location}]}},
        )

    def record_error(self, item: LedgerItem, *, hop: int, request_id: str, error: str) -> bool:
        """Keep the claim (Lambda retries this request) and say what went wrong."""
        return self._update(
            item.object,
            item.target,
            "SET last_error = :err, updated_at = :now, rev = rev + :one",
            self._owner(),
            {**self._owner_values(item, hop, request_id), ":err": {"S": error[:2000]}, ":one": {"N": "1"}},
        )

    # -- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _key(obj: str, target: str) -> dict[str, Any]:
        return {"object": {"S": obj}, "target": {"S": target}}

    @staticmethod
    def _owner() -> str:
        return "#status = :running AND chain_id = :chain AND hop = :hop AND claim = :rid"

    @staticmethod
    def _owner_values(item: LedgerItem, hop: int, request_id: str) -> dict[str, Any]:
        return {
            ":running": {"S": RUNNING.value},
            ":chain": {"S": item.chain_id},
            ":hop": {"N": str(hop)},
            ":rid": {"S": request_id},
        }

    def _update(self, obj: str, target: str, expr: str, cond: str, values: dict[str, Any]) -> bool:
        values = {**values, ":now": {"S": _iso(self.clock())}}
        names = {}
        if "#status" in expr or "#status" in cond:
            names["#status"] = "status"
        if "#offset" in expr:
            names["#offset"] = "offset"
        if "#token" in expr:
            names["#token"] = "token"
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(obj, target),
            "UpdateExpression": expr,
            "ConditionExpression": cond,
            "ExpressionAttributeValues": values,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        return self._write(self.client.update_item, **kwargs)

    def _write(self, call: Callable[..., Any], **kwargs: Any) -> bool:
        try:
            call(**kwargs)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True


def ensure_ledger_table(client: Any, name: str) -> bool:
    """Create the ledger table (on-demand) if it is missing; True if it was created."""
    try:
        client.describe_table(TableName=name)
        return False
    except client.exceptions.ResourceNotFoundException:
        pass
    try:
        client.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "object", "KeyType": "HASH"},
                {"AttributeName": "target", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "object", "AttributeType": "S"},
                {"AttributeName": "target", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:
        pass  # created by someone else meanwhile
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return True
