"""The ledger against DynamoDB Local: every transition is conditional, so a chain cannot fork."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lambda_src import ledger as L
from lambda_src.admin import status
from lambda_src.chain import decide
from lambda_src.ledger import Ledger, LedgerItem, ensure_ledger_table, target_key, version_key
from loader.models import Checkpoint, Counters

OBJ = "s3://b/data.csv"
TARGET = target_key("t", "v1")
SPEC: dict[str, Any] = {"source": OBJ, "table": "t", "version_id": "v1", "schema": {"columns": {}}}


@pytest.fixture
def ledger(ddb: Any) -> Iterator[Ledger]:
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    assert ensure_ledger_table(ddb, name) is True
    assert ensure_ledger_table(ddb, name) is False
    clock = [1000.0]
    try:
        yield Ledger(ddb, name, clock=lambda: clock[0])
    finally:
        ddb.delete_table(TableName=name)


def _cp(offset: int, rows: int, hop: int) -> Checkpoint:
    return Checkpoint(
        source=OBJ,
        table="t",
        version_id="v1",
        etag=None,
        size=1000,
        header=["pk"],
        offset=offset,
        next_row=rows + 1,
        counters=Counters(rows_read=rows, items_written=rows),
        hop=hop,
        chain_id="c1",
    )


def _create(
    ledger: Ledger, rid: str = "r0", chain: str = "c1", *, table: str = "t", version: str = "v1"
) -> bool:
    return ledger.create(
        OBJ,
        version=version,
        chain_id=chain,
        request_id=rid,
        lease_until=2000.0,
        table=table,
        spec={**SPEC, "table": table, "version_id": version},
        lane=None,
        object_size=1000,
    )


def _get(ledger: Ledger, target: str = TARGET) -> LedgerItem:
    item = ledger.get(OBJ, target)
    assert item is not None
    return item


def _raw(ledger: Ledger, target: str = TARGET) -> dict[str, Any]:
    """The item as DynamoDB holds it (every attribute, ``rev`` included)."""
    resp = ledger.client.get_item(
        TableName=ledger.table, Key={"object": {"S": OBJ}, "target": {"S": target}}, ConsistentRead=True
    )
    return dict(resp["Item"])


def test_the_same_object_version_starts_one_chain(ledger: Ledger) -> None:
    assert _create(ledger, "r0", "c1") is True
    assert _create(ledger, "r1", "c2") is False
    item = _get(ledger)
    assert (item.status, item.chain_id, item.hop, item.claim, item.spec) == (
        L.RUNNING,
        "c1",
        0,
        "r0",
        SPEC,
    )
    assert (item.object, item.target, item.table, item.version, item.token) == (OBJ, TARGET, "t", "v1", "")


def test_a_full_chain_hands_over_and_completes(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert ledger.commit_progress(item, hop=0, request_id="r0", checkpoint=_cp(100, 10, 0))
    assert ledger.handover(
        item, hop=0, request_id="r0", checkpoint=_cp(200, 20, 1), lease_until=5000.0, token="tok1"
    )
    item = _get(ledger)
    assert (item.hop, item.hops, item.claim, item.handed_by, item.offset) == (1, 2, L.PENDING, "r0", 200)
    assert (item.checkpoint, item.token, item.spec) == (_cp(200, 20, 1), "tok1", SPEC)
    # hop 0 cannot write again: it no longer owns the chain
    assert not ledger.commit_progress(item, hop=0, request_id="r0", checkpoint=_cp(300, 30, 0))
    forged = decide(item, kind="continue", request_id="r1", now=1000.0, event_hop=1, event_token="x")
    assert forged.action == "refuse"
    d = decide(item, kind="continue", request_id="r1", now=1000.0, event_hop=1, event_token="tok1")
    assert d.action == "claim"
    assert ledger.claim(item, request_id="r1", lease_until=3000.0, reclaim=False)
    # a duplicate continuation read the same item and decided the same: its claim loses
    assert not ledger.claim(item, request_id="r2", lease_until=3000.0, reclaim=False)
    item = _get(ledger)
    assert ledger.finish(item, hop=1, request_id="r1", checkpoint=_cp(1000, 50, 1), status=L.COMPLETED)
    ledger.add_rejects(item, location="s3://r/c1-hop1.jsonl")
    item = _get(ledger)
    assert (item.status, item.claim, item.offset, item.counters.rows_read) == (L.COMPLETED, "", 1000, 50)
    assert item.rejects == ["s3://r/c1-hop1.jsonl"]
    assert item.finished_at
    out = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client)
    for key in (
        "status",
        "hops",
        "rows_read",
        "items_written",
        "rows_rejected",
        "duplicates_collapsed",
        "offset",
        "object_size",
    ):
        assert key in out
    assert (out["status"], out["hops"], out["rows_read"], out["object_size"]) == ("COMPLETED", 2, 50, 1000)


def test_stall_then_resume_by_the_retried_request(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert ledger.handover(
        item, hop=0, request_id="r0", checkpoint=_cp(200, 20, 1), lease_until=5000.0, token="tok1"
    )
    assert not ledger.stall(item, next_hop=1, request_id="someone-else", error="x")
    assert ledger.stall(item, next_hop=1, request_id="r0", error="invoke failed")
    item = _get(ledger)
    assert (item.status, item.last_error) == (L.STALLED, "invoke failed")
    # hop 0 was started by a notification: Lambda's retry of it is that start event again
    assert decide(item, kind="start", request_id="r0", now=1000.0).action == "claim"
    assert ledger.claim(item, request_id="r0", lease_until=3000.0, reclaim=False)
    assert (_get(ledger).status, _get(ledger).claim) == (L.RUNNING, "r0")


def test_failure_keeps_the_reason_and_the_last_checkpoint(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert not ledger.finish(item, hop=0, request_id="not-owner", checkpoint=_cp(1, 1, 0), status=L.FAILED)
    assert ledger.finish(
        item, hop=0, request_id="r0", checkpoint=_cp(500, 5, 0), status=L.FAILED, reason="max hops"
    )
    item = _get(ledger)
    assert (item.status, item.reason, item.offset) == (L.FAILED, "max hops", 500)
    assert decide(item, kind="start", request_id="r9", now=0).action == "skip"


def test_status_of_an_unknown_object(ledger: Ledger) -> None:
    assert (
        status("s3://b/nothing.csv", ledger_table=ledger.table, ddb_client=ledger.client)["status"]
        == "NOT_FOUND"
    )


def test_version_key() -> None:
    assert version_key("v1", "e") == "v1"
    assert version_key(None, '"abc"') == "etag:abc"
    assert version_key(None, None) == "unversioned"


def test_write_units_are_stored_with_the_counters(ledger: Ledger) -> None:
    _create(ledger)
    cp = _cp(100, 10, 0)
    cp = Checkpoint.from_dict({**cp.to_dict(), "counters": {**cp.counters.to_dict(), "write_units": 17}})
    assert ledger.commit_progress(_get(ledger), hop=0, request_id="r0", checkpoint=cp)
    assert _get(ledger).counters.write_units == 17
    assert status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client)["write_units"] == 17


def test_completion_clears_an_old_error_and_records_who_finished(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert ledger.record_error(item, hop=0, request_id="r0", error="WriteFailedError: boom")
    assert _get(ledger).last_error == "WriteFailedError: boom"
    assert ledger.finish(item, hop=0, request_id="r0", checkpoint=_cp(1000, 50, 0), status=L.COMPLETED)
    done = _get(ledger)
    assert (done.status, done.last_error, done.reason, done.finished_by) == (L.COMPLETED, "", "", "r0")


def test_status_marks_a_chain_whose_lease_ran_out_stalled_and_says_so(ledger: Ledger) -> None:
    _create(ledger)  # lease_until 2000.0
    now = [1500.0]
    fresh = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, clock=lambda: now[0])
    assert (fresh["status"], fresh["stale"]) == (L.RUNNING, False)
    assert fresh["lease_until"].startswith("1970-01-01T00:33:20")
    now[0] = 2001.0
    out = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, clock=lambda: now[0])
    assert (out["status"], out["stale"]) == (L.STALLED, True)
    assert "re-send the notification" in out["last_error"]
    item = _get(ledger)
    assert item.status == L.STALLED
    # the owner that was presumed dead cannot write any more; a new event resumes the chain
    assert not ledger.commit_progress(item, hop=0, request_id="r0", checkpoint=_cp(100, 10, 0))
    assert decide(item, kind="start", request_id="r9", now=now[0]).action == "claim"
    # marking is conditional on the item as read: a stale read cannot mark it again
    assert not Ledger(ledger.client, ledger.table, clock=lambda: now[0]).mark_stalled(item, error="x")


def test_a_chain_failed_by_max_hops_is_resumed_once_by_a_conditional_write(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    reason = f"{L.MAX_HOPS_REASON}1 reached at offset 500 of 1000"
    assert ledger.finish(
        item, hop=0, request_id="r0", checkpoint=_cp(500, 5, 0), status=L.FAILED, reason=reason
    )
    failed = _get(ledger)
    assert failed.failed_for_max_hops()
    assert decide(failed, kind="start", request_id="r1", now=0, max_hops=1).action == "skip"
    assert decide(failed, kind="start", request_id="r1", now=0, max_hops=3).action == "resume"
    # a continuation (even without a token) resumes nothing
    cont = decide(failed, kind="continue", request_id="r1", now=0, event_hop=0, event_token="", max_hops=3)
    assert cont.action == "refuse"
    assert ledger.resume_failed(failed, request_id="r1", lease_until=3000.0)
    assert not ledger.resume_failed(failed, request_id="r2", lease_until=3000.0)
    item = _get(ledger)
    assert (item.status, item.hop, item.hops, item.claim, item.offset, item.reason) == (
        L.RUNNING,
        1,
        2,
        "r1",
        500,
        "",
    )
    assert item.checkpoint is not None and item.checkpoint.offset == 500


def test_target_key_names_the_table_then_the_version() -> None:
    assert target_key("orders", "v1") == "orders#v1"
    assert target_key("orders", version_key(None, '"abc"')) == "orders#etag:abc"
    assert target_key("a", "v") != target_key("b", "v")


def test_the_same_object_version_into_another_table_is_another_chain(ledger: Ledger) -> None:
    a, b = target_key("A", "v1"), target_key("B", "v1")
    assert _create(ledger, "r0", "ca", table="A")
    item = _get(ledger, a)
    assert ledger.finish(item, hop=0, request_id="r0", checkpoint=_cp(1000, 50, 0), status=L.COMPLETED)
    # loaded into A: the same version into B starts its own chain; into A again it does not
    assert _create(ledger, "r1", "cb", table="B")
    assert not _create(ledger, "r2", "cx", table="A")
    chains = ledger.chains(OBJ)
    assert len(chains) == 2
    by_target = {c.target: c for c in chains}
    assert set(by_target) == {a, b}
    assert (by_target[a].table, by_target[a].status, by_target[a].chain_id) == ("A", L.COMPLETED, "ca")
    assert (by_target[b].table, by_target[b].status, by_target[b].chain_id) == ("B", L.RUNNING, "cb")
    assert {c.version for c in chains} == {"v1"}
    assert {t: (c.spec or {}).get("table") for t, c in by_target.items()} == {a: "A", b: "B"}
    # B's chain moving on leaves A's item alone
    before = _raw(ledger, a)
    assert ledger.handover(
        _get(ledger, b), hop=0, request_id="r1", checkpoint=_cp(100, 10, 1), lease_until=5000.0, token="t"
    )
    assert _raw(ledger, a) == before
    # a new version of the object into A is a third chain
    assert _create(ledger, "r3", "ca2", table="A", version="v2")
    assert len(ledger.chains(OBJ)) == 3
    assert ledger.chains("s3://b/other.csv") == []
    # status can be asked per table
    one = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, table="B", clock=lambda: 1000.0)
    assert (one["table"], one["status"], one["chain_id"]) == ("B", L.RUNNING, "cb")
    every = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, clock=lambda: 1000.0)
    assert every["versions"] == 3


def test_the_hop_token_is_stored_at_handover_and_never_shown(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert item.token == ""  # hop 0 was started by an event, not by a continuation
    secret = "5ec7e7" * 5
    assert ledger.handover(
        item, hop=0, request_id="r0", checkpoint=_cp(200, 20, 1), lease_until=5000.0, token=secret
    )
    item = _get(ledger)
    assert item.token == secret
    assert secret not in repr(item.to_status(now=1000.0))
    out = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, clock=lambda: 1000.0)
    assert secret not in repr(out)
    # the next hop hands over with a new token: the previous hop's no longer matches
    assert ledger.claim(item, request_id="r1", lease_until=3000.0, reclaim=False)
    assert ledger.handover(
        _get(ledger), hop=1, request_id="r1", checkpoint=_cp(300, 30, 2), lease_until=5000.0, token="next"
    )
    item = _get(ledger)
    assert (item.hop, item.token) == (2, "next")
    late = decide(item, kind="continue", request_id="r2", now=1000.0, event_hop=2, event_token=secret)
    assert late.action == "refuse"


def test_a_reload_restarts_a_finished_chain_once_as_a_new_chain(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert ledger.handover(
        item, hop=0, request_id="r0", checkpoint=_cp(200, 20, 1), lease_until=5000.0, token="tok1"
    )
    assert ledger.claim(_get(ledger), request_id="r1", lease_until=3000.0, reclaim=False)
    running = _get(ledger)
    # a RUNNING chain is not restarted
    assert not ledger.restart(
        running, chain_id="c2", request_id="r5", lease_until=3000.0, spec=SPEC, lane=None, reloaded_by="x"
    )
    assert ledger.finish(running, hop=1, request_id="r1", checkpoint=_cp(1000, 50, 1), status=L.COMPLETED)
    ledger.add_rejects(running, location="s3://r/c1-hop1.jsonl")
    done = _get(ledger)
    new_spec = {**SPEC, "csv": {"delimiter": ";"}}
    lane = {"kind": "lane", "backfill_id": "bf", "lane": 0, "lanes": 1}
    assert ledger.restart(
        done,
        chain_id="c2",
        request_id="r5",
        lease_until=3000.0,
        spec=new_spec,
        lane=lane,
        reloaded_by="reload-r4",
    )
    item = _get(ledger)
    assert (item.status, item.chain_id, item.hop, item.hops, item.claim, item.offset) == (
        L.RUNNING,
        "c2",
        0,
        1,
        "r5",
        0,
    )
    assert item.counters == Counters()
    assert (item.checkpoint, item.token, item.rejects, item.finished_at, item.finished_by) == (
        None,
        "",
        [],
        "",
        "",
    )
    assert (item.spec, item.lane, item.reloaded_by, item.rev) == (new_spec, lane, "reload-r4", done.rev + 1)
    # the same reload read the same COMPLETED item twice: only one restart lands
    assert not ledger.restart(
        done,
        chain_id="c3",
        request_id="r6",
        lease_until=3000.0,
        spec=new_spec,
        lane=lane,
        reloaded_by="reload-r4",
    )
    assert _get(ledger).chain_id == "c2"
    # the old chain cannot write into the new one
    assert not ledger.finish(done, hop=1, request_id="r1", checkpoint=_cp(1000, 50, 1), status=L.COMPLETED)
    assert len(ledger.chains(OBJ)) == 1


def test_noting_an_invoke_changes_no_rev_and_only_its_own_chain(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    ledger.note_invoke(item, seconds=0.25)
    after = _get(ledger)
    assert (after.invoke_s, after.rev) == (0.25, item.rev)
    # a claim read before the note still lands (the note decides nothing)
    assert ledger.claim(item, request_id="r0", lease_until=3000.0, reclaim=False)
    # a note from another chain of the same key is ignored
    ledger.note_invoke(dataclasses.replace(item, chain_id="other"), seconds=9.0)
    assert _get(ledger).invoke_s == 0.25


def test_a_status_the_code_does_not_know_is_an_error_on_every_read(ledger: Ledger) -> None:
    _create(ledger)
    raw = _raw(ledger)
    ledger.client.put_item(TableName=ledger.table, Item={**raw, "status": {"S": "PAUSED"}})
    for read in (
        lambda: ledger.get(OBJ, TARGET),
        lambda: ledger.chains(OBJ),
        lambda: status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client),
    ):
        with pytest.raises(L.LedgerError, match=r"unknown status 'PAUSED' \(expected one of RUNNING, "):
            read()
    assert _raw(ledger) == {**raw, "status": {"S": "PAUSED"}}  # nothing was written


def test_statuses_are_stored_and_shown_as_their_strings(ledger: Ledger) -> None:
    _create(ledger)
    item = _get(ledger)
    assert item.status is L.ChainStatus.RUNNING
    assert _raw(ledger)["status"] == {"S": "RUNNING"}
    # a chain finishes COMPLETED or FAILED, nothing else
    for wrong in (L.RUNNING, L.STALLED):
        with pytest.raises(ValueError, match="COMPLETED or FAILED"):
            ledger.finish(item, hop=0, request_id="r0", checkpoint=_cp(1, 1, 0), status=wrong)
    assert ledger.finish(item, hop=0, request_id="r0", checkpoint=_cp(1000, 50, 0), status=L.COMPLETED)
    assert _raw(ledger)["status"] == {"S": "COMPLETED"}
    shown = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client)
    assert type(shown["status"]) is str and shown["status"] == "COMPLETED"
    assert [type(c["status"]) for c in shown["chains"]] == [str]
