"""loader.schema: schema files, converters, keys, item size (sizes hand-computed from the AWS rules)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from loader import schema
from loader.config import ColumnType, SchemaSpec
from loader.errors import ConfigError, RowError
from loader.models import KeySchema
from loader.schema import (
    RowConverter,
    load_schema_file,
    merge_types,
    normalize_number,
    parse_type_overrides,
    schema_from_dict,
)

PK = KeySchema(partition="pk", partition_type="S")


def conv(
    columns: dict[str, Any] | None = None,
    header: tuple[str, ...] = ("pk", "c"),
    keys: KeySchema = PK,
    **spec: Any,
) -> RowConverter:
    return RowConverter(SchemaSpec(columns=columns or {}, **spec), header, keys)


def test_public_names_are_pinned() -> None:
    assert sorted(schema.__all__) == [
        "BOOL_WORDS",
        "ColumnPlan",
        "Converted",
        "Converter",
        "RowConverter",
        "binary_attributes",
        "load_schema_file",
        "merge_types",
        "normalize_number",
        "parse_type_overrides",
        "schema_from_dict",
    ]


# ----------------------------------------------------------------------------- schema_from_dict


def test_schema_from_dict_reads_every_key() -> None:
    spec = schema_from_dict(
        {
            "columns": {"price": "N", "tags": "ss", "blob": "B"},
            "rename": {"price": "Price"},
            "empty": "null",
            "set_delimiter": ";",
        }
    )
    assert spec == SchemaSpec(
        columns={"price": "N", "tags": "SS", "blob": "B"},
        rename={"price": "Price"},
        empty="null",
        set_delimiter=";",
    )


def test_schema_from_dict_empty_object_is_the_default_schema() -> None:
    assert schema_from_dict({}) == SchemaSpec()


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"colums": {}}, "'colums'"),
        ({"columns": ["a"]}, "'columns'"),
        ({"columns": {"a": 1}}, "'columns'"),
        ({"columns": {"a": "INT"}}, "columns['a']"),
        ({"rename": {"a": 2}}, "'rename'"),
        ({"rename": "a"}, "'rename'"),
        ({"empty": 0}, "'empty'"),
        ({"empty": "never"}, "empty='never'"),
        ({"set_delimiter": 1}, "'set_delimiter'"),
        ({"set_delimiter": ""}, "set_delimiter"),
        ({"rename": {"a": "x", "b": "x"}}, "same attribute"),
    ],
)
def test_schema_from_dict_refuses_bad_input_naming_the_key(data: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError) as err:
        schema_from_dict(data)
    assert names in str(err.value)


def test_schema_from_dict_refuses_a_non_object() -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        schema_from_dict(["columns"])  # type: ignore[arg-type]


def test_load_schema_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"columns": {"n": "N"}}))
    assert load_schema_file(str(path)) == SchemaSpec(columns={"n": "N"})


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"x": 1}', "'x'")],
)
def test_load_schema_file_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_schema_file(str(path))
    assert str(path) in str(err.value) or message == "'x'"


# ----------------------------------------------------------------------------- --type


def test_parse_type_overrides() -> None:
    assert parse_type_overrides(["price=N", "tags=ss", "a=b=BOOL", "price=n"]) == {
        "price": "N",
        "tags": "SS",
        "a=b": "BOOL",
    }
    assert parse_type_overrides([]) == {}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["price"], "COLUMN=TYPE"),
        (["=N"], "COLUMN=TYPE"),
        (["price=INT"], "'INT' is not one of"),
        (["price="], "'' is not one of"),
        (["price=N", "price=S"], "two types"),
    ],
)
def test_parse_type_overrides_errors(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_type_overrides(items)


def test_merge_types_type_option_beats_the_file() -> None:
    spec = SchemaSpec(columns={"a": "N", "b": "BOOL"}, rename={"a": "A"}, empty="null")
    merged = merge_types(spec, {"a": "S", "c": "JSON"})
    assert merged.columns == {"a": "S", "b": "BOOL", "c": "JSON"}
    assert (merged.rename, merged.empty) == ({"a": "A"}, "null")
    assert spec.columns == {"a": "N", "b": "BOOL"}  # the input is untouched
    with pytest.raises(ConfigError, match="'X'"):
        merge_types(spec, {"a": "X"})


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("spec", "header", "keys", "message"),
    [
        (
            SchemaSpec(),
            ("a", "b", "c"),
            PK,
            "key column 'pk' is not in the header: columns are a, b, c",
        ),
        (
            SchemaSpec(),
            ("pk", "b"),
            KeySchema(partition="pk", partition_type="S", sort="sk", sort_type="N"),
            "key column 'sk' is not in the header: columns are pk, b",
        ),
        (SchemaSpec(rename={"pk": "id"}), ("pk", "b"), PK, "after rename: id, b"),
        (SchemaSpec(columns={"price": "N"}), ("pk", "b"), PK, "schema columns names column 'price'"),
        (SchemaSpec(rename={"x": "y"}), ("pk", "b"), PK, "schema rename names column 'x'"),
        (SchemaSpec(rename={"b": "pk"}), ("pk", "b"), PK, "both become attribute 'pk'"),
        (SchemaSpec(), ("pk", "a", "a"), PK, "'a' (#2) and 'a' (#3) both become attribute 'a'"),
        (SchemaSpec(), ("pk", ""), PK, "column 2 of the header has an empty attribute name"),
        (
            SchemaSpec(columns={"pk": "N"}),
            ("pk", "b"),
            PK,
            "column 'pk' is typed N in the schema, but the table's partition key 'pk' is S",
        ),
        (
            SchemaSpec(columns={"when": "JSON"}),
            ("pk", "when"),
            KeySchema(partition="pk", partition_type="S", sort="when", sort_type="N"),
            "typed JSON in the schema, but the table's sort key 'when' is N",
        ),
    ],
)
def test_construction_errors_say_what_to_fix(
    spec: SchemaSpec, header: tuple[str, ...], keys: KeySchema, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        RowConverter(spec, header, keys)
    assert message in str(err.value)


def test_rename_and_attribute_names() -> None:
    c = RowConverter(
        SchemaSpec(rename={"id": "pk", "Full Name": "name"}, columns={"id": "S"}),
        ["id", "Full Name", "age"],
        PK,
    )
    assert c.attribute_names == ["pk", "name", "age"]
    item, key, _ = c.convert(["u1", "Ann", "7"])
    assert item == {"pk": {"S": "u1"}, "name": {"S": "Ann"}, "age": {"S": "7"}}
    assert key == ("u1",)


def test_a_renamed_column_can_take_a_freed_name() -> None:
    c = RowConverter(SchemaSpec(rename={"a": "b", "b": "a"}), ["pk", "a", "b"], PK)
    assert c.convert(["k", "1", "2"])[0] == {"pk": {"S": "k"}, "b": {"S": "1"}, "a": {"S": "2"}}


def test_key_type_comes_from_the_table() -> None:
    keys = KeySchema(partition="id", partition_type="N", sort="blob", sort_type="B")
    c = RowConverter(SchemaSpec(), ["id", "blob", "x"], keys)
    item, key, size = c.convert([" 007 ", "AAE=", "x"])
    assert item == {"id": {"N": "007"}, "blob": {"B": "AAE="}, "x": {"S": "x"}}
    assert key == ("7", "AAE=")
    # id: 2 + N 7 (1 digit, one pair) 1 + 1; blob: 4 + 2 raw bytes; x: 1 + 1
    assert size == 2 + 2 + 4 + 2 + 1 + 1


def test_a_key_column_typed_like_the_table_is_fine() -> None:
    keys = KeySchema(partition="pk", partition_type="N")
    assert conv({"pk": "N"}, keys=keys).convert(["1", "x"])[1] == ("1",)


# ----------------------------------------------------------------------------- types

# (type, cell, attribute value, value size by the AWS rules)
CONVERSIONS: list[tuple[str, str, dict[str, Any], int]] = [
    ("S", "hello", {"S": "hello"}, 5),
    ("S", "  spaced ", {"S": "  spaced "}, 9),
    ("S", "héllo", {"S": "héllo"}, 6),
    ("S", "日本", {"S": "日本"}, 6),
    ("S", "null", {"S": "null"}, 4),
    ("N", "42", {"N": "42"}, 2),
    ("N", " 42 ", {"N": "42"}, 2),
    ("N", "0", {"N": "0"}, 1),
    ("N", "-0", {"N": "-0"}, 1),
    ("N", "000", {"N": "000"}, 1),
    ("N", "1", {"N": "1"}, 2),
    ("N", "-1", {"N": "-1"}, 3),
    ("N", "10", {"N": "10"}, 2),
    ("N", "100", {"N": "100"}, 2),
    ("N", "123", {"N": "123"}, 3),
    ("N", "1.5", {"N": "1.5"}, 3),
    ("N", "-1.5", {"N": "-1.5"}, 4),
    ("N", "19.99", {"N": "19.99"}, 3),
    ("N", "123.456", {"N": "123.456"}, 5),
    ("N", "1234.5", {"N": "1234.5"}, 4),
    ("N", "0.1", {"N": "0.1"}, 2),
    ("N", "-0.1", {"N": "-0.1"}, 3),
    ("N", "0.01", {"N": "0.01"}, 2),
    ("N", ".5", {"N": ".5"}, 2),
    ("N", "5.", {"N": "5."}, 2),
    ("N", "+7", {"N": "+7"}, 2),
    ("N", "1e5", {"N": "1e5"}, 2),
    ("N", "1E-130", {"N": "1E-130"}, 2),
    ("N", "-2.5E+3", {"N": "-2.5E+3"}, 3),
    ("N", "12345678901234567890123456789012345678", {"N": "12345678901234567890123456789012345678"}, 20),
    ("N", "1.2345678901234567890123456789012345678", {"N": "1.2345678901234567890123456789012345678"}, 21),
    (
        "N",
        "9.9999999999999999999999999999999999999E+125",
        {"N": "9.9999999999999999999999999999999999999E+125"},
        20,
    ),
    # 38 digits starting at 10^42: pairs 21..2 are 20 base-100 digits, + 1
    (
        "N",
        "1234567890123456789012345678901234567800000",
        {"N": "1234567890123456789012345678901234567800000"},
        21,
    ),
    ("BOOL", "true", {"BOOL": True}, 1),
    ("BOOL", "FALSE", {"BOOL": False}, 1),
    ("BOOL", "1", {"BOOL": True}, 1),
    ("BOOL", "0", {"BOOL": False}, 1),
    ("BOOL", " Yes ", {"BOOL": True}, 1),
    ("BOOL", "no", {"BOOL": False}, 1),
    ("NULL", "null", {"NULL": True}, 1),
    ("NULL", "NULL", {"NULL": True}, 1),
    ("NULL", "", {"NULL": True}, 1),
    ("B", "AAE=", {"B": "AAE="}, 2),
    ("B", "aGVsbG8=", {"B": "aGVsbG8="}, 5),
    ("B", "AB==", {"B": "AA=="}, 1),  # non-canonical trailing bits: sent canonical
    ("SS", "red|green|red", {"SS": ["red", "green"]}, 8),
    ("SS", "é", {"SS": ["é"]}, 2),
    ("SS", "a| b", {"SS": ["a", " b"]}, 3),
    # an exponent or 16+ digits keep their exact text (the float fast path would write 100.0)
    ("JSON", "[1E2, 0.5]", {"L": [{"N": "1E2"}, {"N": "0.5"}]}, 3 + 1 + 2 + 1 + 2),
    ("JSON", "[0.1234567890123456]", {"L": [{"N": "0.1234567890123456"}]}, 3 + 1 + 9),
    ("NS", "1|2.50|1.0|-3", {"NS": ["1", "2.50", "-3"]}, 2 + 3 + 3),
    ("NS", " 7 ", {"NS": ["7"]}, 2),
    ("JSON", '"text"', {"S": "text"}, 4),
    ("JSON", "1.10", {"N": "1.1"}, 3),
    ("JSON", "true", {"BOOL": True}, 1),
    ("JSON", "null", {"NULL": True}, 1),
    ("JSON", "[]", {"L": []}, 3),
    ("JSON", "{}", {"M": {}}, 3),
    ("JSON", '["ab"]', {"L": [{"S": "ab"}]}, 3 + 1 + 2),
    ("JSON", '{"k": "ab"}', {"M": {"k": {"S": "ab"}}}, 3 + 1 + 1 + 2),
    ("JSON", "[[]]", {"L": [{"L": []}]}, 3 + 1 + 3),
    (
        "JSON",
        '{"a": [1, 2.5e3, {"b": false}], "c": null, "é": ""}',
        {
            "M": {
                "a": {"L": [{"N": "1"}, {"N": "2.5e3"}, {"M": {"b": {"BOOL": False}}}]},
                "c": {"NULL": True},
                "é": {"S": ""},
            }
        },
        # M 3 + a: 1+1+ L(3 + (1+2) + (1+2) + (1 + M(3 + 1+1+1)))  + c: 1+1+1 + é: 1+2+0
        3 + (1 + 1 + (3 + 3 + 3 + (1 + 6))) + 3 + 3,
    ),
    (
        "JSON",
        "12345678901234567890.123456789012345678",
        {"N": "12345678901234567890.123456789012345678"},
        20,
    ),
]


@pytest.mark.parametrize(("typ", "cell", "value", "value_size"), CONVERSIONS)
def test_column_types(typ: str, cell: str, value: dict[str, Any], value_size: int) -> None:
    item, key, size = conv({"c": typ}).convert(["k", cell])
    assert item == {"pk": {"S": "k"}, "c": value}
    assert key == ("k",)
    assert size == len("pk") + 1 + len("c") + value_size


def test_json_numbers_keep_their_exact_text() -> None:
    cell = '{"n": 0.1000000000000000000000000000000000001, "i": 12345678901234567890123}'
    item, _, _ = conv({"c": "JSON"}).convert(["k", cell])
    assert item["c"]["M"]["n"] == {"N": "0.1000000000000000000000000000000000001"}
    assert item["c"]["M"]["i"] == {"N": "12345678901234567890123"}


def test_json_nesting_up_to_31_levels() -> None:
    ok = "[" * 31 + "]" * 31
    item, _, _ = conv({"c": "JSON"}).convert(["k", ok])
    value = item["c"]
    for _ in range(30):
        value = value["L"][0]
    assert value == {"L": []}


# (type, cell, words the reason must contain)
ROW_ERRORS: list[tuple[str, str, str]] = [
    ("N", "12x", "'12x' in column 'c' is not a number"),
    ("N", "1_000", "is not a number"),
    ("N", "0x10", "is not a number"),
    ("N", "NaN", "is not a number"),
    ("N", "Infinity", "is not a number"),
    ("N", ".", "is not a number"),
    ("N", "-", "is not a number"),
    ("N", "1e", "is not a number"),
    ("N", "1 2", "is not a number"),
    ("N", "٣", "is not a number"),  # a Unicode digit DynamoDB's Java parser would take
    ("N", "123456789012345678901234567890123456789", "39 significant digits; DynamoDB allows at most 38"),
    ("N", "1.23456789012345678901234567890123456789", "39 significant digits"),
    ("N", "1E+126", "outside DynamoDB's number range"),
    ("N", "1E-131", "outside DynamoDB's number range"),
    ("N", "0.00000000000000000000000000000000000000001e-100", "outside DynamoDB's number range"),
    ("N", "1" + "0" * 126, "outside DynamoDB's number range"),
    ("BOOL", "maybe", "'maybe' in column 'c' is not a boolean"),
    ("BOOL", "t", "is not a boolean"),
    ("BOOL", "2", "is not a boolean"),
    ("NULL", "none", "'none' in column 'c' is not null"),
    ("B", "AAE", "'AAE' in column 'c' is not valid base64"),
    ("B", "AA E=", "is not valid base64"),
    ("B", "A*E=", "is not valid base64"),
    ("JSON", "{bad", "'{bad' in column 'c' is not valid JSON"),
    ("JSON", "NaN", "is not valid JSON"),
    ("JSON", "[1, Infinity]", "is not valid JSON"),
    ("JSON", '{"a": 1e200}', "in JSON column 'c' is outside DynamoDB's number range"),
    ("JSON", "[123456789012345678901234567890123456789]", "39 significant digits"),
    ("JSON", '{"": 1}', "empty object key"),
    ("JSON", "[" * 32 + "]" * 32, "nests more than 31"),
    ("JSON", "[" * 100000 + "]" * 100000, "column 'c'"),
    ("SS", "a||b", "'a||b' in column 'c' has an empty set element"),
    ("SS", "a|", "empty set element"),
    ("NS", "1| |2", "empty set element"),
    ("NS", "1|x", "'x' in column 'c' is not a number"),
    ("NS", "1|1e999", "outside DynamoDB's number range"),
]


@pytest.mark.parametrize(("typ", "cell", "reason"), ROW_ERRORS)
def test_bad_cells_are_row_errors(typ: str, cell: str, reason: str) -> None:
    with pytest.raises(RowError) as err:
        conv({"c": typ}).convert(["k", cell])
    assert reason in err.value.reason
    assert len(err.value.reason) < 300


def test_a_long_bad_value_is_quoted_short() -> None:
    cell = "x" * 5000
    with pytest.raises(RowError) as err:
        conv({"c": "N"}).convert(["k", cell])
    reason = err.value.reason
    assert reason.startswith("'" + "x" * 77 + "...'")
    assert len(reason) < 130


# ----------------------------------------------------------------------------- rows and keys


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (["a", "b", "c", "d"], "expected 5 fields, got 4"),
        (["a", "b", "c", "d", "e", "f"], "expected 5 fields, got 6"),
        (["", "s", "c", "d", "e"], "empty partition key 'pk'"),
        (["p", "", "c", "d", "e"], "empty sort key 'sk'"),
        (["é" * 1025, "s", "c", "d", "e"], "partition key 'pk' is 2050 bytes; DynamoDB allows at most 2048"),
        (["p", "x" * 1025, "c", "d", "e"], "sort key 'sk' is 1025 bytes; DynamoDB allows at most 1024"),
    ],
)
def test_row_errors_for_shape_and_keys(fields: list[str], reason: str) -> None:
    keys = KeySchema(partition="pk", partition_type="S", sort="sk", sort_type="S")
    c = RowConverter(SchemaSpec(), ["pk", "sk", "a", "b", "c"], keys)
    with pytest.raises(RowError) as err:
        c.convert(fields)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("ktype", "cell", "reason"),
    [
        ("N", "", "empty partition key 'pk'"),
        ("N", "  ", "empty partition key 'pk'"),
        ("N", "1x", "'1x' in partition key 'pk' is not a number"),
        ("N", "1e300", "outside DynamoDB's number range"),
        ("B", "", "empty partition key 'pk'"),
        ("B", "!!", "'!!' in partition key 'pk' is not valid base64"),
        ("B", base64.b64encode(b"x" * 2049).decode(), "partition key 'pk' is 2049 bytes"),
    ],
)
def test_typed_key_errors(ktype: str, cell: str, reason: str) -> None:
    c = RowConverter(SchemaSpec(), ["pk"], KeySchema(partition="pk", partition_type=ktype))  # type: ignore[arg-type]
    with pytest.raises(RowError) as err:
        c.convert([cell])
    assert reason in err.value.reason


@pytest.mark.parametrize(
    "variants",
    [
        ["1", "1.0", "01", "1e0", "+1", " 1 ", "0.1E1", "1.", "10e-1"],
        ["0", "-0", "0.000", "0e5", ".0"],
        ["-2.5", "-2.50", "-25e-1", "-0.25E1"],
        ["1E+100", "1e100", "10e99", "0.1e101"],
        ["0.001", "1e-3", ".001", "1.000e-3"],
    ],
)
def test_number_keys_are_canonical(variants: list[str]) -> None:
    c = RowConverter(SchemaSpec(), ["pk"], KeySchema(partition="pk", partition_type="N"))
    keys = {c.convert([v])[1] for v in variants}
    assert len(keys) == 1


def test_binary_keys_are_canonical_base64() -> None:
    c = RowConverter(SchemaSpec(), ["pk"], KeySchema(partition="pk", partition_type="B"))
    assert c.convert(["AB=="])[1] == c.convert(["AA=="])[1] == ("AA==",)
    assert c.convert([" AAE= "])[0] == {"pk": {"B": "AAE="}}


def test_distinct_values_make_distinct_keys() -> None:
    keys = KeySchema(partition="pk", partition_type="N", sort="sk", sort_type="S")
    c = RowConverter(SchemaSpec(), ["pk", "sk"], keys)
    assert c.convert(["1", "a"])[1] == ("1", "a")
    assert c.convert(["1", "A"])[1] != c.convert(["1", "a"])[1]
    assert c.convert(["1.5", "a"])[1] != c.convert(["15", "a"])[1]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1", "1"),
        ("007", "7"),
        ("1.0", "1"),
        ("-0", "0"),
        ("0.000", "0"),
        (" 12.50 ", "12.5"),
        ("-0.125", "-0.125"),
        ("1e3", "1000"),
        ("1.5e-3", "0.0015"),
        ("1E+100", "1E+100"),
        ("-1.5E-100", "-1.5E-100"),
        ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678"),
        ("9.9999999999999999999999999999999999999E+125", "9.9999999999999999999999999999999999999E+125"),
        ("1E-130", "1E-130"),
    ],
)
def test_normalize_number(text: str, canonical: str) -> None:
    assert normalize_number(text) == canonical


@pytest.mark.parametrize("text", ["", "x", "1e-131", "1" * 39, "1.2.3"])
def test_normalize_number_refuses_invalid(text: str) -> None:
    with pytest.raises(RowError):
        normalize_number(text)


# ----------------------------------------------------------------------------- empty cells

EMPTY_HEADER = ("pk", "s", "n", "b", "bool", "j", "ss", "ns", "nul")
EMPTY_TYPES: dict[str, ColumnType] = {
    "n": "N",
    "b": "B",
    "bool": "BOOL",
    "j": "JSON",
    "ss": "SS",
    "ns": "NS",
    "nul": "NULL",
}


@pytest.mark.parametrize(
    ("policy", "expected", "size"),
    [
        ("omit", {"nul": {"NULL": True}}, 3 + 1),
        (
            "null",
            {name: {"NULL": True} for name in EMPTY_HEADER[1:]},
            sum(len(name) + 1 for name in EMPTY_HEADER[1:]),
        ),
        ("empty-string", {"s": {"S": ""}, "nul": {"NULL": True}}, 1 + 3 + 1),
    ],
)
def test_empty_policies(policy: str, expected: dict[str, Any], size: int) -> None:
    c = RowConverter(SchemaSpec(columns=EMPTY_TYPES, empty=policy), EMPTY_HEADER, PK)  # type: ignore[arg-type]
    item, _, got = c.convert(["k", "", "", "", "", "", "", "", ""])
    assert item == {"pk": {"S": "k"}, **expected}
    assert got == 2 + 1 + size


def test_whitespace_only_is_empty_except_for_strings() -> None:
    c = RowConverter(SchemaSpec(columns=EMPTY_TYPES), EMPTY_HEADER, PK)
    item, _, _ = c.convert(["k", " ", " ", " ", "\t", " ", " ", " ", " "])
    assert item == {"pk": {"S": "k"}, "s": {"S": " "}, "nul": {"NULL": True}}


def test_empty_cells_among_full_ones() -> None:
    c = conv(header=("pk", "a", "b", "c"))
    assert c.convert(["k", "", "x", ""]) == ({"pk": {"S": "k"}, "b": {"S": "x"}}, ("k",), 2 + 1 + 1 + 1)


# ----------------------------------------------------------------------------- item size


def test_item_size_of_a_mixed_row_by_hand() -> None:
    c = RowConverter(
        SchemaSpec(columns={"price": "N", "ok": "BOOL", "tags": "SS", "blob": "B", "doc": "JSON"}),
        ["pk", "name", "price", "ok", "tags", "blob", "doc"],
        PK,
    )
    _, _, size = c.convert(["user#1", "Zoë", "-12.5", "yes", "a|bb", "AAEC", '{"k": [1]}'])
    expected = (
        (2 + 6)  # pk "user#1"
        + (4 + 4)  # name "Zoë": ë is 2 bytes
        + (5 + 3 + 1)  # price -12.5: digits 125, pairs 12|50 -> 2, +1, +1 negative
        + (2 + 1)  # ok
        + (4 + 1 + 2)  # tags
        + (4 + 3)  # blob: 3 raw bytes
        + (3 + 3 + (1 + 1 + (3 + 1 + 2)))  # doc: M{k: L[N 1]}
    )
    assert size == expected


# ----------------------------------------------------------------------------- odd names and text


def test_names_that_look_like_code_stay_names() -> None:
    odd = "a{x}'\"\\\n"
    c = RowConverter(
        SchemaSpec(columns={odd + "n": "N"}, empty="null"),
        [odd, odd + "n", odd + "s"],
        KeySchema(partition=odd, partition_type="S"),
    )
    item, key, _ = c.convert(["k", "", ""])
    assert item == {odd: {"S": "k"}, odd + "n": {"NULL": True}, odd + "s": {"NULL": True}}
    assert key == ("k",)
    with pytest.raises(RowError) as err:
        c.convert(["k" * 3000, "", ""])
    assert err.value.reason == f"partition key {odd!r} is 3000 bytes; DynamoDB allows at most 2048"
    with pytest.raises(RowError, match="not a number"):
        c.convert(["k", "x", ""])


def test_items_do_not_share_value_objects() -> None:
    c = RowConverter(SchemaSpec(columns={"n": "NULL"}, empty="null"), ["pk", "n", "s"], PK)
    a, _, _ = c.convert(["k", "", ""])
    b, _, _ = c.convert(["k", "", ""])
    a["n"]["NULL"] = False
    a["s"]["NULL"] = False
    assert b == {"pk": {"S": "k"}, "n": {"NULL": True}, "s": {"NULL": True}}


def test_many_columns() -> None:
    header = ["pk"] + [f"c{i}" for i in range(500)]
    item, _, size = RowConverter(SchemaSpec(), header, PK).convert(["k"] + ["v"] * 500)
    assert len(item) == 501
    assert size == 3 + sum(len(f"c{i}") + 1 for i in range(500))


@pytest.mark.parametrize(
    ("types", "cell", "reason"),
    [
        ({}, "bad \udcff byte", "for attribute 'c' is not valid Unicode text"),
        ({"c": "SS"}, "a|\udcff", "for attribute 'c' is not valid Unicode text"),
        ({"c": "JSON"}, '["\\ud800"]', "in column 'c' holds a string that is not valid Unicode text"),
        ({"c": "JSON"}, '{"\\ud800": 1}', "in column 'c' holds a string that is not valid Unicode text"),
    ],
)
def test_text_that_cannot_be_utf8_is_a_row_error(types: dict[str, Any], cell: str, reason: str) -> None:
    with pytest.raises(RowError) as err:
        conv(types).convert(["k", cell])
    assert reason in err.value.reason


def test_a_header_name_that_cannot_be_utf8_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="column 2 of the header"):
        RowConverter(SchemaSpec(), ["pk", "\udcff"], PK)


def test_integer_set_elements_fast_path_matches_the_exact_rules() -> None:
    """Plain integers in NS take a fast path; its dedupe and size must equal the general path's."""
    import random

    from loader.limits import number_parts, parts_size
    from loader.schema import _canonical

    rng = random.Random(7)
    for _ in range(2000):
        text = str(rng.randrange(0, 10 ** rng.randrange(1, 38)))
        if rng.random() < 0.3:
            text = "0" * rng.randrange(1, 3) + text
        if len(text) > 38:
            continue
        conv = RowConverter(
            SchemaSpec(columns={"s": "NS"}), ["pk", "s"], KeySchema(partition="pk", partition_type="S")
        )
        item, _, size = conv.convert(["k", f"{text}|{text}0"])
        parsed = [number_parts(x) for x in (text, text + "0")]
        canon = {_canonical(*p) for p in parsed}
        assert len(item["s"]["NS"]) == len(canon)
        expected = len("pk") + 1 + len("s") + sum(parts_size(*p) for p in parsed[: len(canon)])
        assert size == expected, text


