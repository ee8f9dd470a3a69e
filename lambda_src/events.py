"""The events the function accepts, validated into plain records; anything else is an EventError.

* S3 ``ObjectCreated:*`` notifications (``{"Records": [...]}``, keys URL-decoded with
  ``unquote_plus``, ``versionId`` pinned when present), S3's ``s3:S3TestEvent``, and the
  EventBridge ``Object Created`` shape (``detail.object.key`` decoded the same way);
* a manual backfill ``{"kind": "backfill", "version": 1, "source": "s3://b/key-or-prefix/",
  "table": "...", "schema": {...}, "csv": {...}, "on_duplicate": "last", "version_id": "...",
  "reload": false, "parallel": 1, "max_wcu": 500, "max_rejects": 100, "shuffle_window": 50000}``
  (a source ending in ``/``
  is a prefix; the key after the bucket is literal). ``parallel`` (1..``MAX_PARALLEL``) cuts each
  object into that many shard chains; ``max_wcu`` and ``max_rejects`` are run knobs kept in the
  load's ledger item (see ``RunOptions``);
* a lane ``{"kind": "lane", ...}``: one of the bounded chains of a backfill, sent by the function;
* a continuation ``{"kind": "continue", "version": 2, "object": ..., "target": ..., "hop": N,
  "token": ...}``, sent by the function to itself. It only points at the chain's ledger item; the
  spec and the checkpoint come from the ledger, and the token must match the one stored there.

Everything an event may carry that shapes a load (schema, CSV options, duplicate policy) is
checked here, when the event is accepted: sizes, nesting, unknown types and options are refused
with the reason, never discovered by a hop later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from loader.errors import ConfigError

__all__ = [
    "CONTINUE_VERSION",
    "EVENT_VERSION",
    "MAX_PARALLEL",
    "BackfillEvent",
    "ContinueEvent",
    "Event",
    "EventError",
    "LaneEvent",
    "LoadOptions",
    "ObjectRef",
    "ObjectsEvent",
    "RunOptions",
    "S3TestEvent",
    "continue_payload",
    "object_uri",
    "parse_event",
    "split_s3_uri",
]

EVENT_VERSION = 1
#: 2: a continuation carries only the chain's key, its hop and the hop's token (1 carried the
#: whole checkpoint, which let an event redirect a chain)
CONTINUE_VERSION = 2
#: the most an event's load options (schema + CSV options) may weigh as JSON
MAX_OPTIONS_BYTES = 64 * 1024
#: the largest max_wcu / max_rejects an event may carry (JSON numbers stay exact below 2**53)
MAX_INT_OPTION = 2**53
#: the most lanes one backfill may have (the function also bounds them by S3DDB_MAX_CHAINS)
MAX_LANES = 1000
#: the most shard chains one object may be cut into (the function also bounds them by
#: S3DDB_MAX_CHAINS: every shard chain is one concurrent execution)
MAX_PARALLEL = 64


class EventError(ConfigError):
    """The event is not one this function accepts; the message says what was wrong."""


@dataclass(frozen=True, kw_only=True)
class ObjectRef:
    """One S3 object version to load. ``key`` is the real key (decoded)."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None

    @property
    def uri(self) -> str:
        return object_uri(self.bucket, self.key)


@dataclass(frozen=True, kw_only=True)
class ObjectsEvent:
    """Objects created (S3 notification or EventBridge): one chain each."""

    objects: tuple[ObjectRef, ...]
    origin: str  # "s3" | "eventbridge"


