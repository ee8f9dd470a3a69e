"""What the ``s3ddb`` CLI asks of the function and its ledger: status, backfill, notify, the
deployed stack's outputs, and the replay of the function's failure queue.

Plain functions over clients the caller builds (the CLI passes boto3 clients).
"""

from __future__ import annotations

import enum
import json
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import orjson

from lambda_src.events import EVENT_VERSION, split_s3_uri
from lambda_src.ledger import (
    SHARD_REJECTS_NOTE,
    ChainStatus,
    Ledger,
    LedgerItem,
    backfill_records,
    backfill_target,
    sharded_offset,
)
from loader.errors import ConfigError, S3ddbError
from loader.models import COUNTER_NAMES, Counters

__all__ = [
    "REPLAY_VISIBILITY_S",
    "SETTLE_ADVICE",
    "STACK_OUTPUTS",
    "STALE_ADVICE",
    "DestinationRecord",
    "NotARecord",
    "ReplayAction",
    "ReplayItem",
    "ReplayReport",
    "StackOutputs",
    "backfill_status",
    "build_notification",
    "describe_event",
    "judge_stack_status",
    "notify",
    "parse_destination_record",
    "replay_failures",
    "send_backfill",
    "stack_outputs",
    "status",
]


#: what ``status`` says about a chain whose lease ran out with no hop alive to finish it
STALE_ADVICE = (
    "the lease ran out with no hop running (a hop was killed or its continuation was lost): "
    "re-send the notification (s3ddb local notify, or the S3 event) or run s3ddb invoke to resume "
    "from the last committed checkpoint"
)


#: what ``status`` says about a sharded load whose shards are all finished but that is not settled
SETTLE_ADVICE = (
    "every shard is finished but the load was not settled (the request that finished the last one "
    "died before it could): send the backfill again (s3ddb invoke) to settle it"
)


