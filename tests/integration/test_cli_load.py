"""`s3ddb load` / `s3ddb validate` end to end: moto S3 in, DynamoDB Local out, over HTTP.

The CLI runs in-process through ``s3ddb.cli.main`` (and as a subprocess where exit status and
stderr are the point); it builds its own clients from the standard endpoint variables.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3ddb.cli import main
from tests.support.aws import scan_all
from tests.support.data import by_pk, csv_bytes, simple_expected, simple_rows


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    summary = orjson.loads(out) if "--json" in argv and out.strip() else None
    return code, summary, err


def put(s3: Any, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def assert_accounted(s: dict[str, Any]) -> None:
    assert s["rows_read"] == s["items_written"] + s["rows_rejected"] + s["duplicates_collapsed"]
    assert s["invariant_ok"] is True


@pytest.mark.slow
def test_100k_rows_load_exactly(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    rows = simple_rows(100_000)
    uri = put(s3, bucket, "big/data.csv", csv_bytes(["pk", "n", "s"], rows))
    code, s, err = run_cli(
        capsys, "load", uri, "--table", table, "--type", "n=N", "--json", "--rejects", str(tmp_path / "rej")
    )
    assert code == 0, err
    assert s is not None
    assert s["rows_read"] == 100_000 and s["items_written"] == 100_000
    assert s["rows_rejected"] == 0 and s["duplicates_collapsed"] == 0
    assert s["object"]["complete"] is True
    assert s["rejects"] is None
    for k in ("retries", "throttle_events", "seconds", "items_per_second", "checkpoint"):
        assert k in s
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_every_type_and_schema_file(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(
        orjson.dumps(
            {
                "columns": {
                    "num": "N",
                    "flag": "BOOL",
                    "nothing": "NULL",
                    "doc": "JSON",
                    "tags": "SS",
                    "scores": "NS",
                    "blob": "B",
                },
                "rename": {"id": "pk", "doc": "document"},
                "empty": "omit",
                "set_delimiter": ";",
            }
        ).decode()
    )
    header = ["id", "num", "flag", "nothing", "doc", "tags", "scores", "blob", "plain"]
    rows = [
        [
            "a",
            "12.50",
            "YES",
            "",
            '{"x": 1, "y": [true, null, "s", 1e3]}',
            "red;blue;red",
            "1;2.5",
            "AAEC",
            "hi",
        ],
        ["b", "-7", "false", "", "[1, 2]", "one", "3", "", ""],
    ]
    uri = put(s3, bucket, "types.csv", csv_bytes(header, rows))
    code, s, err = run_cli(
        capsys, "load", uri, "--table", table, "--schema", str(schema), "--json", "--sender", "botocore"
    )
    assert code == 0, err
    assert s is not None and s["items_written"] == 2
    items = by_pk(scan_all(ddb, table))
    a, b = items["a"], items["b"]
    assert a["num"] == {"N": "12.5"}
    assert a["flag"] == {"BOOL": True}
    assert a["nothing"] == {"NULL": True}  # a NULL column is null whether its cell is empty or "null"
    doc = a["document"]["M"]
    assert doc["x"] == {"N": "1"}
    assert doc["y"]["L"][:3] == [{"BOOL": True}, {"NULL": True}, {"S": "s"}]
    assert Decimal(doc["y"]["L"][3]["N"]) == 1000  # the service may store 1e3 in another spelling
    assert sorted(a["tags"]["SS"]) == ["blue", "red"]
    assert sorted(a["scores"]["NS"]) == ["1", "2.5"]
    assert a["blob"] == {"B": b"\x00\x01\x02"}
    assert a["plain"] == {"S": "hi"}
    assert b["flag"] == {"BOOL": False} and b["document"] == {"L": [{"N": "1"}, {"N": "2"}]}
    assert "blob" not in b and "plain" not in b


def _sets_sorted(value: Any) -> Any:
    """An item's attribute value with set elements in one order (DynamoDB keeps no order)."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in ("SS", "NS") else _sets_sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sets_sorted(v) for v in value]
    return value


