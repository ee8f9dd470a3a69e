"""Event parsing: every accepted shape, URL-decoded keys, pinned versions, and clear refusals."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote_plus

import pytest

from lambda_src.admin import build_notification
from lambda_src.events import (
    CONTINUE_VERSION,
    MAX_OPTIONS_BYTES,
    MAX_PARALLEL,
    BackfillEvent,
    ContinueEvent,
    EventError,
    LaneEvent,
    LoadOptions,
    ObjectsEvent,
    RunOptions,
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
    assert one.options == LoadOptions() and (one.version_id, one.reload) == (None, False)
    assert isinstance(many, BackfillEvent) and many.is_prefix and many.table is None
    assert many.options == LoadOptions(schema={"columns": {}})


def test_backfill_carries_its_load_options_version_and_reload() -> None:
    ev = parse_event(
        {
            "kind": "backfill",
            "version": 1,
            "source": "s3://b/k.tsv",
            "table": "t",
            "schema": {"columns": {"n": "N"}, "rename": {"n": "m"}},
            "csv": {"delimiter": "\\t", "header": False, "columns": ["n", "x"], "encoding": "latin-1"},
            "on_duplicate": "first",
            "version_id": "v7",
            "reload": True,
        }
    )
    assert isinstance(ev, BackfillEvent)
    assert ev.options == LoadOptions(
        schema={"columns": {"n": "N"}, "rename": {"n": "m"}},
        csv={"delimiter": "\\t", "header": False, "columns": ["n", "x"], "encoding": "latin-1"},
        on_duplicate="first",
    )
    assert (ev.version_id, ev.reload) == ("v7", True)


@pytest.mark.parametrize(
    "key",
    [
        "dir/a?versionId=v1.csv",
        "dir/a#b.csv",
        "dir/100%.csv",
        "dir/a%20b.csv",
        "dir/a+b.csv",
        "dir one/a b.csv",
        "ünïcødé/ファイル.csv",
        "mixed/ü+ %2B#?x=1&y=2.csv",
    ],
)
def test_a_backfill_source_key_is_literal(key: str) -> None:
    """A backfill names the key itself (not a notification's URL-encoded form): nothing is decoded,
    and nothing in it is read as a version or a fragment."""
    ev = parse_event({"kind": "backfill", "version": 1, "source": f"s3://b/{key}", "table": "t"})
    assert isinstance(ev, BackfillEvent)
    assert (ev.bucket, ev.key, ev.version_id, ev.is_prefix) == ("b", key, None, False)
    assert ev.source == f"s3://b/{key}"
    prefix = parse_event({"kind": "backfill", "version": 1, "source": f"s3://b/{key}/", "table": "t"})
    assert isinstance(prefix, BackfillEvent) and prefix.is_prefix and prefix.key == f"{key}/"


def test_continue_round_trips_and_points_only_at_the_ledger() -> None:
    payload = continue_payload(object="s3://b/k.csv", target="t#v1", hop=3, token="f00d" * 8)
    assert payload == {
        "kind": "continue",
        "version": CONTINUE_VERSION,
        "object": "s3://b/k.csv",
        "target": "t#v1",
        "hop": 3,
        "token": "f00d" * 8,
    }
    ev = parse_event(payload)
    assert ev == ContinueEvent(object="s3://b/k.csv", target="t#v1", hop=3, token="f00d" * 8)
    # the token is a secret: the event's repr (what a log line or a traceback shows) leaves it out
    assert "f00d" not in repr(ev) and "f00d" not in str(ev)


def test_a_version_1_continue_event_that_carries_a_checkpoint_is_refused() -> None:
    """The old continuation carried the whole checkpoint (source, table, offset, counters): an event
    could redirect a chain. It is refused, whatever it says."""
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
    old = {"kind": "continue", "version": 1, **cp.to_dict()}
    with pytest.raises(EventError, match="continue event: version 1 is not supported"):
        parse_event(old)
    # nor does a version-2 event smuggle checkpoint fields past the door: they are not read
    new = {**old, "version": CONTINUE_VERSION, "object": "s3://b/k.csv", "target": "t#v", "token": "x"}
    ev = parse_event(new)
    assert ev == ContinueEvent(object="s3://b/k.csv", target="t#v", hop=2, token="x")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 3}, "version 3 is not supported"),
        ({"version": None}, "version None is not supported"),
        ({"token": ""}, "'token' is missing"),
        ({"token": None}, "'token' is missing"),
        ({"token": 7}, "'token' is missing"),
        ({"token": "x" * 129}, "'token' is missing or malformed"),
        ({"hop": -1}, "'hop' must be a non-negative integer"),
        ({"hop": True}, "'hop' must be a non-negative integer"),
        ({"hop": "2"}, "'hop' must be a non-negative integer"),
        ({"target": ""}, "'target' must be a non-empty string"),
        ({"object": "/etc/passwd"}, "s3:// URI"),
        ({"object": "s3:///k"}, "has no bucket"),
    ],
)
def test_malformed_continue_events_are_refused(fields: dict[str, Any], message: str) -> None:
    event = {**continue_payload(object="s3://b/k", target="t#v", hop=1, token="tok"), **fields}
    with pytest.raises(EventError, match=message):
        parse_event(event)


def test_a_continue_event_without_a_token_is_refused() -> None:
    event = continue_payload(object="s3://b/k", target="t#v", hop=1, token="tok")
    del event["token"]
    with pytest.raises(EventError, match="'token' is missing"):
        parse_event(event)


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth - 1):
        node = {"x": node}
    return node


def _backfill(**fields: Any) -> dict[str, Any]:
    return {"kind": "backfill", "version": 1, "source": "s3://b/k.csv", "table": "t", **fields}


#: 400 KB of JSON schema (one item's worth), well over the options limit
BIG_SCHEMA = {"columns": {f"column_{i:06d}": "S" for i in range(400 * 1024 // 24)}}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"schema": BIG_SCHEMA},
            rf"'schema' and 'csv' are \d+ bytes of JSON, over the {MAX_OPTIONS_BYTES}-byte",
        ),
        ({"csv": {"columns": [f"c{i:07d}" for i in range(8000)], "header": False}}, "over the"),
        ({"schema": _nested(300)}, "'schema' nests deeper than 4 levels"),
        ({"schema": {"columns": _nested(299)}}, "'schema' nests deeper than 4 levels"),
        ({"csv": {"columns": [[[["a"]]]]}}, "'csv' nests deeper than 4 levels"),
        ({"schema": {"columns": {"blob": "BLOB"}}}, r"columns\['blob'\]: type 'BLOB' is not one of"),
        ({"schema": {"columns": {"n": "N"}, "typo": 1}}, "unknown key 'typo'"),
        ({"schema": "columns"}, "'schema' must be a JSON object, got str"),
        ({"csv": ["delimiter"]}, "'csv' must be a JSON object, got list"),
        ({"csv": {"delimiter": ";;"}}, "delimiter must be one character"),
        ({"csv": {"delimiter": 59}}, "'delimiter' must be a string"),
        ({"csv": {"delimiter": '"'}}, "delimiter must be one character other than newline and quote"),
        ({"csv": {"sep": ";"}}, "unknown option 'sep'"),
        ({"csv": {"header": "no"}}, "'header' must be true or false"),
        ({"csv": {"columns": ["a", "b"]}}, "set 'header': false"),
        ({"csv": {"header": False}}, "--no-header needs --columns"),
        ({"csv": {"compression": "rar"}}, "'compression' must be one of"),
        ({"csv": {"encoding": "klingon"}}, "'klingon' is not a known encoding"),
        ({"csv": {"encoding": "utf-16"}}, "utf-16"),
        ({"on_duplicate": "newest"}, "'on_duplicate' must be last, first or error, got 'newest'"),
        ({"on_duplicate": ""}, "'on_duplicate' must be last, first or error"),
        ({"source": "s3://b/p/", "version_id": "v1"}, "'version_id' names a version of one object"),
        ({"source": "s3://b/", "version_id": "v1"}, "'version_id' names a version of one object"),
        ({"version_id": ""}, "'version_id' must be a non-empty string"),
        ({"reload": "yes"}, "'reload' must be true or false"),
    ],
)
def test_load_options_are_checked_at_the_door(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(EventError, match=message) as exc:
        parse_event(_backfill(**fields))
    assert str(exc.value).startswith("backfill event: ")
    # a lane event carries the same options and is checked the same way
    if set(fields) <= {"schema", "csv", "on_duplicate"}:
        lane = {"kind": "lane", "version": 1, "bucket": "b", "lane": 0, "lanes": 1, "table": "t", **fields}
        with pytest.raises(EventError, match=message):
            parse_event(lane)


@pytest.mark.parametrize("quotechar", ["''", "", "\n"])
def test_a_bad_quotechar_is_refused_at_the_door(quotechar: str) -> None:
    with pytest.raises(EventError, match="quote character"):
        parse_event(_backfill(csv={"quotechar": quotechar}))


def test_options_just_under_the_limit_are_accepted_as_given() -> None:
    schema = {"columns": {f"c{i:05d}": "N" for i in range(4000)}}  # ~56 KB
    ev = parse_event(_backfill(schema=schema, csv={"delimiter": "|"}, on_duplicate="error"))
    assert isinstance(ev, BackfillEvent)
    assert ev.options == LoadOptions(schema=schema, csv={"delimiter": "|"}, on_duplicate="error")


def test_lane_event_round_trips() -> None:
    lane = LaneEvent(
        bucket="b",
        prefix="p/",
        exact=False,
        lane=1,
        lanes=3,
        start_after="p/a",
        table="t",
        options=LoadOptions(schema={"columns": {"n": "N"}}, csv={"delimiter": ";"}, on_duplicate="first"),
        backfill_id="x",
        version_id="v1",
        reload="reload-r1",
    )
    assert parse_event(lane.to_payload()) == lane
    # a lane without run options carries none of their fields: the lane of a backfill as it was
    assert not {"parallel", "max_wcu", "max_rejects"} & set(lane.to_payload())
    sharded = dataclasses.replace(lane, run=RunOptions(parallel=4, max_wcu=250.0, max_rejects=7))
    payload = sharded.to_payload()
    assert (payload["parallel"], payload["max_wcu"], payload["max_rejects"]) == (4, 250.0, 7)
    assert parse_event(payload) == sharded


def test_backfill_run_options_are_taken_as_given_and_default_to_one_chain() -> None:
    ev = parse_event(_backfill())
    assert isinstance(ev, BackfillEvent) and ev.run == RunOptions()
    ev = parse_event(_backfill(parallel=MAX_PARALLEL, max_wcu=12, max_rejects=0))
    assert isinstance(ev, BackfillEvent)
    assert ev.run == RunOptions(parallel=MAX_PARALLEL, max_wcu=12.0, max_rejects=0)
    assert ev.run.knobs() == {"max_wcu": 12.0, "max_rejects": 0}
    assert parse_event(_backfill(parallel=None)).run.parallel == 1  # type: ignore[union-attr]
    ev = parse_event(_backfill(shuffle_window=50_000))
    assert isinstance(ev, BackfillEvent) and ev.run.knobs() == {"shuffle_window": 50_000}
    assert parse_event(_backfill(shuffle_window=0)).run.shuffle_window == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"parallel": 0}, "'parallel' must be an integer in 1..64"),
        ({"parallel": MAX_PARALLEL + 1}, "'parallel' must be an integer in 1..64"),
        ({"parallel": True}, "'parallel'"),
        ({"parallel": "4"}, "'parallel'"),
        ({"parallel": 2.0}, "'parallel'"),
        ({"max_wcu": 0}, "'max_wcu' must be a positive number"),
        ({"max_wcu": -5}, "'max_wcu'"),
        ({"max_wcu": float("nan")}, "'max_wcu'"),
        ({"max_wcu": "100"}, "'max_wcu'"),
        ({"max_wcu": False}, "'max_wcu'"),
        ({"max_rejects": -1}, "'max_rejects' must be an integer in 0.."),
        ({"max_rejects": 1.5}, "'max_rejects'"),
        # too large for JSON to carry exactly (orjson refuses to write it; a float overflows)
        ({"max_rejects": 2**64}, "'max_rejects' must be an integer in 0.."),
        ({"max_wcu": 10**400}, "'max_wcu' must be a positive number"),
        ({"shuffle_window": -1}, "'shuffle_window' must be 0 (off) or in 1000..1000000 rows"),
        ({"shuffle_window": 500}, "'shuffle_window' must be 0 (off) or in 1000..1000000 rows"),
        ({"shuffle_window": 1_000_001}, "'shuffle_window' must be 0 (off) or in 1000..1000000 rows"),
        ({"shuffle_window": "100"}, "'shuffle_window'"),
        ({"shuffle_window": True}, "'shuffle_window'"),
    ],
)
def test_backfill_run_options_are_refused_at_the_door(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(EventError, match="backfill event: ") as err:
        parse_event(_backfill(**extra))
    assert needle in str(err.value)
    lane = {**_lane_payload(), **extra}
    with pytest.raises(EventError, match="lane event: "):
        parse_event(lane)


def _lane_payload() -> dict[str, Any]:
    return LaneEvent(
        bucket="b",
        prefix="p/",
        exact=False,
        lane=0,
        lanes=1,
        start_after="",
        table="t",
        options=LoadOptions(),
        backfill_id="x",
    ).to_payload()


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
        ({"kind": "continue", "version": 1, "source": "s3://b/k"}, "version 1 is not supported"),
        ({"kind": "lane", "version": 1, "bucket": "b", "lane": 3, "lanes": 2, "table": "t"}, "lane 3"),
        ({"kind": "lane", "version": 1, "bucket": "b", "lane": 0, "lanes": 10**12, "table": "t"}, "lanes <="),
        ({"kind": "lane", "version": 1, "bucket": "b", "lane": True, "lanes": 2, "table": "t"}, "integers"),
        (
            {
                "kind": "lane",
                "version": 1,
                "bucket": "b",
                "lane": 0,
                "lanes": 1,
                "table": "t",
                "exact": "false",
            },
            "'exact' must be true or false",
        ),
        (
            {"kind": "lane", "version": 1, "bucket": "b", "lane": 0, "lanes": 1, "table": "t", "prefix": 7},
            "prefix",
        ),
        ({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}}, "Object Created"),
    ],
)
def test_refused_events_say_why(event: Any, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_event(event)
