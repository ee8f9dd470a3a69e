"""A sharded load in the ledger, against DynamoDB Local: the parent holds the plan and runs no hop,
each shard is a chain of its own, the last shard to finish settles the parent exactly once (also
when two finish at the same moment), a failed shard resumes alone, a reload's shards replace an
earlier load's, and a prefix backfill keeps the record its status adds up."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from lambda_src import ledger as L
from lambda_src.admin import SETTLE_ADVICE, status
from lambda_src.chain import ChainRunner, HopRequest, InvocationContext, decide
from lambda_src.ledger import (
    BackfillRecord,
    Ledger,
    LedgerItem,
    backfill_records,
    ensure_ledger_table,
    shard_target,
    target_key,
)
from lambda_src.observability import Telemetry
from lambda_src.settings import Settings
from loader.models import Checkpoint, Counters, RunResult, StopReason

OBJ = "s3://b/data.csv"
PARENT = target_key("t", "v1")
SIZE = 1000
RANGES = [[10, 400], [400, 700], [700, SIZE]]
PLAN: dict[str, Any] = {
    "parallel": 3,
    "size": SIZE,
    "data_start": 10,
    "header_names": ["pk", "n"],
    "ranges": RANGES,
    "note": None,
}
SPEC: dict[str, Any] = {"source": OBJ, "table": "t", "version_id": "v1", "schema": {"columns": {}}}
#: the attributes a one-chain load's item has always had: a sharded load adds none of its own to it
ONE_CHAIN_ATTRIBUTES = {
    "object",
    "target",
    "version",
    "table",
    "spec",
    "status",
    "chain_id",
    "hop",
    "hops",
    "claim",
    "lease_until",
    "rev",
    "offset",
    "reclaims",
    "started_at",
    "updated_at",
    "object_size",
    "rows_read",
    "items_written",
    "rows_rejected",
    "duplicates_collapsed",
    "retries",
    "throttle_events",
    "write_units",
}


@pytest.fixture
def ledger(ddb: Any) -> Iterator[Ledger]:
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    ensure_ledger_table(ddb, name)
    clock = [1000.0]
    try:
        yield Ledger(ddb, name, clock=lambda: clock[0])
    finally:
        ddb.delete_table(TableName=name)


def _parent(
    ledger: Ledger, *, chain: str = "p1", knobs: dict[str, Any] | None = None, plan: dict[str, Any] = PLAN
) -> LedgerItem:
    assert ledger.create(
        OBJ,
        version="v1",
        chain_id=chain,
        request_id="r0",
        lease_until=2000.0,
        table="t",
        spec=SPEC,
        lane=None,
        object_size=SIZE,
        knobs=knobs,
        shards=plan,
    )
    return _get(ledger, PARENT)


def _get(ledger: Ledger, target: str) -> LedgerItem:
    item = ledger.get(OBJ, target)
    assert item is not None
    return item


def _shard_spec(k: int, plan: dict[str, Any] = PLAN) -> dict[str, Any]:
    return {**SPEC, "byte_range": plan["ranges"][k], "header_names": ["pk", "n"]}


def _shard(ledger: Ledger, parent: LedgerItem, k: int, *, rid: str = "r0", token: str = "") -> LedgerItem:
    assert ledger.create_shard(
        parent,
        shard=k,
        chain_id=f"{parent.chain_id}-s{k}",
        spec=_shard_spec(k, parent.shards or PLAN),
        token=token or f"tok{k}",
        request_id=rid,
        lease_until=3000.0,
    )
    return _get(ledger, shard_target(parent.target, k))


def _cp(item: LedgerItem, *, rows: int, complete: bool, offset: int | None = None) -> Checkpoint:
    rng = item.byte_range
    assert rng is not None
    return Checkpoint(
        source=OBJ,
        table="t",
        version_id="v1",
        etag=None,
        size=SIZE,
        header=["pk", "n"],
        offset=rng[1] if offset is None else offset,
        next_row=rows + 1,
        counters=Counters(rows_read=rows, items_written=rows - 1, rows_rejected=1, write_units=rows),
        hop=item.hop,
        chain_id=item.chain_id,
        complete=complete,
        byte_range=rng,
    )


def _run_to(ledger: Ledger, shard: LedgerItem, status: L.ChainStatus, *, rows: int, rid: str) -> LedgerItem:
    """Claim the shard's pending hop (as its continuation does) and finish it."""
    d = decide(
        shard, kind="continue", request_id=rid, now=1000.0, event_hop=shard.hop, event_token=shard.token
    )
    assert d.action == "claim"
    assert ledger.claim(shard, request_id=rid, lease_until=3000.0, reclaim=False)
    claimed = _get(ledger, shard.target)
    done = status == L.COMPLETED
    cp = _cp(claimed, rows=rows, complete=done, offset=None if done else claimed.offset + 10)
    reason = "" if done else "TooManyRejectsError: 9 rows rejected"
    assert ledger.finish(
        claimed, hop=claimed.hop, request_id=rid, checkpoint=cp, status=status, reason=reason
    )
    return _get(ledger, shard.target)


