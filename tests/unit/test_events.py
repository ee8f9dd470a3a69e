"""Event parsing: every accepted shape, URL-decoded keys, pinned versions, and clear refusals."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

import pytest

from lambda_src.admin import build_notification
from lambda_src.events import (
    BackfillEvent,
    ContinueEvent,
    EventError,
    LaneEvent,
    ObjectsEvent,
    S3TestEvent,
    continue_payload,
    parse_event,
)
from loader.models import Checkpoint, Counters


def _record(key: str, **obj: Any) -> dict[str, Any]:
    return {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 10, "eTag": "abc", **obj}},
    }


@pytest.mark.parametrize(
    "key",
    ["plain.csv", "dir one/a b.csv", "a+b.csv", "ünïcødé/ファイル.csv", "x%y&z=1.csv", "sub/dir/deep.csv"],
)
def test_s3_keys_are_url_decoded(key: str) -> None:
    ev = parse_event({"Records": [_record(quote_plus(key, safe="/"))]})
    assert isinstance(ev, ObjectsEvent)
    assert ev.objects[0].key == key
    assert ev.objects[0].uri == f"s3://b/{key}"


def test_notification_built_by_admin_round_trips() -> None:
    key = "dir one/a+b ü.csv"
    ev = parse_event(build_notification("b", key, size=5, etag='"e"', version_id="v1"))
    assert isinstance(ev, ObjectsEvent)
    ref = ev.objects[0]
    assert (ref.key, ref.version_id, ref.etag, ref.size) == (key, "v1", "e", 5)


def test_version_pinned_when_present_and_absent_otherwise() -> None:
    ev = parse_event({"Records": [_record("a.csv", versionId="v9"), _record("b.csv")]})
    assert isinstance(ev, ObjectsEvent)
    assert [o.version_id for o in ev.objects] == ["v9", None]


def test_eventbridge_object_created() -> None:
    ev = parse_event(
        {
            "version": "0",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "detail": {
                "bucket": {"name": "b"},
                "object": {"key": "a+b.csv", "size": 3, "etag": "e", "version-id": "v"},
            },
        }
    )
    assert isinstance(ev, ObjectsEvent)
    assert ev.origin == "eventbridge"
    assert (ev.objects[0].key, ev.objects[0].version_id) == ("a b.csv", "v")


def test_s3_test_event_is_recognised() -> None:
    assert isinstance(
        parse_event({"Service": "Amazon S3", "Event": "s3:S3TestEvent", "Bucket": "b"}), S3TestEvent
    )


def test_backfill_object_and_prefix() -> None:
    one = parse_event({"kind": "backfill", "version": 1, "source": "s3://b/k.csv", "table": "t"})
    many = parse_event({"kind": "backfill", "version": 1, "source": "s3://b/p/", "schema": {"columns": {}}})
    assert isinstance(one, BackfillEvent) and not one.is_prefix and one.table == "t"
    assert isinstance(many, BackfillEvent) and many.is_prefix and many.table is None
    assert many.schema == {"columns": {}}


def test_continue_round_trips_a_checkpoint() -> None:
    cp = Checkpoint(
        source="s3://b/k.csv",
        table="t",
        version_id="v",
        etag="e",
        size=100,
        header=["pk", "x"],
        offset=50,
        next_row=4,
        counters=Counters(rows_read=3, items_written=3),
        hop=2,
        chain_id="c1",
    )
    ev = parse_event(continue_payload(cp))
    assert isinstance(ev, ContinueEvent)
    assert ev.checkpoint == cp


def test_lane_event_round_trips() -> None:
    lane = LaneEvent(
        bucket="b",
        prefix="p/",
        exact=False,
        lane=1,
        lanes=3,
        start_after="p/a",
        table="t",
        schema=None,
        backfill_id="x",
    )
    assert parse_event(lane.to_payload()) == lane


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "JSON object"),
        ({"hello": 1}, "unrecognised event"),
        ({"Records": []}, "non-empty"),
        ({"Records": [{**_record("a"), "eventName": "ObjectRemoved:Delete"}]}, "ObjectCreated"),
        ({"Records": [{**_record("a"), "eventSource": "aws:sqs"}]}, "aws:s3"),
        ({"kind": "backfill", "version": 2, "source": "s3://b/k"}, "version 2"),
        ({"kind": "backfill", "version": 1, "source": "/local/file.csv"}, "s3:// URI"),
        ({"kind": "backfill", "version": 1, "source": "s3://b/k", "schema": "x"}, "schema"),
        ({"kind": "continue", "version": 1, "source": "s3://b/k"}, "format_version"),
        ({"kind": "lane", "version": 1, "bucket": "b", "lane": 3, "lanes": 2, "table": "t"}, "lane 3"),
        ({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}}, "Object Created"),
    ],
)
def test_refused_events_say_why(event: Any, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_event(event)
