"""Who may run a hop (a pure decision over the ledger item), backfill lanes and backfill ids.

The hop's deadline is tested in tests/unit/test_deadline.py."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_src import ledger as L
from lambda_src.chain import backfill_id, decide, lane_of
from lambda_src.events import LoadOptions
from lambda_src.ledger import LedgerItem
from loader.models import Counters

NOW = 1_000_000.0
#: the secret the ledger holds for the chain's current hop (hop 2)
TOKEN = "a3f1" * 8


def _item(**kw: Any) -> LedgerItem:
    base: dict[str, Any] = dict(
        object="s3://b/k",
        target="t#v",
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
        spec={"source": "s3://b/k", "table": "t"},
        token=TOKEN,
        lane=None,
        object_size=10,
        offset=0,
        counters=Counters(),
    )
    base.update(kw)
    return LedgerItem(**base)


PENDING = _item(claim=L.PENDING, handed_by="r0")


@pytest.mark.parametrize(
    ("item", "kind", "rid", "hop", "token", "action", "reclaim"),
    [
        (None, "start", "r", 0, "", "create", False),
        (None, "continue", "r", 1, TOKEN, "skip", False),
        (_item(status=L.COMPLETED), "start", "r", 0, "", "skip", False),
        (_item(status=L.COMPLETED), "continue", "r", 2, TOKEN, "skip", False),
        (_item(status=L.FAILED), "continue", "r", 2, TOKEN, "skip", False),
        (_item(status=L.STALLED, claim=L.PENDING), "start", "r", 0, "", "claim", False),
        (_item(status=L.STALLED, claim=L.PENDING), "continue", "r", 2, TOKEN, "claim", False),
        # the same S3 event again while hop 2 runs elsewhere: a duplicate
        (_item(), "start", "r2", 0, "", "skip", False),
        # Lambda retried the request that holds the claim (crash or timeout): resume
        (_item(), "continue", "r1", 2, TOKEN, "claim", True),
        # a duplicate continuation while hop 2 runs
        (_item(), "continue", "r2", 2, TOKEN, "skip", False),
        # the right token with a stale hop number (behind, or ahead of the ledger): nothing to run
        (_item(), "continue", "r2", 1, TOKEN, "skip", False),
        (_item(), "continue", "r1", 3, TOKEN, "skip", False),
        (PENDING, "continue", "r9", 1, TOKEN, "skip", False),
        (PENDING, "continue", "r9", 3, TOKEN, "skip", False),
        # handed over: the continuation with the token takes it
        (PENDING, "continue", "r9", 2, TOKEN, "claim", False),
        (PENDING, "start", "r9", 0, "", "skip", False),
        (_item(claim=L.PENDING, handed_by="r0", lease_until=NOW - 1), "start", "r9", 0, "", "claim", True),
        # a claim whose lease ran out may be taken over
        (_item(lease_until=NOW - 1), "start", "r9", 0, "", "claim", True),
    ],
)
def test_decide(
    item: LedgerItem | None, kind: Any, rid: str, hop: int, token: str, action: str, reclaim: bool
) -> None:
    d = decide(item, kind=kind, request_id=rid, now=NOW, event_hop=hop, event_token=token)
    assert (d.action, d.reclaim) == (action, reclaim), d.reason
    assert d.reason or action == "create"


WRONG = "b4e2" * 8


@pytest.mark.parametrize(
    ("item", "rid", "hop", "token"),
    [
        # a forged continuation for exactly the hop the chain waits for: refused, not claimed
        (PENDING, "r9", 2, WRONG),
        (PENDING, "r9", 2, ""),
        (PENDING, "r9", 2, TOKEN[:-1]),
        (PENDING, "r9", 2, TOKEN + "0"),
        (PENDING, "r9", 2, TOKEN.upper()),
        # whatever state the chain is in: a STALLED or expired chain is not up for grabs either
        (_item(status=L.STALLED, claim=L.PENDING), "r9", 2, WRONG),
        (_item(lease_until=NOW - 1), "r9", 2, WRONG),
        (_item(claim=L.PENDING, handed_by="r0", lease_until=NOW - 1), "r9", 2, ""),
        (_item(status=L.COMPLETED), "r9", 2, WRONG),
        (_item(status=L.FAILED, reason=f"{L.MAX_HOPS_REASON}3 reached"), "r9", 2, WRONG),
        # a chain with no token (hop 0 has not handed over yet) takes no continuation at all
        (_item(hop=0, hops=1, token=""), "r9", 0, ""),
        (_item(hop=0, hops=1, token="", claim=L.PENDING), "r9", 0, ""),
        (_item(hop=0, hops=1, token=""), "r9", 0, WRONG),
    ],
)
def test_a_continuation_without_the_ledgers_token_is_refused(
    item: LedgerItem, rid: str, hop: int, token: str
) -> None:
    d = decide(item, kind="continue", request_id=rid, now=NOW, event_hop=hop, event_token=token)
    assert d.action == "refuse", d
    assert not d.reclaim
    assert "token" in d.reason and item.chain_id in d.reason
    # the reason is logged: it must never carry either secret
    assert TOKEN not in d.reason and (not token or token not in d.reason)


OLD_TOKEN = "c5d3" * 8  # the token of hop 1, which started the request r0


@pytest.mark.parametrize("status", [L.RUNNING, L.STALLED])
def test_lambdas_retry_of_the_request_that_handed_over_takes_the_hop(status: str) -> None:
    # r0 ran hop 1 (from a continuation carrying OLD_TOKEN), handed over to hop 2 (TOKEN), then died
    # before its invoke landed (RUNNING, pending), or its invoke failed (STALLED, StalledError
    # raised): Lambda retries r0 with the very same event. The request id cannot be forged.
    item = _item(status=status, claim=L.PENDING, handed_by="r0")
    d = decide(item, kind="continue", request_id="r0", now=NOW, event_hop=1, event_token=OLD_TOKEN)
    assert d.action == "claim", d.reason
    # anyone else with that old token is still refused
    d = decide(item, kind="continue", request_id="r9", now=NOW, event_hop=1, event_token=OLD_TOKEN)
    assert d.action == "refuse"


def test_the_token_is_checked_only_for_continuations() -> None:
    # a start event (notification, lane) carries no token and needs none
    for item in (_item(), PENDING, _item(status=L.STALLED), _item(status=L.COMPLETED)):
        assert decide(item, kind="start", request_id="r9", now=NOW).action != "refuse"


def test_lanes_partition_keys_stably() -> None:
    keys = [f"p/obj-{i}.csv" for i in range(50)]
    lanes = [lane_of(k, 4) for k in keys]
    assert set(lanes) == {0, 1, 2, 3}
    assert lanes == [lane_of(k, 4) for k in keys]


def test_a_chain_failed_by_max_hops_resumes_only_for_a_start_event_with_room() -> None:
    failed = _item(status=L.FAILED, hop=1, reason=f"{L.MAX_HOPS_REASON}2 reached at offset 5 of 10")
    other = _item(status=L.FAILED, hop=1, reason="SourceError: gone")

    def action(item: LedgerItem, kind: Any, max_hops: int | None) -> str:
        return decide(
            item, kind=kind, request_id="r", now=NOW, event_hop=1, event_token=TOKEN, max_hops=max_hops
        ).action

    assert action(failed, "start", 5) == "resume"
    assert action(failed, "start", 2) == "skip"  # the same limit: it would fail again at once
    assert action(failed, "start", None) == "skip"
    assert action(failed, "continue", 5) == "skip"  # only a new event resumes, not an old continuation
    assert action(other, "start", 5) == "skip"


def test_a_backfill_id_is_derived_from_what_it_loads() -> None:
    opts = LoadOptions()
    base = backfill_id("b", "p/", "t", 4, opts)
    assert base == backfill_id("b", "p/", "t", 4, LoadOptions())
    variants = {
        backfill_id("b2", "p/", "t", 4, opts),
        backfill_id("b", "q/", "t", 4, opts),
        backfill_id("b", "p/", "t2", 4, opts),
        backfill_id("b", "p/", "t", 3, opts),
        backfill_id("b", "p/", "t", 4, LoadOptions(schema={"columns": {"n": "N"}})),
        backfill_id("b", "p/", "t", 4, LoadOptions(csv={"delimiter": ";"})),
        backfill_id("b", "p/", "t", 4, LoadOptions(on_duplicate="first")),
        # a reload is another backfill: its lanes must not stop at the first load's lanes
        backfill_id("b", "p/", "t", 4, opts, "reload-r1"),
    }
    assert base not in variants and len(variants) == 8