def test_binary_attributes_are_renamed_b_columns_and_b_keys() -> None:
    from loader.schema import binary_attributes

    spec = SchemaSpec(columns={"blob": "B", "n": "N"}, rename={"blob": "data"})
    keys = KeySchema(partition="pk", partition_type="B", sort="sk", sort_type="S")
    assert binary_attributes(spec, keys) == frozenset({"data", "pk"})
    assert binary_attributes(SchemaSpec(), KeySchema(partition="pk", partition_type="S")) == frozenset()


def _random_json(rng: Any, depth: int = 0) -> Any:
    pick = rng.random()
    if depth < 4 and pick < 0.25:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if depth < 4 and pick < 0.45:
        return {
            rng.choice(["a", "bé", "東京", "k" * rng.randrange(1, 5)]): _random_json(rng, depth + 1)
            for _ in range(3)
        }
    leaf = rng.randrange(6)
    if leaf == 0:
        return rng.choice(["", "x", "naïve", "東京", 'a"b\\c'])
    if leaf == 1:
        return rng.choice([True, False, None])
    if leaf == 2:
        return rng.choice([0, -1, 7, 10, 100, -2500, 123456789012345]) * rng.choice([1, 10, 1000])
    if leaf == 3:
        return rng.choice([0.5, -0.25, 94.5, 1234.125, 0.001, 100.0])
    return rng.randrange(-(10**14), 10**14)


