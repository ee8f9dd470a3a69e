"""One object across N shard chains through the Lambda emulator: a 400k-row object cut in 4 whose
shards each continue across hops, a prefix of 20 objects cut in 2 each under the backfill's bound,
a shard that fails and is resumed alone, one write budget shared by the shards and handed on, and
the objects that load as one chain whatever ``parallel`` says. Tables are compared row for row
with what the objects hold; waiting is polling the ledger under a bounded deadline."""

from __future__ import annotations

import gzip
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from lambda_src.admin import send_backfill, status
from lambda_src.ledger import Ledger, target_key
from s3ddb import cli
from tests.e2e.conftest import (
    assert_invariant,
    function_settings,
    make_csv,
    put_object,
    table_as_dict,
    wait_final,
)

FUNCTION = "s3ddb-loader"
#: 4 shards of the 400k-row object write 100k rows each, at once: on 2 cores DynamoDB Local takes
#: 3,500-11,000 items/s from them, 35-115 s a shard, so a 10 s function timeout makes every shard
#: continue across several hops
BIG_TIMEOUT_S = 10.0


def _log_records(emu: Any) -> list[dict[str, Any]]:
    """The function's structured log lines (powertools JSON) in the emulator's output."""
    records = []
    for line in emu.log().splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            rec = orjson.loads(line[start:])
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "message" in rec:
            records.append(rec)
    return records


def _shard_items(ddb: Any, ledger_table: str, uri: str, table: str, version: str) -> list[Any]:
    ledger = Ledger(ddb, ledger_table)
    parent = ledger.get(uri, target_key(table, version))
    assert parent is not None and parent.is_parent
    return ledger.shards_of(parent)


