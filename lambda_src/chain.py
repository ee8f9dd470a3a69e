"""Chains of hops: who may run a hop (a pure decision over the ledger item), the deadline, and the
hop itself (engine run, committed low-water marks, handover, self-invoke).

A chain is fenced by the ledger (``lambda_src.ledger``): a hop runs only after a conditional
claim, commits only while it still holds that claim, and hands over by moving ``hop`` forward
before it invokes the next one. So a duplicate event, a duplicate continuation or a Lambda retry
can never run two hops of one chain at once nor count a row twice (rows written again by a
hop that lost its claim are idempotent puts; counters come only from committed checkpoints).

A load with ``parallel`` N > 1 (a backfill's option) is cut into up to N record-aligned byte ranges
once, against the pinned object version (``loader.workers.plan``); the load's ledger item becomes a
parent that holds the plan, and each range is a shard chain of its own (its own ledger item, token,
hops and checkpoint) running the parent's pinned spec with its ``byte_range``. The shards' first
hops are invoked as continuations pointing at their ledger items. Whichever shard finishes last
settles the parent (``Ledger.settle``: COMPLETED with the counters summed, or FAILED naming the
failed shard) and moves its backfill lane on. A shard that fails does not stop the others (their
rows are good): the parent stays RUNNING until every shard is finished (``s3ddb status`` names the
failed shard meanwhile), so its status tells when nothing runs any more, and a lane moves on only
then. A backfill sent again resumes the failed (or stalled) shards alone, each from its own
checkpoint. ``S3DDB_MAX_CHAINS`` bounds the chains of a backfill at once, shards included:
``parallel`` may not exceed it, and a prefix backfill runs ``S3DDB_MAX_CHAINS // parallel`` objects
at once. A compressed object, or one the planner cannot cut in two, loads as one chain (the answer
says why). The write-unit ceiling (S3DDB_MAX_WCU, or the backfill's ``max_wcu`` when lower) is the
whole load's: each shard hop gets the ceiling divided by the shards RUNNING, read when the hop
starts and again at each committed checkpoint, so a shard that finishes hands its share on.

A function with more than one vCPU (``Settings.workers_per_hop``) runs a hop of a chain, a one-chain
load or a shard chain alike, as worker processes over sub-ranges of the chain's remaining range
(``lambda_src.hopworkers``): planned once, kept in the ledger item with each sub-range's mark, and
committed, fenced and handed over like a one-process hop. The chain's write budget is shared among
its workers; its ``max_rejects`` counts every sub-range's rejects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import secrets
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from lambda_src import ledger as L
from lambda_src.deadline import Deadline, InvokeEstimate
from lambda_src.events import (
    BackfillEvent,
    ContinueEvent,
    LaneEvent,
    LoadOptions,
    ObjectRef,
    ObjectsEvent,
    RunOptions,
    S3TestEvent,
    continue_payload,
    object_uri,
    parse_event,
    split_s3_uri,
)
from lambda_src.hopworkers import (
    MIN_BYTES_PER_WORKER,
    HopSplit,
    HopWorkersEngine,
    HopWorkersRequest,
    plan_hop_split,
    run_hop_workers,
    workers_for_range,
)
from lambda_src.ledger import (
    SHARD_REJECTS_NOTE,
    ChainStatus,
    Ledger,
    LedgerItem,
    shard_target,
    target_key,
    version_key,
)
from lambda_src.outcome import (
    Accepted,
    AlreadyLoaded,
    Continued,
    Empty,
    Finished,
    HopOutcome,
    Ignored,
    LaneDone,
    LaneOwned,
    ObjectsHandled,
    OutcomeStatus,
    Refused,
    ShardsStarted,
    Skipped,
    Superseded,
)
from lambda_src.settings import Settings
from loader.errors import ConfigError, S3ddbError, SourceError, TooManyRejectsError
from loader.models import Checkpoint, Counters, Progress, RunResult
from loader.retry import Backoff, RetryPolicy, WriteBudget
from loader.spec import LoadSpec, RunKnobs

if TYPE_CHECKING:
    from lambda_src.observability import Telemetry

__all__ = [
    "INVOKE_ATTEMPTS",
    "MAX_STATE_BYTES",
    "ChainRunner",
    "Decision",
    "HopRequest",
    "InvocationContext",
    "InvokeFailedError",
    "LaneStalledError",
    "StalledError",
    "backfill_id",
    "decide",
    "invoke_with_retry",
    "lane_of",
]

#: The spec, the checkpoint (with the CSV header) and the lane must fit one ledger item (a DynamoDB
#: item is at most 400 KB; the rest of the item is small).
MAX_STATE_BYTES = 350 * 1024
#: Hops in a row that the deadline ended without progress and without throttling before the chain
#: is FAILED (the function timeout leaves no room for work); one alone may be a slow moment.
MAX_IDLE_HOPS = 2
#: Worker errors that no retry of the hop can change: the chain is FAILED (as for one process).
PERMANENT_WORKER_ERRORS = frozenset({"ConfigError", "SourceError", "TooManyRejectsError"})
#: A hop with worker processes kills the ones still running when the time left falls below its
#: hand-over (ledger writes and the self-invoke) plus this: their last marks stand.
WORKER_ABORT_SLACK_S = 1.0
#: Extra lease past the claimant's own deadline before anyone may take an unfinished hop over.
LEASE_SLACK_S = 60.0
#: How long a handed-over hop waits for its continuation before a new event may take it over
#: (async events are retried for minutes; a lost one is re-sent with ``s3ddb local notify``).
PENDING_LEASE_S = 1800.0
#: Calls of the self-invoke (continuation, lane, backfill) before it gives up; between them a full
#: jitter backoff: a draw up to 0.5 s, then up to 1 s (on average what the fixed 0.25 s, 0.5 s were).
#: The hop's deadline does not budget for these retries (see ``lambda_src.deadline``).
INVOKE_ATTEMPTS = 3
INVOKE_BACKOFF_BASE_S = 0.5
INVOKE_BACKOFF_CAP_S = 2.0
#: The run options of an event that gives none: one chain per object, the function's knobs.
ONE_CHAIN = RunOptions()
#: Error codes of Invoke that no retry can change (the request itself is wrong): given up at once.
#: Everything else (throttling, 5xx, timeouts, a connection refused, a status other than 202) is
#: retried.
INVOKE_PERMANENT_CODES = frozenset(
    {
        "InvalidParameterValueException",
        "InvalidRequestContentException",
        "RequestTooLargeException",
        "ResourceNotFoundException",
        "UnsupportedMediaTypeException",
    }
)


class StalledError(S3ddbError):
    """The continuation could not be sent: the ledger says STALLED; Lambda's retry resumes it."""


class InvokeFailedError(S3ddbError):
    """The function could not invoke itself: gave up after the retry policy's attempts (or at once
    for an error no retry changes). ``__cause__`` is the last error, and the message names it."""


class LaneStalledError(S3ddbError):
    """A backfill lane could not invoke its next object. The object itself is finished in the
    ledger (``finished_by`` this request): Lambda's retry of this request advances the lane again."""


class LambdaContext(Protocol):
    aws_request_id: str
    function_name: str
    invoked_function_arn: str

    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True, kw_only=True)
class InvocationContext:
    request_id: str
    function: str  # what the function invokes to continue (its ARN, or name)
    remaining_ms: Callable[[], int]

    @classmethod
    def from_lambda(cls, context: LambdaContext) -> InvocationContext:
        return cls(
            request_id=context.aws_request_id,
            function=context.invoked_function_arn or context.function_name,
            remaining_ms=context.get_remaining_time_in_millis,
        )


# -- who runs a hop ------------------------------------------------------------------------------

Action = Literal["create", "claim", "resume", "skip", "refuse"]


@dataclass(frozen=True, kw_only=True)
class Decision:
    action: Action
    reason: str = ""
    reclaim: bool = False  # a hop resumed after its runner died (counted in the ledger)


def decide(
    item: LedgerItem | None,
    *,
    kind: Literal["start", "continue"],
    request_id: str,
    now: float,
    event_hop: int = 0,
    event_token: str = "",
    max_hops: int | None = None,
) -> Decision:
    """What an event may do with its object's ledger item. Pure: the ledger write that follows is
    conditional on the item being unchanged, so two events that both decide to claim cannot both win.

    * no item: a start event creates the chain; a continuation without one is stale;
    * a continuation must carry the token the ledger holds for the chain's current hop: anything
      else (forged, or a late duplicate of an earlier hop) is refused and changes nothing;
    * COMPLETED / FAILED: nothing to do (the same notification again, or a late duplicate), except
      that a start event resumes a chain FAILED by S3DDB_MAX_HOPS once ``max_hops`` leaves it room;
    * STALLED: nobody runs it; any event of the object (or its chain) resumes it from the ledger;
    * RUNNING, claimed by this very request (Lambda retried it after a crash or timeout): resume;
    * RUNNING, pending: the continuation of that hop, or the hop that handed it over (retried after
      dying between handover and invoke) takes it; others wait until the pending lease runs out;
    * RUNNING, claimed by another request: a duplicate; it may be taken over only once its lease
      (that request's deadline plus slack) has run out.
    """
    if item is None:
        if kind == "start":
            return Decision(action="create")
        return Decision(action="skip", reason="no ledger item for this continuation")
    # Lambda's retry of the request that handed the chain over carries that hop's (older) token; a
    # request id is Lambda's to give, so no event sender can claim to be that request
    retry_of_handover = bool(item.handed_by) and item.handed_by == request_id
    if (
        kind == "continue"
        and not retry_of_handover
        and (not item.token or not hmac.compare_digest(item.token.encode(), event_token.encode()))
    ):
        return Decision(
            action="refuse",
            reason=f"continuation of hop {event_hop} does not carry the token of hop {item.hop} "
            f"of chain {item.chain_id} (forged, or a late duplicate of an earlier hop)",
        )
    if item.status == ChainStatus.COMPLETED:
        return Decision(action="skip", reason=f"already COMPLETED by chain {item.chain_id}")
    if item.status == ChainStatus.FAILED:
        if (
            kind == "start"
            and item.failed_for_max_hops()
            and max_hops is not None
            and item.hop + 1 < max_hops
        ):
            return Decision(
                action="resume", reason=f"S3DDB_MAX_HOPS is now {max_hops}: resuming at offset {item.offset}"
            )
        return Decision(
            action="skip", reason=f"chain {item.chain_id} FAILED: {item.reason or item.last_error}"
        )
    if item.status == ChainStatus.STALLED:
        return Decision(action="claim", reason=f"resuming STALLED hop {item.hop}")
    if kind == "continue" and event_hop > item.hop:
        return Decision(
            action="skip", reason=f"continuation of hop {event_hop} is ahead of the ledger ({item.hop})"
        )
    expired = item.lease_until < now
    if item.claim == request_id:
        return Decision(
            action="claim", reason=f"retry of request {request_id}: resuming hop {item.hop}", reclaim=True
        )
    if item.claim == L.PENDING:
        if kind == "continue" and event_hop == item.hop:
            return Decision(action="claim", reason=f"continuation of hop {item.hop}")
        if item.handed_by == request_id:
            return Decision(action="claim", reason=f"retry of the hop that handed over to hop {item.hop}")
        if expired:
            return Decision(
                action="claim", reason=f"hop {item.hop} never started: taking it over", reclaim=True
            )
        return Decision(action="skip", reason=f"hop {item.hop} is pending its continuation")
    if expired:
        return Decision(
            action="claim", reason=f"hop {item.hop} of {item.claim} outlived its lease", reclaim=True
        )
    if kind == "continue" and event_hop < item.hop:
        return Decision(
            action="skip", reason=f"stale continuation of hop {event_hop}: the chain is at hop {item.hop}"
        )
    return Decision(action="skip", reason=f"duplicate: hop {item.hop} is running in request {item.claim}")


