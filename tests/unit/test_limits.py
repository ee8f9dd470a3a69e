"""loader.limits: DynamoDB's size and number rules, pinned by one table.

Each example is run through every path that applies the rule: ``loader.limits``' own functions
(a value at a time and a column at a time), ``RowConverter`` (a row at a time), ``BlockTyper``
(a block at a time) and, for strings and numbers, a JSON cell holding the value (orjson's fast
path or the exact one, by the value's shape). A path that drifts from the rule fails here.

The rules are AWS's (CapacityUnitCalculations, Constraints, NamingRulesDataTypes); the number
rule is the exact one DynamoDB applies, which AWS words as "approximately (1 byte per two
significant digits) + (1 byte)" (see ``loader.limits``).
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass

import orjson
import pytest

from loader import limits
from loader.blocks import BlockTyper
from loader.config import SchemaSpec
from loader.errors import RowError
from loader.models import Entry, KeySchema
from loader.schema import RowConverter


@dataclass(frozen=True)
class Example:
    #: the rule, in the words of the AWS documentation where it has some
    rule: str
    #: a column type ("S", "N", "B", "BOOL", "NULL", "JSON", "SS", "NS"), or what else is checked:
    #: "item" (a string cell of ``given`` x's), "partition key", "sort key", "B partition key"
    #: (a key cell; for B, base64 of ``given`` bytes), "write units" (an item of ``given`` bytes)
    kind: str
    given: str | int
    #: the value's size in bytes (the item's for "item", write units for "write units"), or the
    #: reason it is refused
    expect: int | str


NUMBER_RANGE = "is outside DynamoDB's number range"
MAX_N = "9.9999999999999999999999999999999999999E+125"

RULES = [
    # -- strings
    Example("S: the UTF-8 bytes", "S", "hello", 5),
    Example("S: the UTF-8 bytes, not the characters", "S", "héllo", 6),
    Example("S: the UTF-8 bytes, not the characters", "S", "日本", 6),
    Example("S: the UTF-8 bytes, not the characters", "S", "😀", 4),
    Example("S: the empty string is 0 bytes", "S", "", 0),
    Example("S: spaces are text", "S", " a ", 3),
    # -- binary
    Example("B: the raw bytes, not the base64 text", "B", "aGVsbG8=", 5),
    Example("B: the raw bytes, not the base64 text", "B", "AAE=", 2),
    # -- numbers
    Example("N: zero is 1 byte", "N", "0", 1),
    Example("N: zero is 1 byte", "N", "-0", 1),
    Example("N: zero is 1 byte", "N", "0.000", 1),
    Example("N: 1 byte per two significant digits, + 1", "N", "12", 2),
    Example("N: 1 byte per two significant digits, + 1", "N", "1234", 3),
    Example("N: 1 byte per two significant digits, + 1", "N", "12345678901234567890123456789012345678", 20),
    Example("N: half a pair is a byte", "N", "1", 2),
    Example("N: half a pair is a byte", "N", "123", 3),
    Example("N: leading and trailing zeros are trimmed", "N", "1200", 2),
    Example("N: leading and trailing zeros are trimmed", "N", "0012", 2),
    Example("N: leading and trailing zeros are trimmed", "N", "12.00", 2),
    Example("N: digits pair from the decimal point (01|50)", "N", "1.5", 3),
    Example("N: digits pair from the decimal point (01|25)", "N", "12.5", 3),
    Example("N: digits pair from the decimal point (.50)", "N", "0.5", 2),
    Example("N: digits pair from the decimal point (.05)", "N", "0.05", 2),
    Example("N: digits pair from the decimal point (01|20)", "N", "120", 3),
    Example("N: digits pair from the decimal point", "N", "99022.77", 5),
    Example("N: digits pair from the decimal point", "N", "1.2345678901234567890123456789012345678", 21),
    Example("N: + 1 if negative", "N", "-1", 3),
    Example("N: + 1 if negative", "N", "-1.5", 4),
    Example("N: + 1 if negative", "N", "-12", 3),
    Example("N: an exponent moves the point", "N", "1e5", 2),
    Example("N: an exponent moves the point", "N", "1E+100", 2),
    Example("N: an exponent moves the point", "N", "-2.5E+3", 3),
    Example("N: an exponent moves the point", "N", "25e-1", 3),
    Example("N: a sign or padding changes nothing", "N", "+7", 2),
    Example("N: a sign or padding changes nothing", "N", " 42 ", 2),
    Example(
        "N: at most 38 significant digits",
        "N",
        "1" * 39,
        "has 39 significant digits; DynamoDB allows at most 38",
    ),
    Example("N: at most 38 significant digits", "N", "1." + "2" * 38, "has 39 significant digits"),
    Example("N: trailing zeros are not significant", "N", "1" + "0" * 100, 2),
    Example("N: magnitude from 1E-130", "N", "1E-130", 2),
    Example("N: magnitude from 1E-130", "N", "1E-131", NUMBER_RANGE),
    Example("N: magnitude from 1E-130", "N", "0.1E-130", NUMBER_RANGE),
    Example("N: magnitude up to 9.99..9E+125", "N", MAX_N, 20),
    Example("N: magnitude up to 9.99..9E+125", "N", "-" + MAX_N, 21),
    Example("N: magnitude up to 9.99..9E+125", "N", "1E+126", NUMBER_RANGE),
    Example("N: magnitude up to 9.99..9E+125", "N", "1" + "0" * 126, NUMBER_RANGE),
    Example("N: decimal text only", "N", "12x", "is not a number"),
    Example("N: decimal text only", "N", "NaN", "is not a number"),
    Example("N: decimal text only", "N", "Infinity", "is not a number"),
    Example("N: decimal text only", "N", "1_000", "is not a number"),
    Example("N: decimal text only", "N", "0x10", "is not a number"),
    Example("N: decimal text only", "N", ".", "is not a number"),
    Example("N: decimal text only", "N", "1e", "is not a number"),
    Example("N: ASCII digits only", "N", "٣", "is not a number"),
    # -- booleans and null
    Example("BOOL: 1 byte", "BOOL", "true", 1),
    Example("BOOL: 1 byte", "BOOL", "no", 1),
    Example("NULL: 1 byte", "NULL", "null", 1),
    # -- lists and maps
    Example("L, M: 3 bytes of overhead; an empty one is 3", "JSON", "[]", 3),
    Example("L, M: 3 bytes of overhead; an empty one is 3", "JSON", "{}", 3),
    Example("L: + 1 per element + its size", "JSON", '["ab"]', 3 + 1 + 2),
    Example("L: + 1 per element + its size", "JSON", "[1, 2]", 3 + (1 + 2) + (1 + 2)),
    Example("L: + 1 per element + its size", "JSON", "[true, null]", 3 + (1 + 1) + (1 + 1)),
    Example("L: + 1 per element + its size", "JSON", "[1E2, 0.5]", 3 + (1 + 2) + (1 + 2)),
    Example("M: + 1 per member + its name's UTF-8 bytes + its size", "JSON", '{"k": "ab"}', 3 + 1 + 1 + 2),
    Example("M: + 1 per member + its name's UTF-8 bytes + its size", "JSON", '{"é": true}', 3 + 1 + 2 + 1),
    Example("M: + 1 per member + its name's UTF-8 bytes + its size", "JSON", '{"é": 1E2}', 3 + 1 + 2 + 2),
    Example("nested: each level its own overhead", "JSON", "[[]]", 3 + 1 + 3),
    Example(
        "nested: each level its own overhead",
        "JSON",
        '{"a": {"b": [1]}}',
        3 + 1 + 1 + (3 + 1 + 1 + (3 + 1 + 2)),
    ),
    Example("nested: at most 32 levels, the item the first", "JSON", "[" * 31 + "]" * 31, 3 + 30 * (3 + 1)),
    Example(
        "nested: at most 32 levels, the item the first", "JSON", "[" * 32 + "]" * 32, "nests more than 31"
    ),
    Example("M: a member name may not be empty", "JSON", '{"": 1}', "empty object key"),
    Example("N in JSON: the same limits", "JSON", "[1e200]", NUMBER_RANGE),
    # -- sets
    Example("SS: the sum of the elements' sizes", "SS", "a|bb", 1 + 2),
    Example("SS: the sum of the elements' sizes", "SS", "日|本", 3 + 3),
    Example("SS: an element is in a set once", "SS", "a|a|b", 1 + 1),
    Example("NS: the sum of the elements' sizes", "NS", "1|-1|1.5", 2 + 3 + 3),
    Example("NS: the sum of the elements' sizes", "NS", "10|100", 2 + 2),
    Example("NS: the sum of the elements' sizes", "NS", "0|5|00", 1 + 2),
    Example("NS: an element is in a set once, by value", "NS", "7|007|7.0", 2),
    Example("NS: the elements' limits", "NS", "1|1e999", NUMBER_RANGE),
    # -- the item (a row "k", "x" * n: names 2 + 1, values 1 + n)
    Example("item: at most 400 KB by these rules, inclusive", "item", 400 * 1024 - 4, 400 * 1024),
    Example(
        "item: at most 400 KB by these rules, inclusive",
        "item",
        400 * 1024 - 3,
        "item is 409601 bytes by DynamoDB's size rules; the limit is 409600 (400 KB)",
    ),
    # -- keys
    Example("partition key: at most 2048 bytes, inclusive", "partition key", "p" * 2048, 2048),
    Example(
        "partition key: at most 2048 bytes, inclusive",
        "partition key",
        "é" * 1025,
        "partition key 'pk' is 2050 bytes; DynamoDB allows at most 2048",
    ),
    Example("partition key: at most 2048 raw bytes", "B partition key", 2048, 2048),
    Example(
        "partition key: at most 2048 raw bytes", "B partition key", 2049, "partition key 'pk' is 2049 bytes"
    ),
    Example("sort key: at most 1024 bytes, inclusive", "sort key", "s" * 1024, 1024),
    Example(
        "sort key: at most 1024 bytes, inclusive",
        "sort key",
        "s" * 1025,
        "sort key 'sk' is 1025 bytes; DynamoDB allows at most 1024",
    ),
    Example("key: never empty", "partition key", "", "empty partition key 'pk'"),
    # -- write units
    Example("write units: 1 per started KB, at least 1", "write units", 0, 1),
    Example("write units: 1 per started KB, at least 1", "write units", 1, 1),
    Example("write units: 1 per started KB, at least 1", "write units", 1024, 1),
    Example("write units: 1 per started KB, at least 1", "write units", 1025, 2),
    Example("write units: 1 per started KB, at least 1", "write units", 400 * 1024, 400),
]

PK = KeySchema(partition="pk", partition_type="S")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")


def _id(example: Example) -> str:
    given = (
        example.given
        if isinstance(example.given, int) or len(example.given) < 24
        else example.given[:20] + "..."
    )
    return f"{example.rule} | {example.kind} {given!r}"


@pytest.mark.parametrize("example", RULES, ids=[_id(e) for e in RULES])
def test_each_rule_holds_on_every_path(example: Example) -> None:
    kind, given, expect = example.kind, example.given, example.expect
    if kind == "write units":
        assert isinstance(given, int)
        assert limits.write_units(given) == expect
        assert limits.total_write_units([Entry({}, ("k",), given, 1, 0, "")] * 3) == 3 * expect
        return
    if kind == "S":
        assert isinstance(given, str)
        assert limits.utf8_size(given) == expect
        assert limits.utf8_sizes([given, "a"]) == [expect, 1]
    if kind == "N":
        assert isinstance(given, str)
        _check_number(given.strip(), expect)
    if kind in ("S", "N"):
        assert isinstance(given, str)
        _check_json_leaf(kind, given.strip() if kind == "N" else given, expect)

    header, keys, row, fixed = _row_for(kind, given)
    schema = {"c": kind} if kind not in ("S", "item") and "key" not in kind else {}
    converter = RowConverter(SchemaSpec(columns=schema, empty="empty-string"), header, keys)  # type: ignore[arg-type]
    typer = BlockTyper(converter.plan)
    if isinstance(expect, str):
        with pytest.raises(RowError) as err:
            converter.convert(row)
        assert expect in err.value.reason
        assert typer.type_rows([row]) is None
        return
    item, _, size = converter.convert(row)
    assert size == fixed + expect
    if typer.usable:
        block = typer.type_rows([row, row])
        assert block is not None, "a valid row is typed on the block path"
        assert block.wires == [orjson.dumps(item)] * 2
        assert block.sizes == [size, size]


def _row_for(kind: str, given: str | int) -> tuple[list[str], KeySchema, list[str], int]:
    """``(header, key schema, row, bytes besides the value)`` that put ``given`` where ``kind`` says."""
    if kind == "item":
        assert isinstance(given, int)
        return ["pk", "c"], PK, ["k", "x" * given], 0  # ``expect`` is the whole item's size
    if kind == "partition key":
        return ["pk", "c"], PK, [str(given), "x"], len("pk") + len("c") + 1
    if kind == "B partition key":
        assert isinstance(given, int)
        cell = base64.b64encode(b"b" * given).decode()
        return ["pk"], KeySchema(partition="pk", partition_type="B"), [cell], len("pk")
    if kind == "sort key":
        keys = KeySchema(partition="pk", partition_type="S", sort="sk", sort_type="S")
        return ["pk", "sk"], keys, ["k", str(given)], len("pk") + 1 + len("sk")
    return ["pk", "c"], PK, ["k", str(given)], len("pk") + len("k") + len("c")


def _check_number(text: str, expect: int | str) -> None:
    """The number rule through ``limits``' value and column functions."""
    if isinstance(expect, str):
        for refuse in (limits.number_size, limits.number_parts):
            with pytest.raises(ValueError) as err:
                refuse(text)
            assert expect in str(err.value)
        return
    assert limits.number_size(text) == expect
    assert limits.parts_size(*limits.number_parts(text)) == expect
    if _INTEGER.fullmatch(text):
        assert limits.integer_size(text) == expect
    if text.isdigit() and limits.plain_integers([text]):
        assert limits.integer_sizes([text.lstrip("0")]) == [expect]
        assert limits.integer_set_size([text.lstrip("0"), "1"]) == expect + 2
    decimals = limits.decimal_sizes([text, "1"])
    plain = re.fullmatch(r"[0-9]*\.?[0-9]*", text) is not None and 0 < len(text.replace(".", "")) <= 38
    assert decimals == ([expect, 2] if plain else None)