@dataclass(frozen=True, kw_only=True)
class S3TestEvent:
    """S3's ``s3:S3TestEvent``, sent when a notification is configured: nothing to do."""

    bucket: str


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """What an event says about how to read and type its objects; None: the function's setting
    (S3DDB_SCHEMA, S3DDB_CSV, S3DDB_ON_DUPLICATE). Checked when the event is accepted."""

    schema: dict[str, Any] | None = None
    csv: dict[str, Any] | None = None
    on_duplicate: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"schema": self.schema, "csv": self.csv, "on_duplicate": self.on_duplicate}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What a backfill says about how to run its loads, not what lands in the table: ``parallel``
    (shard chains per object; 1 = one chain), ``max_wcu`` (the load's write-unit ceiling, shared by
    its shards; the function's S3DDB_MAX_WCU caps it) and ``max_rejects`` (rejected rows after which
    a chain, or each shard, is FAILED) and ``shuffle_window`` (rows shuffled before batching, for
    input sorted by partition key; the function's S3DDB_SHUFFLE_WINDOW when not given). Kept in the
    load's ledger item when it starts; a backfill sent again gives them to the shards it resumes."""

    parallel: int = 1
    max_wcu: float | None = None
    max_rejects: int | None = None
    shuffle_window: int | None = None

    def knobs(self) -> dict[str, Any]:
        """The ledger's ``knobs`` of a load: the ones given (empty: none)."""
        out: dict[str, Any] = {}
        if self.max_wcu is not None:
            out["max_wcu"] = self.max_wcu
        if self.max_rejects is not None:
            out["max_rejects"] = self.max_rejects
        if self.shuffle_window is not None:
            out["shuffle_window"] = self.shuffle_window
        return out

    def to_payload(self) -> dict[str, Any]:
        """The fields a lane event carries: none for a backfill that gave none (today's lane)."""
        out = self.knobs()
        if self.parallel != 1:
            out["parallel"] = self.parallel
        return out


@dataclass(frozen=True, kw_only=True)
class BackfillEvent:
    bucket: str
    key: str  # the object key, or the prefix when ``is_prefix``
    is_prefix: bool
    table: str | None
    options: LoadOptions
    version_id: str | None = None
    reload: bool = False
    run: RunOptions = RunOptions()

    @property
    def source(self) -> str:
        return object_uri(self.bucket, self.key)


@dataclass(frozen=True, kw_only=True)
class LaneEvent:
    """Chain ``lane`` of ``lanes`` of a backfill: the objects under ``prefix`` after ``start_after``
    whose key hashes to this lane, one at a time. With ``exact`` the lane is the one object ``prefix``."""

    bucket: str
    prefix: str
    exact: bool
    lane: int
    lanes: int
    start_after: str
    table: str
    options: LoadOptions
    backfill_id: str
    version_id: str | None = None
    #: the reload this lane belongs to ("" for none): it restarts each finished object once
    reload: str = ""
    run: RunOptions = RunOptions()

    def to_payload(self) -> dict[str, Any]:
        return {
            "kind": "lane",
            "version": EVENT_VERSION,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "exact": self.exact,
            "lane": self.lane,
            "lanes": self.lanes,
            "start_after": self.start_after,
            "table": self.table,
            **self.options.to_payload(),
            "backfill_id": self.backfill_id,
            "version_id": self.version_id,
            "reload": self.reload,
            **self.run.to_payload(),
        }


@dataclass(frozen=True, kw_only=True)
class ContinueEvent:
    """Points at a chain's ledger item; ``token`` is the hop's secret (never log it)."""

    object: str
    target: str
    hop: int
    token: str

    def __repr__(self) -> str:
        return f"ContinueEvent(object={self.object!r}, target={self.target!r}, hop={self.hop})"


Event = ObjectsEvent | S3TestEvent | BackfillEvent | LaneEvent | ContinueEvent


def object_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); an EventError for anything else."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise EventError(f"source must be an s3:// URI, got {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise EventError(f"source {uri!r} has no bucket")
    return bucket, key


