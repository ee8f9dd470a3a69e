"""Checks made before the first write: secondary index key types against the header and schema.

DynamoDB refuses an item whose GSI/LSI key attribute has another type than the table declares;
``RowConverter`` refuses such a schema up front (ConfigError) instead of letting every row be
rejected one bisected batch at a time. ``describe_key_schema`` reads the index keys.
"""

from __future__ import annotations

from typing import Any

import pytest

from loader.clients import describe_key_schema
from loader.config import ColumnType, SchemaSpec
from loader.errors import ConfigError
from loader.models import KeySchema, KeyType
from loader.schema import RowConverter

BY_PRICE = KeySchema(
    partition="pk",
    partition_type="S",
    index_keys={"price": "N"},
    index_names={"price": ("by_price",)},
)


def _keys(index_keys: dict[str, KeyType], index_names: dict[str, tuple[str, ...]] | None = None) -> KeySchema:
    names = index_names or {a: (f"ix_{a}",) for a in index_keys}
    return KeySchema(partition="pk", partition_type="S", index_keys=index_keys, index_names=names)


# ----------------------------------------------------------------------------- KeySchema


def test_key_schema_defaults_keep_old_constructors_working() -> None:
    keys = KeySchema(partition="pk", partition_type="S")
    assert keys.index_keys == {} and keys.index_names == {}
    assert hash(keys) == hash(KeySchema(partition="pk", partition_type="S"))
    assert hash(BY_PRICE) == hash(KeySchema(partition="pk", partition_type="S"))  # still hashable
    assert keys != BY_PRICE


