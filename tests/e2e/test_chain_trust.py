"""The chain as trustworthy as the CLI: hops that use their time at a 10 s timeout, events that
cannot redirect a chain, a chain keyed by object version and table, options pinned at the start,
CSV options that reach the function, and events refused at the door with the reason."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lambda_src.admin import notify, send_backfill, status
from lambda_src.ledger import Ledger, target_key
from s3ddb import cli
from tests.e2e.conftest import (
    FUNCTION_TIMEOUT_S,
    assert_invariant,
    function_settings,
    make_csv,
    put_object,
    table_as_dict,
    wait_attempts,
    wait_final,
)

FUNCTION = "s3ddb-loader"


def _invoke(emu: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A RequestResponse invoke; the handler's answer, or its error as ``{"error": ...}``."""
    resp = emu.client.invoke(
        FunctionName=FUNCTION, InvocationType="RequestResponse", Payload=json.dumps(payload)
    )
    body = json.loads(resp["Payload"].read() or b"null")
    if resp.get("FunctionError"):
        return {"error": body}
    assert isinstance(body, dict), body
    return body


def test_hops_use_most_of_a_10_s_timeout_at_the_default_concurrency_and_margin(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    rows = 250_000
    settings = function_settings(ledger_table, table)
    del settings["S3DDB_SAFETY_MARGIN_MS"]  # the default (10 s): capped to a share of a 10 s hop
    emu = start_emulator(settings)
    body, expected = make_csv(rows, tag="t")
    uri = put_object(s3, bucket, "big.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=600, emu=emu)
    assert st["status"] == "COMPLETED", st
    assert (st["rows_read"], st["items_written"], st["offset"]) == (rows, rows, len(body)), st
    assert_invariant(st)
    hops = [a for a in wait_attempts(emu, st["hops"]) if a["outcome"] == "ok"]
    assert len(hops) == st["hops"] >= 2, (hops, st)
    # every hop but the last ran until its deadline: most of the 10 s went into writing
    for hop in hops[:-1]:
        assert hop["seconds"] >= 0.55 * FUNCTION_TIMEOUT_S, hops
    assert "S3DDB_SAFETY_MARGIN_MS" in emu.log()  # the cap is said in the log
    last = Ledger(ddb, ledger_table).get(uri, target_key(table, st["version"]))
    assert last is not None and len(last.token) == 32
    assert last.token not in emu.log()  # the hop tokens are never logged
    got = table_as_dict(ddb, table)
    assert len(got) == rows and got == expected


def test_a_timeout_too_short_for_one_round_fails_the_chain_at_its_first_hop_with_the_fix(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    settings = function_settings(ledger_table, table)
    del settings["S3DDB_SAFETY_MARGIN_MS"]
    emu = start_emulator(settings, timeout=2.0)
    body, _ = make_csv(2000, tag="short")
    uri = put_object(s3, bucket, "short.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=60, emu=emu)
    assert (st["status"], st["hops"], st["items_written"]) == ("FAILED", 1, 0), st
    assert "timeout" in st["reason"] and "S3DDB_SAFETY_MARGIN_MS" in st["reason"], st
    attempts = wait_attempts(emu, 1)
    assert len(attempts) == 1, attempts  # not 50 invocations burnt on the hop guard
    assert table_as_dict(ddb, table) == {}


def test_a_forged_continuation_is_refused_and_changes_nothing(
    s3: Any, ddb: Any, bucket: str, table_factory: Any, ledger_table: str, start_emulator: Any
) -> None:
    table, other = table_factory(), table_factory()
    emu = start_emulator(function_settings(ledger_table, table))
    body, expected = make_csv(500, tag="f")
    uri = put_object(s3, bucket, "forge.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
    assert st["status"] == "COMPLETED", st
    ledger = Ledger(ddb, ledger_table)
    target = target_key(table, st["version"])
    before = ledger.get(uri, target)
    assert before is not None and "token" not in st  # status never shows the token

    forged = {
        "kind": "continue",
        "version": 2,
        "object": uri,
        "target": target,
        "hop": st["hop"],
        "token": "0" * 32,
    }
    out = _invoke(emu, forged)
    assert out["status"] == "refused" and "token" in out["reason"], out
    # the old shape, a whole checkpoint pointing elsewhere, is not even parsed as a continuation
    old = {
        "kind": "continue",
        "version": 1,
        "format_version": 1,
        "source": uri,
        "table": other,
        "version_id": "crafted",
        "etag": None,
        "size": len(body),
        "header": ["pk", "n", "s"],
        "offset": 0,
        "next_row": 1,
        "counters": {},
        "chain_id": before.chain_id,
        "hop": before.hop,
    }
    out = _invoke(emu, old)
    assert out["status"] == "refused" and "version 1 is not supported" in out["reason"], out
    after = ledger.get(uri, target)
    assert after == before
    assert table_as_dict(ddb, other) == {}
    assert table_as_dict(ddb, table) == expected
    assert "0" * 32 not in emu.log()  # a token is never logged


def test_the_same_object_into_another_table_is_a_new_chain_and_reload_loads_it_again(
    s3: Any,
    ddb: Any,
    bucket: str,
    table_factory: Any,
    ledger_table: str,
    start_emulator: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = table_factory(), table_factory()
    emu = start_emulator(function_settings(ledger_table, a))
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", emu.url)
    body, expected = make_csv(300, tag="ab")
    uri = put_object(s3, bucket, "twice.csv", body)

    assert cli.main(["invoke", uri, "--table", a, "--type", "n=N"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "accepted"
    first = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
    assert (first["status"], first["table"]) == ("COMPLETED", a), first

    assert cli.main(["invoke", uri, "--table", b, "--type", "n=N"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "accepted"  # a new chain, not "loaded"
    deadline = time.monotonic() + 90
    while (st := status(uri, ledger_table=ledger_table, ddb_client=ddb, table=b))["status"] != "COMPLETED":
        assert time.monotonic() < deadline and st["status"] != "FAILED", st
        time.sleep(0.25)  # a polling interval, bounded by the deadline
    assert st["versions"] == 2 or status(uri, ledger_table=ledger_table, ddb_client=ddb)["versions"] == 2
    assert table_as_dict(ddb, a) == expected and table_as_dict(ddb, b) == expected

    # again into a: already loaded, and said so
    assert cli.main(["invoke", uri, "--table", a]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["chain_id"]) == ("already loaded", first["chain_id"]), out

    # reload: a new chain for the same key, which completes again
    ddb.delete_item(TableName=a, Key={"pk": {"S": next(iter(expected))}})
    assert cli.main(["invoke", uri, "--table", a, "--reload", "--type", "n=N"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "accepted"
    deadline = time.monotonic() + 90
    while True:
        st = status(uri, ledger_table=ledger_table, ddb_client=ddb, table=a)
        if st["chain_id"] != first["chain_id"] and st["status"] == "COMPLETED":
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.25)  # a polling interval, bounded by the deadline
    assert (st["rows_read"], st["items_written"]) == (300, 300), st
    assert table_as_dict(ddb, a) == expected


def test_refused_and_invalid_backfills_exit_non_zero_with_the_reason(
    s3: Any,
    ddb: Any,
    bucket: str,
    table_factory: Any,
    ledger_table: str,
    start_emulator: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allowed, other = table_factory(), table_factory()
    emu = start_emulator(function_settings(ledger_table, allowed, S3DDB_ALLOWED_TABLES=allowed))
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", emu.url)
    uri = put_object(s3, bucket, "r.csv", make_csv(5)[0])
    assert cli.main(["invoke", uri, "--table", other]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "refused" and "S3DDB_ALLOWED_TABLES" in captured.err

    # what the function refuses at the door, it says why (the CLI checks the same things first)
    refused = [
        ({"schema": {"columns": {"n": "BLOB"}}}, "BLOB"),
        ({"schema": {"columns": {f"c{i}": "S" * 40 for i in range(10_000)}}}, "limit"),
        ({"schema": {"columns": {"n": "N"}, "rename": _deep(300)}}, "nests deeper"),
        ({"csv": {"delimiter": ";;"}}, "delimiter"),
        ({"csv": {"encoding": "rot13"}}, "rot13"),
        ({"on_duplicate": "newest"}, "on_duplicate"),
    ]
    for extra, needle in refused:
        payload = {"kind": "backfill", "version": 1, "source": uri, "table": allowed, **extra}
        out = _invoke(emu, payload)
        assert needle in json.dumps(out), (extra, out)
        assert "Recursion" not in json.dumps(out)
    assert status(uri, ledger_table=ledger_table, ddb_client=ddb)["status"] == "NOT_FOUND"


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(levels):
        node = {"x": node}
    return node


@pytest.mark.parametrize("key", ["odd/k?versionId=abc.csv", "odd/#1 100% a+b ü.csv"])
def test_any_s3_key_loads_through_a_backfill(
    key: str, s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(function_settings(ledger_table, table))
    body, expected = make_csv(40, tag="key")
    uri = put_object(s3, bucket, key, body)
    out = send_backfill(uri, table=table, function=FUNCTION, lambda_client=emu.client)
    assert out["status"] == "accepted", out
    st = wait_final(ddb, ledger_table, uri, timeout_s=60, emu=emu)
    assert (st["status"], st["rows_read"]) == ("COMPLETED", 40), st
    assert table_as_dict(ddb, table) == expected


def test_csv_options_reach_the_function_from_its_setting_and_from_a_backfill(
    s3: Any, ddb: Any, bucket: str, table_factory: Any, ledger_table: str, start_emulator: Any
) -> None:
    notified, backfilled = table_factory(), table_factory()
    emu = start_emulator(
        function_settings(ledger_table, notified, S3DDB_CSV='{"delimiter": ";", "encoding": "latin-1"}')
    )
    body, expected = make_csv(60, tag="semi")
    body = body.replace(b",", b";").replace(b"text-", "tëxt-".encode("latin-1"))
    expected = {k: {**v, "s": {"S": v["s"]["S"].replace("text-", "tëxt-")}} for k, v in expected.items()}
    uri = put_object(s3, bucket, "semi.csv", body)
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=60, emu=emu)
    assert (st["status"], st["rows_read"], st["rows_rejected"]) == ("COMPLETED", 60, 0), st
    assert table_as_dict(ddb, notified) == expected

    tsv, expected_tsv = make_csv(70, tag="tab")
    tsv = b"\n".join(line.replace(b",", b"\t") for line in tsv.split(b"\n")[1:])  # no header row
    uri = put_object(s3, bucket, "data.tsv", tsv)
    out = send_backfill(
        uri,
        table=backfilled,
        function=FUNCTION,
        lambda_client=emu.client,
        csv={"delimiter": "\t", "header": False, "columns": ["pk", "n", "s"]},
    )
    assert out["status"] == "accepted", out
    st = wait_final(ddb, ledger_table, uri, timeout_s=60, emu=emu)
    assert (st["status"], st["rows_read"], st["rows_rejected"]) == ("COMPLETED", 70, 0), st
    assert table_as_dict(ddb, backfilled) == expected_tsv


def _wide(rows: int) -> bytes:
    columns = ["pk", *(f"column_{i:011d}" for i in range(20_000))]  # ~380 KB of header
    return (",".join(columns) + "\n" + "".join(f"r{i}" + "," * 20_000 + "\n" for i in range(rows))).encode()


def test_a_header_too_wide_for_the_ledger_fails_a_chain_that_must_hand_over(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    # 5 write units a second: 200 rows cannot be written in one hop, so the state must be kept
    emu = start_emulator(function_settings(ledger_table, table, S3DDB_SCHEMA="", S3DDB_MAX_WCU="5"))
    uri = put_object(s3, bucket, "wide.csv", _wide(200))
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
    # FAILED with the reason and the way out, answered (no retry could make it fit): never RUNNING
    assert st["status"] == "FAILED", st
    assert "too large to keep in the ledger" in st["reason"] and "s3ddb load" in st["reason"], st
    assert [a["outcome"] for a in wait_attempts(emu, 1)] == ["ok"]
    assert_invariant(st)


def test_a_header_too_wide_for_the_ledger_completes_a_chain_that_needs_no_hand_over(
    s3: Any, ddb: Any, bucket: str, table: str, ledger_table: str, start_emulator: Any
) -> None:
    emu = start_emulator(
        function_settings(ledger_table, table, S3DDB_SCHEMA="", S3DDB_CHECKPOINT_INTERVAL="3600")
    )
    uri = put_object(s3, bucket, "wide1.csv", _wide(1))
    notify(uri, function=FUNCTION, lambda_client=emu.client, s3_client=s3)
    st = wait_final(ddb, ledger_table, uri, timeout_s=90, emu=emu)
    assert (st["status"], st["rows_read"], st["items_written"]) == ("COMPLETED", 1, 1), st
    assert [a["outcome"] for a in wait_attempts(emu, 1)] == ["ok"]
    assert table_as_dict(ddb, table) == {"r0": {"pk": {"S": "r0"}}}


def test_invoke_checks_the_limits_before_it_sends(
    s3: Any,
    bucket: str,
    table: str,
    ledger_table: str,
    start_emulator: Any,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = start_emulator(function_settings(ledger_table, table))
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", emu.url)
    uri = put_object(s3, bucket, "lim.csv", make_csv(5)[0])
    schema = tmp_path / "big.json"
    schema.write_text(json.dumps({"columns": {f"c{i:06d}": "N" for i in range(8000)}}))
    assert cli.main(["invoke", uri, "--table", table, "--schema", str(schema)]) == 2
    assert "limit" in capsys.readouterr().err
    assert cli.main(["invoke", f"s3://{bucket}/", "--table", table, "--version-id", "v1"]) == 2
    assert "not of a prefix" in capsys.readouterr().err
    assert emu.attempts() == []  # nothing was sent