def test_a_parent_holds_the_plan_and_runs_no_hop_and_one_chain_items_are_unchanged(ledger: Ledger) -> None:
    parent = _parent(ledger, knobs={"max_wcu": 100.0, "max_rejects": 5})
    assert parent.is_parent and not parent.is_shard
    assert (parent.claim, parent.lease_until, parent.hops, parent.shards) == (L.SHARDS, 0.0, 0, PLAN)
    assert parent.knobs == {"max_wcu": 100.0, "max_rejects": 5}
    assert not parent.stale(10**12)  # no lease: status never takes a parent for a dead hop
    shards = [_shard(ledger, parent, k) for k in (2, 0, 1)]
    assert [s.shard for s in ledger.shards_of(parent)] == [0, 1, 2]
    assert [s.shard for s in ledger.siblings(shards[0])] == [0, 1, 2]
    # the object's loads are the parent alone; its shards hang off it
    assert [i.target for i in ledger.chains(OBJ)] == [PARENT]

    # a one-chain load of another version: exactly the attributes it always had
    assert ledger.create(
        OBJ,
        version="v2",
        chain_id="c2",
        request_id="r0",
        lease_until=2000.0,
        table="t",
        spec=SPEC,
        lane=None,
        object_size=SIZE,
    )
    raw = ledger.client.get_item(
        TableName=ledger.table, Key={"object": {"S": OBJ}, "target": {"S": target_key("t", "v2")}}
    )["Item"]
    assert set(raw) == ONE_CHAIN_ATTRIBUTES
    one = _get(ledger, target_key("t", "v2"))
    assert (one.is_parent, one.is_shard, one.knobs, one.byte_range) == (False, False, {}, None)


def test_a_shard_is_a_chain_pending_its_first_continuation(ledger: Ledger) -> None:
    parent = _parent(ledger, knobs={"max_rejects": 5})
    shard = _shard(ledger, parent, 1, rid="launcher", token="t" * 32)
    assert shard.target == f"{PARENT}#shard=001"
    assert (shard.status, shard.hop, shard.hops, shard.claim, shard.handed_by) == (
        L.RUNNING,
        0,
        1,
        L.PENDING,
        "launcher",
    )
    assert (shard.parent, shard.shard, shard.parent_chain, shard.byte_range) == (PARENT, 1, "p1", (400, 700))
    assert (shard.offset, shard.object_size, shard.knobs, shard.token) == (
        400,
        SIZE,
        {"max_rejects": 5},
        "t" * 32,
    )
    # the same shard again (a duplicate launch) is refused: one chain per shard
    assert not ledger.create_shard(
        parent, shard=1, chain_id="other", spec=_shard_spec(1), token="x", request_id="r9", lease_until=1.0
    )
    # only the continuation with the shard's own token may run it
    assert decide(
        shard, kind="continue", request_id="r1", now=1000.0, event_hop=0, event_token="x"
    ).action == ("refuse")
    d = decide(shard, kind="continue", request_id="r1", now=1000.0, event_hop=0, event_token="t" * 32)
    assert d.action == "claim"
    # the launcher's invoke failed: it stalls the shard, as a hop stalls its chain
    assert ledger.stall(shard, next_hop=0, request_id="launcher", error="invoke failed")
    assert _get(ledger, shard.target).status == L.STALLED


def test_the_parent_settles_once_from_two_reads_taken_before_either_write(ledger: Ledger) -> None:
    parent = _parent(ledger)
    shards = [_shard(ledger, parent, k) for k in range(3)]
    done = [_run_to(ledger, s, L.COMPLETED, rows=10 * (k + 1), rid=f"r{k}") for k, s in enumerate(shards)]
    total = Counters()
    for s in done:
        total.add(s.counters)
    a, b = _get(ledger, PARENT), _get(ledger, PARENT)  # both finishers read the parent as it was
    won = [
        ledger.settle(x, status=L.COMPLETED, counters=total, offset=SIZE, request_id=rid)
        for x, rid in ((a, "r1"), (b, "r2"))
    ]
    assert won == [True, False]
    settled = _get(ledger, PARENT)
    assert (settled.status, settled.finished_by, settled.offset) == (L.COMPLETED, "r1", SIZE)
    assert settled.counters.to_dict() == total.to_dict()
    assert settled.counters.rows_read == 60 and settled.counters.balanced
    assert settled.rev == a.rev + 1  # one write, not two
    # a settled parent is not settled again, nor turned FAILED by a late reader
    assert not ledger.settle(settled, status=L.COMPLETED, counters=total, offset=SIZE, request_id="r3")
    assert not ledger.settle(
        settled, status=L.FAILED, counters=total, offset=SIZE, request_id="r3", reason="x"
    )