@pytest.mark.parametrize("policy", ["omit", "null"])
def test_sparse_rows_land_the_same_on_both_write_paths(
    capsys: pytest.CaptureFixture[str],
    s3: Any,
    ddb: Any,
    bucket: str,
    table_factory: Any,
    tmp_path: Path,
    policy: str,
) -> None:
    """Empty and blank cells in every column type, over several blocks: the lean path (the block
    typer) writes what the aiobotocore reference path (RowConverter) writes."""
    rnd = random.Random(7)
    header = ["pk", "s", "n", "b", "j", "t", "u"]
    values = {
        "s": ["x", "naïve", 'q"uote', " pad "],
        "n": ["1", "0.5", "-3", "99022.77", " 8 "],
        "b": ["true", "False", " yes "],
        "j": ['{"a":[1,null]}', "[]", '"s"'],
        "t": ["a;b", "c"],
        "u": ["1;2", "7"],
    }

    def cell(column: str) -> str:
        return rnd.choice(["", " ", *values[column]]) if rnd.random() < 0.4 else values[column][0]

    rows = [[f"k{i}", *map(cell, header[1:])] for i in range(1500)]
    uri = put(s3, bucket, "sparse.csv", csv_bytes(header, rows))
    schema = tmp_path / "schema.json"
    schema.write_text(
        orjson.dumps(
            {
                "columns": {"n": "N", "b": "BOOL", "j": "JSON", "t": "SS", "u": "NS"},
                "empty": policy,
                "set_delimiter": ";",
            }
        ).decode()
    )
    landed = []
    for sender in ("lean", "botocore"):
        table = table_factory()
        code, s, err = run_cli(
            capsys, "load", uri, "--table", table, "--schema", str(schema), "--json", "--sender", sender
        )
        assert code == 0, err
        assert s is not None and s["items_written"] == 1500 and s["rows_rejected"] == 0
        landed.append({k: _sets_sorted(v) for k, v in by_pk(scan_all(ddb, table)).items()})
    assert landed[0] == landed[1]
    first = landed[0]
    if policy == "omit":
        assert any(len(item) < len(header) for item in first.values())
    else:
        assert any({"NULL": True} in item.values() for item in first.values())


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_rejects_carry_row_offset_raw_and_reason_and_neighbours_land(
    capsys: pytest.CaptureFixture[str],
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    tmp_path: Path,
    sender: str,
) -> None:
    body = (
        b"pk,n,flag\n"
        b"a,1,true\n"
        b"b,1x,true\n"  # bad number
        b"c,2,maybe\n"  # bad boolean
        b",3,true\n"  # empty key
        b"d,4\n"  # ragged
        b"e,123456789012345678901234567890123456789,true\n"  # 39 digits
        b"f,5,no\n"
    )
    uri = put(s3, bucket, "rej.csv", body)
    code, s, err = run_cli(
        capsys,
        "load",
        uri,
        "--table",
        table,
        "--type",
        "n=N",
        "--type",
        "flag=BOOL",
        "--rejects",
        str(tmp_path),
        "--json",
        "--sender",
        sender,
    )
    assert code == 0, err
    assert s is not None
    assert_accounted(s)
    assert (s["rows_read"], s["items_written"], s["rows_rejected"]) == (7, 2, 5)
    assert sorted(by_pk(scan_all(ddb, table))) == ["a", "f"]
    lines = [orjson.loads(x) for x in Path(s["rejects"]).read_bytes().splitlines()]
    assert [x["row"] for x in lines] == [2, 3, 4, 5, 6]
    assert [x["raw"] for x in lines] == [
        "b,1x,true",
        "c,2,maybe",
        ",3,true",
        "d,4",
        "e,123456789012345678901234567890123456789,true",
    ]
    for x in lines:
        assert body[x["offset"] :].startswith(x["raw"].encode())
    reasons = " | ".join(x["reason"] for x in lines)
    for word in ("number", "maybe", "empty", "field", "38"):
        assert word in reasons


