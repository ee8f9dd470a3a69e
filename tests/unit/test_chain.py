"""Who may run a hop (a pure decision over the ledger item), the deadline margin, and lanes."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_src import ledger as L
from lambda_src.chain import Deadline, InvokeEstimate, backfill_id, decide, lane_of
from lambda_src.ledger import LedgerItem
from loader.models import Counters, Progress

NOW = 1_000_000.0


def _item(**kw: Any) -> LedgerItem:
    base: dict[str, Any] = dict(
        object="s3://b/k",
        version="v",
        status=L.RUNNING,
        chain_id="c",
        hop=2,
        hops=3,
        claim="r1",
        handed_by="",
        lease_until=NOW + 100,
        rev=5,
        checkpoint=None,
        table="t",
        schema=None,
        lane=None,
        object_size=10,
        offset=0,
        counters=Counters(),
    )
    base.update(kw)
    return LedgerItem(**base)


@pytest.mark.parametrize(
    ("item", "kind", "rid", "hop", "chain", "action", "reclaim"),
    [
        (None, "start", "r", 0, "", "create", False),
        (None, "continue", "r", 1, "c", "skip", False),
        (_item(status=L.COMPLETED), "start", "r", 0, "", "skip", False),
        (_item(status=L.FAILED), "continue", "r", 2, "c", "skip", False),
        (_item(status=L.STALLED, claim=L.PENDING), "start", "r", 0, "", "claim", False),
        # the same S3 event again while hop 2 runs elsewhere: a duplicate
        (_item(), "start", "r2", 0, "", "skip", False),
        # Lambda retried the request that holds the claim (crash or timeout): resume
        (_item(), "continue", "r1", 2, "c", "claim", True),
        # a duplicate continuation while hop 2 runs
        (_item(), "continue", "r2", 2, "c", "skip", False),
        # a stale continuation of an older hop, or of another chain
        (_item(), "continue", "r2", 1, "c", "skip", False),
        (_item(), "continue", "r1", 2, "other", "skip", False),
        # handed over: the continuation takes it; the hop that handed over (retried) may too
        (_item(claim=L.PENDING, handed_by="r0"), "continue", "r9", 2, "c", "claim", False),
        (_item(claim=L.PENDING, handed_by="r0"), "continue", "r0", 1, "c", "claim", False),
        (_item(claim=L.PENDING, handed_by="r0"), "start", "r9", 0, "", "skip", False),
        (_item(claim=L.PENDING, handed_by="r0", lease_until=NOW - 1), "start", "r9", 0, "", "claim", True),
        # a claim whose lease ran out may be taken over
        (_item(lease_until=NOW - 1), "start", "r9", 0, "", "claim", True),
        (_item(), "continue", "r1", 3, "c", "skip", False),
    ],
)
def test_decide(
    item: LedgerItem | None, kind: Any, rid: str, hop: int, chain: str, action: str, reclaim: bool
) -> None:
    d = decide(item, kind=kind, request_id=rid, now=NOW, event_hop=hop, event_chain=chain)
    assert (d.action, d.reclaim) == (action, reclaim), d.reason
    assert d.reason or action == "create"


def _progress(**kw: Any) -> Progress:
    base: dict[str, Any] = dict(
        rows_read=0,
        items_written=0,
        rows_rejected=0,
        duplicates_collapsed=0,
        offset=0,
        object_size=None,
        inflight_batches=0,
        max_backoff_s=0.0,
        elapsed_s=1.0,
        items_per_second=0.0,
    )
    base.update(kw)
    return Progress(**base)


def test_deadline_margin_grows_with_inflight_work_and_backoff() -> None:
    left = [60_000]
    d = Deadline(lambda: left[0], safety_margin_ms=1000, ledger_write_s=0.1, invoke_s=0.2)
    idle = d.margin_ms(_progress())
    busy = d.margin_ms(_progress(inflight_batches=40, items_per_second=1000.0))
    backing_off = d.margin_ms(_progress(inflight_batches=40, items_per_second=1000.0, max_backoff_s=5.0))
    assert idle == pytest.approx(1000 + 1000 * (3 * 0.1 + 2 * 0.2))
    assert busy == pytest.approx(idle + 1000.0)  # 40 batches x 25 items at 1000 items/s
    assert backing_off == pytest.approx(busy + 5000.0)


def test_deadline_stops_once_and_stays_stopped() -> None:
    left = [10_000]
    d = Deadline(lambda: left[0], safety_margin_ms=2000, ledger_write_s=0.1, invoke_s=0.1)
    assert not d.should_stop(_progress())
    left[0] = 2400
    assert d.should_stop(_progress())
    assert d.remaining_at_stop_ms == 2400
    left[0] = 60_000
    assert d.should_stop(_progress())


def test_measured_slow_ledger_writes_raise_the_margin() -> None:
    d = Deadline(lambda: 0, safety_margin_ms=0, ledger_write_s=0.1, invoke_s=0.1)
    before = d.margin_ms(_progress())
    d.observe_ledger_write(1.0)
    d.observe_invoke(2.0)
    assert d.margin_ms(_progress()) >= before + 3 * 900 + 2 * 1900


def test_lanes_partition_keys_stably() -> None:
    keys = [f"p/obj-{i}.csv" for i in range(50)]
    lanes = [lane_of(k, 4) for k in keys]
    assert set(lanes) == {0, 1, 2, 3}
    assert lanes == [lane_of(k, 4) for k in keys]


def test_a_chain_failed_by_max_hops_resumes_only_for_a_start_event_with_room() -> None:
    failed = _item(status=L.FAILED, hop=1, reason=f"{L.MAX_HOPS_REASON}2 reached at offset 5 of 10")
    other = _item(status=L.FAILED, hop=1, reason="SourceError: gone")

    def action(item: LedgerItem, kind: Any, max_hops: int | None) -> str:
        return decide(item, kind=kind, request_id="r", now=NOW, event_chain="c", max_hops=max_hops).action

    assert action(failed, "start", 5) == "resume"
    assert action(failed, "start", 2) == "skip"  # the same limit: it would fail again at once
    assert action(failed, "start", None) == "skip"
    assert action(failed, "continue", 5) == "skip"  # only a new event resumes, not an old continuation
    assert action(other, "start", 5) == "skip"


def test_the_invoke_estimate_is_measured_and_feeds_the_margin() -> None:
    est = InvokeEstimate()
    assert est.seconds == 1.0  # a guess until the first invoke is timed
    est.observe(0.05)
    assert est.seconds == pytest.approx(0.05)
    est.observe(3.0)  # a slow invoke raises the estimate at once
    assert est.seconds == pytest.approx(3.0)
    est.observe(0.05)  # fast ones lower it gradually
    assert 0.05 < est.seconds < 3.0
    fast = Deadline(lambda: 0, safety_margin_ms=0, ledger_write_s=0.1, invoke_s=0.05)
    slow = Deadline(lambda: 0, safety_margin_ms=0, ledger_write_s=0.1, invoke_s=est.seconds)
    assert slow.margin_ms(_progress()) - fast.margin_ms(_progress()) == pytest.approx(
        2000 * (est.seconds - 0.05)
    )


def test_a_backfill_id_is_derived_from_what_it_loads() -> None:
    base = backfill_id("b", "p/", "t", 4, None)
    assert base == backfill_id("b", "p/", "t", 4, None)
    variants = {
        backfill_id("b2", "p/", "t", 4, None),
        backfill_id("b", "q/", "t", 4, None),
        backfill_id("b", "p/", "t2", 4, None),
        backfill_id("b", "p/", "t", 3, None),
        backfill_id("b", "p/", "t", 4, {"columns": {"n": "N"}}),
    }
    assert base not in variants and len(variants) == 5