def test_json_fast_path_matches_the_exact_path() -> None:
    """The orjson path (leaves inline, ints sized from their text) must give the exact path's
    values and sizes: same attributes, same numbers (maybe in a shorter spelling), same size."""
    import json
    import random
    from decimal import Decimal

    from loader.schema import _json_cell, _json_value, _JsonNumber

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"N"}:
                return Decimal(value["N"]).normalize()
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        return value

    rng = random.Random(11)
    for _ in range(3000):
        text = json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5)
        fast = _json_cell(text, "c")
        exact = _json_value(json.loads(text, parse_int=_JsonNumber, parse_float=_JsonNumber), text, "c", 0)
        assert norm(fast[0]) == norm(exact[0]), text
        assert fast[1] == exact[1], text


@pytest.mark.parametrize("delimiter", ["|", "§§"])
def test_string_set_size_counts_each_distinct_element_once(delimiter: str) -> None:
    spec = SchemaSpec(columns={"s": "SS"}, set_delimiter=delimiter)
    c = RowConverter(spec, ["pk", "s"], PK)
    for elems in (["a"], ["a", "bb"], ["東京", "a", "東京"], ["x", "x", "x"], ["naïve", "café"]):
        item, _, size = c.convert(["k", delimiter.join(elems)])
        distinct = list(dict.fromkeys(elems))
        assert item["s"] == {"SS": distinct}
        assert size == len("pk") + 1 + len("s") + sum(len(e.encode()) for e in distinct)