def test_a_400k_row_object_in_4_shards_that_each_continue_across_hops_loads_exact(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    rows = 400_000
    emu = start_emulator(function_settings(ledger_table, table), timeout=BIG_TIMEOUT_S)
    body, expected = make_csv(rows, tag="big")
    uri = put_object(s3, bucket, "big.csv", body)
    out = send_backfill(uri, table=table, function=FUNCTION, lambda_client=emu.client, parallel=4)
    assert (out["status"], out["parallel"], out["shards"], out["lanes"]) == ("accepted", 4, 4, 0), out
    st = wait_final(ddb, ledger_table, uri, timeout_s=900, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert (st["rows_read"], st["items_written"], st["rows_rejected"]) == (rows, rows, 0), st
    assert (st["offset"], st["object_size"]) == (len(body), len(body)), st
    assert_invariant(st)
    shards = st["shards"]
    assert [s["shard"] for s in shards] == [0, 1, 2, 3], shards
    # every shard its own chain, COMPLETED after continuing across hops of its own
    assert all(s["status"] == "COMPLETED" and s["hops"] >= 2 for s in shards), shards
    assert len({s["chain_id"] for s in shards}) == 4
    assert sum(s["rows_read"] for s in shards) == rows and st["hops"] == sum(s["hops"] for s in shards)
    # the ranges tile the object after its header row
    assert shards[0]["range"][0] == body.index(b"\n") + 1 and shards[-1]["range"][1] == len(body)
    assert all(a["range"][1] == b["range"][0] for a, b in pairwise(shards)), shards
    items = _shard_items(ddb, ledger_table, uri, table, st["version"])
    assert all(len(i.token) == 32 and i.token not in emu.log() for i in items)  # tokens never logged
    got = table_as_dict(ddb, table)
    assert len(got) == rows and got == expected


def test_a_prefix_of_20_objects_in_2_shards_each_loads_exact_with_one_aggregate_status(
    s3: Any,
    ddb: Any,
    bucket: str,
    table: str,
    ledger_table: str,
    start_emulator: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 8 chains at once: 4 objects of 2 shards each
    emu = start_emulator(function_settings(ledger_table, table, S3DDB_MAX_CHAINS="8"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", emu.url)
    expected: dict[str, dict[str, Any]] = {}
    for i in range(20):
        body, rows = make_csv(150 + i, tag=f"o{i:02d}-")
        put_object(s3, bucket, f"in/{i:02d}.csv", body)
        expected.update(rows)
    prefix = f"s3://{bucket}/in/"
    # refused before anything is sent, in one line
    assert cli.main(["invoke", prefix, "--table", table, "--parallel", "0"]) == 2
    assert "--parallel must be in 1..64" in capsys.readouterr().err and emu.attempts() == []
    assert cli.main(["invoke", prefix, "--table", table, "--type", "n=N", "--parallel", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["status"], answer["lanes"], answer["parallel"]) == ("accepted", 4, 2), answer

    st = wait_final(ddb, ledger_table, prefix, timeout_s=300, emu=emu)
    assert st["status"] == "COMPLETED", st
    total = sum(150 + i for i in range(20))
    assert (st["objects"], st["completed"], st["running"], st["failed"], st["lanes_done"]) == (
        20,
        20,
        0,
        0,
        4,
    )
    assert (st["rows_read"], st["items_written"], st["rows_rejected"]) == (total, total, 0), st
    assert_invariant(st)
    assert all(load["shards"] == 2 and load["status"] == "COMPLETED" for load in st["loads"]), st["loads"]
    assert table_as_dict(ddb, table) == expected
    # one object's own status: its two shards, each COMPLETED, adding up to it
    one = status(f"{prefix}07.csv", ledger_table=ledger_table, ddb_client=ddb)
    assert [(s["shard"], s["status"]) for s in one["shards"]] == [(0, "COMPLETED"), (1, "COMPLETED")]
    assert sum(s["rows_read"] for s in one["shards"]) == one["rows_read"] == 157
    # never more than S3DDB_MAX_CHAINS shards ran at once: at most 4 objects were RUNNING together
    assert max(_running_objects(emu)) <= 4

    monkeypatch.setenv("S3DDB_LEDGER_TABLE", ledger_table)
    assert cli.main(["status", prefix, "--table", table, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 20
    assert cli.main(["status", prefix, "--table", table]) == 0
    text = capsys.readouterr().out
    assert "completed              20" in text and text.count("COMPLETED  s3://") == 20, text
    assert cli.main(["status", f"{prefix}07.csv"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("shard ")]
    assert len(lines) == 2 and all("COMPLETED" in line for line in lines), lines


def _running_objects(emu: Any) -> list[int]:
    """How many objects had a load started and not settled, after each start or settle the log
    shows (in log order, which is each process's order of writes)."""
    running: set[str] = set()
    counts = [0]
    for rec in _log_records(emu):
        msg = rec.get("message")
        if msg == "sharded load started":
            running.add(str(rec.get("object")))
        elif isinstance(msg, str) and msg.startswith("sharded load "):
            running.discard(str(rec.get("object")))
        counts.append(len(running))
    return counts


def test_a_failed_shard_fails_its_load_and_is_resumed_alone(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects"
    emu = start_emulator(function_settings(ledger_table, table, S3DDB_REJECTS=str(rejects)))
    body, expected = make_csv(400, tag="f")
    bad = [f"bad{i:02d},not-a-number,x" for i in range(8)]  # the last rows: all in the last shard
    body += ("\n".join(bad) + "\n").encode()
    uri = put_object(s3, bucket, "fails.csv", body)
    out = send_backfill(
        uri, table=table, function=FUNCTION, lambda_client=emu.client, parallel=2, max_rejects=3
    )
    assert (out["status"], out["shards"]) == ("accepted", 2), out
    st = wait_final(ddb, ledger_table, uri, timeout_s=120, emu=emu)
    assert st["status"] == "FAILED", st
    first, second = st["shards"]
    assert first["status"] == "COMPLETED" and second["status"] == "FAILED", st["shards"]
    assert st["reason"].startswith("shard 1 (bytes ") and "TooManyRejectsError" in st["reason"], st
    assert "send the backfill again" in st["reason"]
    before = {i.shard: i for i in _shard_items(ddb, ledger_table, uri, table, st["version"])}

    # sent again with room for the rejects: shard 1 alone resumes, from its checkpoint
    out = send_backfill(
        uri, table=table, function=FUNCTION, lambda_client=emu.client, parallel=2, max_rejects=100
    )
    assert (out["status"], out["resumed_shards"]) == ("accepted", [1]), out
    st = wait_final(ddb, ledger_table, uri, timeout_s=120, emu=emu)
    assert st["status"] == "COMPLETED", st
    after = {i.shard: i for i in _shard_items(ddb, ledger_table, uri, table, st["version"])}
    assert after[0] == before[0]  # the completed shard was not touched
    assert after[1].chain_id == before[1].chain_id and after[1].hops > before[1].hops
    assert after[1].knobs == {"max_rejects": 100}
    assert (st["rows_read"], st["items_written"], st["rows_rejected"]) == (408, 400, 8), st
    assert_invariant(st)
    assert table_as_dict(ddb, table) == expected
    # the shard's rejects: exact absolute offsets, and the shard they came from
    assert st["rejects"] and "shard_start" in st["rejects_note"]
    found = [orjson.loads(line) for path in st["rejects"] for line in Path(path).read_bytes().splitlines()]
    start = after[1].byte_range[0] if after[1].byte_range else -1
    for r in found:
        assert r["shard_start"] == start
        assert body[r["offset"] :].startswith(r["raw"].encode()), r
    assert {r["raw"] for r in found} == set(bad)


def test_the_write_budget_is_the_loads_split_among_the_running_shards_and_handed_on(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    # 4 calls in flight (100 items): under the ceiling, the writes queued when a shard reaches the
    # end of its range drain within a hop
    emu = start_emulator(function_settings(ledger_table, table, S3DDB_MAX_WCU="100", S3DDB_CONCURRENCY="4"))
    # both halves hold as many bytes, but shard 0's 250 long rows cost 250 write units (5 s at its
    # share) and shard 1's ~1,200 shorter ones ~1,200: shard 0 finishes first and hands its share on
    lines = ["pk,n,s"] + [f"a{i:04d},{i},{'x' * 280}" for i in range(250)]
    long_part = sum(len(x) + 1 for x in lines)
    i = 0
    while sum(len(x) + 1 for x in lines) < 2 * long_part:
        lines.append(f"b{i:05d},{i},{'y' * 45}")
        i += 1
    body = ("\n".join(lines) + "\n").encode()
    uri = put_object(s3, bucket, "budget.csv", body)
    out = send_backfill(uri, table=table, function=FUNCTION, lambda_client=emu.client, parallel=2)
    assert (out["status"], out["shards"]) == ("accepted", 2), out
    st = wait_final(ddb, ledger_table, uri, timeout_s=180, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert st["rows_read"] == len(lines) - 1 == len(table_as_dict(ddb, table))
    logs = _log_records(emu)
    hops = [r for r in logs if r["message"] == "hop started" and r.get("shard") is not None]
    assert hops, logs[-20:]
    # every hop of a shard got the load's ceiling divided by the shards running
    for h in hops:
        assert h["max_wcu"] == 100 and h["wcu_share"] * h["shards_running"] == pytest.approx(100), h
    firsts = {h["shard"]: h for h in reversed(hops)}
    assert {k: (h["wcu_share"], h["shards_running"]) for k, h in firsts.items()} == {
        0: (50, 2),
        1: (50, 2),
    }, firsts
    assert sum(h["wcu_share"] for h in firsts.values()) == 100  # the shares add up to the ceiling
    # shard 0 finished: shard 1 took the whole ceiling while it ran
    handed = [r for r in logs if r["message"] == "write budget handed on"]
    assert any(r["shard"] == 1 and r["wcu_share"] == 100 and r["shards_running"] == 1 for r in handed), handed
    items = {i.shard: i for i in _shard_items(ddb, ledger_table, uri, table, st["version"])}
    assert (items[1].wcu_share, items[1].shards_running) == (100, 1)


def test_a_compressed_object_and_one_too_small_to_cut_load_as_one_chain_and_say_why(
    s3: Any, ddb: Any, bucket: str, table_factory: Any, ledger_table: str, start_emulator: Any
) -> None:
    gz_table, small_table = table_factory(), table_factory()
    emu = start_emulator(function_settings(ledger_table, gz_table))
    body, expected = make_csv(300, tag="gz")
    gz = put_object(s3, bucket, "data.csv.gz", gzip.compress(body))
    out = send_backfill(gz, table=gz_table, function=FUNCTION, lambda_client=emu.client, parallel=4)
    assert (out["status"], out["shards"], out["lanes"]) == ("accepted", 1, 1), out
    assert "gzip object cannot be cut by bytes" in out["note"], out
    small_body, small_expected = make_csv(1, tag="one")
    small = put_object(s3, bucket, "one.csv", small_body)
    out = send_backfill(small, table=small_table, function=FUNCTION, lambda_client=emu.client, parallel=4)
    assert (out["status"], out["shards"]) == ("accepted", 1), out
    assert "one chain" in out["note"], out
    for uri, tbl, want in ((gz, gz_table, expected), (small, small_table, small_expected)):
        st = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
        assert st["status"] == "COMPLETED" and "shards" not in st, st
        assert table_as_dict(ddb, tbl) == want
    # parallel past S3DDB_MAX_CHAINS (4 here) is refused at the door
    out = send_backfill(small, table=small_table, function=FUNCTION, lambda_client=emu.client, parallel=5)
    assert out["status"] == "refused" and "S3DDB_MAX_CHAINS=4" in out["reason"], out
