"""The handler chain end to end: S3 notification or backfill in, hops through the emulator,
the table exactly equal to the CSV, the ledger telling the truth."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from lambda_src.admin import notify, send_backfill, status
from tests.e2e.conftest import assert_invariant, make_csv, table_as_dict, wait_final
from tests.e2e.conftest import function_settings as _settings
from tests.e2e.conftest import put_object as _put

FUNCTION = "s3ddb-loader"
#: S3DDB_MAX_WCU caps a hop of < 10 s at < 11 x 150 = 1650 one-unit rows, so BIG_ROWS needs >= 3 hops
BIG_WCU = "150"
BIG_ROWS = 3600


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_a_load_that_needs_three_hops_ends_exact(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any, sender: str
) -> None:
    emu = start_emulator(_settings(ledger_table, table, S3DDB_MAX_WCU=BIG_WCU, S3DDB_SENDER=sender))
    body, expected = make_csv(BIG_ROWS)
    uri = _put(s3, bucket, "big.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=150, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert st["hops"] >= 3, st
    assert (st["rows_read"], st["items_written"], st["offset"], st["object_size"]) == (
        BIG_ROWS,
        BIG_ROWS,
        len(body),
        len(body),
    )
    assert_invariant(st)
    assert table_as_dict(ddb, table) == expected
    # the runner closes the container's HTTP sessions at exit; a stale lease is not reported
    assert "Unclosed client session" not in emu.log()
    assert st["stale"] is False and st["last_error"] == ""
    assert f"writing with the {sender} sender" in emu.log()


def test_the_same_notification_twice_makes_one_chain(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(_settings(ledger_table, table))
    body, expected = make_csv(300)
    uri = _put(s3, bucket, "twice.csv", body)
    sent = notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    emu.client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=json.dumps(sent["event"]))
    st = wait_final(ddb, ledger_table, uri, timeout_s=60, emu=emu)
    deadline = time.monotonic() + 30
    while len([a for a in emu.attempts() if a["outcome"] == "ok"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the second delivery to be handled, bounded
    assert len([a for a in emu.attempts() if a["outcome"] == "ok"]) == 2, emu.attempts()
    # one chain, whatever number of hops a busy machine needed for it
    assert (st["status"], st["versions"]) == ("COMPLETED", 1), st
    assert (st["rows_read"], st["items_written"]) == (300, 300)  # not 600
    assert emu.log().count('"chain started"') == 1
    assert table_as_dict(ddb, table) == expected


def test_a_hop_killed_by_its_timeout_is_retried_and_the_load_is_exact(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    # the first attempt is told it has a minute more than it has: it is killed before it checkpoints
    emu = start_emulator(
        _settings(ledger_table, table, S3DDB_MAX_WCU="300"),
        "--fault-first-attempts",
        "1",
        "--fault-extra-ms",
        "60000",
    )
    rows = 3000
    body, expected = make_csv(rows, tag="kill")
    uri = _put(s3, bucket, "killed.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=120, emu=emu)
    outcomes = [(a["attempt"], a["outcome"]) for a in emu.attempts()]
    assert (1, "timeout") in outcomes, outcomes
    assert st["status"] == "COMPLETED", st
    assert st["reclaims"] >= 1, st  # the retry resumed the hop it held, from the ledger
    assert (st["rows_read"], st["items_written"]) == (rows, rows)  # rows re-written are not re-counted
    assert_invariant(st)
    assert table_as_dict(ddb, table) == expected


@pytest.mark.parametrize("key", ["dir one/a b+c.csv", "ünï cødé/データ+1.csv"])
def test_url_encoded_keys(
    key: str, s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(_settings(ledger_table, table))
    body, expected = make_csv(50, tag=uuid.uuid4().hex[:4])
    uri = _put(s3, bucket, key, body)
    sent = notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    assert sent["event"]["Records"][0]["s3"]["object"]["key"] != key  # it went over the wire encoded
    st = wait_final(ddb, ledger_table, uri, timeout_s=60, emu=emu)
    assert (st["status"], st["rows_read"]) == ("COMPLETED", 50), st
    assert table_as_dict(ddb, table) == expected


def test_prefix_backfill_loads_every_object_under_it_and_nothing_else(
    s3: Any, ddb: Any, bucket: str, table_factory: Any, ledger_table: str, start_emulator: Any
) -> None:
    table = table_factory()
    emu = start_emulator(
        _settings(ledger_table, "unused-default", S3DDB_MAX_CHAINS="2", S3DDB_ALLOWED_TABLES=f"{table}")
    )
    expected: dict[str, Any] = {}
    uris = []
    for i in range(3):
        body, exp = make_csv(80, tag=f"o{i}-")
        expected.update(exp)
        uris.append(_put(s3, bucket, f"in/part-{i}.csv", body))
    outside = _put(s3, bucket, "other/x.csv", make_csv(10, tag="x-")[0])
    out = send_backfill(f"s3://{bucket}/in/", table=table, function=FUNCTION, lambda_client=emu.client)
    assert (out["status"], out["lanes"]) == ("accepted", 2), out
    for uri in uris:
        st = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
        assert (st["status"], st["rows_read"], st["table"]) == ("COMPLETED", 80, table), st
    assert status(outside, ledger_table=ledger_table, ddb_client=ddb)["status"] == "NOT_FOUND"
    assert table_as_dict(ddb, table) == expected


def test_backfill_outside_the_allow_lists_is_refused_and_logged(
    s3: Any, ddb: Any, bucket: str, table_factory: Any, ledger_table: str, start_emulator: Any
) -> None:
    allowed, other = table_factory(), table_factory()
    emu = start_emulator(
        _settings(
            ledger_table, allowed, S3DDB_ALLOWED_BUCKETS="some-other-bucket", S3DDB_ALLOWED_TABLES=allowed
        )
    )
    uri = _put(s3, bucket, "x.csv", make_csv(5)[0])
    out = send_backfill(uri, table=other, function=FUNCTION, lambda_client=emu.client)
    assert out["status"] == "refused" and "S3DDB_ALLOWED_BUCKETS" in out["reason"], out
    out = send_backfill(
        "s3://some-other-bucket/x.csv", table=other, function=FUNCTION, lambda_client=emu.client
    )
    assert out["status"] == "refused" and "S3DDB_ALLOWED_TABLES" in out["reason"], out
    assert "refused" in emu.log()
    assert status(uri, ledger_table=ledger_table, ddb_client=ddb)["status"] == "NOT_FOUND"
    assert table_as_dict(ddb, other) == {}


def test_max_hops_stops_a_chain_with_failed_and_a_reason_and_raising_it_resumes(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(_settings(ledger_table, table, S3DDB_MAX_WCU=BIG_WCU, S3DDB_MAX_HOPS="2"))
    body, expected = make_csv(BIG_ROWS, tag="mh")
    uri = _put(s3, bucket, "runaway.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
    assert (st["status"], st["hops"]) == ("FAILED", 2), st
    assert "S3DDB_MAX_HOPS=2" in st["reason"]
    assert 0 < st["rows_read"] < BIG_ROWS and st["offset"] < len(body)
    assert_invariant(st)
    got = table_as_dict(ddb, table)
    assert len(got) >= st["items_written"]  # everything below the committed offset is in the table
    assert all(got[k] == expected[k] for k in got)

    # raised: the same notification resumes the chain from its committed offset and completes it
    emu2 = start_emulator(_settings(ledger_table, table, S3DDB_MAX_WCU=BIG_WCU, S3DDB_MAX_HOPS="50"))
    notify(uri, function=FUNCTION, lambda_client=emu2.client, s3_client=s3)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        done = status(uri, ledger_table=ledger_table, ddb_client=ddb)
        if done["status"] == "COMPLETED":
            break
        time.sleep(0.25)  # a polling interval, bounded by the deadline
    assert done["status"] == "COMPLETED", f"{done}\n{emu2.log()[-4000:]}"
    assert done["hops"] > st["hops"] and done["reason"] == "" and done["last_error"] == ""
    assert (done["rows_read"], done["items_written"], done["offset"]) == (BIG_ROWS, BIG_ROWS, len(body))
    assert_invariant(done)
    assert table_as_dict(ddb, table) == expected
