"""A backfill with ``shuffle_window`` through the Lambda emulator: an object sorted by key loads
exactly across hops, though every deadline leaves a window open for the next hop to read again."""

from __future__ import annotations

from typing import Any

from lambda_src.admin import send_backfill
from lambda_src.ledger import Ledger, target_key
from tests.e2e.conftest import (
    assert_invariant,
    function_settings,
    make_csv,
    put_object,
    table_as_dict,
    wait_final,
)

FUNCTION = "s3ddb-loader"
ROWS = 150_000
#: DynamoDB Local takes 3,500-11,000 items/s on 2 cores: 150k rows are several 10 s hops
TIMEOUT_S = 10.0


def test_a_sorted_object_with_a_shuffle_window_continues_across_hops_exactly(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(function_settings(ledger_table, table), timeout=TIMEOUT_S)
    body, expected = make_csv(ROWS, tag="sorted")  # keys in sorted order
    uri = put_object(s3, bucket, "sorted.csv", body)
    out = send_backfill(uri, table=table, function=FUNCTION, lambda_client=emu.client, shuffle_window=20_000)
    assert out["status"] == "accepted", out
    st = wait_final(ddb, ledger_table, uri, timeout_s=600, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert st["hops"] >= 2, st  # it did continue across deadlines
    assert (st["rows_read"], st["items_written"], st["rows_rejected"]) == (ROWS, ROWS, 0), st
    assert_invariant(st)
    assert table_as_dict(ddb, table) == expected
    item = Ledger(ddb, ledger_table).get(uri, target_key(table, st["version"]))
    assert item is not None and item.knobs["shuffle_window"] == 20_000
    assert item.spec is not None and item.spec["shuffle_window"] == 0  # the knob, not the pinned spec


def test_a_window_no_hop_can_write_whole_fails_the_chain_naming_the_window(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    """A window larger than what one hop writes never lets the mark move: the chain must not hop
    forever, and its reason must name the window, not only the timeout."""
    emu = start_emulator(function_settings(ledger_table, table), timeout=TIMEOUT_S)
    body, _ = make_csv(ROWS, tag="huge")
    uri = put_object(s3, bucket, "huge-window.csv", body)
    out = send_backfill(
        uri, table=table, function=FUNCTION, lambda_client=emu.client, shuffle_window=1_000_000
    )
    assert out["status"] == "accepted", out
    st = wait_final(ddb, ledger_table, uri, timeout_s=600, emu=emu)
    assert st["status"] == "FAILED", st
    assert "no progress" in st["reason"] and "shuffle window (1000000 rows" in st["reason"], st
    assert st["offset"] == 0 and st["rows_read"] == 0, st
