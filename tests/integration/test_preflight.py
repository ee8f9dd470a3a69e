"""`s3ddb load` refuses, before its first write, what DynamoDB would refuse row by row later.

* a column that becomes a GSI / LSI key attribute with another type than the table declares
  (DynamoDB Local refuses each such item with a ValidationException);
* an S3 rejects destination whose bucket does not exist (found otherwise at the first reject,
  after items were written).

Each case runs ``s3ddb.cli.main`` against DynamoDB Local and moto S3, and checks exit 2, the
message, and that the table is still empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s3ddb.cli import main
from tests.support.aws import scan_all
from tests.support.data import by_pk, csv_bytes

MakeTable = Callable[..., str]


@pytest.fixture
def index_table(table_factory: MakeTable) -> MakeTable:
    """``make(keys, attrs, gsi=..., lsi=...)``: a table with indexes, from ``table_factory``."""

    def make(keys: list[tuple[str, str]], attrs: dict[str, str], **indexes: Any) -> str:
        pk = (keys[0][0], attrs[keys[0][0]])
        sk = (keys[1][0], attrs[keys[1][0]]) if len(keys) > 1 else None
        return table_factory(pk, sk, attrs=attrs, **indexes)

    return make


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    _out, err = capsys.readouterr()
    return code, err


def put(s3: Any, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


ROWS = [["a", "12.5", "x"], ["b", "", "y"], ["c", "7", "z"]]  # b has no price: not in the index


@pytest.fixture
def gsi_table(index_table: MakeTable) -> str:
    return index_table([("pk", "HASH")], {"pk": "S", "price": "N"}, gsi={"by_price": [("price", "HASH")]})


@pytest.mark.parametrize("command", ["load", "validate"])
def test_an_untyped_column_feeding_an_n_gsi_key_stops_before_writing(
    capsys: pytest.CaptureFixture[str],
    s3: Any,
    ddb: Any,
    bucket: str,
    gsi_table: str,
    tmp_path: Path,
    command: str,
) -> None:
    uri = put(s3, bucket, "gsi.csv", csv_bytes(["pk", "price", "note"], ROWS))
    code, err = run_cli(capsys, command, uri, "--table", gsi_table, "--rejects", str(tmp_path / "rej"))
    assert code == 2, err
    assert "column 'price' is a key of index 'by_price', declared N in the table" in err
    assert "read as S (the default type)" in err and "--type price=N" in err
    assert scan_all(ddb, gsi_table) == []
    assert not (tmp_path / "rej").exists()


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_a_typed_gsi_key_column_loads_and_an_empty_cell_leaves_the_index_sparse(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, gsi_table: str, sender: str
) -> None:
    uri = put(s3, bucket, "gsi.csv", csv_bytes(["pk", "price", "note"], ROWS))
    code, err = run_cli(capsys, "load", uri, "--table", gsi_table, "--type", "price=N", "--sender", sender)
    assert code == 0, err
    items = by_pk(scan_all(ddb, gsi_table))
    assert sorted(items) == ["a", "b", "c"]
    assert items["a"]["price"] == {"N": "12.5"} and "price" not in items["b"]
    indexed = ddb.scan(TableName=gsi_table, IndexName="by_price")["Items"]
    assert sorted(i["pk"]["S"] for i in indexed) == ["a", "c"]


def test_a_renamed_column_is_checked_by_its_attribute_name(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, gsi_table: str, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"rename": {"cost": "price"}, "columns": {"cost": "JSON"}}')
    uri = put(s3, bucket, "gsi.csv", csv_bytes(["pk", "cost", "note"], ROWS))
    code, err = run_cli(capsys, "load", uri, "--table", gsi_table, "--schema", str(schema))
    assert code == 2, err
    assert "column 'cost' becomes attribute 'price', which is a key of index 'by_price'" in err
    assert "is typed JSON" in err and "--type cost=N" in err
    assert scan_all(ddb, gsi_table) == []


def test_an_lsi_sort_key_is_checked_too(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, index_table: MakeTable
) -> None:
    table = index_table(
        [("pk", "HASH"), ("sk", "RANGE")],
        {"pk": "S", "sk": "S", "ts": "N"},
        lsi={"by_ts": [("pk", "HASH"), ("ts", "RANGE")]},
    )
    rows = [["a", "1", "100"], ["a", "2", "50"], ["b", "1", ""]]
    uri = put(s3, bucket, "lsi.csv", csv_bytes(["pk", "sk", "ts"], rows))
    code, err = run_cli(capsys, "load", uri, "--table", table)
    assert code == 2, err
    assert "column 'ts' is a key of index 'by_ts', declared N in the table" in err and "--type ts=N" in err
    assert scan_all(ddb, table) == []

    code, err = run_cli(capsys, "load", uri, "--table", table, "--type", "ts=N")
    assert code == 0, err
    assert len(scan_all(ddb, table)) == 3
    indexed = ddb.query(
        TableName=table,
        IndexName="by_ts",
        KeyConditionExpression="pk = :a",
        ExpressionAttributeValues={":a": {"S": "a"}},
    )["Items"]
    assert [i["ts"]["N"] for i in indexed] == ["50", "100"]


def test_a_missing_s3_rejects_bucket_stops_before_writing(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    missing = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    # a bad row would be the first reject, found only after the good rows were written
    uri = put(s3, bucket, "r.csv", csv_bytes(["pk", "n"], [["a", "1"], ["b", "x"], ["c", "3"]]))
    code, err = run_cli(
        capsys, "load", uri, "--table", table, "--type", "n=N", "--rejects", f"s3://{missing}/x/"
    )
    assert code == 2, err
    assert f"rejects destination s3://{missing}/x/: bucket '{missing}' does not exist" in err
    assert scan_all(ddb, table) == []


def test_an_existing_s3_rejects_bucket_takes_the_rejects(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    uri = put(s3, bucket, "r.csv", csv_bytes(["pk", "n"], [["a", "1"], ["b", "x"], ["c", "3"]]))
    code, err = run_cli(
        capsys, "load", uri, "--table", table, "--type", "n=N", "--rejects", f"s3://{bucket}/rej/"
    )
    assert code == 0, err
    assert sorted(by_pk(scan_all(ddb, table))) == ["a", "c"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="rej/").get("Contents", [])]
    assert len(keys) == 1 and keys[0].endswith(".jsonl")