class _Complete:
    """The engine of a shard's last hop: both shards wait for each other inside their hop, then
    read to their range's end at once."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier

    def __call__(self, req: HopRequest) -> RunResult:
        self.barrier.wait(timeout=30)
        rng = req.spec.byte_range
        assert rng is not None
        rows = (rng[1] - rng[0]) // 10
        c = Counters(rows_read=rows, items_written=rows, write_units=rows)
        cp = Checkpoint(
            source=req.spec.source,
            table=req.spec.table,
            version_id=req.spec.version_id,
            etag=req.spec.etag,
            size=SIZE,
            header=["pk", "n"],
            offset=rng[1],
            next_row=rows + 1,
            counters=c,
            complete=True,
            byte_range=rng,
        )
        return RunResult(
            counters=c, checkpoint=cp, stopped=StopReason.COMPLETE, seconds=0.1, rejects_location=None
        )


def test_two_shards_finishing_at_the_same_moment_complete_the_parent_exactly_once(
    ddb: Any, ledger: Ledger
) -> None:
    parent = _parent(ledger, plan=dict(PLAN, ranges=[[10, 500], [500, SIZE]]))
    shards = [_shard(ledger, parent, k, token=f"{k}" * 32) for k in range(2)]
    barrier = threading.Barrier(2)
    outs: dict[int, dict[str, Any]] = {}

    def run(k: int) -> None:
        runner = ChainRunner(
            settings=Settings(ledger_table=ledger.table, table="t", safety_margin_ms=0),
            ledger=Ledger(ddb, ledger.table),
            s3=None,
            lambda_client=None,  # the parent has no lane: nothing is invoked
            engine=_Complete(barrier),
            telemetry=Telemetry(),
        )
        event = {"kind": "continue", "version": 2, "object": OBJ, "target": shards[k].target, "hop": 0}
        event["token"] = f"{k}" * 32
        ctx = InvocationContext(request_id=f"req-{k}", function="f", remaining_ms=lambda: 600_000)
        outs[k] = runner.handle(event, ctx)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outs) == [0, 1], outs
    assert [outs[k]["status"] for k in (0, 1)] == ["COMPLETED", "COMPLETED"], outs
    assert [outs[k]["shard"] for k in (0, 1)] == [0, 1]
    settled = _get(ledger, PARENT)
    assert settled.status == L.COMPLETED
    assert settled.finished_by in ("req-0", "req-1")
    assert settled.rev == parent.rev + 1  # settled by one write
    assert (settled.counters.rows_read, settled.counters.items_written, settled.offset) == (99, 99, SIZE)
    # the one that settled it says COMPLETED; the other saw it settled (or still RUNNING, if it read
    # the parent before the winner wrote)
    parent_says = {outs[k]["parent_status"] for k in (0, 1)}
    assert "COMPLETED" in parent_says and parent_says <= {"COMPLETED", "RUNNING"}


def test_a_failed_shard_settles_the_load_failed_and_is_resumed_alone(ledger: Ledger) -> None:
    parent = _parent(ledger)
    s0, s1, s2 = (_shard(ledger, parent, k) for k in range(3))
    s0 = _run_to(ledger, s0, L.COMPLETED, rows=10, rid="r0")
    s1 = _run_to(ledger, s1, L.FAILED, rows=9, rid="r1")
    s2 = _run_to(ledger, s2, L.COMPLETED, rows=10, rid="r2")
    assert ledger.settle(
        _get(ledger, PARENT),
        status=L.FAILED,
        counters=Counters(),
        offset=500,
        request_id="r2",
        reason="shard 1",
    )
    failed = _get(ledger, PARENT)
    assert (failed.status, failed.reason, failed.last_error) == (L.FAILED, "shard 1", "shard 1")

    # resend: shard 1 alone starts again, from its checkpoint, at its next hop, with the new knobs
    assert not ledger.rearm_shard(s0, request_id="r5", token="new", lease_until=9000.0)  # COMPLETED
    assert ledger.rearm_shard(s1, request_id="r5", token="new", lease_until=9000.0, knobs={"max_rejects": 99})
    again = _get(ledger, s1.target)
    assert (again.status, again.claim, again.handed_by, again.token) == (L.RUNNING, L.PENDING, "r5", "new")
    assert (again.hop, again.hops, again.reason, again.last_error, again.finished_at) == (
        s1.hop + 1,
        s1.hops + 1,
        "",
        "",
        "",
    )
    assert s1.last_error  # it had one
    assert again.checkpoint == s1.checkpoint and again.offset == s1.offset
    assert again.knobs == {"max_rejects": 99}
    assert not ledger.rearm_shard(s1, request_id="r6", token="x", lease_until=9000.0)  # as read: moved
    assert _get(ledger, s0.target) == s0 and _get(ledger, s2.target) == s2  # nothing else moved
    assert ledger.reopen(failed)
    assert not ledger.reopen(failed)
    reopened = _get(ledger, PARENT)
    assert (reopened.status, reopened.reason, reopened.finished_at) == (L.RUNNING, "", "")

    # the resumed shard completes: the load settles COMPLETED
    _run_to(ledger, again, L.COMPLETED, rows=30, rid="r7")
    assert ledger.settle(
        reopened, status=L.COMPLETED, counters=Counters(rows_read=50), offset=SIZE, request_id="r7"
    )
    assert (_get(ledger, PARENT).status, _get(ledger, PARENT).counters.rows_read) == (L.COMPLETED, 50)


def test_a_load_settled_failed_may_still_complete_when_its_reopen_was_lost(ledger: Ledger) -> None:
    parent = _parent(ledger)
    assert ledger.settle(parent, status=L.FAILED, counters=Counters(), offset=0, request_id="r", reason="x")
    # the shard was started again but the request died before the parent was reopened
    assert ledger.settle(
        _get(ledger, PARENT), status=L.COMPLETED, counters=Counters(), offset=SIZE, request_id="r2"
    )
    assert _get(ledger, PARENT).status == L.COMPLETED


def test_stalled_and_dead_shards_are_started_again_at_the_same_hop(ledger: Ledger) -> None:
    parent = _parent(ledger)
    s0, s1 = _shard(ledger, parent, 0, rid="r0"), _shard(ledger, parent, 1, rid="r0")
    assert ledger.stall(s0, next_hop=0, request_id="r0", error="invoke failed")
    stalled = _get(ledger, s0.target)
    assert ledger.rearm_shard(stalled, request_id="r1", token="a", lease_until=5000.0)
    assert (_get(ledger, s0.target).hop, _get(ledger, s0.target).status) == (0, L.RUNNING)
    # a shard pending with its lease still running is left to its continuation
    assert not ledger.rearm_shard(s1, request_id="r1", token="b", lease_until=5000.0)
    ledger.clock = lambda: 4000.0  # past its pending lease (3000)
    assert _get(ledger, s1.target).stale(4000.0)
    assert ledger.rearm_shard(s1, request_id="r1", token="b", lease_until=9000.0)
    s1 = _get(ledger, s1.target)
    assert (s1.hop, s1.token, s1.lease_until, s1.handed_by) == (0, "b", 9000.0, "r1")


def test_a_reload_replaces_the_finished_shards_of_the_earlier_load(ledger: Ledger) -> None:
    parent = _parent(ledger)
    old = [_run_to(ledger, _shard(ledger, parent, k), L.COMPLETED, rows=5, rid=f"r{k}") for k in range(3)]
    assert ledger.settle(
        _get(ledger, PARENT), status=L.COMPLETED, counters=Counters(), offset=SIZE, request_id="r"
    )
    done = _get(ledger, PARENT)
    two = dict(PLAN, ranges=[[10, 500], [500, SIZE]])
    assert ledger.restart(
        done,
        chain_id="p2",
        request_id="r9",
        lease_until=1.0,
        spec=SPEC,
        lane=None,
        reloaded_by="rl",
        shards=two,
    )
    new = _get(ledger, PARENT)
    assert (new.chain_id, new.status, new.claim, new.shards, new.counters.rows_read) == (
        "p2",
        L.RUNNING,
        L.SHARDS,
        two,
        0,
    )
    assert ledger.shards_of(new) == []  # the earlier load's shards are not this load's
    assert _shard(ledger, new, 0).parent_chain == "p2"  # replaces the finished shard 0 of p1
    assert [s.shard for s in ledger.shards_of(new)] == [0]
    assert _get(ledger, old[2].target).parent_chain == "p1"  # left as it was; not part of p2
    # a reload as one chain leaves no plan behind
    assert ledger.settle(new, status=L.FAILED, counters=Counters(), offset=0, request_id="r", reason="x")
    assert ledger.restart(
        _get(ledger, PARENT),
        chain_id="c3",
        request_id="r9",
        lease_until=1.0,
        spec=SPEC,
        lane=None,
        reloaded_by="x",
    )
    assert not _get(ledger, PARENT).is_parent


def test_a_running_shard_of_another_load_is_not_replaced(ledger: Ledger) -> None:
    parent = _parent(ledger)
    _shard(ledger, parent, 0)
    other = dataclasses.replace(_get(ledger, PARENT), chain_id="p-other")
    assert not ledger.create_shard(
        other, shard=0, chain_id="x", spec=_shard_spec(0), token="t", request_id="r", lease_until=1.0
    )


def test_a_shards_write_budget_is_noted_without_moving_its_chain(ledger: Ledger) -> None:
    shard = _shard(ledger, _parent(ledger), 0)
    ledger.note_budget(shard, share=33.3333333, running=3)
    noted = _get(ledger, shard.target)
    assert (noted.wcu_share, noted.shards_running, noted.rev) == (33.3333, 3, shard.rev)
    assert noted.to_shard_status(0)["wcu_share"] == 33.3333


def test_status_of_a_sharded_load_adds_up_its_shards_and_says_when_it_needs_settling(ledger: Ledger) -> None:
    parent = _parent(ledger, knobs={"max_wcu": 90.0})
    s0 = _run_to(ledger, _shard(ledger, parent, 0), L.COMPLETED, rows=10, rid="r0")
    s1 = _shard(ledger, parent, 1)
    ledger.add_rejects(s0, location="s3://r/p1-s0-hop0.jsonl")
    out = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, clock=lambda: 1000.0)
    assert (out["status"], out["parallel"], out["shards_completed"], out["shards_running"]) == (
        "RUNNING",
        3,
        1,
        1,
    )
    assert out["rows_read"] == 10 and out["hops"] == s0.hops + s1.hops
    assert out["offset"] == 10 + (400 - 10)  # shard 0's whole range; shard 1 has not moved
    assert out["rejects"] == ["s3://r/p1-s0-hop0.jsonl"] and "shard_start" in out["rejects_note"]
    assert [(s["shard"], s["range"], s["status"]) for s in out["shards"]] == [
        (0, [10, 400], "COMPLETED"),
        (1, [400, 700], "RUNNING"),
    ]
    assert out["knobs"] == {"max_wcu": 90.0} and "token" not in str(out)
    assert len(out["chains"]) == 1  # the load, not its shards
    # every shard finished, the parent not settled (its settler died): said, with the way out
    _run_to(ledger, _get(ledger, s1.target), L.COMPLETED, rows=10, rid="r1")
    _run_to(ledger, _shard(ledger, parent, 2), L.COMPLETED, rows=10, rid="r2")
    out = status(OBJ, ledger_table=ledger.table, ddb_client=ledger.client, clock=lambda: 1000.0)
    assert (out["status"], out["stale"], out["last_error"]) == ("RUNNING", True, SETTLE_ADVICE)
    assert (out["rows_read"], out["offset"]) == (30, SIZE)


def _backfills(ledger: Ledger, prefix: str, table: str | None = None) -> list[BackfillRecord]:
    raws = ledger.client.query(
        TableName=ledger.table,
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "object"},
        ExpressionAttributeValues={":o": {"S": prefix}},
        ConsistentRead=True,
    )["Items"]
    return [b for b in backfill_records(prefix, raws) if table is None or b.table == table]


def test_a_prefix_backfill_keeps_a_record_of_its_lanes_and_objects(ledger: Ledger) -> None:
    prefix = "s3://b/p/"
    ledger.start_backfill(prefix, table="t", backfill_id="bf", lanes=2, parallel=2)
    a, b, c = "s3://b/p/a.csv", "s3://b/p/b.csv", "s3://b/p/c.csv"
    ledger.backfill_member(prefix, table="t", backfill_id="bf", obj=a, target=target_key("t", "va"))
    ledger.backfill_member(prefix, table="t", backfill_id="bf", obj=a, target=target_key("t", "va"))  # again
    ledger.backfill_member(prefix, table="t", backfill_id="bf", obj=b, target="", skipped="access denied")
    ledger.backfill_lane_done(prefix, table="t", backfill_id="bf", lane=1)
    (rec,) = _backfills(ledger, prefix, table="t")
    assert (rec.backfill_id, rec.lanes, rec.lanes_done, rec.parallel, rec.walked) == ("bf", 2, {1}, 2, False)
    assert rec.members == ((a, target_key("t", "va"), ""), (b, "", "access denied"))
    assert _backfills(ledger, prefix, table="other") == []
    assert ledger.chains(prefix) == []  # a backfill's record is not a load
    # its status: a is not in the ledger yet (pending), b was skipped, a lane still walks
    out = status(prefix, ledger_table=ledger.table, ddb_client=ledger.client, table="t")
    assert (out["status"], out["objects"], out["pending"], out["skipped"], out["lanes_done"]) == (
        "RUNNING",
        2,
        1,
        1,
        1,
    )
    # the load of a completes, c is reached and completes, the lanes end: one failed object (b)
    for obj, version in ((a, "va"), (c, "vc")):
        ledger.backfill_member(prefix, table="t", backfill_id="bf", obj=obj, target=target_key("t", version))
        assert ledger.create(
            obj,
            version=version,
            chain_id=version,
            request_id="r",
            lease_until=2000.0,
            table="t",
            spec=SPEC,
            lane=None,
            object_size=SIZE,
        )
        item = ledger.get(obj, target_key("t", version))
        assert item is not None
        cp = Checkpoint(
            source=obj,
            table="t",
            version_id=version,
            etag=None,
            size=SIZE,
            header=["pk"],
            offset=SIZE,
            next_row=8,
            counters=Counters(rows_read=7, items_written=7),
            complete=True,
        )
        assert ledger.finish(item, hop=0, request_id="r", checkpoint=cp, status=L.COMPLETED)
    ledger.backfill_lane_done(prefix, table="t", backfill_id="bf", lane=0)
    out = status(prefix, ledger_table=ledger.table, ddb_client=ledger.client, table="t")
    assert (out["status"], out["objects"], out["completed"], out["skipped"]) == ("FAILED", 3, 2, 1)
    assert (out["rows_read"], out["items_written"]) == (14, 14)
    assert [load["status"] for load in out["loads"]] == ["COMPLETED", "SKIPPED", "COMPLETED"]
    # sent again: its lanes walk again
    ledger.start_backfill(prefix, table="t", backfill_id="bf", lanes=2, parallel=2)
    assert _backfills(ledger, prefix)[0].lanes_done == frozenset()
    assert status("s3://b/q/", ledger_table=ledger.table, ddb_client=ledger.client)["status"] == "NOT_FOUND"


# -- launching the shards, through the runner: a local Invoke endpoint records what it sends --------


class _Invokes:
    """``POST .../invocations``: 202 and the payload recorded, or 500 while ``failing``."""

    def __init__(self) -> None:
        import http.server

        self.failing = False
        self.payloads: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 500 if outer.failing else 202
                if not outer.failing:
                    outer.payloads.append(orjson.loads(body))
                out = b'{"Type": "Service", "message": "injected"}' if outer.failing else b""
                self.send_response(status)
                if status != 202:
                    self.send_header("x-amzn-ErrorType", "ServiceException")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def invokes() -> Iterator[_Invokes]:
    ep = _Invokes()
    yield ep
    ep.server.shutdown()
    ep.server.server_close()


def _launcher(ddb: Any, s3: Any, ledger: Ledger, ep: _Invokes) -> ChainRunner:
    import boto3

    from lambda_src.handler import lambda_client_config

    def no_hop(req: HopRequest) -> RunResult:
        raise AssertionError("a launch runs no hop")

    return ChainRunner(
        settings=Settings(ledger_table=ledger.table, table="t"),
        ledger=Ledger(ddb, ledger.table),
        s3=s3,
        lambda_client=boto3.client("lambda", endpoint_url=ep.url, config=lambda_client_config()),
        engine=no_hop,
        telemetry=Telemetry(),
        sleep=lambda _s: None,
    )


def _put_csv(s3: Any, bucket: str, key: str, rows: int) -> str:
    body = "pk,n\n" + "".join(f"k{i:05d},{i}\n" for i in range(rows))
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    return f"s3://{bucket}/{key}"


def test_a_launch_whose_invokes_fail_stalls_its_shards_and_a_resend_starts_them(
    ddb: Any, s3: Any, bucket: str, ledger: Ledger, invokes: _Invokes
) -> None:
    from lambda_src.chain import StalledError

    uri = _put_csv(s3, bucket, "two.csv", 2000)
    backfill = {"kind": "backfill", "version": 1, "source": uri, "table": "t", "parallel": 2}
    invokes.failing = True
    with pytest.raises(StalledError, match="shard 0: first hop invoke failed"):
        _launcher(ddb, s3, ledger, invokes).outcome(backfill, _ctx("r1"))
    (parent,) = ledger.chains(uri)
    shards = ledger.shards_of(parent)
    assert (parent.status, [s.status for s in shards]) == (L.RUNNING, [L.STALLED, L.STALLED])
    assert [s.byte_range for s in shards] == [tuple(r) for r in (parent.shards or {})["ranges"]]

    invokes.failing = False
    out = _launcher(ddb, s3, ledger, invokes).outcome(backfill, _ctx("r2")).to_dict()
    assert (out["status"], out["shards"], out["resumed_shards"]) == ("accepted", 2, [0, 1]), out
    shards = ledger.shards_of(parent)
    sent = {(p["target"], p["hop"], p["token"]) for p in invokes.payloads}
    assert sent == {(s.target, 0, s.token) for s in shards}  # each its own continuation, own token
    assert all(s.claim == L.PENDING and s.handed_by == "r2" for s in shards)

    # the same S3 notification again while the shards are pending: nothing is sent
    from lambda_src.admin import build_notification

    head = s3.head_object(Bucket=bucket, Key="two.csv")
    note = build_notification(
        bucket, "two.csv", size=head["ContentLength"], etag=head["ETag"], version_id=head["VersionId"]
    )
    out = _launcher(ddb, s3, ledger, invokes).outcome(note, _ctx("r3")).to_dict()
    assert out["objects"][0]["status"] == "skipped", out
    assert len(invokes.payloads) == 2


def test_lambdas_retry_of_a_lane_that_launched_sends_the_same_continuations_again(
    ddb: Any, s3: Any, bucket: str, ledger: Ledger, invokes: _Invokes
) -> None:
    _put_csv(s3, bucket, "p/a.csv", 2000)
    lane = {
        "kind": "lane",
        "version": 1,
        "bucket": bucket,
        "prefix": "p/",
        "exact": False,
        "lane": 0,
        "lanes": 1,
        "start_after": "",
        "table": "t",
        "backfill_id": "bf",
        "parallel": 2,
        "max_rejects": 4,
    }
    first = _launcher(ddb, s3, ledger, invokes).outcome(lane, _ctx("r1")).to_dict()
    assert (first["status"], first["shards"], first["started"]) == ("sharded", 2, [0, 1]), first
    again = _launcher(ddb, s3, ledger, invokes).outcome(lane, _ctx("r1")).to_dict()
    assert (again["status"], again["started"]) == ("sharded", [0, 1]), again
    assert invokes.payloads[:2] == invokes.payloads[2:]  # the same events: a duplicate is fenced
    (parent,) = ledger.chains(f"s3://{bucket}/p/a.csv")
    assert parent.knobs == {"max_rejects": 4} and all(
        s.knobs == {"max_rejects": 4} for s in ledger.shards_of(parent)
    )
    # another request's lane (a backfill sent again) finds them pending: the walker stops there
    out = _launcher(ddb, s3, ledger, invokes).outcome(lane, _ctx("r2")).to_dict()
    assert out["status"] == "lane-owned", out
    assert len(invokes.payloads) == 4


def _ctx(request_id: str) -> InvocationContext:
    return InvocationContext(request_id=request_id, function="s3ddb-loader", remaining_ms=lambda: 600_000)


# -- found by a review of the sharded chain -----------------------------------------------------------


def test_a_shard_started_again_makes_a_settlement_read_before_it_fail(
    ddb: Any, s3: Any, bucket: str, ledger: Ledger, invokes: _Invokes
) -> None:
    """Shard B finishes and reads shard A FAILED; a resend starts A again while the load is still
    RUNNING; B's settlement (FAILED, from its earlier read) must not land: the restart moves the
    load's ``rev`` on, so the load is not settled FAILED while A runs."""
    uri = _put_csv(s3, bucket, "race.csv", 2000)
    backfill = {"kind": "backfill", "version": 1, "source": uri, "table": "t", "parallel": 2}
    _launcher(ddb, s3, ledger, invokes).outcome(backfill, _ctx("r1"))
    (parent,) = ledger.chains(uri)
    a, b = ledger.shards_of(parent)
    _finish_shard(ledger, a, L.FAILED, rid="ra")
    _finish_shard(ledger, b, L.COMPLETED, rid="rb")
    read_by_b = _get_item(ledger, parent)  # B's read of the load: RUNNING, every shard finished
    assert read_by_b.status == L.RUNNING

    _launcher(ddb, s3, ledger, invokes).outcome(backfill, _ctx("r2"))  # the resend: A starts again
    assert ledger.get(a.object, a.target).status == L.RUNNING  # type: ignore[union-attr]
    assert not ledger.settle(
        read_by_b, status=L.FAILED, counters=Counters(), offset=0, request_id="rb", reason="shard 0"
    )
    assert _get_item(ledger, parent).status == L.RUNNING