def _check_json_leaf(kind: str, text: str, expect: int | str) -> None:
    """A string or number inside a JSON cell: alone, in a list and in a map, the same size."""
    if kind == "N":
        if not _JSON_NUMBER.fullmatch(text):
            return  # JSON has no such spelling ("+7", ".5", "NaN")
        leaf = text
    else:
        leaf = orjson.dumps(text).decode()
    converter = RowConverter(SchemaSpec(columns={"c": "JSON"}), ["pk", "c"], PK)
    for cell, overhead in ((leaf, 0), (f"[{leaf}]", 3 + 1), (f'{{"m": {leaf}}}', 3 + 1 + 1)):
        if isinstance(expect, str):
            with pytest.raises(RowError) as err:
                converter.convert(["k", cell])
            assert expect in err.value.reason
            continue
        item, _, size = converter.convert(["k", cell])
        assert size == len("pk") + len("k") + len("c") + overhead + expect, item["c"]


def test_column_sizes_match_the_value_sizes_on_random_decimals() -> None:
    """The column and set forms (``decimal_sizes``, ``integer_sizes``, ``integer_set_size``)
    against the value forms on random decimals and integers."""
    rnd = random.Random(3)
    values: list[str] = []
    while len(values) < 5000:
        whole = "".join(rnd.choices("0123456789", k=rnd.randrange(0, 20)))
        fraction = "".join(rnd.choices("0000123456789", k=rnd.randrange(0, 19)))
        value = whole + ("." + fraction if rnd.random() < 0.7 else "")
        if value.replace(".", ""):
            values.append(value)
    assert limits.decimal_sizes(values) == [limits.number_size(v) for v in values]
    integers = [v.replace(".", "") for v in values]
    sizes = list(map(limits.integer_size, integers))
    assert limits.integer_sizes([v.lstrip("0") for v in integers]) == sizes
    assert limits.integer_set_size(v.lstrip("0") for v in integers) == sum(sizes)
    assert limits.decimal_sizes(["1.2.3"]) is None
    assert limits.decimal_sizes(["-1.5"]) is None
    assert limits.decimal_sizes(["."]) is None