def _str(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise EventError(f"{where}: {name!r} must be a non-empty string, got {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != "null" else None


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _version(event: dict[str, Any], kind: str) -> None:
    if event.get("version") != EVENT_VERSION:
        raise EventError(
            f"{kind} event: version {event.get('version')!r} is not supported (this function reads "
            f"{EVENT_VERSION})"
        )


def _options(event: dict[str, Any], kind: str) -> LoadOptions:
    """The event's schema, CSV options and duplicate policy, each checked as the load will use it."""
    import orjson

    from loader.schema import schema_from_dict
    from loader.spec import check_depth, csv_from_dict

    schema, csv, dup = event.get("schema"), event.get("csv"), event.get("on_duplicate")
    try:
        for name, value in (("schema", schema), ("csv", csv)):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise EventError(f"'{name}' must be a JSON object, got {type(value).__name__}")
            check_depth(value, f"'{name}'", limit=4)
        size = len(orjson.dumps([schema, csv]))
        if size > MAX_OPTIONS_BYTES:
            raise EventError(
                f"'schema' and 'csv' are {size} bytes of JSON, over the {MAX_OPTIONS_BYTES}-byte limit"
            )
        if schema is not None:
            schema_from_dict(schema)
        if csv is not None:
            csv_from_dict(csv)
        if dup is not None and dup not in ("last", "first", "error"):
            raise EventError(f"'on_duplicate' must be last, first or error, got {dup!r}")
    except EventError as exc:
        raise EventError(f"{kind} event: {exc}") from None
    except (ConfigError, orjson.JSONEncodeError) as exc:
        raise EventError(f"{kind} event: {exc}") from None
    return LoadOptions(schema=schema, csv=csv, on_duplicate=dup)


def _run_options(event: dict[str, Any], kind: str) -> RunOptions:
    """``parallel``, ``max_wcu``, ``max_rejects`` and ``shuffle_window``, each checked as the load
    will use it."""
    import math

    from loader.shuffle import check_window

    parallel = event.get("parallel", 1)
    if parallel is None:
        parallel = 1
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise EventError(
            f"{kind} event: 'parallel' must be an integer in 1..{MAX_PARALLEL}, got {parallel!r}"
        )
    wcu = event.get("max_wcu")
    if wcu is not None and (
        isinstance(wcu, bool)
        or not isinstance(wcu, int | float)
        or not 0 < wcu <= MAX_INT_OPTION  # an int too large for a float, nan and inf too
        or not math.isfinite(wcu)
    ):
        raise EventError(f"{kind} event: 'max_wcu' must be a positive number, got {wcu!r}")
    rejects = event.get("max_rejects")
    if rejects is not None and (
        isinstance(rejects, bool) or not isinstance(rejects, int) or not 0 <= rejects <= MAX_INT_OPTION
    ):
        raise EventError(
            f"{kind} event: 'max_rejects' must be an integer in 0..{MAX_INT_OPTION}, got {rejects!r}"
        )
    window = event.get("shuffle_window")
    problem = None if window is None else check_window(window, "'shuffle_window'")
    if problem is not None:
        raise EventError(f"{kind} event: {problem}")
    return RunOptions(
        parallel=parallel,
        max_wcu=None if wcu is None else float(wcu),
        max_rejects=rejects,
        shuffle_window=window,
    )


def _s3_records(records: Any) -> ObjectsEvent:
    if not isinstance(records, list) or not records:
        raise EventError("S3 notification: 'Records' must be a non-empty list")
    objects: list[ObjectRef] = []
    for i, rec in enumerate(records):
        where = f"S3 notification record {i}"
        if not isinstance(rec, dict) or rec.get("eventSource") != "aws:s3":
            source = rec.get("eventSource") if isinstance(rec, dict) else None
            raise EventError(f"{where}: eventSource {source!r} is not 'aws:s3'")
        name = str(rec.get("eventName", ""))
        if not name.startswith("ObjectCreated:"):
            raise EventError(f"{where}: eventName {name!r} is not ObjectCreated:*")
        s3 = rec.get("s3")
        if (
            not isinstance(s3, dict)
            or not isinstance(s3.get("bucket"), dict)
            or not isinstance(s3.get("object"), dict)
        ):
            raise EventError(f"{where}: missing s3.bucket / s3.object")
        obj = s3["object"]
        objects.append(
            ObjectRef(
                bucket=_str(s3["bucket"], "name", where),
                key=unquote_plus(_str(obj, "key", where)),
                version_id=_opt_str(obj.get("versionId")),
                etag=_opt_str(obj.get("eTag")),
                size=_opt_int(obj.get("size")),
            )
        )
    return ObjectsEvent(objects=tuple(objects), origin="s3")


def _eventbridge(event: dict[str, Any]) -> ObjectsEvent:
    detail = event.get("detail")
    if (
        not isinstance(detail, dict)
        or not isinstance(detail.get("bucket"), dict)
        or not isinstance(detail.get("object"), dict)
    ):
        raise EventError("EventBridge Object Created: missing detail.bucket / detail.object")
    obj = detail["object"]
    where = "EventBridge Object Created"
    ref = ObjectRef(
        bucket=_str(detail["bucket"], "name", where),
        key=unquote_plus(_str(obj, "key", where)),
        version_id=_opt_str(obj.get("version-id")),
        etag=_opt_str(obj.get("etag")),
        size=_opt_int(obj.get("size")),
    )
    return ObjectsEvent(objects=(ref,), origin="eventbridge")


def _backfill(event: dict[str, Any]) -> BackfillEvent:
    _version(event, "backfill")
    bucket, key = split_s3_uri(_str(event, "source", "backfill event"))
    table = event.get("table")
    if table is not None and (not isinstance(table, str) or not table):
        raise EventError(f"backfill event: 'table' must be a non-empty string, got {table!r}")
    version_id = event.get("version_id")
    if version_id is not None and (not isinstance(version_id, str) or not version_id):
        raise EventError(f"backfill event: 'version_id' must be a non-empty string, got {version_id!r}")
    reload = event.get("reload", False)
    if not isinstance(reload, bool):
        raise EventError(f"backfill event: 'reload' must be true or false, got {reload!r}")
    is_prefix = key == "" or key.endswith("/")
    if is_prefix and version_id is not None:
        raise EventError("backfill event: 'version_id' names a version of one object, not of a prefix")
    return BackfillEvent(
        bucket=bucket,
        key=key,
        is_prefix=is_prefix,
        table=table,
        options=_options(event, "backfill"),
        version_id=version_id,
        reload=reload,
        run=_run_options(event, "backfill"),
    )


def _lane(event: dict[str, Any]) -> LaneEvent:
    _version(event, "lane")
    lane, lanes, exact = event.get("lane"), event.get("lanes"), event.get("exact", False)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (lane, lanes)):
        raise EventError("lane event: 'lane' and 'lanes' must be integers")
    assert isinstance(lane, int) and isinstance(lanes, int)
    if not 0 <= lane < lanes <= MAX_LANES:
        raise EventError(f"lane event: lane {lane} of {lanes} is not in 0..lanes-1 with lanes <= {MAX_LANES}")
    if not isinstance(exact, bool):
        raise EventError(f"lane event: 'exact' must be true or false, got {exact!r}")
    for name in ("prefix", "start_after", "backfill_id", "reload"):
        if event.get(name) is not None and not isinstance(event[name], str):
            raise EventError(f"lane event: {name!r} must be a string")
    return LaneEvent(
        bucket=_str(event, "bucket", "lane event"),
        prefix=str(event.get("prefix") or ""),
        exact=exact,
        lane=lane,
        lanes=lanes,
        start_after=str(event.get("start_after") or ""),
        table=_str(event, "table", "lane event"),
        options=_options(event, "lane"),
        backfill_id=str(event.get("backfill_id") or ""),
        version_id=_opt_str(event.get("version_id")),
        reload=str(event.get("reload") or ""),
        run=_run_options(event, "lane"),
    )


def _continue(event: dict[str, Any]) -> ContinueEvent:
    if event.get("version") != CONTINUE_VERSION:
        raise EventError(
            f"continue event: version {event.get('version')!r} is not supported (this function reads "
            f"{CONTINUE_VERSION})"
        )
    hop = event.get("hop")
    if isinstance(hop, bool) or not isinstance(hop, int) or hop < 0:
        raise EventError(f"continue event: 'hop' must be a non-negative integer, got {hop!r}")
    token = event.get("token")
    if not isinstance(token, str) or not token or len(token) > 128:
        raise EventError("continue event: 'token' is missing or malformed")
    obj = _str(event, "object", "continue event")
    split_s3_uri(obj)
    return ContinueEvent(object=obj, target=_str(event, "target", "continue event"), hop=hop, token=token)


def continue_payload(*, object: str, target: str, hop: int, token: str) -> dict[str, Any]:
    """The event a hop sends to continue its chain: where its ledger item is, the hop, the token."""
    return {
        "kind": "continue",
        "version": CONTINUE_VERSION,
        "object": object,
        "target": target,
        "hop": hop,
        "token": token,
    }


def parse_event(event: Any) -> Event:
    """Classify and validate ``event``; an EventError says what is wrong with anything else."""
    if not isinstance(event, dict):
        raise EventError(f"the event must be a JSON object, got {type(event).__name__}")
    if "Records" in event:
        return _s3_records(event["Records"])
    if event.get("Event") == "s3:S3TestEvent":
        return S3TestEvent(bucket=str(event.get("Bucket", "")))
    if event.get("source") == "aws.s3" and "detail-type" in event:
        if event["detail-type"] != "Object Created":
            raise EventError(f"EventBridge event {event['detail-type']!r} is not 'Object Created'")
        return _eventbridge(event)
    kind = event.get("kind")
    if kind == "backfill":
        return _backfill(event)
    if kind == "continue":
        return _continue(event)
    if kind == "lane":
        return _lane(event)
    keys = ", ".join(sorted(map(str, event))[:8])
    raise EventError(
        "unrecognised event: expected an S3 ObjectCreated notification (Records), an EventBridge "
        "'Object Created' event, or {'kind': 'backfill' | 'continue', 'version': 1, ...}; "
        f"got keys [{keys}]"
    )
