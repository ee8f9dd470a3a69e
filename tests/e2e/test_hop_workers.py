"""Hops that run worker processes (S3DDB_HOP_WORKERS=2) through the Lambda emulator: a one-chain
load and a 2-shard load of objects whose text fields span lines, each chain continuing across
several hops of 2 workers. The tables are compared row for row with what the objects hold."""

from __future__ import annotations

from typing import Any

import orjson

from lambda_src.admin import send_backfill
from lambda_src.ledger import Ledger, target_key
from tests.e2e.conftest import assert_invariant, function_settings, put_object, table_as_dict, wait_final
from tests.support.data import multiline_csv

FUNCTION = "s3ddb-loader"
#: 2 workers load ~16 MB of a chain in 10-20 s on this machine: a 12 s function timeout makes every
#: chain continue across several hops
TIMEOUT_S = 12.0
ROWS = 200_000


def _worker_hops(emu: Any) -> int:
    """Hops the function ran with 2 worker processes (its "hop started" log records that say so)."""
    hops = 0
    for line in emu.log().splitlines():
        start = line.find("{")
        try:
            rec = orjson.loads(line[start:]) if start >= 0 else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("message") == "hop started" and rec.get("workers") == 2:
            hops += 1
    return hops


def test_a_one_chain_load_with_2_workers_a_hop_continues_across_hops_exact(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(function_settings(ledger_table, table, S3DDB_HOP_WORKERS="2"), timeout=TIMEOUT_S)
    body, expected = multiline_csv(ROWS, tag="one", pad=110)
    assert len(body) >= 2 * (8 << 20)  # enough for two workers
    uri = put_object(s3, bucket, "one.csv", body)
    out = send_backfill(uri, table=table, function=FUNCTION, lambda_client=emu.client)
    assert out["status"] == "accepted", out
    st = wait_final(ddb, ledger_table, uri, timeout_s=900, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert (st["rows_read"], st["items_written"], st["rows_rejected"]) == (ROWS, ROWS, 0), st
    assert_invariant(st)
    assert (st["offset"], st["object_size"]) == (len(body), len(body)), st
    assert st["hops"] >= 2, st
    # the sub-ranges, planned once, tile the data after the header; each complete
    subs = st["workers"]
    assert len(subs) == 2 and all(s["complete"] for s in subs), subs
    assert subs[0]["range"][0] == body.index(b"\n") + 1 and subs[-1]["range"][1] == len(body)
    assert subs[0]["range"][1] == subs[1]["range"][0]
    assert sum(s["rows_read"] for s in subs) == ROWS
    assert _worker_hops(emu) >= 2  # hops that ran 2 workers
    got = table_as_dict(ddb, table)
    assert len(got) == ROWS and got == expected


def test_shard_chains_of_a_parallel_load_run_2_workers_a_hop_and_load_exact(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(function_settings(ledger_table, table, S3DDB_HOP_WORKERS="2"), timeout=TIMEOUT_S)
    body, expected = multiline_csv(ROWS, tag="par", pad=190)
    assert len(body) >= 4 * (8 << 20)  # enough for two workers in each of two shards
    uri = put_object(s3, bucket, "par.csv", body)
    out = send_backfill(uri, table=table, function=FUNCTION, lambda_client=emu.client, parallel=2)
    assert (out["status"], out["shards"]) == ("accepted", 2), out
    st = wait_final(ddb, ledger_table, uri, timeout_s=900, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert (st["rows_read"], st["items_written"], st["rows_rejected"]) == (ROWS, ROWS, 0), st
    assert_invariant(st)
    assert (st["offset"], st["object_size"]) == (len(body), len(body)), st
    shards = st["shards"]
    assert [s["status"] for s in shards] == ["COMPLETED", "COMPLETED"], shards
    assert all(s["hops"] >= 2 for s in shards), shards
    assert _worker_hops(emu) >= 4
    # each shard chain ran its hops as 2 workers over sub-ranges of its own range
    parent = Ledger(ddb, ledger_table).get(uri, target_key(table, st["version"]))
    assert parent is not None
    for shard in Ledger(ddb, ledger_table).shards_of(parent):
        rng = shard.byte_range
        assert rng is not None and shard.sub_ranges is not None, shard
        subs = shard.to_status()["workers"]
        assert len(subs) == 2 and all(s["complete"] for s in subs), subs
        assert (subs[0]["range"][0], subs[-1]["range"][1]) == rng
        assert sum(s["rows_read"] for s in subs) == shard.counters.rows_read
        assert shard.counters.balanced
    assert sum(s["rows_read"] for s in shards) == ROWS
    got = table_as_dict(ddb, table)
    assert len(got) == ROWS and got == expected