def test_a_resend_adds_its_knobs_to_the_shards_own(
    ddb: Any, s3: Any, bucket: str, ledger: Ledger, invokes: _Invokes
) -> None:
    uri = _put_csv(s3, bucket, "knobs.csv", 2000)
    first = {"kind": "backfill", "version": 1, "source": uri, "table": "t", "parallel": 2, "max_wcu": 500}
    _launcher(ddb, s3, ledger, invokes).outcome(first, _ctx("r1"))
    (parent,) = ledger.chains(uri)
    a, _b = ledger.shards_of(parent)
    _finish_shard(ledger, a, L.FAILED, rid="ra")
    again = {**first, "max_rejects": 50}
    again.pop("max_wcu")
    _launcher(ddb, s3, ledger, invokes).outcome(again, _ctx("r2"))
    resumed = ledger.get(a.object, a.target)
    assert resumed is not None and resumed.knobs == {"max_wcu": 500, "max_rejects": 50}


def test_a_shards_share_counts_the_shards_not_made_yet_and_not_the_dead(
    ddb: Any, s3: Any, ledger: Ledger, invokes: _Invokes
) -> None:
    from loader.retry import WriteBudget

    runner = _launcher(ddb, s3, ledger, invokes)
    runner.ledger.clock = lambda: 1000.0  # the fixture ledger's time: every lease is still running
    parent = _parent(ledger)  # three ranges planned
    s0 = _shard(ledger, parent, 0)
    budget = WriteBudget(None)
    assert runner._share_budget(s0, budget, 900.0) == 3  # shards 1 and 2 will start: 300 each
    assert budget.wcu == 300.0
    s1 = _shard(ledger, parent, 1)
    _run_to(ledger, s1, L.COMPLETED, rows=10, rid="r1")
    s2 = _shard(ledger, parent, 2)
    runner.ledger.clock = lambda: 5000.0  # shard 2's pending lease (3000) ran out: no hop alive
    assert _get(ledger, s2.target).stale(5000.0)
    s0 = dataclasses.replace(s0, lease_until=9000.0)  # itself: its hop is running
    assert runner._share_budget(s0, budget, 900.0) == 1
    assert budget.wcu == 900.0


