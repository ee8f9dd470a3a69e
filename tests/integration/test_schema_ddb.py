"""Items from RowConverter against DynamoDB Local: accepted, read back equal, and refused where we refuse.

Each limit is tested from both sides: what our converter accepts the service accepts, and what it
refuses the service refuses too, so the converter's validation and size count match the service.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from loader.config import SchemaSpec
from loader.errors import RowError
from loader.limits import MAX_ITEM_BYTES
from loader.models import Item, KeySchema
from loader.schema import RowConverter, normalize_number

PK = KeySchema(partition="pk", partition_type="S")

NINES_38 = "9." + "9" * 37 + "E+125"


def to_boto(item: Item) -> Item:
    """The wire item as boto3 wants it: B as bytes (boto3 base64-encodes it again)."""
    return {k: {"B": base64.b64decode(v["B"])} if "B" in v else v for k, v in item.items()}


def canon(value: dict[str, Any]) -> Any:
    """An attribute value compared by meaning: numbers by value, sets unordered, binary as bytes."""
    (typ, v), *_ = value.items()
    if typ == "N":
        return ("N", normalize_number(v))
    if typ == "NS":
        return ("NS", frozenset(map(normalize_number, v)))
    if typ == "SS":
        return ("SS", frozenset(v))
    if typ == "B":
        return ("B", v if isinstance(v, bytes) else base64.b64decode(v))
    if typ == "M":
        return ("M", {k: canon(x) for k, x in v.items()})
    if typ == "L":
        return ("L", [canon(x) for x in v])
    return (typ, v)


def put(ddb: Any, table: str, item: Item) -> None:
    ddb.put_item(TableName=table, Item=to_boto(item))


def refused(ddb: Any, table: str, item: Item) -> str:
    with pytest.raises(ClientError) as err:
        put(ddb, table, item)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    return str(err.value)


def test_every_type_is_accepted_and_read_back_equal(ddb: Any, table: str) -> None:
    types = {
        "n": "N",
        "ok": "BOOL",
        "nothing": "NULL",
        "doc": "JSON",
        "top": "JSON",
        "tags": "SS",
        "nums": "NS",
        "blob": "B",
    }
    header = ["pk", "name", *types]
    c = RowConverter(SchemaSpec(columns=types, empty="null"), header, PK)  # type: ignore[arg-type]
    rows = [
        ["r1", "Zoë 日本", "-12.50", "yes", "null", '{"a": [1, 2.5e3, {"b": false}], "c": null, "d": ""}',
         '"just text"', "red|green|red", "1|2.50|1.0", "AAEC/w=="],
        ["r2", "", "0", "FALSE", "", "[]", "0.1000000000000000000000000000000000001", "é", NINES_38, "AB=="],
        ["r3", "x", "", "", "", "", "", "", "", ""],
    ]  # fmt: skip
    for row in rows:
        item, key, _ = c.convert(row)
        put(ddb, table, item)
        got = ddb.get_item(TableName=table, Key={"pk": {"S": key[0]}}, ConsistentRead=True)["Item"]
        assert {k: canon(v) for k, v in got.items()} == {k: canon(v) for k, v in item.items()}
    # the JSON number's exact text survived: DynamoDB kept all 37 significant digits
    got = ddb.get_item(TableName=table, Key={"pk": {"S": "r2"}}, ConsistentRead=True)["Item"]
    assert normalize_number(got["top"]["N"]) == "0.1000000000000000000000000000000000001"


@pytest.mark.parametrize("ktype", ["N", "B"])
def test_typed_keys_and_canonical_keys_agree_with_the_service(
    ddb: Any, table_factory: Callable[..., str], ktype: str
) -> None:
    table = table_factory(pk=("pk", ktype), sk=("sk", "N"))
    keys = KeySchema(partition="pk", partition_type=ktype, sort="sk", sort_type="N")  # type: ignore[arg-type]
    c = RowConverter(SchemaSpec(), ["pk", "sk", "v"], keys)
    # two spellings of one key: the same canonical key for us, one item for the service
    same = (["1", "5"], ["01.0", "5e0"]) if ktype == "N" else (["AB==", "1"], ["AA==", "1.0"])
    first, _, _ = c.convert([same[0][0], same[0][1], "first"])
    second, _, _ = c.convert([same[1][0], same[1][1], "second"])
    assert c.convert([same[0][0], same[0][1], ""])[1] == c.convert([same[1][0], same[1][1], ""])[1]
    put(ddb, table, first)
    put(ddb, table, second)
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert [i["v"] for i in items] == [{"S": "second"}]  # one key to the service as well


@pytest.mark.parametrize(
    "number",
    ["12345678901234567890123456789012345678", "-1.234567890123456789012345678901234567", NINES_38, "1E-130"],
)
def test_numbers_at_the_limits_are_accepted(ddb: Any, table: str, number: str) -> None:
    item, _, _ = RowConverter(SchemaSpec(columns={"n": "N"}), ["pk", "n"], PK).convert(["k", number])
    put(ddb, table, item)


@pytest.mark.parametrize(
    "number",
    [
        "123456789012345678901234567890123456789",
        "1.00000000000000000000000000000000000001",
        "1E+126",
        "1E-131",
    ],
)
def test_numbers_beyond_the_limits_are_refused_by_us_and_by_the_service(
    ddb: Any, table: str, number: str
) -> None:
    with pytest.raises(RowError):
        RowConverter(SchemaSpec(columns={"n": "N"}), ["pk", "n"], PK).convert(["k", number])
    refused(ddb, table, {"pk": {"S": "k"}, "n": {"N": number}})


def _filled(c: RowConverter, row: list[str], filler: int, target: int) -> list[str]:
    """``row`` with cell ``filler`` grown so that the converter counts exactly ``target`` bytes."""
    row = list(row)
    _, _, size = c.convert(row)
    row[filler] += "x" * (target - size)
    return row


@pytest.mark.parametrize(
    ("types", "row"),
    [
        ({}, ["a", "x", "b"]),
        (
            {"n": "N", "nums": "NS", "doc": "JSON", "blob": "B", "tags": "SS", "ok": "BOOL"},
            [
                "é",
                "x",
                "-1.5",
                "1|12|123.456|-0.1|1234567890123456789012345678901234567800000",
                '{"k": [1, "ab", {"z": null}], "e": []}',
                "AAEC",
                "a|bé",
                "no",
            ],
        ),
    ],
)
def test_the_size_count_is_exact_at_the_400_kb_boundary(
    ddb: Any, table: str, types: dict[str, str], row: list[str]
) -> None:
    header = ["pk", "filler", "n", "nums", "doc", "blob", "tags", "ok"][: len(row)]
    c = RowConverter(SchemaSpec(columns=types), header, PK)  # type: ignore[arg-type]
    row = _filled(c, row, 1, MAX_ITEM_BYTES)
    item, _, size = c.convert(row)
    assert size == MAX_ITEM_BYTES
    put(ddb, table, item)  # just under: accepted

    over = list(row)
    over[1] += "x"
    with pytest.raises(RowError, match=f"item is {MAX_ITEM_BYTES + 1} bytes"):
        c.convert(over)
    over_item = dict(item, filler={"S": over[1]})
    assert "size" in refused(ddb, table, over_item)  # one byte over by our count: refused


def test_a_2048_byte_partition_key_is_accepted_and_2049_refused(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    table = table_factory(sk=("sk", "S"))
    keys = KeySchema(partition="pk", partition_type="S", sort="sk", sort_type="S")
    c = RowConverter(SchemaSpec(), ["pk", "sk"], keys)
    pk_ok = "é" * 1024  # 2048 bytes in UTF-8
    sk_ok = "s" * 1024
    item, _, _ = c.convert([pk_ok, sk_ok])
    put(ddb, table, item)

    for row in ([pk_ok + "x", sk_ok], [pk_ok, sk_ok + "x"]):
        with pytest.raises(RowError, match="bytes; DynamoDB allows at most"):
            c.convert(row)
        refused(ddb, table, {"pk": {"S": row[0]}, "sk": {"S": row[1]}})