def status(
    uri: str,
    *,
    ledger_table: str,
    ddb_client: Any,
    table: str | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The ledger item of ``uri`` (``s3://bucket/key``): its most recently started load (of any
    version; into ``table`` when it is given). A prefix (``s3://bucket/prefix/``): its latest
    backfill, added up (see :func:`backfill_status`).

    Keys: status, chain_id, hops, hop, rows_read, items_written, rows_rejected,
    duplicates_collapsed, retries, throttle_events, write_units, offset, object_size, table,
    rejects, reclaims, started_at, updated_at, finished_at, lease_until, stale, last_error,
    reason, object, version, versions (how many loads of the object the ledger holds: versions
    and tables) and chains (each of them: version, table, status, chain_id, started_at).
    ``status`` is ``NOT_FOUND`` when the ledger has no chain for the object. A RUNNING chain
    whose lease ran out is marked STALLED in the ledger (a conditional write) and reported with
    ``"stale": true`` and the advice in ``last_error``.

    A load cut into shards adds ``parallel`` (asked for), ``shards`` (one entry per shard: shard,
    range, status, hops, counters, offset, rejects, last_error, reason, wcu_share), the count of
    shards by status (``shards_completed``, ``shards_running``, ``shards_failed``,
    ``shards_stalled``) and ``plan_note`` (the planner's, when it cut fewer shards than asked);
    its counters, hops, offset and rejects are the shards' added up.
    """
    _, key = split_s3_uri(uri)
    ledger = Ledger(ddb_client, ledger_table, clock=clock)
    if key == "" or key.endswith("/"):
        return backfill_status(uri, ledger=ledger, table=table, clock=clock)
    items = ledger.chains(uri)
    if table is not None:
        items = [i for i in items if i.table == table]
    if not items:
        return {"object": uri, "status": "NOT_FOUND", "versions": 0}
    now = clock()
    chains = [
        {k: i.to_status(now)[k] for k in ("version", "table", "status", "chain_id", "started_at")}
        for i in items
    ]
    return {**_load_status(ledger, items[-1], now), "versions": len(items), "chains": chains}


def _load_status(ledger: Ledger, item: LedgerItem, now: float) -> dict[str, Any]:
    """One load's status (a stale chain marked STALLED first); a sharded one with its shards."""
    if item.stale(now):
        ledger.mark_stalled(item, error=STALE_ADVICE)
        item = ledger.get(item.object, item.target) or item
        return {**item.to_status(now), "stale": True}
    if not item.is_parent:
        return item.to_status(now)
    shards = []
    for shard in ledger.shards_of(item):
        if shard.stale(now):
            ledger.mark_stalled(shard, error=STALE_ADVICE)
            shard = ledger.get(shard.object, shard.target) or shard
        shards.append(shard)
    plan = item.shards or {}
    planned = len(plan.get("ranges") or [])
    by_status = {s: sum(1 for sh in shards if sh.status == s) for s in ChainStatus}
    out = item.to_status(now)
    if not item.status.finished:  # settled loads hold the sum; a running one is added up now
        total = Counters()
        for sh in shards:
            total.add(sh.counters)
        out.update(total.to_dict())
        out["offset"] = sharded_offset(item, shards)
        finished = len(shards) == planned and all(sh.status.finished for sh in shards)
        if finished:
            out.update(stale=True, last_error=SETTLE_ADVICE)
        elif not by_status[ChainStatus.RUNNING] and by_status[ChainStatus.STALLED]:
            held = next(sh for sh in shards if sh.status == ChainStatus.STALLED)
            out.update(status=ChainStatus.STALLED.value, last_error=f"shard {held.shard}: {held.last_error}")
        elif by_status[ChainStatus.FAILED]:
            failed = next(sh for sh in shards if sh.status == ChainStatus.FAILED)
            out["last_error"] = f"shard {failed.shard} FAILED: {failed.reason or failed.last_error}"
    out.update(
        hops=sum(sh.hops for sh in shards),
        rejects=[loc for sh in shards for loc in sh.rejects],
        parallel=plan.get("parallel"),
        plan_note=plan.get("note"),
        shards_completed=by_status[ChainStatus.COMPLETED],
        shards_running=by_status[ChainStatus.RUNNING],
        shards_failed=by_status[ChainStatus.FAILED],
        shards_stalled=by_status[ChainStatus.STALLED],
        shards=[sh.to_shard_status(now) for sh in shards],
    )
    if item.knobs:
        out["knobs"] = dict(item.knobs)
    if out["rejects"]:
        out["rejects_note"] = SHARD_REJECTS_NOTE
    return out


def _backfill_rows(ledger: Ledger, source: str, table: str | None) -> list[dict[str, Any]]:
    """The ledger items of the prefix backfills of ``source`` (into ``table`` when given)."""
    kwargs: dict[str, Any] = {
        "TableName": ledger.table,
        "KeyConditionExpression": "#o = :o AND begins_with(#t, :t)",
        "ExpressionAttributeNames": {"#o": "object", "#t": "target"},
        "ExpressionAttributeValues": {
            ":o": {"S": source},
            ":t": {"S": backfill_target(table, "") if table is not None else ""},
        },
        "ConsistentRead": True,
    }
    if table is None:  # every table's
        kwargs["KeyConditionExpression"] = "#o = :o"
        del kwargs["ExpressionAttributeNames"]["#t"], kwargs["ExpressionAttributeValues"][":t"]
    raws: list[dict[str, Any]] = []
    while True:
        page = ledger.client.query(**kwargs)
        raws.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return raws
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def backfill_status(
    uri: str,
    *,
    ledger: Ledger,
    table: str | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The latest prefix backfill of ``uri`` (into ``table`` when given), added up over the objects
    its lanes reached: ``objects`` and how many are ``completed``, ``running``, ``failed``,
    ``stalled``, ``skipped`` (unreadable) or ``pending`` (reached, not in the ledger yet), the
    counters summed, ``lanes`` / ``lanes_done``, and ``loads`` (one entry per object: object,
    version, status, counters, parallel). ``status`` is RUNNING while a lane is still walking or an
    object runs, then FAILED (an object failed or was skipped), STALLED, or COMPLETED; NOT_FOUND
    when the ledger holds no backfill of the prefix."""
    records = backfill_records(uri, _backfill_rows(ledger, uri, table))
    if not records:
        return {"source": uri, "kind": "backfill", "status": "NOT_FOUND", "backfills": 0}
    rec = records[-1]
    now = clock()
    loads: list[dict[str, Any]] = []
    counts = {"completed": 0, "running": 0, "failed": 0, "stalled": 0, "skipped": 0, "pending": 0}
    totals = dict.fromkeys(COUNTER_NAMES, 0)
    rejects: list[str] = []
    for obj, target, skipped in rec.members:
        if not target:
            counts["skipped"] += 1
            loads.append({"object": obj, "status": "SKIPPED", "reason": skipped})
            continue
        item = ledger.get(obj, target)
        if item is None:
            counts["pending"] += 1
            loads.append({"object": obj, "status": "PENDING"})
            continue
        st = _load_status(ledger, item, now)
        counts[str(st["status"]).lower()] += 1
        for name in COUNTER_NAMES:
            totals[name] += int(st.get(name) or 0)
        rejects.extend(st.get("rejects") or [])
        entry = {k: st.get(k) for k in ("object", "version", "status", "chain_id", *COUNTER_NAMES, "reason")}
        if item.is_parent:
            entry["shards"] = len(st.get("shards") or [])
        loads.append(entry)
    if not rec.walked or counts["running"] or counts["pending"]:
        overall = ChainStatus.RUNNING.value
    elif counts["failed"] or counts["skipped"]:
        overall = ChainStatus.FAILED.value
    elif counts["stalled"]:
        overall = ChainStatus.STALLED.value
    else:
        overall = ChainStatus.COMPLETED.value
    return {
        "source": uri,
        "kind": "backfill",
        "status": overall,
        "table": rec.table,
        "backfill_id": rec.backfill_id,
        "lanes": rec.lanes,
        "lanes_done": len(rec.lanes_done),
        "parallel": rec.parallel,
        "started_at": rec.started_at,
        "accepted_at": rec.accepted_at,
        "objects": len(rec.members),
        **counts,
        **totals,
        "rejects": rejects,
        "backfills": len(records),
        "loads": loads,
    }


def _invoke(lambda_client: Any, function: str, payload: dict[str, Any], kind: str) -> dict[str, Any]:
    resp = lambda_client.invoke(FunctionName=function, InvocationType=kind, Payload=orjson.dumps(payload))
    body = resp["Payload"].read() if "Payload" in resp else b""
    if resp.get("FunctionError"):
        try:
            err = orjson.loads(body)
            message = f"{err.get('errorType')}: {err.get('errorMessage')}"
        except orjson.JSONDecodeError:
            message = body.decode(errors="replace")
        raise S3ddbError(f"function {function} failed: {message}")
    if kind != "RequestResponse":
        return {"status_code": int(resp.get("StatusCode", 0))}
    out = orjson.loads(body) if body else None
    return out if isinstance(out, dict) else {"result": out}


def send_backfill(
    source: str,
    *,
    table: str,
    function: str,
    lambda_client: Any,
    schema: dict[str, Any] | None = None,
    csv: dict[str, Any] | None = None,
    on_duplicate: str | None = None,
    version_id: str | None = None,
    reload: bool = False,
    parallel: int | None = None,
    max_wcu: float | None = None,
    max_rejects: int | None = None,
) -> dict[str, Any]:
    """Ask the function to backfill ``source`` (an object, or a prefix ending in ``/``; the key is
    literal) into ``table``. ``schema``, ``csv`` and ``on_duplicate`` left as None are the
    function's settings (S3DDB_SCHEMA, S3DDB_CSV, S3DDB_ON_DUPLICATE); each chain pins them.
    ``parallel`` cuts each object into that many shard chains; ``max_wcu`` is the load's write-unit
    ceiling (shared by its shards; S3DDB_MAX_WCU caps it) and ``max_rejects`` the rejected rows after
    which a chain (or a shard) is FAILED.

    A synchronous invoke: the function checks its allow-lists, the options and the source, starts
    the chains (one per object, bounded by S3DDB_MAX_CHAINS) asynchronously and answers at once
    with ``{"status": "accepted", "lanes": N, ...}``, ``{"status": "already loaded", ...}`` (the
    object version was loaded into the table: ``reload`` loads it again),
    ``{"status": "refused", "reason": ...}`` or ``{"status": "empty", ...}``. Follow the chains
    with :func:`status`.
    """
    split_s3_uri(source)
    if not table:
        raise ConfigError("--table is required")
    payload: dict[str, Any] = {"kind": "backfill", "version": EVENT_VERSION, "source": source, "table": table}
    options = {"schema": schema, "csv": csv, "on_duplicate": on_duplicate}
    payload.update({name: value for name, value in options.items() if value is not None})
    if version_id is not None:
        payload["version_id"] = version_id
    if reload:
        payload["reload"] = True
    run = {"parallel": parallel, "max_wcu": max_wcu, "max_rejects": max_rejects}
    payload.update({name: value for name, value in run.items() if value is not None})
    return _invoke(lambda_client, function, payload, "RequestResponse")


def build_notification(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str | None,
    version_id: str | None,
    region: str = "us-east-1",
    event_name: str = "ObjectCreated:Put",
    now: float | None = None,
) -> dict[str, Any]:
    """The S3 event notification S3 itself sends for a PUT (the key URL-encoded as S3 does)."""
    ts = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": (etag or "").strip('"'),
        "sequencer": f"{int(ts.timestamp() * 1e6):016X}",
    }
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "s3ddb-local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "S3DDBLOCAL", "x-amz-id-2": "s3ddb-local"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "s3ddb-local-notify",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "s3ddb-local"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


def notify(uri: str, *, function: str, lambda_client: Any, s3_client: Any) -> dict[str, Any]:
    """Send the S3 ``ObjectCreated:Put`` notification of an existing object as an Event invoke.

    Returns ``{"status_code": 202, "event": <the notification>}``.
    """
    bucket, key = split_s3_uri(uri)
    if not key or key.endswith("/"):
        raise ConfigError(f"{uri} names no object")
    try:
        head = s3_client.head_object(Bucket=bucket, Key=key)
    except s3_client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ConfigError(f"cannot read {uri}: {code or exc}") from exc
    event = build_notification(
        bucket,
        key,
        size=int(head.get("ContentLength", 0)),
        etag=head.get("ETag"),
        version_id=head.get("VersionId"),
        region=s3_client.meta.region_name or "us-east-1",
    )
    out = _invoke(lambda_client, function, event, "Event")
    return {**out, "event": event}


# -- the deployed stack ---------------------------------------------------------------------------

#: the outputs of ``infra/template.yaml``; each command reads the ones it needs
STACK_OUTPUTS = (
    "FunctionName",
    "FunctionArn",
    "SourceBucket",
    "RejectsBucket",
    "LedgerTable",
    "FailureQueueUrl",
    "AlarmTopicArn",
    "LogGroup",
)

_SETTLED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})


def judge_stack_status(name: str, status: str) -> tuple[bool, str | None]:
    """May the outputs of stack ``name`` in CloudFormation state ``status`` be used, and what to say.

    ``(True, None)``: settled. ``(True, warning)``: being updated, or back from a rolled-back update;
    its resources exist, its outputs may change. ``(False, reason)``: never created (CREATE_FAILED,
    ROLLBACK_*), still being created (CREATE_IN_PROGRESS, REVIEW_IN_PROGRESS) or deleted (DELETE_*):
    a name it outputs would point at nothing, or at a resource on its way out.
    """
    if status in _SETTLED:
        return True, None
    if status.startswith("ROLLBACK_") or status == "CREATE_FAILED":
        return False, f"stack '{name}' is {status}: its creation failed (delete it and deploy again)"
    if status.startswith("DELETE_"):
        return False, f"stack '{name}' is {status}: it is being deleted or was deleted"
    if status == "CREATE_IN_PROGRESS":
        return False, f"stack '{name}' is {status}: try again once it is CREATE_COMPLETE"
    if status == "REVIEW_IN_PROGRESS":
        return False, f"stack '{name}' is {status}: a change set made it and was never executed"
    stack = f"stack '{name}' is {status}"
    if status.endswith("ROLLBACK_COMPLETE"):
        return True, f"{stack}: its last change was rolled back; using its outputs as they are"
    if status.endswith("_IN_PROGRESS"):
        return True, f"{stack}: using its outputs as they are now; they may change when it settles"
    if status.endswith("_FAILED"):
        return True, f"{stack}: its last change did not finish (fix it in CloudFormation); using its outputs"
    return True, f"{stack}, a state this s3ddb does not know: using its outputs as they are"


@dataclass(frozen=True, kw_only=True)
class StackOutputs:
    """A deployed stack's outputs (``OutputKey`` -> ``OutputValue``), as DescribeStacks returned
    them; ``warning`` is what :func:`judge_stack_status` said about a stack that is not settled."""

    name: str
    region: str
    status: str
    outputs: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    warning: str | None = None

    def get(self, key: str) -> str | None:
        return self.outputs.get(key) or None

    def require(self, key: str) -> str:
        """The output ``key``; a ConfigError naming it when the stack has none."""
        if key not in STACK_OUTPUTS:
            raise ValueError(f"{key!r} is not an output of s3ddb's template")
        value = self.get(key)
        if value is None:
            raise ConfigError(f"stack '{self.name}' has no output {key}: not an s3ddb stack?")
        return value


def stack_outputs(name: str, *, cfn_client: Any) -> StackOutputs:
    """The outputs of CloudFormation stack ``name`` (a name or a stack id), read with DescribeStacks
    in the client's region. A ConfigError when the stack does not exist, cannot be read, or is in a
    state whose outputs must not be used (see :func:`judge_stack_status`)."""
    if not name:
        raise ConfigError("--stack needs a stack name")
    region = cfn_client.meta.region_name or "the default region"
    try:
        resp = cfn_client.describe_stacks(StackName=name)
    except cfn_client.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        code, message = str(err.get("Code", "")), str(err.get("Message", ""))
        if code == "ValidationError" and "does not exist" in message:
            raise ConfigError(f"stack '{name}' not found in {region}") from None
        if code == "ValidationError" or code.startswith("AccessDenied"):
            raise ConfigError(f"stack '{name}' in {region}: {code}: {message}") from None
        raise
    stacks = resp.get("Stacks") or []
    if not stacks:
        raise ConfigError(f"stack '{name}' not found in {region}")
    stack = stacks[0]
    status = str(stack.get("StackStatus", ""))
    usable, note = judge_stack_status(name, status)
    if not usable:
        raise ConfigError(str(note))
    outputs = {
        str(o["OutputKey"]): str(o.get("OutputValue", ""))
        for o in stack.get("Outputs") or []
        if o.get("OutputKey")
    }
    return StackOutputs(
        name=name, region=region, status=status, outputs=types.MappingProxyType(outputs), warning=note
    )


# -- the failure queue ----------------------------------------------------------------------------

#: how long a received message stays hidden from every reader of the queue (this one included)
#: while it is resent: a batch of 10 invokes, each bounded by the caller's client timeouts (the
#: CLI's: 2 attempts of 5 s connect + 10 s read), is resent and deleted well before it could be
#: received, and resent, a second time. An interrupted replay leaves what it held hidden this long.
REPLAY_VISIBILITY_S = 600
#: a receive long-polls this long, so an empty answer means no visible message is left
REPLAY_WAIT_S = 1
_RECEIVE_BATCH = 10
#: invoke errors no message can get past: the replay stops with a ConfigError instead of failing each
_FATAL_INVOKE_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    }
)
_MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


class NotARecord(ValueError):
    """A queue message that is not a Lambda asynchronous-invocation destination record."""


@dataclass(frozen=True, kw_only=True)
class DestinationRecord:
    """What Lambda sends an asynchronous invocation's destination (record version 1.0)::

    {"version": "1.0", "timestamp": "...",
     "requestContext": {"requestId", "functionArn" (with its qualifier, e.g. ":$LATEST"),
                        "condition": "RetriesExhausted" | "EventAgeExceeded" | "Success",
                        "approximateInvokeCount"},
     "requestPayload": <the event as the function received it>,
     "responseContext": {"statusCode", "executedVersion", "functionError"},
     "responsePayload": <the function's error>}
    """

    request_id: str
    function_arn: str
    condition: str
    payload: Any


def parse_destination_record(body: str) -> DestinationRecord:
    """The record in a queue message's body; NotARecord (saying why) for anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise NotARecord("not JSON, so not an invocation record") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("requestContext"), dict):
        raise NotARecord("not an invocation record (no requestContext)")
    if doc.get("version") != "1.0":
        raise NotARecord(f"an invocation record of version {doc.get('version')!r}, not 1.0")
    ctx = doc["requestContext"]
    request_id, arn, condition = ctx.get("requestId"), ctx.get("functionArn"), ctx.get("condition")
    if not (isinstance(request_id, str) and isinstance(arn, str) and isinstance(condition, str)):
        raise NotARecord("an invocation record without requestId, functionArn or condition")
    if not arn.startswith("arn:") or ":function:" not in arn:
        raise NotARecord(f"an invocation record whose functionArn {arn!r} is not a function's ARN")
    if "requestPayload" not in doc:
        raise NotARecord("an invocation record without requestPayload")
    return DestinationRecord(
        request_id=request_id, function_arn=arn, condition=condition, payload=doc["requestPayload"]
    )


def _at(obj: Any, *path: str) -> str | None:
    """The non-empty string at ``path`` in nested dicts of untrusted JSON, else None."""
    for name in path:
        obj = obj.get(name) if isinstance(obj, dict) else None
    return obj if isinstance(obj, str) and obj else None


def describe_event(payload: Any) -> tuple[str, str | None]:
    """What an event is (``backfill``, ``continue``, ``lane``, ``ObjectCreated:Put``, ``Object
    Created``, ...) and the object or source it names: for a person reading the replay's report,
    never for a decision (the function judges the event when it gets it)."""
    if not isinstance(payload, dict):
        return "unknown", None
    kind = _at(payload, "kind")
    if kind == "lane":
        bucket = _at(payload, "bucket")
        return kind, f"s3://{bucket}/{_at(payload, 'prefix') or ''}" if bucket else None
    if kind is not None:
        return kind, _at(payload, "source" if kind == "backfill" else "object")
    records = payload.get("Records")
    if isinstance(records, list) and records:
        rec = records[0]
        bucket, key = _at(rec, "s3", "bucket", "name"), _at(rec, "s3", "object", "key")
        where = f"s3://{bucket}/{unquote_plus(key)}" if bucket and key else None
        if where is not None and len(records) > 1:
            where += f" (+{len(records) - 1} more)"
        return _at(rec, "eventName") or "Records", where
    if payload.get("Event") == "s3:S3TestEvent":
        return "s3:S3TestEvent", None
    detail_type = _at(payload, "detail-type")
    if detail_type is not None:
        bucket, key = _at(payload, "detail", "bucket", "name"), _at(payload, "detail", "object", "key")
        return detail_type, f"s3://{bucket}/{unquote_plus(key)}" if bucket and key else None
    return "unknown", None


class ReplayAction(enum.StrEnum):
    """What the replay did with one message."""

    RESENT = "resent"  # invoked (202) and deleted from the queue
    WOULD_RESEND = "would resend"  # --dry-run: a failure record of this function, left as it was
    LEFT = "left"  # not a failure record of this function: left in the queue
    FAILED = "failed"  # the invoke was not accepted: left in the queue
    NOT_DELETED = "not deleted"  # resent, but the delete failed: it comes back (the resend is fenced)


@dataclass(frozen=True, kw_only=True)
class ReplayItem:
    message_id: str
    action: ReplayAction
    request_id: str | None = None
    condition: str | None = None
    kind: str | None = None
    object: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.action in (ReplayAction.RESENT, ReplayAction.WOULD_RESEND)

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "action": str(self.action),
            "request_id": self.request_id,
            "condition": self.condition,
            "kind": self.kind,
            "object": self.object,
            "reason": self.reason,
        }


@dataclass(frozen=True, kw_only=True)
class ReplayReport:
    queue_url: str
    function: str
    dry_run: bool
    items: tuple[ReplayItem, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every message was resent (or, dry, would be), or there was none."""
        return all(item.ok for item in self.items)

    def count(self, action: ReplayAction) -> int:
        return sum(1 for item in self.items if item.action == action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "incomplete",
            "queue_url": self.queue_url,
            "function": self.function,
            "dry_run": self.dry_run,
            "received": len(self.items),
            **{action.name.lower(): self.count(action) for action in ReplayAction},
            "messages": [item.to_dict() for item in self.items],
            "warnings": list(self.warnings),
        }


def _function_name(ref: str) -> str:
    """The function's name in a name, ``name:qualifier``, or a partial or full ARN."""
    if ":function:" in ref:
        ref = ref.split(":function:", 1)[1]
    return ref.split(":", 1)[0]


def _unqualified(arn: str) -> str:
    return ":".join(arn.split(":")[:7])


def _same_function(record_arn: str, *, function: str, function_arn: str | None) -> bool:
    """Is ``record_arn`` (qualified, as Lambda writes it) the function replay sends to? Whole ARNs
    are compared when one is known (the stack's FunctionArn, or --function given as an ARN), so a
    function of the same name in another account or region is not taken for this one."""
    want = function_arn or (function if function.startswith("arn:") else None)
    if want is not None:
        return _unqualified(record_arn) == _unqualified(want)
    return _function_name(record_arn) == _function_name(function)


def _error_code(exc: Any) -> tuple[str, str]:
    err = getattr(exc, "response", {}).get("Error", {})
    return str(err.get("Code", "")), str(err.get("Message", "")) or str(exc)


def replay_failures(
    queue_url: str,
    *,
    function: str,
    lambda_client: Any,
    sqs_client: Any,
    function_arn: str | None = None,
    dry_run: bool = False,
    max_messages: int | None = None,
    on_item: Callable[[ReplayItem], None] | None = None,
) -> ReplayReport:
    """Resend what reached the function's on-failure destination queue.

    Receives (batches of 10, long-poll ``REPLAY_WAIT_S``, hidden ``REPLAY_VISIBILITY_S``) until the
    queue has nothing visible left or ``max_messages`` were received. Each message that is a
    failure record (:class:`DestinationRecord`) of ``function`` (``function_arn`` when known) has its
    ``requestPayload`` sent to ``function`` as Lambda first delivered it (an ``Event`` invoke) and is
    deleted once the invoke was accepted (202). Anything else (not a record, a Success record, a
    record of another function) and any message whose invoke failed stays in the queue, and every
    message not deleted is made visible again at the end; with ``dry_run`` nothing is sent or deleted.

    Resending is safe because the ledger fences every chain: a stale continuation is refused by its
    token, a finished object answers "already loaded", a running one is not forked.
    ``on_item`` hears of each message as it is handled. Raises ConfigError when the queue does not
    exist or the function cannot be invoked at all (the messages in hand made visible again).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if max_messages is not None and max_messages < 1:
        raise ConfigError(f"--max must be at least 1, got {max_messages}")
    items: list[ReplayItem] = []
    # every message received and not deleted, by id -> its latest receipt handle: made visible
    # again at the end, however the replay ends, so none stays hidden for REPLAY_VISIBILITY_S
    held: dict[str, str] = {}
    seen: set[str] = set()

    def one(mid: str, body: str) -> ReplayItem:
        try:
            rec = parse_destination_record(body)
        except NotARecord as exc:
            return ReplayItem(message_id=mid, action=ReplayAction.LEFT, reason=str(exc))
        kind, obj = describe_event(rec.payload)
        about: dict[str, Any] = {
            "message_id": mid,
            "request_id": rec.request_id,
            "condition": rec.condition,
            "kind": kind,
            "object": obj,
        }
        if rec.condition == "Success":
            why = "a record of an invocation that succeeded: nothing to resend"
            return ReplayItem(action=ReplayAction.LEFT, reason=why, **about)
        if not _same_function(rec.function_arn, function=function, function_arn=function_arn):
            why = f"a record of {rec.function_arn}, not of {function_arn or function}"
            return ReplayItem(action=ReplayAction.LEFT, reason=why, **about)
        if dry_run:
            return ReplayItem(action=ReplayAction.WOULD_RESEND, **about)
        try:
            # stdlib json both ways: the event goes back as it came (integers of any size included)
            resp = lambda_client.invoke(
                FunctionName=function, InvocationType="Event", Payload=json.dumps(rec.payload).encode()
            )
        except ClientError as exc:
            code, text = _error_code(exc)
            if code in _FATAL_INVOKE_CODES:
                raise ConfigError(f"cannot invoke {function}: {code}: {text}") from None
            return ReplayItem(action=ReplayAction.FAILED, reason=f"{code}: {text}", **about)
        except BotoCoreError as exc:
            return ReplayItem(action=ReplayAction.FAILED, reason=str(exc), **about)
        status_code = int(resp.get("StatusCode", 0))
        if status_code != 202:
            why = f"the invoke answered {status_code}, not 202"
            return ReplayItem(action=ReplayAction.FAILED, reason=why, **about)
        try:
            sqs_client.delete_message(QueueUrl=queue_url, ReceiptHandle=held[mid])
        except (ClientError, BotoCoreError) as exc:
            why = f"resent, but not deleted from the queue ({exc}): a later replay resends it again"
            return ReplayItem(action=ReplayAction.NOT_DELETED, reason=why, **about)
        del held[mid]
        return ReplayItem(action=ReplayAction.RESENT, **about)

    warnings: list[str] = []
    try:
        while max_messages is None or len(items) < max_messages:
            want = _RECEIVE_BATCH if max_messages is None else min(_RECEIVE_BATCH, max_messages - len(items))
            try:
                resp = sqs_client.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=want,
                    WaitTimeSeconds=REPLAY_WAIT_S,
                    VisibilityTimeout=REPLAY_VISIBILITY_S,
                )
            except ClientError as exc:
                code, text = _error_code(exc)
                if code in _MISSING_QUEUE_CODES:
                    raise ConfigError(f"queue {queue_url} does not exist") from None
                if code.startswith("AccessDenied"):
                    raise ConfigError(f"queue {queue_url}: {code}: {text}") from None
                raise
            fresh: list[tuple[str, str]] = []
            for message in resp.get("Messages") or []:
                mid = str(message.get("MessageId", ""))
                if mid in seen and mid not in held:
                    continue  # deleted already: a copy SQS delivered late (at-least-once)
                # a message seen before came back (this replay outlived its visibility timeout):
                # only its newest receipt handle can delete it or make it visible
                held[mid] = str(message["ReceiptHandle"])
                if mid not in seen:
                    seen.add(mid)
                    fresh.append((mid, str(message.get("Body", ""))))
            if not fresh:
                break
            for mid, body in fresh:
                item = one(mid, body)
                items.append(item)
                if on_item is not None:
                    on_item(item)
    finally:
        warnings.extend(_make_visible(sqs_client, queue_url, list(held.values())))
    return ReplayReport(
        queue_url=queue_url,
        function=function,
        dry_run=dry_run,
        items=tuple(items),
        warnings=tuple(warnings),
    )


def _make_visible(sqs_client: Any, queue_url: str, handles: list[str]) -> list[str]:
    """Make the messages a replay left in the queue visible again now, rather than after
    ``REPLAY_VISIBILITY_S`` (a second replay, or a person looking at the queue, sees them at once)."""
    from botocore.exceptions import BotoCoreError, ClientError

    stuck = 0
    for start in range(0, len(handles), _RECEIVE_BATCH):
        chunk = handles[start : start + _RECEIVE_BATCH]
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)]
        try:
            resp = sqs_client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError):
            stuck += len(chunk)
            continue
        stuck += len(resp.get("Failed") or [])
    if not stuck:
        return []
    return [
        f"{stuck} message(s) left in the queue could not be made visible again: they reappear within "
        f"{REPLAY_VISIBILITY_S} s"
    ]