def test_first_and_error_duplicate_policies_load_as_one_chain(
    ddb: Any, s3: Any, ledger: Ledger, invokes: _Invokes
) -> None:
    from lambda_src.events import ObjectRef
    from loader.spec import LoadSpec

    runner = _launcher(ddb, s3, ledger, invokes)
    ref = ObjectRef(bucket="b", key="data.csv", version_id="v1", size=10_000_000)
    for policy in ("first", "error"):
        spec = LoadSpec(source="s3://b/data.csv", table="t", version_id="v1", on_duplicate=policy)
        plan, note = runner._plan(ref, spec, 4)
        assert plan is None and note is not None and f"on_duplicate {policy}" in note


def test_a_continuation_that_names_a_backfill_record_is_refused(
    ddb: Any, s3: Any, ledger: Ledger, invokes: _Invokes
) -> None:
    ledger.start_backfill("s3://b/q/", table="t", backfill_id="bf1", lanes=1, parallel=1)
    forged = {
        "kind": "continue",
        "version": 2,
        "object": "s3://b/q/",
        "target": f"t{L.BACKFILL_SEP}bf1",
        "hop": 0,
        "token": "guess",
    }
    out = _launcher(ddb, s3, ledger, invokes).outcome(forged, _ctx("r1")).to_dict()
    assert out["status"] == "refused" and "names no chain" in out["reason"], out


