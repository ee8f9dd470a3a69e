"""`s3ddb load` runs one pinned load spec: a resume runs what the checkpoint pinned, refuses options
that would change what lands in the table, and every exit says what happened (``--json`` too)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader import clients
from loader import spec as load_spec
from loader.config import SchemaSpec
from loader.models import Checkpoint
from tests.integration.test_cli_load import put, run_cli
from tests.support.aws import scan_all
from tests.support.data import by_pk, csv_bytes, simple_expected, simple_rows

ROWS = 20_000


def _stopped_load(uri: str, table: str, cp_path: Path, tmp_path: Path) -> Checkpoint:
    """A load with ``n`` typed N, stopped after a few progress calls: its checkpoint file."""
    spec = load_spec.LoadSpec(
        source=uri, table=table, schema=SchemaSpec(columns={"n": "N"}), rejects=str(tmp_path / "rej")
    )

    async def go() -> Any:
        seen: list[int] = []

        def stop(_: Any) -> bool:
            seen.append(1)
            return len(seen) >= 5

        async def save(cp: Checkpoint) -> None:
            await asyncio.to_thread(cp_path.write_bytes, cp.dumps())

        async with clients.open_dynamodb_sender(concurrency=8) as sender:
            return await load_spec.run(
                spec,
                keys=clients.describe_key_schema(clients.dynamodb_client(), table),
                sender=sender,
                run_id="first",
                s3_client=clients.s3_client(),
                knobs=load_spec.RunKnobs(chunk_bytes=64 * 1024),
                should_stop=stop,
                on_checkpoint=save,
            )

    result = asyncio.run(go())
    assert result.stopped == "stopped"
    cp = Checkpoint.loads(cp_path.read_bytes())
    assert cp.offset > 0 and not cp.complete and cp.spec is not None
    assert cp.spec["schema"]["columns"] == {"n": "N"} and cp.spec["version_id"]
    return cp


def test_a_resume_runs_the_pinned_spec_and_refuses_options_that_change_the_data(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    rows = simple_rows(ROWS)
    body = csv_bytes(["pk", "n", "s"], rows)
    uri = put(s3, bucket, "pinned.csv", body)
    cp_path = tmp_path / "cp.json"
    cp = _stopped_load(uri, table, cp_path, tmp_path)
    written = len(scan_all(ddb, table))
    base = ["load", uri, "--table", table, "--resume", str(cp_path), "--json"]

    refusals = [
        (["--type", "n=S"], 'schema.columns: {"n":"N"} pinned, {"n":"S"} given'),
        (["--delimiter", ";"], "csv.delimiter"),
        (["--encoding", "latin-1"], "csv.encoding"),
        (["--on-duplicate", "first"], "on_duplicate"),
        (["--no-header", "--columns", "pk,n,s"], "csv.header"),
    ]
    for extra, needle in refusals:
        code, s, err = run_cli(capsys, *base, *extra)
        assert code == 2, (extra, err)
        assert needle in err and "pinned" in err, (extra, err)
        assert s is not None and s["status"] == "error" and needle in s["error"], s
        assert len(err.strip().splitlines()) == 1, err
    other = put(s3, bucket, "other.csv", body)
    code, _, err = run_cli(capsys, "load", other, "--table", table, "--resume", str(cp_path))
    assert code == 2 and f"is the checkpoint of {uri}, not of {other}" in err, err
    assert len(scan_all(ddb, table)) == written  # nothing refused wrote anything

    # no data options: the pinned ones (n stays N); knobs may change
    code, s, err = run_cli(
        capsys, *base, "--concurrency", "8", "--max-wcu", "100000", "--checkpoint", str(cp_path)
    )
    assert code == 0, err
    assert s is not None and s["object"]["complete"] and s["object"]["totals"]["rows_read"] == ROWS
    assert s["rows_read"] == ROWS - cp.counters.rows_read
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)  # every n is a number
    final = Checkpoint.loads(cp_path.read_bytes())
    assert final.complete and final.spec is not None and cp.spec is not None
    assert {k: final.spec[k] for k in load_spec.DATA_FIELDS} == {k: cp.spec[k] for k in load_spec.DATA_FIELDS}
    assert (final.spec["concurrency"], final.spec["max_wcu"]) == (8, 100000.0)


def test_a_resume_stays_on_the_pinned_version_after_the_object_is_overwritten(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    rows = simple_rows(ROWS)
    body = csv_bytes(["pk", "n", "s"], rows)
    uri = put(s3, bucket, "over.csv", body)
    cp_path = tmp_path / "cp.json"
    _stopped_load(uri, table, cp_path, tmp_path)
    put(s3, bucket, "over.csv", csv_bytes(["pk", "n", "s"], [["zz", "1", "new"]]))
    code, s, err = run_cli(capsys, "load", uri, "--table", table, "--resume", str(cp_path), "--json")
    assert code == 0, err
    assert s is not None and s["object"]["totals"]["rows_read"] == ROWS
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


@pytest.mark.parametrize("key", ["k?versionId=abc.csv", "a b/#1 100%+ü.csv"])
def test_any_key_is_taken_literally_and_a_version_goes_in_version_id(
    key: str, capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str
) -> None:
    old = put(s3, bucket, key, b"pk,s\nold,1\n")
    first = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    put(s3, bucket, key, b"pk,s\nnew,2\n")
    code, s, err = run_cli(capsys, "load", old, "--table", table, "--json")
    assert code == 0, err
    assert s is not None and s["object"]["source"] == f"s3://{bucket}/{key}"
    code, s, err = run_cli(capsys, "load", old, "--table", table, "--version-id", first, "--json")
    assert code == 0, err
    assert s is not None and s["object"]["version_id"] == first
    assert sorted(i["pk"]["S"] for i in scan_all(ddb, table)) == ["new", "old"]


def test_json_prints_an_error_object_on_every_exit(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str
) -> None:
    uri = put(s3, bucket, "e.csv", b"pk,s\na,1\n")
    cases = [
        (["load", uri, "--table", "no-such-table-x", "--json"], 2, "does not exist"),
        (["load", uri, "--table", table, "--max-wcu", "nan", "--json"], 2, "max-wcu"),
        (["load", uri, "--json"], 2, "--table"),  # a usage error
        (["load", f"s3://{bucket}/missing.csv", "--table", table, "--json"], 2, "missing.csv"),
    ]
    for argv, code, needle in cases:
        got, s, err = run_cli(capsys, *argv)
        assert got == code, (argv, err)
        assert s is not None and s["status"] == "error" and s["exit_code"] == code, (argv, s)
        assert needle in s["error"] and s["items_written"] == 0, (argv, s)
        assert "Traceback" not in err


def test_error_messages_escape_control_characters_from_the_data(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str
) -> None:
    uri = put(s3, bucket, "ctl.csv", b"pk,\x1b[31mred\x07,s\na,1,2\n")
    code, _, err = run_cli(capsys, "load", uri, "--table", table, "--type", "missing=N")
    assert code == 2, err
    assert "\x1b" not in err and "\x07" not in err, repr(err)
    assert "\\x1b[31mred\\x07" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ({"offset": -5}, "offset"),
        ({"next_row": 0}, "next_row"),
        ({"counters": {"rows_read": -1}}, "negative"),
        ({"format_version": 99}, "format_version"),
        ({"spec": {"source": 3}}, "spec"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_and_exit_2(
    edit: dict[str, Any],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    s3: Any,
    bucket: str,
    table: str,
    tmp_path: Path,
) -> None:
    uri = put(s3, bucket, "d.csv", b"pk,s\na,1\n")
    good = Checkpoint(
        source=uri,
        table=table,
        version_id=None,
        etag=None,
        size=9,
        header=["pk", "s"],
        offset=5,
        next_row=1,
        counters=Checkpoint.loads(
            orjson.dumps(
                {
                    "format_version": 2,
                    "source": uri,
                    "table": table,
                    "header": [],
                    "offset": 0,
                    "next_row": 1,
                    "counters": {},
                }
            )
        ).counters,
    ).to_dict()
    path = tmp_path / "cp.json"
    path.write_bytes(orjson.dumps({**good, **edit}))
    code, _, err = run_cli(capsys, "load", uri, "--table", table, "--resume", str(path))
    assert code == 2, err
    assert needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_the_same_options_spelled_otherwise_are_not_differences(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    rows = simple_rows(ROWS)
    uri = put(s3, bucket, "same.csv", csv_bytes(["pk", "n", "s"], rows))
    cp_path = tmp_path / "cp.json"
    _stopped_load(uri, table, cp_path, tmp_path)
    # UTF8 is utf-8, a column typed S is a column not named, none is what infer gives a .csv
    same = ["--encoding", "UTF8", "--type", "n=N", "--type", "s=S", "--compression", "none"]
    code, s, err = run_cli(capsys, "load", uri, "--table", table, "--resume", str(cp_path), "--json", *same)
    assert code == 0, err
    assert s is not None and s["object"]["totals"]["rows_read"] == ROWS
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


def test_a_checkpoint_of_an_older_s3ddb_resumes_with_the_command_line_and_says_so(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    rows = simple_rows(ROWS)
    uri = put(s3, bucket, "old.csv", csv_bytes(["pk", "n", "s"], rows))
    cp_path = tmp_path / "cp.json"
    _stopped_load(uri, table, cp_path, tmp_path)
    old = orjson.loads(cp_path.read_bytes())
    del old["spec"]
    cp_path.write_bytes(orjson.dumps({**old, "format_version": 1}))
    code, s, err = run_cli(
        capsys, "load", uri, "--table", table, "--resume", str(cp_path), "--type", "n=N", "--json"
    )
    assert code == 0, err
    assert "pins no load spec" in err and "must be the ones the load started with" in err
    assert s is not None and s["object"]["totals"]["rows_read"] == ROWS
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)
