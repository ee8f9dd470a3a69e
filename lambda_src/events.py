"""The events the function accepts, validated into plain records; anything else is an EventError.

* S3 ``ObjectCreated:*`` notifications (``{"Records": [...]}``, keys URL-decoded with
  ``unquote_plus``, ``versionId`` pinned when present), S3's ``s3:S3TestEvent``, and the
  EventBridge ``Object Created`` shape (``detail.object.key`` decoded the same way);
* a manual backfill ``{"kind": "backfill", "version": 1, "source": "s3://b/key-or-prefix/",
  "table": "...", "schema": {...}}`` (a source ending in ``/`` is a prefix);
* a lane ``{"kind": "lane", ...}``: one of the bounded chains of a backfill, sent by the function;
* a continuation ``{"kind": "continue", "version": 1, ...checkpoint fields...}``, sent by the
  function to itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from loader.errors import ConfigError
from loader.models import Checkpoint

__all__ = [
    "EVENT_VERSION",
    "BackfillEvent",
    "ContinueEvent",
    "Event",
    "EventError",
    "LaneEvent",
    "ObjectRef",
    "ObjectsEvent",
    "S3TestEvent",
    "continue_payload",
    "object_uri",
    "parse_event",
    "split_s3_uri",
]

EVENT_VERSION = 1


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
class BackfillEvent:
    bucket: str
    key: str  # the object key, or the prefix when ``is_prefix``
    is_prefix: bool
    table: str | None
    schema: dict[str, Any] | None

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
    schema: dict[str, Any] | None
    backfill_id: str

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
            "schema": self.schema,
            "backfill_id": self.backfill_id,
        }


@dataclass(frozen=True, kw_only=True)
class ContinueEvent:
    checkpoint: Checkpoint


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


def _schema(event: dict[str, Any], kind: str) -> dict[str, Any] | None:
    schema = event.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise EventError(f"{kind} event: 'schema' must be a JSON object, got {type(schema).__name__}")
    return schema


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
    return BackfillEvent(
        bucket=bucket,
        key=key,
        is_prefix=key == "" or key.endswith("/"),
        table=table,
        schema=_schema(event, "backfill"),
    )


def _lane(event: dict[str, Any]) -> LaneEvent:
    _version(event, "lane")
    try:
        lane, lanes = int(event["lane"]), int(event["lanes"])
    except (KeyError, TypeError, ValueError):
        raise EventError("lane event: 'lane' and 'lanes' must be integers") from None
    if not 0 <= lane < lanes:
        raise EventError(f"lane event: lane {lane} is not in 0..{lanes - 1}")
    return LaneEvent(
        bucket=_str(event, "bucket", "lane event"),
        prefix=str(event.get("prefix") or ""),
        exact=bool(event.get("exact", False)),
        lane=lane,
        lanes=lanes,
        start_after=str(event.get("start_after") or ""),
        table=_str(event, "table", "lane event"),
        schema=_schema(event, "lane"),
        backfill_id=str(event.get("backfill_id") or ""),
    )


def _continue(event: dict[str, Any]) -> ContinueEvent:
    _version(event, "continue")
    fields = {k: v for k, v in event.items() if k not in ("kind", "version")}
    checkpoint = Checkpoint.from_dict(fields)
    if not checkpoint.chain_id:
        raise EventError("continue event: the checkpoint has no chain_id")
    split_s3_uri(checkpoint.source)
    return ContinueEvent(checkpoint=checkpoint)


def continue_payload(checkpoint: Checkpoint) -> dict[str, Any]:
    """The event a hop sends to continue its chain: the checkpoint's fields, tagged."""
    return {"kind": "continue", "version": EVENT_VERSION, **checkpoint.to_dict()}


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
        try:
            return _continue(event)
        except EventError:
            raise
        except ConfigError as exc:
            raise EventError(f"continue event: {exc}") from None
    if kind == "lane":
        return _lane(event)
    keys = ", ".join(sorted(map(str, event))[:8])
    raise EventError(
        "unrecognised event: expected an S3 ObjectCreated notification (Records), an EventBridge "
        "'Object Created' event, or {'kind': 'backfill' | 'continue', 'version': 1, ...}; "
        f"got keys [{keys}]"
    )