def _finish_shard(ledger: Ledger, shard: LedgerItem, status: L.ChainStatus, *, rid: str) -> LedgerItem:
    """Claim a launched shard's pending hop (as its continuation does) and finish it."""
    assert ledger.claim(shard, request_id=rid, lease_until=shard.lease_until + 1, reclaim=False)
    claimed = _get_item(ledger, shard)
    rng = claimed.byte_range
    assert rng is not None
    done = status == L.COMPLETED
    cp = Checkpoint(
        source=shard.object,
        table="t",
        version_id=shard.version,
        etag=None,
        size=None,
        header=["pk", "n"],
        offset=rng[1] if done else rng[0],
        next_row=1,
        counters=Counters(),
        hop=claimed.hop,
        chain_id=claimed.chain_id,
        complete=done,
        byte_range=rng,
    )
    reason = "" if done else "TooManyRejectsError: 9 rows rejected"
    finished = ledger.finish(
        claimed, hop=claimed.hop, request_id=rid, checkpoint=cp, status=status, reason=reason
    )
    assert finished
    return _get_item(ledger, shard)


def _get_item(ledger: Ledger, item: LedgerItem) -> LedgerItem:
    got = ledger.get(item.object, item.target)
    assert got is not None
    return got


def test_a_lane_event_is_bounded_by_its_lanes_times_its_shards(
    ddb: Any, s3: Any, bucket: str, ledger: Ledger, invokes: _Invokes
) -> None:
    """S3DDB_MAX_CHAINS (4 here) bounds every chain of a backfill: 2 lanes of parallel 3 would run
    6 at once, so a lane event that says so (sent before the limit was lowered, or forged) is refused."""
    lane = {
        "kind": "lane", "version": 1, "bucket": bucket, "prefix": "p/", "exact": False, "lane": 0,
        "lanes": 2, "start_after": "", "table": "t", "backfill_id": "bf", "parallel": 3,
    }  # fmt: skip
    out = _launcher(ddb, s3, ledger, invokes).outcome(lane, _ctx("r1")).to_dict()
    assert out["status"] == "refused" and "S3DDB_MAX_CHAINS=4" in out["reason"], out
    assert invokes.payloads == []