# -- backfill lanes ------------------------------------------------------------------------------


def lane_of(key: str, lanes: int) -> int:
    """The lane (0..lanes-1) of a key in a prefix backfill: stable across invocations."""
    return zlib.crc32(key.encode("utf-8")) % lanes


def backfill_id(
    bucket: str,
    prefix: str,
    table: str,
    lanes: int,
    options: LoadOptions,
    reload: str = "",
    parallel: int = 1,
) -> str:
    """A backfill's id, derived from what it loads: the same backfill sent again (a retry, or a
    second ``s3ddb invoke``) gets the same lanes, which find each other's running objects and stop
    instead of running alongside (so never more than S3DDB_MAX_CHAINS chains per backfill). The run
    knobs (``max_wcu``, ``max_rejects``) are not part of it: sent again with other knobs, it is the
    same backfill."""
    parts: list[Any] = [bucket, prefix, table, lanes, options.to_payload(), reload]
    if parallel != 1:
        parts.append({"parallel": parallel})
    raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:16]


def _same_lane(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if not a or not b:
        return False
    return all(a.get(k) == b.get(k) for k in ("backfill_id", "lane", "lanes"))


# -- the hop -------------------------------------------------------------------------------------

#: ``engine(request) -> RunResult``; raises like ``loader.pipeline.run``.
Engine = Callable[["HopRequest"], RunResult]


@dataclass(frozen=True, kw_only=True)
class HopRequest:
    """One hop for the engine: the chain's pinned spec, where to resume, and the hop's callbacks."""

    spec: LoadSpec
    resume: Checkpoint | None
    run_id: str
    should_stop: Callable[[Progress], bool]
    on_checkpoint: Callable[[Checkpoint], None]
    on_progress: Callable[[Progress], None]
    #: rejected rows (the chain's, or the shard's, in all) after which it is FAILED; None: no limit
    max_rejects: int | None = None
    #: a shard's share of its load's write-unit ceiling, changed while the hop runs; None: the
    #: spec's ``max_wcu``
    write_budget: WriteBudget | None = None


class ChainRunner:
    """Turns one parsed event into hops. Every collaborator is passed in (see ``handler.py``)."""

    def __init__(
        self,
        *,
        settings: Settings,
        ledger: Ledger,
        s3: Any,
        lambda_client: Any,
        engine: Engine,
        telemetry: Telemetry,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        invoke_estimate: InvokeEstimate | None = None,
        invoke_attempts: int = INVOKE_ATTEMPTS,
        hop_engine: HopWorkersEngine = run_hop_workers,
        min_bytes_per_worker: int = MIN_BYTES_PER_WORKER,
    ) -> None:
        """``sleep`` waits between attempts of a self-invoke and ``rng`` draws its jitter (tests pass
        ones that do not sleep); ``invoke_attempts`` caps the calls of one self-invoke.
        ``hop_engine`` runs a hop's worker processes, each over at least ``min_bytes_per_worker``
        of the chain's remaining range (``lambda_src.hopworkers``)."""
        self.settings = settings
        self.ledger = ledger
        self.s3 = s3
        self.lambda_client = lambda_client
        self.engine = engine
        self.hop_engine = hop_engine
        self.min_bytes_per_worker = min_bytes_per_worker
        self.t = telemetry
        self.clock = clock
        self.sleep = sleep
        self.new_id = new_id
        self.invoke_estimate = invoke_estimate or InvokeEstimate()
        self.invoke_retry = RetryPolicy(
            max_attempts=invoke_attempts,
            backoff=Backoff(base_s=INVOKE_BACKOFF_BASE_S, cap_s=INVOKE_BACKOFF_CAP_S, rng=rng),
            logger=telemetry.logger,
        )
        self.invocation_budget_ms: int | None = None

    @property
    def invoke_attempts(self) -> int:
        return self.invoke_retry.max_attempts

    # -- entry ---------------------------------------------------------------------------------

    def handle(self, raw: Any, ctx: InvocationContext) -> dict[str, Any]:
        """:meth:`outcome` as the handler's JSON answer."""
        return self.outcome(raw, ctx).to_dict()

    def outcome(self, raw: Any, ctx: InvocationContext) -> HopOutcome:
        """What one event did. Raises EventError for an event it does not accept, StalledError /
        LaneStalledError / InvokeFailedError when a self-invoke could not be sent, and lets a hop's
        transient failure raise (Lambda retries the request)."""
        self.invocation_budget_ms = ctx.remaining_ms()
        event = parse_event(raw)
        if isinstance(event, S3TestEvent):
            self.t.log.info("s3:S3TestEvent: nothing to load", extra={"bucket": event.bucket})
            return Ignored(reason="s3:S3TestEvent")
        if isinstance(event, ObjectsEvent):
            return ObjectsHandled(objects=tuple(self._notification(ref, ctx) for ref in event.objects))
        if isinstance(event, BackfillEvent):
            return self._backfill(event, ctx)
        if isinstance(event, LaneEvent):
            return self._lane(event, ctx)
        assert isinstance(event, ContinueEvent)
        return self._continue(event, ctx)

    def _refusal(self, refused: Refused) -> Refused:
        self.t.log.warning(f"refused: {refused.reason}", extra=refused.where())
        self.t.count("Refused")
        return refused

    def _check_allowed(self, bucket: str | None, table: str | None, key: str | None) -> str | None:
        """Why a load of ``bucket``/``key`` (an object key, or the prefix a backfill lists) into
        ``table`` is not allowed, or None. Every event kind is checked with the bucket and key it
        reads and the table it writes (for a chain: its pinned spec's)."""
        if table is None:
            return "no table: set S3DDB_TABLE or name one in the event"
        if bucket is None or key is None:
            return "the source is not an S3 object"
        if not self.settings.bucket_allowed(bucket):
            return f"bucket {bucket!r} is not in S3DDB_ALLOWED_BUCKETS"
        if not self.settings.key_allowed(key):
            return (
                f"{object_uri(bucket, key)} is not under S3DDB_ALLOWED_PREFIX "
                f"{self.settings.allowed_prefix!r} (the only keys the function may read)"
            )
        if not self.settings.table_allowed(table):
            return f"table {table!r} is not in S3DDB_ALLOWED_TABLES"
        return None

    # -- S3 notifications ----------------------------------------------------------------------

    def _notification(self, ref: ObjectRef, ctx: InvocationContext) -> HopOutcome:
        table = self.settings.table
        refused = self._check_allowed(ref.bucket, table, ref.key)
        if refused:
            return self._refusal(Refused(reason=refused, object=ref.uri))
        assert table is not None
        # the object as S3 has it: the event's version and ETag must name it (a forged or stale
        # pin would otherwise be written into the ledger and fail the real load)
        try:
            head = self._head(ref.bucket, ref.key, ref.version_id)
        except self.s3.exceptions.ClientError as exc:
            return self._refusal(Refused(reason=_head_error(exc, ref.uri, ref.version_id), object=ref.uri))
        if ref.etag and head.etag and ref.etag.strip('"') != head.etag.strip('"'):
            return self._refusal(
                Refused(
                    reason=f"{ref.uri}: the event's ETag {ref.etag} is not the object's ({head.etag}): it "
                    "was overwritten since (its own notification loads it) or the event is not S3's",
                    object=ref.uri,
                )
            )
        return self._start(head, table=table, options=LoadOptions(), lane=None, reload="", ctx=ctx)

    # -- what a chain loads --------------------------------------------------------------------

    def _settings_schema(self) -> dict[str, Any]:
        """S3DDB_SCHEMA (inline JSON or an s3:// URI of a JSON document), read when a chain starts
        and pinned in its ledger item (a hop never reads it again)."""
        raw = self.settings.schema
        if raw is None:
            return {}
        where = "S3DDB_SCHEMA"
        if raw.startswith("s3://"):
            bucket, key = split_s3_uri(raw)
            where = f"S3DDB_SCHEMA {raw}"
            try:
                raw = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self.s3.exceptions.ClientError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a JSON object")
        return data

    def _spec_for(self, ref: ObjectRef, *, table: str, options: LoadOptions) -> LoadSpec:
        """The spec a new chain of ``ref`` pins: the event's options, else the function's settings.
        A ConfigError says what is wrong with them."""
        from loader.schema import schema_from_dict
        from loader.spec import csv_from_dict

        s = self.settings
        schema = options.schema if options.schema is not None else self._settings_schema()
        return LoadSpec(
            source=ref.uri,
            table=table,
            version_id=ref.version_id,
            etag=ref.etag,
            schema=schema_from_dict(schema),
            csv=csv_from_dict(options.csv) if options.csv is not None else s.csv,
            on_duplicate=options.on_duplicate or s.on_duplicate,  # type: ignore[arg-type]
            rejects=s.rejects or "/tmp/s3ddb-rejects",
            concurrency=s.concurrency,
            max_wcu=s.max_wcu,
            shuffle_window=s.shuffle_window,
        )

    # -- backfill ------------------------------------------------------------------------------

    def _backfill(self, event: BackfillEvent, ctx: InvocationContext) -> HopOutcome:
        table = event.table or self.settings.table
        refused = self._check_allowed(event.bucket, table, event.key)
        if refused:
            return self._refusal(Refused(reason=refused, source=event.source, table=table))
        assert table is not None
        # the options as the chains will pin them: refused now, not at the first hop
        probe = ObjectRef(bucket=event.bucket, key=event.key or "-")
        try:
            self._spec_for(probe, table=table, options=event.options)
        except ConfigError as exc:
            return self._refusal(Refused(reason=str(exc), source=event.source, table=table))
        run = event.run
        too_many = self._parallel_refusal(run.parallel)
        if too_many:
            return self._refusal(Refused(reason=too_many, source=event.source, table=table))
        reload = f"reload-{ctx.request_id}" if event.reload else ""
        changes: list[str] = []
        shards: int | None = None
        note: str | None = None
        if event.is_prefix:
            count = self._count_objects(event.bucket, event.key, limit=self.settings.max_chains)
            if count == 0:
                return Empty(source=event.source, reason="no objects under the prefix")
            # every shard chain is one concurrent execution: the objects at once share the bound
            lanes = min(count, max(1, self.settings.max_chains // run.parallel))
        else:
            try:
                ref = self._head(event.bucket, event.key, event.version_id)
            except self.s3.exceptions.ClientError as exc:
                return self._refusal(
                    Refused(reason=_head_error(exc, event.source, event.version_id), source=event.source)
                )
            item = self.ledger.get(ref.uri, target_key(table, version_key(ref.version_id, ref.etag)))
            if item is not None and item.status == ChainStatus.COMPLETED and not event.reload:
                self.t.log.info("already loaded", extra={"object": ref.uri, "table": table})
                return AlreadyLoaded(
                    source=event.source,
                    table=table,
                    version=item.version,
                    chain_id=item.chain_id,
                    finished_at=item.finished_at,
                    counters=item.counters.copy(),
                    reason="this object version was loaded into this table: send it with reload "
                    "(s3ddb invoke --reload) to load it again",
                )
            if item is not None and event.reload and not item.status.finished:
                return self._refusal(
                    Refused(
                        reason=f"a chain of {ref.uri} into {table} is {item.status}: reload starts a "
                        "finished load again; wait for it to finish, or resume it by sending it without "
                        "reload",
                        source=event.source,
                        table=table,
                    )
                )
            if item is not None and event.reload:
                changes = self._spec_changes(item, ref, table=table, options=event.options)
            lanes = 1
            if item is not None and item.is_parent and not event.reload:
                # a sharded load: its failed or stalled shards start again, alone
                return self._backfill_shards(event, item, table=table, ctx=ctx)
            if run.parallel > 1 and (item is None or event.reload):
                sharded = self._backfill_sharded(event, ref, table=table, reload=reload, ctx=ctx)
                if isinstance(sharded, HopOutcome):
                    return sharded
                note = sharded  # one chain: the lane runs it, as without parallel
            elif run.parallel > 1:
                assert item is not None
                note = (
                    f"its load (chain {item.chain_id}, {item.status}) runs as one chain and goes on as "
                    "one; parallel applies to a new load (reload)"
                )
            if note is not None:
                shards = 1
                run = dataclasses.replace(run, parallel=1)
        bid = backfill_id(event.bucket, event.key, table, lanes, event.options, reload, event.run.parallel)
        if event.is_prefix:
            self.ledger.start_backfill(
                event.source, table=table, backfill_id=bid, lanes=lanes, parallel=run.parallel
            )
        for lane in range(lanes):
            # raises after its retries: the caller (or Lambda's retry) sends the backfill again, and
            # the lanes already running recognise the repeat by its id
            self._invoke_with_retry(
                ctx,
                LaneEvent(
                    bucket=event.bucket,
                    prefix=event.key,
                    exact=not event.is_prefix,
                    lane=lane,
                    lanes=lanes,
                    start_after="",
                    table=table,
                    options=event.options,
                    backfill_id=bid,
                    version_id=event.version_id,
                    reload=reload,
                    run=run,
                ).to_payload(),
            )
        self.t.log.info(
            "backfill accepted",
            extra={
                "source": event.source,
                "table": table,
                "lanes": lanes,
                "backfill_id": bid,
                "parallel": event.run.parallel,
            },
        )
        if note:
            self.t.log.info(f"parallel {event.run.parallel}: {note}")
        if changes:
            # options left out are the function's settings: say what the reload changes
            self.t.log.warning(f"reload with other load options than the last load: {'; '.join(changes)}")
        return Accepted(
            backfill_id=bid,
            source=event.source,
            table=table,
            lanes=lanes,
            reload=event.reload,
            changes=tuple(changes),
            parallel=event.run.parallel if event.run.parallel != 1 else None,
            shards=shards,
            note=note,
        )

    def _parallel_refusal(self, parallel: int) -> str | None:
        if parallel <= self.settings.max_chains:
            return None
        return (
            f"parallel {parallel} is more than S3DDB_MAX_CHAINS={self.settings.max_chains}: a backfill "
            "runs at most that many chains at once, and each shard is one"
        )

    def _backfill_sharded(
        self, event: BackfillEvent, ref: ObjectRef, *, table: str, reload: str, ctx: InvocationContext
    ) -> HopOutcome | str:
        """A backfill of one object with ``parallel``: plan its shards now (the answer says how
        many) and start them; or the reason it loads as one chain (its lane then runs it)."""
        spec = self._spec_for(ref, table=table, options=event.options)
        plan, note = self._plan(ref, spec, event.run.parallel)
        if plan is None:
            return note or "it loads as one chain"
        out = self._start(
            ref,
            table=table,
            options=event.options,
            lane=None,
            reload=reload,
            ctx=ctx,
            run=event.run,
            plan=(plan, note),
        )
        if not isinstance(out, ShardsStarted):
            return out
        bid = backfill_id(event.bucket, event.key, table, 0, event.options, reload, event.run.parallel)
        self.t.log.info(
            "backfill accepted",
            extra={"source": event.source, "table": table, "shards": out.shards, "backfill_id": bid},
        )
        return Accepted(
            backfill_id=bid,
            source=event.source,
            table=table,
            lanes=0,
            reload=event.reload,
            parallel=event.run.parallel,
            shards=out.shards,
            note=out.note,
        )

    def _backfill_shards(
        self, event: BackfillEvent, parent: LedgerItem, *, table: str, ctx: InvocationContext
    ) -> HopOutcome:
        """A backfill sent again for a sharded load that is not COMPLETED: its failed, stalled or
        missing shards start again from their own checkpoints (with the backfill's knobs when it
        gives any); running and completed shards are left alone."""
        out = self._reconcile(
            parent, ctx, knobs=event.run.knobs() or None, resume_failed=True, advance_lane=True
        )
        if not isinstance(out, ShardsStarted):
            return out
        bid = backfill_id(event.bucket, event.key, table, 0, event.options, "", event.run.parallel)
        return Accepted(
            backfill_id=bid,
            source=event.source,
            table=table,
            lanes=0,
            reload=False,
            parallel=event.run.parallel if event.run.parallel != 1 else None,
            shards=out.shards,
            resumed_shards=out.started,
            note=out.reason or None,
        )

    def _spec_changes(
        self, item: LedgerItem, ref: ObjectRef, *, table: str, options: LoadOptions
    ) -> list[str]:
        """How the spec a reload will pin differs from the one the last load of ``item`` ran."""
        return _pinned_differences(item, self._spec_for(ref, table=table, options=options))

    def _head(self, bucket: str, key: str, version_id: str | None) -> ObjectRef:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        head = self.s3.head_object(**kwargs)
        version = head.get("VersionId")
        return ObjectRef(
            bucket=bucket,
            key=key,
            version_id=version if version not in (None, "null") else None,
            etag=head.get("ETag"),
            size=int(head.get("ContentLength", 0)),
        )

    def _count_objects(self, bucket: str, prefix: str, *, limit: int) -> int:
        page = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max(limit, 1) * 4)
        return sum(1 for o in page.get("Contents", []) if not o["Key"].endswith("/"))

    def _next_in_lane(self, lane: LaneEvent, start_after: str) -> str | None:
        if lane.exact:
            return lane.prefix if not start_after else None
        kwargs: dict[str, Any] = {"Bucket": lane.bucket, "Prefix": lane.prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            page = self.s3.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if not key.endswith("/") and lane_of(key, lane.lanes) == lane.lane:
                    return str(key)
            if not page.get("IsTruncated"):
                return None
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _lane(self, lane: LaneEvent, ctx: InvocationContext) -> HopOutcome:
        refused = self._check_allowed(lane.bucket, lane.table, lane.prefix)
        if refused:
            return self._refusal(Refused(reason=refused, source=object_uri(lane.bucket, lane.prefix)))
        after = lane.start_after
        skipped: list[Skipped] = []
        if lane.lanes * max(1, lane.run.parallel) > self.settings.max_chains:
            return self._refusal(
                Refused(
                    reason=f"lane event with {lane.lanes} lanes of parallel {lane.run.parallel}: a "
                    f"backfill runs at most S3DDB_MAX_CHAINS={self.settings.max_chains} chains",
                    source=object_uri(lane.bucket, lane.prefix),
                )
            )
        too_many = self._parallel_refusal(lane.run.parallel)
        if too_many:
            return self._refusal(Refused(reason=too_many, source=object_uri(lane.bucket, lane.prefix)))
        source = object_uri(lane.bucket, lane.prefix)
        while (key := self._next_in_lane(lane, after)) is not None:
            try:
                ref = self._head(lane.bucket, key, lane.version_id if lane.exact else None)
            except self.s3.exceptions.ClientError as exc:
                reason = _head_error(exc, object_uri(lane.bucket, key), lane.version_id)
                if lane.exact:
                    return self._refusal(Refused(reason=reason, source=object_uri(lane.bucket, key)))
                self.t.log.warning(f"lane skips an object it cannot read: {reason}")
                self.ledger.backfill_member(
                    source,
                    table=lane.table,
                    backfill_id=lane.backfill_id,
                    obj=object_uri(lane.bucket, key),
                    target="",
                    skipped=reason,
                )
                skipped.append(Skipped(object=object_uri(lane.bucket, key), reason=reason))
                after = key
                continue
            if not lane.exact:  # the backfill's record: what ``s3ddb status`` of the prefix adds up
                self.ledger.backfill_member(
                    source,
                    table=lane.table,
                    backfill_id=lane.backfill_id,
                    obj=ref.uri,
                    target=target_key(lane.table, version_key(ref.version_id, ref.etag)),
                )
            info = {k: v for k, v in lane.to_payload().items() if k != "start_after"}
            out = self._start(
                ref,
                table=lane.table,
                options=lane.options,
                lane=info,
                reload=lane.reload,
                ctx=ctx,
                run=lane.run,
            )
            if not isinstance(out, Skipped):
                return out  # the chain advances the lane when it ends
            if out.lane_owned:
                # the same lane (a repeated backfill or a duplicate lane event) runs this object:
                # its chain advances the lane when it ends; a second walker would double the lane
                self.t.log.info("lane already running this object: stopping", extra={"object": ref.uri})
                return LaneOwned(lane=lane.lane, object=ref.uri, skipped=tuple(skipped))
            skipped.append(out)
            after = key
        self.t.log.info(
            "lane done", extra={"lane": lane.lane, "lanes": lane.lanes, "backfill_id": lane.backfill_id}
        )
        if not lane.exact:
            self.ledger.backfill_lane_done(
                source, table=lane.table, backfill_id=lane.backfill_id, lane=lane.lane
            )
        return LaneDone(lane=lane.lane, skipped=tuple(skipped))

    def _advance_lane(self, item: LedgerItem, ctx: InvocationContext) -> None:
        """Invoke the lane's walker after ``item``; raise LaneStalledError if it cannot be sent.

        Called once the object is finished in the ledger with ``finished_by`` this request, so a
        crash here, or the raise, is repaired by Lambda's retry of this request (``_skip`` sends it
        again). A lane sent twice is harmless: walkers stop at an object their lane already runs."""
        if item.lane is None:
            return
        _, key = split_s3_uri(item.object)
        payload = {**item.lane, "start_after": key}
        try:
            self._invoke_with_retry(ctx, payload)
        except InvokeFailedError as exc:
            self.t.log.error(f"could not continue backfill lane: {exc}", extra={"lane": item.lane})
            self.t.count("LaneStalled")
            raise LaneStalledError(
                f"{item.object}: the next object of backfill lane {item.lane.get('lane')} could not be "
                f"invoked ({exc}); a retry of this request sends it again"
            ) from exc

    def _skip(
        self,
        item: LedgerItem | None,
        reason: str,
        ctx: InvocationContext,
        *,
        obj: str,
        start: bool,
        lane: dict[str, Any] | None = None,
    ) -> Skipped:
        """An event for ``obj`` with nothing to run: a start event (``start``: a notification or a
        lane walker, ``lane`` the walker's lane) finds it ``already loaded`` when its load is
        COMPLETED; a continuation is just ``skipped``. If this very request finished the object
        (Lambda retried it after a crash, or after the lane invoke failed), the lane it belongs to
        still moves on."""
        lane_advanced = False
        if (
            item is not None
            and lane is None
            and item.lane is not None
            and item.status.finished
            and item.finished_by == ctx.request_id
        ):
            self.t.log.info("retry of the request that finished the object: advancing its lane")
            self._advance_lane(item, ctx)
            lane_advanced = True
        if item is not None and item.is_shard and item.status.finished and item.finished_by == ctx.request_id:
            # Lambda's retry of the request that finished this shard: the load it belongs to is
            # settled (if every shard is finished) and its lane moved on, once
            self.t.log.info("retry of the request that finished the shard: settling its load")
            self._shard_finished(item, ctx)
        loaded = start and item is not None and item.status == ChainStatus.COMPLETED
        return Skipped(
            status=OutcomeStatus.ALREADY_LOADED if loaded else OutcomeStatus.SKIPPED,
            object=obj,
            reason=reason,
            lane_advanced=lane_advanced,
            lane_owned=(
                item is not None and item.status == ChainStatus.RUNNING and _same_lane(item.lane, lane)
            ),
        )

    # -- chains --------------------------------------------------------------------------------

    def _lease(self, ctx: InvocationContext) -> float:
        return self.clock() + ctx.remaining_ms() / 1000.0 + LEASE_SLACK_S

    def _start(
        self,
        ref: ObjectRef,
        *,
        table: str,
        options: LoadOptions,
        lane: dict[str, Any] | None,
        reload: str,
        ctx: InvocationContext,
        run: RunOptions = ONE_CHAIN,
        plan: tuple[dict[str, Any], str | None] | None = None,
    ) -> HopOutcome:
        """An object event (notification, lane): start, resume or skip the load of ``ref`` into
        ``table``. A new chain pins the spec made from ``options``; an existing one keeps its own.
        With ``run.parallel`` > 1 a new load is cut into shards (``plan``: already planned), whose
        first hops are invoked; a sharded load that exists has its unfinished shards looked after."""
        version = version_key(ref.version_id, ref.etag)
        target = target_key(table, version)
        self.t.unbind("chain_id", "hop", "shard")  # keys of the previous record of this event
        self.t.bind(object=ref.uri, version=version, table=table)
        try:
            spec = self._spec_for(ref, table=table, options=options)
        except ConfigError as exc:
            return self._refusal(Refused(reason=str(exc), object=ref.uri, table=table))
        knobs = run.knobs()

        def shard_plan() -> tuple[dict[str, Any] | None, str | None]:
            if plan is not None:
                return plan
            found, note = self._plan(ref, spec, run.parallel)
            if note:
                self.t.log.info(f"parallel {run.parallel}: {note}")
            return found, note

        for _ in range(3):  # a lost race re-reads once or twice
            item = self.ledger.get(ref.uri, target)
            if reload and item is not None and item.status.finished and item.reloaded_by != reload:
                chain_id = self.new_id()
                shards, _note = shard_plan()
                if self.ledger.restart(
                    item,
                    chain_id=chain_id,
                    request_id=ctx.request_id,
                    lease_until=self._lease(ctx),
                    spec=spec.to_dict(),
                    lane=lane,
                    reloaded_by=reload,
                    knobs=knobs,
                    shards=shards,
                ):
                    restarted = self.ledger.get(ref.uri, target)
                    assert restarted is not None
                    self.t.bind(chain_id=chain_id, hop=0)
                    self.t.log.info(
                        f"reload: {item.status} chain {item.chain_id} started again as {chain_id}"
                    )
                    self.t.count("Reloads")
                    if restarted.is_parent:
                        return self._reconcile(restarted, ctx, resume_failed=False, advance_lane=lane is None)
                    return self._run_hop(restarted, ctx=ctx)
                continue
            if item is not None and item.is_parent:
                return self._sharded_event(item, ctx, obj=ref.uri, lane=lane, knobs=knobs)
            d = decide(
                item,
                kind="start",
                request_id=ctx.request_id,
                now=self.clock(),
                max_hops=self.settings.max_hops,
            )
            if d.action == "skip":
                self.t.log.info(f"skipped: {d.reason}")
                self.t.count("DuplicateEvents")
                return self._skip(item, d.reason, ctx, obj=ref.uri, start=True, lane=lane)
            if d.action == "create":
                chain_id = self.new_id()
                shards, _note = shard_plan() if run.parallel > 1 else (None, None)
                if self.ledger.create(
                    ref.uri,
                    version=version,
                    chain_id=chain_id,
                    request_id=ctx.request_id,
                    lease_until=self._lease(ctx),
                    table=table,
                    spec=spec.to_dict(),
                    lane=lane,
                    object_size=ref.size,
                    knobs=knobs,
                    shards=shards,
                ):
                    created = self.ledger.get(ref.uri, target)
                    assert created is not None
                    self.t.bind(chain_id=chain_id, hop=0)
                    if created.is_parent:
                        n = len((shards or {}).get("ranges") or [])
                        self.t.log.info("sharded load started", extra={"shards": n})
                        return self._reconcile(created, ctx, resume_failed=False, advance_lane=lane is None)
                    self.t.log.info("chain started")
                    return self._run_hop(created, ctx=ctx)
                continue
            assert item is not None
            self._note_spec_drift(item, spec)
            if d.action == "resume":
                if self.ledger.resume_failed(item, request_id=ctx.request_id, lease_until=self._lease(ctx)):
                    resumed = self.ledger.get(ref.uri, target)
                    assert resumed is not None
                    self.t.log.info(f"resumed: {d.reason}")
                    self.t.count("ChainsResumed")
                    return self._run_hop(resumed, ctx=ctx)
                continue
            claimed = self._claim(item, d, ctx)
            if claimed is not None:
                return self._run_hop(claimed, ctx=ctx)
        return Skipped(object=ref.uri, reason="lost the race for the ledger item")

    # -- sharded loads -------------------------------------------------------------------------

    def _plan(
        self, ref: ObjectRef, spec: LoadSpec, parallel: int
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The shard plan of a new load of ``ref`` (pinned: its version or ETag), at most
        ``parallel`` ranges, for the parent's ledger item; or None and why it loads as one chain."""
        from loader import workers
        from loader.source import compression_of

        if parallel <= 1:
            return None, None
        compression = compression_of(ref.key, spec.csv)
        if compression != "none":
            return None, f"a {compression} object cannot be cut by bytes: it loads as one chain"
        if spec.on_duplicate != "last":
            return None, (
                f"on_duplicate {spec.on_duplicate} remembers every key of the object, which only one "
                "chain can: it loads as one chain"
            )
        if not ref.size:
            return None, "an empty object: it loads as one chain"
        try:
            state, note = workers.plan(spec, n=parallel, size=ref.size, s3_client=self.s3)
        except (SourceError, ConfigError) as exc:
            # the one chain meets the same error at its first hop and fails with it in the ledger
            return None, f"the planner could not cut it ({exc}): it loads as one chain"
        if len(state.shards) <= 1:
            return None, f"{note or 'the planner found no cut'}: it loads as one chain"
        plan = {
            "parallel": parallel,
            "size": state.size,
            "data_start": state.data_start,
            "header_names": list(state.header_names) if state.header_names is not None else None,
            "ranges": [[sh.start, sh.end] for sh in state.shards],
            "note": note,
        }
        return plan, note

    def _sharded_event(
        self,
        parent: LedgerItem,
        ctx: InvocationContext,
        *,
        obj: str,
        lane: dict[str, Any] | None,
        knobs: dict[str, Any],
    ) -> HopOutcome:
        """A start event (notification, lane) of a sharded load: COMPLETED is already loaded;
        otherwise its stalled shards start again, and its failed ones too when a backfill's lane
        sent it (a duplicate S3 notification does not retry a failed shard, as it does not retry a
        failed chain)."""
        self.t.bind(chain_id=parent.chain_id)
        if parent.status == ChainStatus.COMPLETED:
            reason = f"already COMPLETED by chain {parent.chain_id}"
            self.t.log.info(f"skipped: {reason}")
            self.t.count("DuplicateEvents")
            return self._skip(parent, reason, ctx, obj=obj, start=True, lane=lane)
        out = self._reconcile(
            parent,
            ctx,
            knobs=knobs or None,
            resume_failed=lane is not None,
            advance_lane=lane is None,
        )
        if isinstance(out, ShardsStarted) and not out.started:
            current = self.ledger.get(parent.object, parent.target) or parent
            return self._skip(current, out.reason, ctx, obj=obj, start=True, lane=lane)
        return out

    def _reconcile(
        self,
        parent: LedgerItem,
        ctx: InvocationContext,
        *,
        knobs: dict[str, Any] | None = None,
        resume_failed: bool,
        advance_lane: bool,
    ) -> HopOutcome:
        """Start every shard of ``parent`` that should run and does not: a shard not created yet
        (the load's first event, or a retry of the request that died creating them), one pending
        the continuation this very request sent (Lambda retried it: sent again, a duplicate is
        fenced), a STALLED one, a RUNNING one whose lease ran out, and with ``resume_failed`` a
        FAILED one (from its checkpoint, at its next hop; one FAILED by S3DDB_MAX_HOPS whenever the
        limit leaves it room, as for a chain). Each is invoked as the continuation of
        its own ledger item. With nothing to start and every shard finished, the load is settled.
        Raises StalledError when an invoke could not be sent (those shards are STALLED; Lambda's
        retry of this request starts them)."""
        refused = self._pinned_refusal(parent)
        if refused:
            return self._refusal(Refused(reason=refused, object=parent.object))
        plan = parent.shards or {}
        ranges = [(int(a), int(b)) for a, b in plan.get("ranges") or []]
        names = plan.get("header_names")
        base = LoadSpec.from_dict(parent.spec or {}, where="the load's pinned spec")
        existing = {s.shard: s for s in self.ledger.shards_of(parent)}
        started: list[int] = []
        stalled: list[str] = []
        reopened = False
        for k, (start, end) in enumerate(ranges):
            shard = existing.get(k)
            now = self.clock()
            token = secrets.token_hex(16)
            if shard is None:
                spec = dataclasses.replace(
                    base,
                    byte_range=(start, end),
                    header_names=tuple(names) if names and start > 0 else None,
                )
                if not self.ledger.create_shard(
                    parent,
                    shard=k,
                    chain_id=self.new_id(),
                    spec=spec.to_dict(),
                    token=token,
                    request_id=ctx.request_id,
                    lease_until=now + PENDING_LEASE_S,
                ):
                    self.t.log.warning(
                        f"shard {k} exists already (another request made it, or an earlier load's runs)"
                    )
                    continue
            elif shard.status == ChainStatus.COMPLETED:
                continue
            elif (
                shard.status == ChainStatus.RUNNING
                and shard.claim == L.PENDING
                and shard.handed_by == ctx.request_id
            ):
                token = shard.token  # this request sent it before it died: send it again
            elif (
                shard.status == ChainStatus.STALLED
                or shard.stale(now)
                or (
                    shard.status == ChainStatus.FAILED
                    and resume_failed
                    # a shard S3DDB_MAX_HOPS stopped starts again only once the limit leaves it room
                    and not (shard.failed_for_max_hops() and shard.hop + 1 >= self.settings.max_hops)
                )
                # as decide() resumes a chain: once S3DDB_MAX_HOPS leaves it room, any start event
                or (shard.failed_for_max_hops() and shard.hop + 1 < self.settings.max_hops)
            ):
                if not self.ledger.rearm_shard(
                    shard,
                    request_id=ctx.request_id,
                    token=token,
                    lease_until=now + PENDING_LEASE_S,
                    # the knobs given add to the shard's own (a resend with --max-rejects alone
                    # must not drop the load's max_wcu)
                    knobs={**shard.knobs, **knobs} if knobs else None,
                ):
                    continue  # it moved meanwhile: whoever moved it runs it
                self.t.log.info(
                    f"shard {k} {shard.status}: started again from its checkpoint",
                    extra={"shard": k, "offset": shard.offset},
                )
                self.t.count("ShardsResumed")
                if not reopened:
                    self._reopen(parent)
                    reopened = True
            else:
                continue  # running, pending its continuation, or FAILED and left alone
            item = self.ledger.get(parent.object, shard_target(parent.target, k))
            if item is None or item.claim != L.PENDING or item.handed_by != ctx.request_id:
                continue
            payload = continue_payload(object=item.object, target=item.target, hop=item.hop, token=token)
            try:
                self._invoke_with_retry(ctx, payload)
            except InvokeFailedError as exc:
                error = f"first hop invoke failed: {exc}"
                if self.ledger.stall(item, next_hop=item.hop, request_id=ctx.request_id, error=error):
                    self.t.count("Stalled")
                    stalled.append(f"shard {k}: {error}")
                continue
            started.append(k)
        if stalled:
            self.t.log.error(f"shards STALLED: {'; '.join(stalled)}")
            raise StalledError(f"{parent.object}: {'; '.join(stalled)}")
        if started:
            self.t.count("ShardsStarted", len(started))
            self.t.log.info("shards started", extra={"shards": started, "of": len(ranges)})
            return ShardsStarted(
                object=parent.object,
                chain_id=parent.chain_id,
                shards=len(ranges),
                started=tuple(started),
                note=plan.get("note"),
            )
        settled = self._settle(parent, ctx, advance_lane=advance_lane)
        if settled is not None:
            reason = f"every shard is finished: the load is {settled}"
        else:
            reason = "its shards are running, or failed and not resumed by this event"
        return ShardsStarted(
            object=parent.object,
            chain_id=parent.chain_id,
            shards=len(ranges),
            started=(),
            note=plan.get("note"),
            reason=reason,
        )

    def _reopen(self, parent: LedgerItem) -> None:
        """A shard of ``parent`` was just started again: move the load's ``rev`` on (RUNNING) or
        make it RUNNING again (FAILED), so that a shard settling it from a read of the shards taken
        before the restart fails its conditional write and reads again."""
        for _ in range(5):  # each lost race is another request's write: read again
            current = self.ledger.get(parent.object, parent.target)
            if current is None or current.chain_id != parent.chain_id:
                return
            if current.status == ChainStatus.FAILED:
                if self.ledger.reopen(current):
                    return
            elif current.status == ChainStatus.RUNNING:
                if self.ledger.touch(current):
                    return
            else:
                return

    def _shard_finished(self, shard: LedgerItem, ctx: InvocationContext) -> str | None:
        """After ``shard`` finished (its ledger item says so): settle its load if every shard is
        finished now. The load's status then (None: the load is gone, or replaced by a reload)."""
        parent = self.ledger.get(shard.object, shard.parent)
        if parent is None or not parent.is_parent or parent.chain_id != shard.parent_chain:
            return None
        return self._settle(parent, ctx, advance_lane=True) or parent.status.value

    def _settle(self, parent: LedgerItem, ctx: InvocationContext, *, advance_lane: bool) -> str | None:
        """Settle ``parent`` when every shard is finished: COMPLETED with the counters summed, or
        FAILED naming the first failed shard; move its lane on (``advance_lane``). The status it is
        settled at (by this request or another), or None while a shard is unfinished. A retry of the
        request that settled it moves the lane on again (a lane sent twice is harmless)."""
        for _ in range(3):  # a lost race re-reads
            n = len((parent.shards or {}).get("ranges") or [])
            shards = self.ledger.shards_of(parent)
            if parent.status == ChainStatus.COMPLETED or (
                parent.status == ChainStatus.FAILED and any(s.status == ChainStatus.FAILED for s in shards)
            ):
                if advance_lane and parent.finished_by == ctx.request_id:
                    self._advance_lane(parent, ctx)
                return parent.status.value
            if len(shards) < n or not all(s.status.finished for s in shards):
                return None
            failed = [s for s in shards if s.status == ChainStatus.FAILED]
            status = ChainStatus.FAILED if failed else ChainStatus.COMPLETED
            total = Counters()
            for s in shards:
                total.add(s.counters)
            reason = ""
            if failed:
                first = failed[0]
                rng = first.byte_range or (0, 0)
                why = first.reason or first.last_error
                reason = f"shard {first.shard} (bytes {rng[0]}-{rng[1]}) FAILED: {why}"
                if len(failed) > 1:
                    reason += f" (and {len(failed) - 1} more failed shard(s): see s3ddb status)"
                reason += "; send the backfill again to resume the failed shards from their checkpoints"
            if self.ledger.settle(
                parent,
                status=status,
                counters=total,
                offset=L.sharded_offset(parent, shards),
                request_id=ctx.request_id,
                reason=reason,
            ):
                self.t.count(f"Loads{status.capitalize()}")
                log = self.t.log.info if status == ChainStatus.COMPLETED else self.t.log.error
                log(
                    f"sharded load {status}",
                    extra={
                        "shards": n,
                        "counters": total.to_dict(),
                        "reason": reason,
                        "balanced": total.balanced,
                    },
                )
                settled = self.ledger.get(parent.object, parent.target) or parent
                if advance_lane:
                    self._advance_lane(settled, ctx)
                return status.value
            fresh = self.ledger.get(parent.object, parent.target)
            if fresh is None or fresh.chain_id != parent.chain_id:
                return None
            parent = fresh
        return None

    def _note_spec_drift(self, item: LedgerItem, spec: LoadSpec) -> None:
        """A chain resumed by an event whose options differ from the pinned ones runs the pinned
        ones; say so (a reload starts over with the new ones)."""
        diffs = _pinned_differences(item, spec)
        if diffs:
            self.t.log.warning(
                "the event's load options differ from the chain's pinned spec; resuming with the pinned "
                f"one (send with reload to start over with the new ones): {'; '.join(diffs)}"
            )

    def _continue(self, event: ContinueEvent, ctx: InvocationContext) -> HopOutcome:
        self.t.bind(object=event.object, hop=event.hop)
        if L.is_backfill_record(event.target):
            # a prefix backfill's record is no chain: no continuation of the function's points there
            # (reading it as a chain would raise, and Lambda would retry a forged event)
            self.t.count("RefusedContinuations")
            reason = "the continuation names no chain in the ledger"
            return self._refusal(Refused(reason=reason, object=event.object, hop=event.hop))
        item = self.ledger.get(event.object, event.target)
        d = decide(
            item,
            kind="continue",
            request_id=ctx.request_id,
            now=self.clock(),
            event_hop=event.hop,
            event_token=event.token,
        )
        if d.action == "refuse":
            self.t.count("RefusedContinuations")
            return self._refusal(Refused(reason=d.reason, object=event.object, hop=event.hop))
        if d.action != "claim" or item is None:
            self.t.log.info(f"skipped: {d.reason}")
            self.t.count("StaleContinuations")
            return self._skip(item, d.reason, ctx, obj=event.object, start=False)
        refused = self._pinned_refusal(item)
        if refused:
            # the token was right: this is the chain's own continuation. Say in the ledger why it
            # stopped; once allowed again, any event of the chain (or this one, retried) resumes it
            self.ledger.hold(item, error=f"not continued: {refused}")
            return self._refusal(Refused(reason=refused, object=event.object, hop=event.hop))
        claimed = self._claim(item, d, ctx)
        if claimed is None:
            return Skipped(object=event.object, reason="another request claimed the hop first")
        return self._run_hop(claimed, ctx=ctx)

    def _pinned_refusal(self, item: LedgerItem) -> str | None:
        """Why the chain's pinned spec may not run here now (the allow-lists, checked against the
        bucket it reads and the table it writes), or None."""
        try:
            spec = LoadSpec.from_dict(item.spec or {})
        except ConfigError as exc:
            return f"the chain's pinned spec is unreadable: {exc}"
        refused = self._check_allowed(spec.bucket, spec.table, spec.key)
        return f"{refused} (the chain's pinned spec)" if refused else None

    def _claim(self, item: LedgerItem, d: Decision, ctx: InvocationContext) -> LedgerItem | None:
        if not self.ledger.claim(
            item, request_id=ctx.request_id, lease_until=self._lease(ctx), reclaim=d.reclaim
        ):
            self.t.log.info("claim lost to another request")
            return None
        self.t.log.info(f"claimed: {d.reason}")
        if d.reclaim:
            self.t.count("HopsResumed")
        return self.ledger.get(item.object, item.target)

    def _run_hop(self, item: LedgerItem, *, ctx: InvocationContext) -> HopOutcome:
        """Run the claimed hop of ``item`` with the chain's pinned spec; commit, finish or hand over."""
        hop = item.hop
        self.t.bind(chain_id=item.chain_id, hop=hop, object=item.object)
        if item.is_shard:
            self.t.bind(shard=item.shard)
        if hop >= self.settings.max_hops:
            return self._fail_max_hops(item, hop, item.checkpoint, ctx)
        try:
            spec = LoadSpec.from_dict(item.spec or {}, where="the chain's pinned spec")
        except ConfigError as exc:
            return self._finish(item, hop, item.checkpoint, ctx, status=ChainStatus.FAILED, reason=str(exc))
        started = time.monotonic()
        measured_invoke = self.invoke_estimate.seconds if self.invoke_estimate.measured else item.invoke_s
        deadline = Deadline(
            ctx.remaining_ms,
            safety_margin_ms=self.settings.safety_margin_ms,
            invocation_budget_ms=self.invocation_budget_ms,
            invoke_s=measured_invoke,
        )
        too_short = deadline.too_short()
        if too_short is not None:
            self.t.log.error(f"function timeout too short: {too_short}")
            return self._finish(item, hop, item.checkpoint, ctx, status=ChainStatus.FAILED, reason=too_short)
        capped = deadline.cap_message()
        if capped is not None:
            self.t.log.warning(capped)
        lost: list[bool] = []
        oversize: list[str] = []
        last_progress: list[Progress] = []
        resume = item.checkpoint
        if resume is not None:
            resume = dataclasses.replace(resume, hop=hop, chain_id=item.chain_id)

        def should_stop(p: Progress) -> bool:
            return bool(lost) or deadline.should_stop(p)

        def on_checkpoint(cp: Checkpoint) -> None:
            if lost or cp.complete:
                return  # the final one is committed below, with the status
            self._commit_running(
                item,
                hop,
                ctx,
                dataclasses.replace(cp, hop=hop, chain_id=item.chain_id),
                deadline=deadline,
                lost=lost,
                oversize=oversize,
                budget=budget,
                ceiling=ceiling,
            )

        # the operational knobs are the function's of the moment (the operator may turn them down),
        # under the ceiling the backfill gave the load
        ceiling = _lowest(self.settings.max_wcu, item.knobs.get("max_wcu"))
        budget: WriteBudget | None = None
        running = 0
        if item.is_shard and ceiling is not None:
            budget = WriteBudget(None)
            running = self._share_budget(item, budget, ceiling)
        spec = dataclasses.replace(
            spec,
            concurrency=self.settings.concurrency,
            max_wcu=budget.wcu if budget is not None else ceiling,
            rejects=spec.rejects or self.settings.rejects or "/tmp/s3ddb-rejects",
            shuffle_window=int(item.knobs.get("shuffle_window", self.settings.shuffle_window)),
        )
        max_rejects = item.knobs.get("max_rejects")
        try:
            split = self._hop_split(item, spec, resume)
        except ConfigError as exc:
            return self._finish(item, hop, item.checkpoint, ctx, status=ChainStatus.FAILED, reason=str(exc))
        if split is not None:
            return self._run_split_hop(
                item,
                hop,
                ctx,
                spec=spec,
                split=split,
                deadline=deadline,
                budget=budget,
                ceiling=ceiling,
                running=running,
                max_rejects=int(max_rejects) if max_rejects is not None else None,
                started=started,
            )
        request = HopRequest(
            spec=spec,
            resume=resume,
            run_id=f"{item.chain_id}-hop{hop}-{ctx.request_id[:8]}",
            should_stop=should_stop,
            on_checkpoint=on_checkpoint,
            on_progress=lambda p: last_progress.__setitem__(slice(None), [p]),
            max_rejects=int(max_rejects) if max_rejects is not None else None,
            write_budget=budget,
        )
        extra: dict[str, Any] = {"offset": item.offset, "rows_read": item.counters.rows_read}
        if ceiling is not None:
            extra["max_wcu"] = ceiling
        if item.is_shard:
            extra.update(shard=item.shard, byte_range=list(item.byte_range or ()))
            if budget is not None:
                extra.update(wcu_share=budget.wcu, shards_running=running)
        self.t.log.info("hop started", extra={**extra, **deadline.summary()})
        # a checkpoint's counters include those it resumed from (none when it restarts at offset 0)
        before = resume.counters.throttle_events if resume is not None and resume.offset != 0 else 0
        self.t.hop_started(throttles_before=before)
        try:
            result = self.engine(request)
        except (ConfigError, SourceError, TooManyRejectsError) as exc:
            cp = _exc_checkpoint(exc) or item.checkpoint
            return self._finish(
                item, hop, cp, ctx, status=ChainStatus.FAILED, reason=f"{type(exc).__name__}: {exc}"
            )
        except Exception as exc:
            # transient (WriteFailedError, network): keep the claim; Lambda retries this request
            cp = _exc_checkpoint(exc)
            if cp is not None and not lost:
                on_checkpoint(dataclasses.replace(cp, complete=False))
            return self._hop_error(item, hop, ctx, exc, oversize=oversize)
        seconds = time.monotonic() - started
        self.t.hop_metrics(result, seconds=seconds)
        if result.rejects_location:
            self.ledger.add_rejects(item, location=result.rejects_location)
        cp = dataclasses.replace(result.checkpoint, hop=hop, chain_id=item.chain_id)
        if oversize:
            return self._finish(
                item, hop, item.checkpoint, ctx, status=ChainStatus.FAILED, reason=oversize[0]
            )
        if lost:
            return Superseded(object=item.object, hop=hop)
        if result.stopped == "complete":
            return self._finish(item, hop, cp, ctx, status=ChainStatus.COMPLETED)
        if result.stopped == "failed":
            return self._finish(
                item, hop, cp, ctx, status=ChainStatus.FAILED, reason=result.error or "the run failed"
            )
        c = result.counters
        stuck = deadline.no_progress_reason(
            item.offset, cp.offset, throttled=c.throttle_events > 0 or c.retries > 0
        )
        stuck = _window_hint(stuck, spec)
        idle_hops = item.idle_hops + 1 if stuck is not None else 0
        if stuck is not None and idle_hops >= MAX_IDLE_HOPS:
            self.t.log.error(f"hop made no progress: {stuck}")
            return self._finish(item, hop, cp, ctx, status=ChainStatus.FAILED, reason=stuck)
        if stuck is not None:  # once may be a slow moment of a service: the next hop tries again
            self.t.log.warning(f"hop made no progress ({idle_hops}/{MAX_IDLE_HOPS}): {stuck}")
        self.t.log.info("hop stopped by its deadline", extra=deadline.summary())
        return self._handover(item, hop, cp, ctx, idle_hops=idle_hops)

    # -- hops with worker processes --------------------------------------------------------------

    def _hop_split(self, item: LedgerItem, spec: LoadSpec, resume: Checkpoint | None) -> HopSplit | None:
        """The chain's sub-ranges: the ones in its ledger item, else new ones when this function
        may run more than one worker and the remaining range is worth it; None: one in-process run.
        A ConfigError when the item's sub-ranges are damaged."""
        if item.sub_ranges is not None:
            return HopSplit.from_ledger(item.sub_ranges, spec=item.spec or {}, where="the chain's sub-ranges")
        wanted = self.settings.workers_per_hop
        if wanted <= 1 or not item.object_size:
            return None
        from loader.source import compression_of

        rng = spec.byte_range
        start = resume.offset if resume is not None else (rng[0] if rng else 0)
        end = rng[1] if rng else item.object_size
        _, key = split_s3_uri(spec.source)
        n = workers_for_range(
            spec,
            wanted=wanted,
            start=start,
            end=end,
            compression=compression_of(key, spec.csv),
            min_bytes=self.min_bytes_per_worker,
        )
        if n <= 1:
            return None
        pinned = LoadSpec.from_dict(item.spec or {})
        base = resume or Checkpoint(
            source=pinned.source,
            table=pinned.table,
            version_id=pinned.version_id,
            etag=pinned.etag,
            size=item.object_size,
            header=[],
            offset=start,
            next_row=1,
            counters=Counters(),
            byte_range=rng,
            chain_id=item.chain_id,
        )
        try:
            found, note = plan_hop_split(
                pinned, base=base, n=n, size=item.object_size, start=start, end=end, s3_client=self.s3
            )
        except (SourceError, ConfigError, ValueError) as exc:
            # the one-process run meets the same error, and fails the chain with it
            self.t.log.warning(f"one process for this hop: the sub-ranges could not be planned ({exc})")
            return None
        if found is None:
            self.t.log.info(f"one process for this hop: {note}")
            return None
        too_large = _state_too_large(item, found.checkpoint(hop=0, chain_id=item.chain_id), found.to_ledger())
        if too_large is not None:
            self.t.log.warning(f"one process for this hop: {too_large}")
            return None
        self.t.log.info(
            "sub-ranges planned",
            extra={"workers": len(found.state.shards), "from": start, "to": end, "note": note},
        )
        return found

    def _run_split_hop(
        self,
        item: LedgerItem,
        hop: int,
        ctx: InvocationContext,
        *,
        spec: LoadSpec,
        split: HopSplit,
        deadline: Deadline,
        budget: WriteBudget | None,
        ceiling: float | None,
        running: int,
        max_rejects: int | None,
        started: float,
    ) -> HopOutcome:
        """Run the claimed hop as worker processes over the chain's incomplete sub-ranges; commit
        their marks as they advance, then finish or hand over as a one-process hop does."""
        from loader.workers import WorkersFailed

        lost: list[bool] = []
        oversize: list[str] = []
        latest: list[Progress] = []
        current = [split]

        def save(state: Any) -> None:
            now = split.with_state(state)
            current[0] = now
            if lost or now.complete:
                return  # the final one is committed below, with the status
            self._commit_running(
                item,
                hop,
                ctx,
                now.checkpoint(hop=hop, chain_id=item.chain_id),
                sub_ranges=now.to_ledger(),
                deadline=deadline,
                lost=lost,
                oversize=oversize,
                budget=budget,
                ceiling=ceiling,
            )

        def should_stop() -> bool:
            # before the workers report (they are starting), the deadline judges an idle hop
            return bool(lost) or deadline.should_stop(latest[-1] if latest else _IDLE)

        def on_progress(p: Progress) -> None:
            latest[:] = [p]

        def should_abort() -> bool:
            if ctx.remaining_ms() >= 1000.0 * (deadline.tail_s() + WORKER_ABORT_SLACK_S):
                return False
            # a hop whose workers are killed at the last resort was stopped by its deadline: the
            # no-progress judgement must see it (with a small margin this line comes first)
            deadline.stop_now(latest[-1] if latest else _IDLE)
            return True

        limit = None if max_rejects is None else max(0, max_rejects - split.base.counters.rows_rejected)
        request = HopWorkersRequest(
            state=dataclasses.replace(split.state, spec=spec),
            knobs=RunKnobs(
                checkpoint_interval_s=self.settings.checkpoint_interval_s,
                chunk_bytes=self.settings.chunk_bytes,
                max_rejects=limit,
            ),
            run_id=f"{item.chain_id}-hop{hop}-{ctx.request_id[:8]}",
            sender=self.settings.sender,
            save=save,
            should_stop=should_stop,
            should_abort=should_abort,
            on_progress=on_progress,
            save_every_s=self.settings.checkpoint_interval_s,
            budget=budget,
        )
        pending = sum(1 for s in split.state.shards if not s.complete)
        at_start = split.checkpoint(hop=hop, chain_id=item.chain_id)
        extra: dict[str, Any] = {
            "offset": at_start.offset,
            "rows_read": at_start.counters.rows_read,
            "workers": pending,
            "sub_ranges": len(split.state.shards),
        }
        if ceiling is not None:
            extra["max_wcu"] = ceiling
        if item.is_shard:
            extra.update(shard=item.shard, byte_range=list(item.byte_range or ()))
            if budget is not None:
                extra.update(wcu_share=budget.wcu, shards_running=running)
        self.t.log.info("hop started", extra={**extra, **deadline.summary()})
        self.t.hop_started(throttles_before=at_start.counters.throttle_events)
        run_id = request.run_id

        def list_rejects(after: HopSplit) -> None:
            """The rejects files of every sub-range whose committed mark counts new rejects: a
            worker killed at the deadline, or one of a failed hop, never says where it wrote."""
            from loader.rejects import rejects_location

            for i, (was, now) in enumerate(zip(split.state.shards, after.state.shards, strict=True)):
                before = was.checkpoint.counters.rows_rejected if was.checkpoint is not None else 0
                if now.checkpoint is not None and now.checkpoint.counters.rows_rejected > before:
                    where = rejects_location(spec.rejects, run_id=f"{run_id}-s{i}")
                    self.ledger.add_rejects(item, location=where)

        try:
            result, final = self.hop_engine(request)
        except WorkersFailed as exc:
            list_rejects(current[0])
            cp = current[0].checkpoint(hop=hop, chain_id=item.chain_id)
            raw = current[0].to_ledger()
            if exc.error_type in PERMANENT_WORKER_ERRORS and not lost:
                reason = f"{exc.error_type}: {exc}"
                if exc.error_type == "TooManyRejectsError":
                    reason = (
                        f"TooManyRejectsError: more than max_rejects {max_rejects} rows rejected "
                        f"({cp.counters.rows_rejected} in the chain)"
                    )
                return self._finish(
                    item, hop, cp, ctx, status=ChainStatus.FAILED, reason=reason, sub_ranges=raw
                )
            return self._hop_error(item, hop, ctx, exc, oversize=oversize)
        except Exception as exc:
            list_rejects(current[0])
            return self._hop_error(item, hop, ctx, exc, oversize=oversize)
        self.t.hop_metrics(result, seconds=time.monotonic() - started)
        done = split.with_state(final)
        list_rejects(done)
        cp = done.checkpoint(hop=hop, chain_id=item.chain_id)
        raw = done.to_ledger()
        if oversize:
            return self._finish(
                item, hop, item.checkpoint, ctx, status=ChainStatus.FAILED, reason=oversize[0]
            )
        if lost:
            return Superseded(object=item.object, hop=hop)
        if done.complete:
            return self._finish(item, hop, cp, ctx, status=ChainStatus.COMPLETED, sub_ranges=raw)
        c = result.counters
        stuck = deadline.no_progress_reason(
            split.progress_offset(),
            done.progress_offset(),
            throttled=c.throttle_events > 0 or c.retries > 0,
        )
        stuck = _window_hint(stuck, spec)
        idle_hops = item.idle_hops + 1 if stuck is not None else 0
        if stuck is not None and idle_hops >= MAX_IDLE_HOPS:
            self.t.log.error(f"hop made no progress: {stuck}")
            return self._finish(item, hop, cp, ctx, status=ChainStatus.FAILED, reason=stuck, sub_ranges=raw)
        if stuck is not None:
            self.t.log.warning(f"hop made no progress ({idle_hops}/{MAX_IDLE_HOPS}): {stuck}")
        self.t.log.info("hop stopped by its deadline", extra=deadline.summary())
        return self._handover(item, hop, cp, ctx, idle_hops=idle_hops, sub_ranges=raw)

    def _hop_error(
        self, item: LedgerItem, hop: int, ctx: InvocationContext, exc: Exception, *, oversize: list[str]
    ) -> HopOutcome:
        """A hop met an error a retry may not meet again (writes kept failing, the network, a
        worker died): its marks are committed (the run's last checkpoint, or ``run_workers``'
        save); a state too large for the item fails the chain, else keep the claim, say why, and
        raise so that Lambda retries this request."""
        if oversize:  # no retry can make the state fit
            return self._finish(
                item, hop, item.checkpoint, ctx, status=ChainStatus.FAILED, reason=oversize[0]
            )
        self.ledger.record_error(
            item, hop=hop, request_id=ctx.request_id, error=f"{type(exc).__name__}: {exc}"
        )
        self.t.count("HopErrors")
        raise exc

    def _commit_running(
        self,
        item: LedgerItem,
        hop: int,
        ctx: InvocationContext,
        cp: Checkpoint,
        *,
        deadline: Deadline,
        lost: list[bool],
        oversize: list[str],
        budget: WriteBudget | None,
        ceiling: float | None,
        sub_ranges: dict[str, Any] | None = None,
    ) -> None:
        """Commit a running hop's checkpoint (with its sub-ranges' marks, for a hop of workers),
        timing the write for the deadline, then refresh a shard's write-budget share. A state too
        large for the item goes to ``oversize`` and a lost claim to ``lost``: the hop stops."""
        too_large = _state_too_large(item, cp, sub_ranges)
        if too_large is not None:
            oversize.append(too_large)  # the hop stops, and the chain fails with the reason
            lost.append(True)
            return
        self.t.throttles_marked(cp.counters.throttle_events)
        t0 = time.monotonic()
        ok = self.ledger.commit_progress(
            item, hop=hop, request_id=ctx.request_id, checkpoint=cp, sub_ranges=sub_ranges
        )
        deadline.observe_ledger_write(time.monotonic() - t0)
        if not ok:
            self.t.log.warning("lost the claim while running: stopping")
            lost.append(True)
        elif budget is not None and ceiling is not None:
            try:
                self._share_budget(item, budget, ceiling)
            except Exception as exc:  # a throttled ledger read must not fail the hop: keep the share
                self.t.log.warning(f"write budget not refreshed (the share stays {budget.wcu}): {exc}")

    def _share_budget(self, item: LedgerItem, budget: WriteBudget, ceiling: float) -> int:
        """Set shard ``item``'s share of its load's write-unit ``ceiling``: the ceiling divided by
        the shards RUNNING now (itself among them), which it returns. Said in the log and the
        ledger when it changes."""
        # the shards that may still write: every planned one (a shard not made yet will start)
        # but the finished and the dead (RUNNING with its lease run out: no hop alive), so a
        # share is never counted twice and grows back when a shard stops for good
        now = self.ledger.clock()
        siblings = self.ledger.siblings(item)
        gone = sum(
            1 for s in siblings if s.status.finished or s.stale(now) or s.status == ChainStatus.STALLED
        )
        planned = max(item.shard_count or 0, len(siblings))
        running = max(1, planned - gone)
        share = ceiling / running
        if budget.wcu is not None and abs(budget.wcu - share) < 1e-9:
            return running
        before = budget.wcu
        budget.set(share)
        self.ledger.note_budget(item, share=share, running=running)
        if before is not None:
            self.t.log.info(
                "write budget handed on",
                extra={"wcu_share": share, "was": before, "shards_running": running, "max_wcu": ceiling},
            )
        return running

    def _finish(
        self,
        item: LedgerItem,
        hop: int,
        cp: Checkpoint | None,
        ctx: InvocationContext,
        *,
        status: ChainStatus,
        reason: str = "",
        sub_ranges: dict[str, Any] | None = None,
    ) -> HopOutcome:
        if cp is None:
            cp = _empty_checkpoint(item)
        too_large = _state_too_large(item, cp, sub_ranges)
        if too_large is not None:  # a finished chain needs no header to resume from
            cp = dataclasses.replace(cp, header=[])
            if status == ChainStatus.FAILED and not reason:
                reason = too_large
        if not self.ledger.finish(
            item,
            hop=hop,
            request_id=ctx.request_id,
            checkpoint=cp,
            status=status,
            reason=reason,
            sub_ranges=sub_ranges,
        ):
            self.t.log.warning("could not finish: the claim was lost")
            return Superseded(object=item.object, hop=hop)
        self.t.remaining_at_checkpoint(ctx.remaining_ms())
        self.t.count(status.capitalize())
        c = cp.counters
        log = self.t.log.info if status == ChainStatus.COMPLETED else self.t.log.error
        log(
            f"chain {status}",
            extra={"hops": hop + 1, "counters": c.to_dict(), "reason": reason, "balanced": c.balanced},
        )
        self._advance_lane(item, ctx)
        return Finished(
            status=OutcomeStatus(status.value),
            object=item.object,
            chain_id=item.chain_id,
            hops=hop + 1,
            counters=c.copy(),
            reason=reason,
            shard=item.shard,  # None but for a shard, as the two fields below
            parent_status=self._shard_finished(item, ctx) if item.is_shard else None,
            rejects_note=SHARD_REJECTS_NOTE if item.is_shard and c.rows_rejected else None,
        )

    def _fail_max_hops(
        self,
        item: LedgerItem,
        hop: int,
        cp: Checkpoint | None,
        ctx: InvocationContext,
        sub_ranges: dict[str, Any] | None = None,
    ) -> HopOutcome:
        offset = cp.offset if cp is not None else 0
        reason = (
            f"{L.MAX_HOPS_REASON}{self.settings.max_hops} reached at offset {offset} of {item.object_size}: "
            "raise it and re-send the notification (or s3ddb invoke) to resume from this offset, "
            "or split the object"
        )
        return self._finish(
            item, hop, cp, ctx, status=ChainStatus.FAILED, reason=reason, sub_ranges=sub_ranges
        )

    def _handover(
        self,
        item: LedgerItem,
        hop: int,
        cp: Checkpoint,
        ctx: InvocationContext,
        *,
        idle_hops: int = 0,
        sub_ranges: dict[str, Any] | None = None,
    ) -> HopOutcome:
        if hop + 1 >= self.settings.max_hops:
            return self._fail_max_hops(item, hop, cp, ctx, sub_ranges)
        nxt = dataclasses.replace(cp, hop=hop + 1)
        too_large = _state_too_large(item, nxt, sub_ranges)
        if too_large is not None:
            return self._finish(item, hop, cp, ctx, status=ChainStatus.FAILED, reason=too_large)
        token = secrets.token_hex(16)
        payload = continue_payload(object=item.object, target=item.target, hop=hop + 1, token=token)
        size = len(orjson.dumps(payload))
        t0 = time.monotonic()
        if not self.ledger.handover(
            item,
            hop=hop,
            request_id=ctx.request_id,
            checkpoint=nxt,
            lease_until=self.clock() + PENDING_LEASE_S,
            token=token,
            idle_hops=idle_hops,
            sub_ranges=sub_ranges,
        ):
            self.t.log.warning("handover refused: the claim was lost")
            return Superseded(object=item.object, hop=hop)
        self.t.remaining_at_checkpoint(ctx.remaining_ms())
        self.t.log.info(
            "checkpoint committed",
            extra={
                "offset": cp.offset,
                "ledger_s": time.monotonic() - t0,
                "remaining_ms": ctx.remaining_ms(),
            },
        )
        try:
            self._invoke_with_retry(ctx, payload)
        except InvokeFailedError as exc:
            error = f"continuation invoke failed: {exc}"
            if not self.ledger.stall(item, next_hop=hop + 1, request_id=ctx.request_id, error=error):
                # the chain moved on without us (an invoke that reported failure was delivered
                # after all, and its hop claimed the chain): nothing is stalled, nothing to retry
                self.t.log.warning(f"{error}, but the chain has moved on: not stalled")
                return Superseded(object=item.object, hop=hop, reason=error)
            self.t.count("Stalled")
            self.t.log.error(f"chain STALLED: {error}")
            raise StalledError(f"{item.object}: {error}") from exc
        self.ledger.note_invoke(item, seconds=self.invoke_estimate.seconds)
        self.t.count("Continuations")
        return Continued(
            object=item.object,
            chain_id=item.chain_id,
            hop=hop,
            next_hop=hop + 1,
            offset=cp.offset,
            payload_bytes=size,
        )

    # -- invoking ourselves --------------------------------------------------------------------

    def _invoke(self, ctx: InvocationContext, payload: dict[str, Any]) -> None:
        t0 = time.monotonic()
        try:
            resp = self.lambda_client.invoke(
                FunctionName=ctx.function, InvocationType="Event", Payload=orjson.dumps(payload)
            )
        finally:
            self.invoke_estimate.observe(time.monotonic() - t0)
        status = int(resp.get("StatusCode", 0))
        if status != 202:
            raise RuntimeError(f"invoke returned status {status}")

    def _invoke_with_retry(self, ctx: InvocationContext, payload: dict[str, Any]) -> None:
        invoke_with_retry(
            lambda: self._invoke(ctx, payload),
            policy=self.invoke_retry,
            sleep=self.sleep,
            what=f"self-invoke of {ctx.function} ({payload.get('kind', 'event')} event)",
        )


def invoke_with_retry(
    call: Callable[[], None], *, policy: RetryPolicy, sleep: Callable[[float], None], what: str
) -> None:
    """``call()`` (one self-invoke) under ``policy``: after a failed call, one log line
    ``what: attempt n/max failed (...)`` and a full-jitter ``sleep`` before the next one. Raises
    InvokeFailedError from the last error once ``policy.max_attempts`` calls failed, or at once for
    an error no retry changes (``INVOKE_PERMANENT_CODES``)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            call()
            return
        except Exception as exc:
            last = f"last error: {type(exc).__name__}: {exc}"
            code = _invoke_error_code(exc)
            if code in INVOKE_PERMANENT_CODES:
                raise InvokeFailedError(
                    f"{what}: attempt {attempt}/{policy.max_attempts} failed with {code}, which no "
                    f"retry changes; {last}"
                ) from exc
            if policy.exhausted(attempt):
                raise InvokeFailedError(
                    f"{what}: gave up after {attempt}/{policy.max_attempts} attempts; {last}"
                ) from exc
            sleep(policy.next_delay(attempt, exponent=attempt - 1, what=what, last=exc))


def _invoke_error_code(exc: BaseException) -> str:
    """The service's error code of a failed Invoke (a botocore ClientError), or ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _pinned_differences(item: LedgerItem, spec: LoadSpec) -> list[str]:
    """How ``spec`` differs from the chain's pinned spec in what lands in the table (the object
    version aside); none when the pinned spec is unreadable (``_run_hop`` fails the chain then)."""
    try:
        pinned = LoadSpec.from_dict(item.spec or {})
    except ConfigError:
        return []
    return pinned.differences(dataclasses.replace(spec, version_id=pinned.version_id, etag=pinned.etag))


def _state_too_large(
    item: LedgerItem, cp: Checkpoint, sub_ranges: dict[str, Any] | None = None
) -> str | None:
    """Why the chain's state (checkpoint with the CSV header, pinned spec, lane, and the
    sub-ranges' marks of a hop with worker processes) cannot be kept in its ledger item, or None."""
    size = len(cp.dumps()) + len(orjson.dumps(item.spec)) + len(orjson.dumps(item.lane))
    if sub_ranges is not None:
        size += len(orjson.dumps(sub_ranges))
    if size <= MAX_STATE_BYTES:
        return None
    return (
        f"the chain's state is {size} bytes (> {MAX_STATE_BYTES}): the CSV header "
        f"({len(cp.header)} columns) is too large to keep in the ledger; load this object with s3ddb load"
    )


def _head_error(exc: Any, uri: str, version_id: str | None) -> str:
    """A HeadObject failure in words (HEAD answers carry a status, not a message)."""
    code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if version_id and status in (400, 404):
        return f"cannot read {uri}: version {version_id!r} does not exist ({code})"
    if status == 404:
        return f"cannot read {uri}: no such object ({code})"
    if status == 403:
        return f"cannot read {uri}: access denied ({code}): the function needs s3:GetObject on it"
    return f"cannot read {uri}: {code}"


def _exc_checkpoint(exc: BaseException) -> Checkpoint | None:
    result = getattr(exc, "result", None)
    return result.checkpoint if isinstance(result, RunResult) else None


def _empty_checkpoint(item: LedgerItem) -> Checkpoint:
    return Checkpoint(
        source=item.object,
        table=item.table,
        version_id=None,
        etag=None,
        size=item.object_size,
        header=[],
        offset=item.offset,
        next_row=1,
        counters=item.counters.copy(),
        chain_id=item.chain_id,
    )


#: the progress of a hop whose workers have not reported yet
_IDLE = Progress(
    rows_read=0,
    items_written=0,
    rows_rejected=0,
    duplicates_collapsed=0,
    offset=0,
    object_size=None,
    inflight_batches=0,
    max_backoff_s=0.0,
    elapsed_s=0.0,
    items_per_second=0.0,
)


def _window_hint(stuck: str | None, spec: LoadSpec) -> str | None:
    """A no-progress reason, with the shuffle window named when there is one: the mark passes a
    window only when all its rows are written, so a window larger than a hop writes never moves it."""
    if stuck is None or not spec.shuffle_window:
        return stuck
    return (
        f"{stuck}; or lower the shuffle window ({spec.shuffle_window} rows, S3DDB_SHUFFLE_WINDOW or the "
        "backfill's shuffle_window): the mark passes a window only when all its rows are written, and "
        "a hop must write at least one whole window before its deadline"
    )


def _lowest(*ceilings: Any) -> float | None:
    """The lowest of the write-unit ceilings that are set (None: none is)."""
    found = [float(c) for c in ceilings if c is not None]
    return min(found) if found else None