def test_edge_case_csv_quoted_newlines_crlf_bom_and_delimiter(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    rows = [("q1", 'line one\r\nline "two"'), ("q2", "semi;colon"), ("q3", ""), ("q4", "ü€𝄞")]
    body = b"\xef\xbb\xbf" + csv_bytes(["pk", "text"], rows, delimiter=";", newline="\r\n")
    uri = put(s3, bucket, "edge.csv", body)
    code, _s, err = run_cli(capsys, "load", uri, "--table", table, "--delimiter", ";", "--json")
    assert code == 0, err
    items = by_pk(scan_all(ddb, table))
    assert items["q1"]["text"] == {"S": 'line one\r\nline "two"'}
    assert items["q2"]["text"] == {"S": "semi;colon"}
    assert "text" not in items["q3"]  # empty cells are omitted by default
    assert items["q4"]["text"] == {"S": "ü€𝄞"}


def test_no_header_columns_latin1_and_gzip(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    rows = [(f"g{i}", f"café {i}") for i in range(3000)]
    body = gzip.compress(csv_bytes(None, rows, encoding="latin-1"))
    uri = put(s3, bucket, "nohdr.csv.gz", body)
    code, s, err = run_cli(
        capsys,
        "load",
        uri,
        "--table",
        table,
        "--no-header",
        "--columns",
        "pk,name",
        "--encoding",
        "latin-1",
        "--json",
    )
    assert code == 0, err
    assert s is not None and s["items_written"] == 3000
    items = by_pk(scan_all(ddb, table))
    assert items["g17"]["name"] == {"S": "café 17"} and len(items) == 3000


@pytest.mark.parametrize(
    ("policy", "expected_v", "written", "collapsed", "rejected"),
    [("last", "3", 2, 1, 0), ("first", "1", 2, 1, 0), ("error", "1", 2, 0, 1)],
)
def test_duplicate_keys_inside_a_batch(
    capsys: pytest.CaptureFixture[str],
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    tmp_path: Path,
    policy: str,
    expected_v: str,
    written: int,
    collapsed: int,
    rejected: int,
) -> None:
    uri = put(s3, bucket, "dup.csv", b"pk,v\nx,1\ny,2\nx,3\n")
    code, s, err = run_cli(
        capsys, "load", uri, "--table", table, "--on-duplicate", policy, "--json", "--rejects", str(tmp_path)
    )
    assert code == 0, err
    assert s is not None
    assert_accounted(s)
    assert (s["items_written"], s["duplicates_collapsed"], s["rows_rejected"]) == (
        written,
        collapsed,
        rejected,
    )
    assert by_pk(scan_all(ddb, table))["x"]["v"] == {"S": expected_v}


def test_last_row_wins_across_batches_in_flight(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    # every key appears in many batches that are in flight at the same time
    rows = [(f"h{i % 40}", str(i)) for i in range(4000)]
    uri = put(s3, bucket, "hot.csv", csv_bytes(["pk", "v"], rows))
    code, s, err = run_cli(capsys, "load", uri, "--table", table, "--json")
    assert code == 0, err
    assert s is not None
    assert_accounted(s)
    items = by_pk(scan_all(ddb, table))
    assert {k: v["v"]["S"] for k, v in items.items()} == {f"h{k}": str(3960 + k) for k in range(40)}


def test_checkpoint_and_resume_end_with_the_exact_table(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    """Stop a load mid-way (as Ctrl-C or a Lambda deadline would), then resume it from its checkpoint."""
    import asyncio

    from loader import clients, pipeline
    from loader.config import CsvSpec, LoadConfig, SchemaSpec
    from loader.models import Checkpoint
    from loader.rejects import open_rejects
    from loader.source import open_source

    rows = simple_rows(20_000)
    body = csv_bytes(["pk", "n", "s"], rows)
    uri = put(s3, bucket, "resume.csv", body)
    cp_path = tmp_path / "cp.json"
    config = LoadConfig(table=table, concurrency=8, chunk_bytes=64 * 1024)
    schema = SchemaSpec(columns={"n": "N"})
    spec = CsvSpec()

    async def first_run() -> Any:
        seen: list[int] = []

        def stop(_: Any) -> bool:
            seen.append(1)
            return len(seen) >= 5

        async def save(cp: Checkpoint) -> None:
            cp_path.write_bytes(cp.dumps())

        s3c = clients.s3_client()
        async with clients.open_dynamodb_sender(concurrency=8) as sender:
            return await pipeline.run(
                source=open_source(uri, s3_client=s3c, spec=spec),
                config=config,
                csv_spec=spec,
                schema=schema,
                keys=clients.describe_key_schema(clients.dynamodb_client(), table),
                sender=sender,
                rejects=open_rejects(str(tmp_path), run_id="r1"),
                should_stop=stop,
                on_checkpoint=save,
            )

    result = asyncio.run(first_run())
    assert result.stopped == "stopped"
    cp = Checkpoint.loads(cp_path.read_bytes())
    assert 0 < cp.offset < len(body) and not cp.complete
    assert body[cp.offset - 1 : cp.offset] == b"\n"  # a record boundary
    assert cp.counters.rows_read == cp.next_row - 1 and cp.counters.balanced
    assert len(scan_all(ddb, table)) < 20_000

    code, s, err = run_cli(
        capsys,
        "load",
        uri,
        "--table",
        table,
        "--type",
        "n=N",
        "--resume",
        str(cp_path),
        "--checkpoint",
        str(cp_path),
        "--json",
    )
    assert code == 0, err
    assert s is not None
    assert s["object"]["complete"] is True
    assert s["object"]["totals"]["rows_read"] == 20_000
    assert s["object"]["totals"]["items_written"] == 20_000
    assert s["rows_read"] == 20_000 - cp.counters.rows_read
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)
    final = Checkpoint.loads(cp_path.read_bytes())
    assert final.complete and final.offset == len(body)


def test_validate_writes_nothing_and_reports_rejects_and_write_units(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    big = "x" * 3000  # 3 write units per item
    uri = put(s3, bucket, "val.csv", f"pk,v\na,{big}\nb,1\n,2\n".encode())
    code, s, err = run_cli(capsys, "validate", uri, "--table", table, "--json", "--rejects", str(tmp_path))
    assert code == 0, err
    assert s is not None
    assert s["dry_run"] is True and s["items_valid"] == 2 and s["rows_rejected"] == 1
    assert s["write_units"] == 3 + 1
    assert scan_all(ddb, table) == []


def test_max_rejects_exits_3(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    uri = put(s3, bucket, "many.csv", b"pk,n\n" + b"".join(b"k%d,x\n" % i for i in range(10)))
    code, _s, err = run_cli(
        capsys,
        "load",
        uri,
        "--table",
        table,
        "--type",
        "n=N",
        "--max-rejects",
        "3",
        "--json",
        "--rejects",
        str(tmp_path),
        "--checkpoint",
        str(tmp_path / "cp.json"),
    )
    assert code == 3
    assert "--max-rejects" in err
    assert (tmp_path / "cp.json").exists()


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3ddb.cli", *argv],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )


def test_configuration_errors_exit_2_with_one_clear_line(s3: Any, bucket: str, table: str) -> None:
    uri = put(s3, bucket, "ok.csv", b"id,v\n1,2\n")
    missing_table = cli("load", uri, "--table", "no-such-table")
    assert missing_table.returncode == 2
    assert "no-such-table" in missing_table.stderr and "does not exist" in missing_table.stderr
    assert missing_table.stderr.count("\n") == 1

    no_key = cli("load", uri, "--table", table)
    assert no_key.returncode == 2
    assert "'pk'" in no_key.stderr and "header" in no_key.stderr

    missing_obj = cli("load", f"s3://{bucket}/nope.csv", "--table", table)
    assert missing_obj.returncode == 2
    assert "nope.csv" in missing_obj.stderr

    bad_usage = cli("load", uri)
    assert bad_usage.returncode == 2 and "--table" in bad_usage.stderr


def test_local_file_source(capsys: pytest.CaptureFixture[str], ddb: Any, table: str, tmp_path: Path) -> None:
    path = tmp_path / "local.csv"
    rows = simple_rows(500)
    path.write_bytes(csv_bytes(["pk", "n", "s"], rows))
    code, _s, err = run_cli(capsys, "load", str(path), "--table", table, "--type", "n=N", "--json")
    assert code == 0, err
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_rejects_to_s3_prefix(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    uri = put(s3, bucket, "in/r.csv", b"pk,n\na,1\nb,oops\nc,3\n")
    code, s, err = run_cli(
        capsys,
        "load",
        uri,
        "--table",
        table,
        "--type",
        "n=N",
        "--json",
        "--rejects",
        f"s3://{bucket}/rejects/",
    )
    assert code == 0, err
    assert s is not None
    assert s["rejects"].startswith(f"s3://{bucket}/rejects/") and s["rejects"].endswith(".jsonl")
    key = s["rejects"][len(f"s3://{bucket}/") :]
    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    (rej,) = [orjson.loads(x) for x in lines]
    assert (rej["row"], rej["offset"], rej["raw"]) == (2, len(b"pk,n\na,1\n"), "b,oops")
    assert "oops" in rej["reason"]
    assert sorted(by_pk(scan_all(ddb, table))) == ["a", "c"]


def test_validate_takes_no_checkpoint(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str
) -> None:
    uri = put(s3, bucket, "v.csv", b"pk\na\n")
    code, _, err = run_cli(capsys, "validate", uri, "--table", table, "--checkpoint", "cp.json")
    assert code == 2 and "--checkpoint" in err
    assert not Path("cp.json").exists()


def test_unwritable_checkpoint_or_rejects_path_fails_before_writing(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    uri = put(s3, bucket, "w.csv", b"pk\na\nb\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "load", uri, "--table", table, "--checkpoint", str(blocker / "cp.json"))
    assert code == 2 and "--checkpoint" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "load", uri, "--table", table, "--rejects", str(blocker / "rej"))
    assert code == 2 and "--rejects" in err
    assert scan_all(ddb, table) == []


@pytest.mark.parametrize(("body", "needle"), [(b"name,x\n", "'pk'"), (b"", "empty")])
def test_header_only_or_empty_object_is_checked_against_the_table(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str, body: bytes, needle: str
) -> None:
    uri = put(s3, bucket, "h.csv", body)
    code, _, err = run_cli(capsys, "load", uri, "--table", table)
    assert code == 2, err
    assert needle in err


def test_header_only_object_with_the_key_column_loads_nothing(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str
) -> None:
    uri = put(s3, bucket, "h2.csv", b"pk,x\n")
    code, s, err = run_cli(capsys, "load", uri, "--table", table, "--json")
    assert code == 0, err
    assert s is not None and s["rows_read"] == 0 and s["object"]["complete"] is True


def test_resume_refuses_a_local_file_that_changed(
    capsys: pytest.CaptureFixture[str], ddb: Any, table: str, tmp_path: Path
) -> None:
    path = tmp_path / "local.csv"
    path.write_bytes(csv_bytes(["pk", "n", "s"], simple_rows(50)))
    cp = tmp_path / "cp.json"
    code, _, err = run_cli(capsys, "load", str(path), "--table", table, "--checkpoint", str(cp))
    assert code == 0, err
    path.write_bytes(csv_bytes(["pk", "n", "s"], simple_rows(60)))
    code, _, err = run_cli(capsys, "load", str(path), "--table", table, "--resume", str(cp))
    assert code == 2 and "changed since the checkpoint" in err


def test_status_with_a_missing_ledger_table_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], bucket: str
) -> None:
    code, _, err = run_cli(capsys, "status", f"s3://{bucket}/k.csv", "--ledger-table", "no-such-ledger")
    assert code == 2
    assert "ResourceNotFoundException" in err and err.count("\n") == 1


def test_pipeline_that_must_stop_before_it_starts_hands_back_its_checkpoint(
    s3: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    import asyncio

    from loader import clients, pipeline
    from loader.config import CsvSpec, LoadConfig, SchemaSpec
    from loader.rejects import open_rejects
    from loader.source import open_source

    uri = put(s3, bucket, "late.csv", b"pk\na\nb\n")
    spec = CsvSpec()

    async def go() -> Any:
        return await pipeline.run(
            source=open_source(uri, s3_client=clients.s3_client(), spec=spec),
            config=LoadConfig(table=table),
            csv_spec=spec,
            schema=SchemaSpec(),
            keys=clients.describe_key_schema(clients.dynamodb_client(), table),
            sender=None,
            rejects=open_rejects(str(tmp_path), run_id="late"),
            should_stop=lambda _p: True,
        )

    result = asyncio.run(go())
    assert result.stopped == "stopped"
    assert (result.checkpoint.offset, result.checkpoint.next_row, result.counters.rows_read) == (0, 1, 0)