# ----------------------------------------------------------------------------- mismatches


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            {},
            "column 'price' is a key of index 'by_price', declared N in the table, but the column is "
            "read as S (the default type): DynamoDB refuses every item whose 'price' is not N; give the "
            'column type N (--type price=N, or "columns": {"price": "N"} in the schema)',
        ),
        ({"price": "S"}, "but the column is typed S:"),
        ({"price": "JSON"}, "is typed JSON, which writes each cell as the type its value has"),
        ({"price": "NS"}, "but the column is typed NS:"),
        ({"price": "SS"}, "but the column is typed SS:"),
        ({"price": "BOOL"}, "but the column is typed BOOL:"),
        ({"price": "NULL"}, "but the column is typed NULL:"),
        ({"price": "B"}, "but the column is typed B:"),
    ],
)
def test_a_column_feeding_an_n_index_key_must_be_n(columns: dict[str, ColumnType], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RowConverter(SchemaSpec(columns=columns), ["pk", "price", "x"], BY_PRICE)
    assert message in str(err.value)
    assert "--type price=N" in str(err.value)


@pytest.mark.parametrize(
    ("ktype", "column_type"),
    [("S", "N"), ("S", "JSON"), ("S", "SS"), ("B", "S"), ("B", None), ("N", "NS"), ("S", "B")],
)
def test_every_type_pair_that_differs_is_refused(ktype: KeyType, column_type: ColumnType | None) -> None:
    columns: dict[str, ColumnType] = {} if column_type is None else {"c": column_type}
    with pytest.raises(ConfigError) as err:
        RowConverter(SchemaSpec(columns=columns), ["pk", "c"], _keys({"c": ktype}))
    assert f"declared {ktype} in the table" in str(err.value)
    assert f"--type c={ktype}" in str(err.value)


def test_an_s_key_names_dropping_the_type_as_a_fix() -> None:
    with pytest.raises(ConfigError) as err:
        RowConverter(SchemaSpec(columns={"c": "N"}), ["pk", "c"], _keys({"c": "S"}))
    assert "(--type c=S or drop its type, or" in str(err.value)


def test_a_renamed_column_is_named_with_its_attribute() -> None:
    spec = SchemaSpec(rename={"cost": "price"})
    with pytest.raises(ConfigError) as err:
        RowConverter(spec, ["pk", "cost"], BY_PRICE)
    text = str(err.value)
    assert "column 'cost' becomes attribute 'price', which is a key of index 'by_price'" in text
    assert "--type cost=N" in text and '"columns": {"cost": "N"}' in text


def test_every_mismatch_and_every_index_is_named_at_once() -> None:
    keys = _keys({"a": "N", "b": "B", "ok": "S"}, {"a": ("g1", "l1"), "b": ("g2",), "ok": ("g3",)})
    with pytest.raises(ConfigError) as err:
        RowConverter(SchemaSpec(), ["pk", "a", "b", "ok"], keys)
    text = str(err.value)
    assert "column 'a' is a key of indexes 'g1', 'l1', declared N" in text
    assert "column 'b' is a key of index 'g2', declared B" in text
    assert "'ok'" not in text


def test_a_column_name_needing_json_quotes_is_quoted_in_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        RowConverter(SchemaSpec(), ["pk", 'a "b"'], _keys({'a "b"': "N"}))
    assert '"columns": {"a \\"b\\"": "N"}' in str(err.value)


# ----------------------------------------------------------------------------- what passes


@pytest.mark.parametrize(
    ("header", "spec", "keys"),
    [
        # the type matches
        (["pk", "price"], SchemaSpec(columns={"price": "N"}), BY_PRICE),
        (["pk", "c"], SchemaSpec(), _keys({"c": "S"})),
        (["pk", "c"], SchemaSpec(columns={"c": "S"}), _keys({"c": "S"})),
        (["pk", "c"], SchemaSpec(columns={"c": "B"}), _keys({"c": "B"})),
        (["pk", "cost"], SchemaSpec(rename={"cost": "price"}, columns={"cost": "N"}), BY_PRICE),
        # no column becomes the attribute: a sparse index
        (["pk", "x"], SchemaSpec(), BY_PRICE),
        (["pk", "price"], SchemaSpec(rename={"price": "amount"}), BY_PRICE),
    ],
)
def test_matching_or_absent_index_keys_pass(header: list[str], spec: SchemaSpec, keys: KeySchema) -> None:
    RowConverter(spec, header, keys)


def test_an_index_on_the_tables_own_keys_is_checked_as_a_table_key() -> None:
    # an LSI always shares the table's partition key; a GSI may key on the sort key
    keys = KeySchema(
        partition="pk",
        partition_type="N",
        sort="sk",
        sort_type="S",
        index_keys={"pk": "N", "sk": "S", "ts": "N"},
        index_names={"pk": ("lsi",), "sk": ("gsi",), "ts": ("lsi",)},
    )
    c = RowConverter(SchemaSpec(columns={"ts": "N"}), ["pk", "sk", "ts"], keys)
    assert c.convert(["1", "a", "5"])[0] == {"pk": {"N": "1"}, "sk": {"S": "a"}, "ts": {"N": "5"}}
    with pytest.raises(ConfigError) as err:
        RowConverter(SchemaSpec(columns={"pk": "S"}), ["pk", "sk", "ts"], keys)
    assert "the table's partition key 'pk' is N" in str(err.value)


def test_a_matching_index_key_converts_as_before() -> None:
    c = RowConverter(SchemaSpec(columns={"price": "N"}), ["pk", "price"], BY_PRICE)
    assert c.convert(["a", "12.50"])[0] == {"pk": {"S": "a"}, "price": {"N": "12.50"}}
    assert c.convert(["b", ""])[0] == {"pk": {"S": "b"}}  # empty: omitted, the index stays sparse


# ----------------------------------------------------------------------------- describe_key_schema


class _Meta:
    region_name = "us-east-1"
    endpoint_url = "http://127.0.0.1:1"


class _FakeDynamoDB:
    """Answers DescribeTable with a canned description."""

    meta = _Meta()

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table

    def describe_table(self, *, TableName: str) -> dict[str, Any]:
        return {"Table": {"TableName": TableName, **self.table}}


def _attr(name: str, typ: str) -> dict[str, str]:
    return {"AttributeName": name, "AttributeType": typ}


def _key(name: str, role: str) -> dict[str, str]:
    return {"AttributeName": name, "KeyType": role}


def test_describe_key_schema_reads_gsi_and_lsi_keys() -> None:
    table = {
        "TableStatus": "ACTIVE",
        "KeySchema": [_key("pk", "HASH"), _key("sk", "RANGE")],
        "AttributeDefinitions": [
            _attr("pk", "S"),
            _attr("sk", "S"),
            _attr("price", "N"),
            _attr("ts", "N"),
            _attr("blob", "B"),
        ],
        "GlobalSecondaryIndexes": [
            {"IndexName": "by_price", "KeySchema": [_key("price", "HASH"), _key("ts", "RANGE")]},
            {"IndexName": "by_blob", "KeySchema": [_key("blob", "HASH")]},
        ],
        "LocalSecondaryIndexes": [
            {"IndexName": "by_ts", "KeySchema": [_key("pk", "HASH"), _key("ts", "RANGE")]}
        ],
    }
    keys = describe_key_schema(_FakeDynamoDB(table), "t")
    assert (keys.partition, keys.partition_type, keys.sort, keys.sort_type) == ("pk", "S", "sk", "S")
    assert keys.index_keys == {"price": "N", "ts": "N", "blob": "B", "pk": "S"}
    assert keys.index_names == {
        "price": ("by_price",),
        "ts": ("by_price", "by_ts"),
        "blob": ("by_blob",),
        "pk": ("by_ts",),
    }


def test_describe_key_schema_without_indexes_is_the_plain_key_schema() -> None:
    table = {
        "TableStatus": "ACTIVE",
        "KeySchema": [_key("id", "HASH")],
        "AttributeDefinitions": [_attr("id", "N")],
    }
    assert describe_key_schema(_FakeDynamoDB(table), "t") == KeySchema(partition="id", partition_type="N")
