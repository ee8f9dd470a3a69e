"""The wire endpoint's ``count`` mode: items counted without parsing the body, exactly, for both
JSON layouts clients send; what the service refuses is still refused, and the modes that need the
items (capacity, handing items back) still parse them."""

from __future__ import annotations

import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import botocore.config
import botocore.exceptions
import orjson
import pytest

from benchmarks.wire import WireConfig, WireProcess, WireState, _count_items, _Refusal, running_wire
from tests.support.aws import wire_client


@pytest.fixture(scope="module")
def wire() -> Iterator[WireProcess]:
    with running_wire("--seed", "3", "--validate", "count", "--default-key", "pk:S") as w:
        yield w


@pytest.fixture
def client(wire: WireProcess) -> Any:
    wire.post("/reset")
    wire.post("/config?latency_ms=0&unprocessed=0&throttle=0&errors=0&validate=count&table_wcu=0")
    return wire_client(wire.url)


def _puts(n: int, start: int = 0, value: str = "v") -> list[dict[str, Any]]:
    return [
        {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "v": {"S": value}}}} for i in range(start, start + n)
    ]


def _state(**config: Any) -> WireState:
    return WireState(
        config=WireConfig(default_key=(("pk", "S"),), validate="count", **config), rng=random.Random(1)
    )


# the tricky values: the request's own markers inside a string (escaped) and as an attribute name
_TRICKY = [
    {"PutRequest": {"Item": {"pk": {"S": "a"}, "v": {"S": '{"PutRequest":{"Item":{"pk":{"S":"x"}}}}'}}}},
    {"PutRequest": {"Item": {"pk": {"S": "b"}, "PutRequest": {"M": {"Item": {"S": "y"}}}}}},
    {"DeleteRequest": {"Key": {"pk": {"S": "c"}}}},
    {"PutRequest": {"Item": {"pk": {"S": "d"}, "l": {"L": [{"S": '{"DeleteRequest":{"Key":'}]}}}},
]


@pytest.mark.parametrize("compact", [True, False], ids=["orjson", "json.dumps"])
def test_counts_exactly_in_both_layouts_whatever_the_strings_hold(compact: bool) -> None:
    import json

    body_obj = {"RequestItems": {"t": _TRICKY + _puts(9)}}
    body = orjson.dumps(body_obj) if compact else json.dumps(body_obj).encode()
    assert _count_items(_state(), body) == 13


def test_a_layout_it_does_not_know_or_an_unknown_table_is_left_to_the_full_parse() -> None:
    state = _state()
    state.config.default_key = None
    state.tables["t"] = (("pk", "S"),)
    pretty = orjson.dumps({"RequestItems": {"t": _puts(3)}}, option=orjson.OPT_INDENT_2)
    assert _count_items(state, pretty) is None
    assert _count_items(state, orjson.dumps({"RequestItems": {"nope": _puts(3)}})) is None
    assert _count_items(state, orjson.dumps({"RequestItems": {"t": _puts(3)}})) == 3
    assert _count_items(state, b'{"RequestItems":{"t":[]}}') is None  # nothing to count: parse it


def test_more_than_25_requests_are_refused_without_parsing() -> None:
    state = _state()
    with pytest.raises(_Refusal, match="less than or equal to 25"):
        _count_items(state, orjson.dumps({"RequestItems": {"t": _puts(26)}}))
    assert state.stats.invalid_calls == 1
    assert _count_items(state, orjson.dumps({"RequestItems": {"t": _puts(25)}})) == 25


def test_boto3_and_the_counters_over_http(client: Any, wire: WireProcess) -> None:
    for start in range(0, 100, 25):
        assert client.batch_write_item(RequestItems={"t": _puts(25, start)})["UnprocessedItems"] == {}
    client.batch_write_item(RequestItems={"t": _TRICKY})
    stats = wire.stats()
    assert stats["validate"] == "count"
    assert (stats["calls"], stats["items"], stats["invalid_calls"]) == (5, 104, 0)


def test_what_the_service_refuses_is_still_refused(client: Any, wire: WireProcess) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as too_many:
        client.batch_write_item(RequestItems={"t": _puts(26)})
    assert too_many.value.response["Error"]["Code"] == "ValidationException"
    wire.post("/config?validate=count")
    body = orjson.dumps({"RequestItems": {"t": _puts(1)}})
    req = urllib.request.Request(
        wire.url + "/",
        data=body,
        headers={"X-Amz-Target": "DynamoDB_20120810.BatchWriteItem"},
    )
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(req, timeout=10)
    with unsigned.value as answer:
        assert b"MissingAuthenticationTokenException" in answer.read()
    assert wire.stats()["items"] == 0


def test_the_full_mode_checks_what_count_does_not(client: Any, wire: WireProcess) -> None:
    dup = _puts(2) + _puts(1)  # k0 twice
    client.batch_write_item(RequestItems={"t": dup})  # count mode: not checked
    assert wire.stats()["items"] == 3
    assert wire.post("/config?validate=full")["validate"] == "full"
    with pytest.raises(botocore.exceptions.ClientError, match="duplicates"):
        client.batch_write_item(RequestItems={"t": dup})
    assert wire.stats()["items"] == 3


def test_faults_apply_and_modes_that_need_the_items_parse_them(client: Any, wire: WireProcess) -> None:
    wire.post("/config?throttle=1")
    with pytest.raises(botocore.exceptions.ClientError) as throttled:
        client.batch_write_item(RequestItems={"t": _puts(5)})
    assert throttled.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    wire.post("/config?throttle=0&unprocessed=1")
    back = client.batch_write_item(RequestItems={"t": _puts(5)})["UnprocessedItems"]
    assert len(back["t"]) == 5  # handed back item by item: the body was parsed
    wire.post("/config?unprocessed=0&table_wcu=3&partitions=1&burst_s=1")
    back = client.batch_write_item(RequestItems={"t": _puts(5)})["UnprocessedItems"]
    assert len(back["t"]) == 2  # capacity mode priced every item: 3 units went through
    stats = wire.stats()
    assert (stats["throttled_items"], stats["unprocessed_items"], stats["items"]) == (5, 7, 3)


def test_a_bad_mode_is_a_400_and_changes_nothing(wire: WireProcess) -> None:
    wire.post("/config?validate=count")
    with pytest.raises(urllib.error.HTTPError) as bad:
        wire.post("/config?validate=fast")
    with bad.value as answer:
        assert answer.code == 400
    assert wire.stats()["validate"] == "count"
