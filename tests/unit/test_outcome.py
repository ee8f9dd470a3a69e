"""A hop's outcome (lambda_src.outcome): typed records, and ``to_dict``, the one place that makes the
handler's JSON answer. Each row pins an answer exactly as the handler gave it when it built dicts
by hand (``s3ddb invoke``, the e2e tests and the emulator read these keys)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from lambda_src.ledger import ChainStatus
from lambda_src.outcome import (
    Accepted,
    AlreadyLoaded,
    Continued,
    Empty,
    Finished,
    HopOutcome,
    Ignored,
    LaneDone,
    LaneOwned,
    ObjectsHandled,
    OutcomeStatus,
    Refused,
    ShardsStarted,
    Skipped,
    Superseded,
)
from loader.models import Counters

C = Counters(rows_read=5, items_written=4, rows_rejected=1, write_units=4)
CD = {
    "rows_read": 5,
    "items_written": 4,
    "rows_rejected": 1,
    "duplicates_collapsed": 0,
    "retries": 0,
    "throttle_events": 0,
    "write_units": 4,
}
SKIP = Skipped(object="s3://b/p/a.csv", reason="already COMPLETED by chain c")
SKIP_D = {"status": "skipped", "object": "s3://b/p/a.csv", "reason": "already COMPLETED by chain c"}


@pytest.mark.parametrize(
    ("outcome", "answer"),
    [
        (
            Finished(status=OutcomeStatus.COMPLETED, object="s3://b/k", chain_id="c", hops=2, counters=C),
            {
                "status": "COMPLETED",
                "object": "s3://b/k",
                "chain_id": "c",
                "hops": 2,
                "counters": CD,
                "reason": "",
            },
        ),
        (
            Finished(
                status=OutcomeStatus.FAILED, object="s3://b/k", chain_id="c", hops=1, counters=C, reason="why"
            ),
            {
                "status": "FAILED",
                "object": "s3://b/k",
                "chain_id": "c",
                "hops": 1,
                "counters": CD,
                "reason": "why",
            },
        ),
        (
            Continued(object="s3://b/k", chain_id="c", hop=0, next_hop=1, offset=100, payload_bytes=190),
            {
                "status": "continued",
                "object": "s3://b/k",
                "chain_id": "c",
                "hop": 0,
                "next_hop": 1,
                "offset": 100,
                "payload_bytes": 190,
            },
        ),
        (Superseded(object="s3://b/k", hop=3), {"status": "superseded", "object": "s3://b/k", "hop": 3}),
        (
            Superseded(object="s3://b/k", hop=3, reason="continuation invoke failed: x"),
            {
                "status": "superseded",
                "object": "s3://b/k",
                "hop": 3,
                "reason": "continuation invoke failed: x",
            },
        ),
        (SKIP, SKIP_D),
        # lane_owned tells the lane walker to stop; it is never part of the answer
        (dataclasses.replace(SKIP, lane_owned=True), SKIP_D),
        (
            Skipped(status=OutcomeStatus.ALREADY_LOADED, object="s3://b/k", reason="r", lane_advanced=True),
            {"status": "already loaded", "object": "s3://b/k", "reason": "r", "lane_advanced": True},
        ),
        (Refused(reason="invalid event: x"), {"status": "refused", "reason": "invalid event: x"}),
        (
            Refused(reason="no token", object="s3://b/k", hop=1),
            {"status": "refused", "reason": "no token", "object": "s3://b/k", "hop": 1},
        ),
        # a backfill with no table anywhere: the answer says "table": null, as it always did
        (
            Refused(reason="no table", source="s3://b/p/", table=None),
            {"status": "refused", "reason": "no table", "source": "s3://b/p/", "table": None},
        ),
        (
            Refused(reason="no such object", source="s3://b/k"),
            {"status": "refused", "reason": "no such object", "source": "s3://b/k"},
        ),
        (
            AlreadyLoaded(
                source="s3://b/k",
                table="t",
                version="v1",
                chain_id="c",
                finished_at="2026-01-01T00:00:00.000+00:00",
                counters=C,
                reason="send it with reload",
            ),
            {
                "status": "already loaded",
                "source": "s3://b/k",
                "table": "t",
                "version": "v1",
                "chain_id": "c",
                "finished_at": "2026-01-01T00:00:00.000+00:00",
                "counters": CD,
                "reason": "send it with reload",
            },
        ),
        (
            Accepted(backfill_id="bf", source="s3://b/p/", table="t", lanes=2, reload=False),
            {
                "status": "accepted",
                "backfill_id": "bf",
                "source": "s3://b/p/",
                "table": "t",
                "lanes": 2,
                "reload": False,
            },
        ),
        (
            Accepted(
                backfill_id="bf", source="s3://b/k", table="t", lanes=1, reload=True, changes=("a", "b")
            ),
            {
                "status": "accepted",
                "backfill_id": "bf",
                "source": "s3://b/k",
                "table": "t",
                "lanes": 1,
                "reload": True,
                "changes": ["a", "b"],
            },
        ),
        # a shard's end: which shard, the load's status then, and what its rejects files hold
        (
            Finished(
                status=OutcomeStatus.COMPLETED,
                object="s3://b/k",
                chain_id="c",
                hops=3,
                counters=C,
                shard=1,
                parent_status="RUNNING",
                rejects_note="note",
            ),
            {
                "status": "COMPLETED",
                "object": "s3://b/k",
                "chain_id": "c",
                "hops": 3,
                "counters": CD,
                "reason": "",
                "shard": 1,
                "parent_status": "RUNNING",
                "rejects_note": "note",
            },
        ),
        (
            ShardsStarted(object="s3://b/k", chain_id="p", shards=4, started=(0, 1, 2, 3)),
            {
                "status": "sharded",
                "object": "s3://b/k",
                "chain_id": "p",
                "shards": 4,
                "started": [0, 1, 2, 3],
            },
        ),
        (
            ShardsStarted(object="s3://b/k", chain_id="p", shards=2, started=(), note="n", reason="r"),
            {
                "status": "sharded",
                "object": "s3://b/k",
                "chain_id": "p",
                "shards": 2,
                "started": [],
                "note": "n",
                "reason": "r",
            },
        ),
        (
            Accepted(
                backfill_id="bf",
                source="s3://b/k",
                table="t",
                lanes=0,
                reload=False,
                parallel=4,
                shards=3,
                resumed_shards=(2,),
                note="fewer",
            ),
            {
                "status": "accepted",
                "backfill_id": "bf",
                "source": "s3://b/k",
                "table": "t",
                "lanes": 0,
                "reload": False,
                "parallel": 4,
                "shards": 3,
                "resumed_shards": [2],
                "note": "fewer",
            },
        ),
        (
            Empty(source="s3://b/p/", reason="no objects under the prefix"),
            {"status": "empty", "source": "s3://b/p/", "reason": "no objects under the prefix"},
        ),
        (
            LaneOwned(lane=0, object="s3://b/p/b.csv", skipped=(SKIP,)),
            {"status": "lane-owned", "lane": 0, "object": "s3://b/p/b.csv", "skipped": [SKIP_D]},
        ),
        (LaneDone(lane=1, skipped=()), {"status": "lane-done", "lane": 1, "skipped": []}),
        (Ignored(reason="s3:S3TestEvent"), {"status": "ignored", "reason": "s3:S3TestEvent"}),
        (
            ObjectsHandled(objects=(SKIP, Refused(reason="r", object="s3://b/x"))),
            {"status": "ok", "objects": [SKIP_D, {"status": "refused", "reason": "r", "object": "s3://b/x"}]},
        ),
    ],
)
def test_each_outcome_answers_with_the_keys_and_values_it_always_had(
    outcome: HopOutcome, answer: dict[str, Any]
) -> None:
    out = outcome.to_dict()
    assert out == answer
    assert list(out) == list(answer)  # the same order of keys, too
    # plain JSON types only: statuses are strings, not enum members; lists, not tuples
    assert json.loads(json.dumps(out)) == out
    assert type(out["status"]) is str


def test_every_status_has_an_outcome_and_keeps_its_string() -> None:
    assert {s.value for s in OutcomeStatus} == {
        "COMPLETED",
        "FAILED",
        "continued",
        "sharded",
        "superseded",
        "skipped",
        "already loaded",
        "refused",
        "accepted",
        "empty",
        "lane-done",
        "lane-owned",
        "ignored",
        "ok",
    }
    # a finished chain's answer carries the ledger's own status string
    assert OutcomeStatus.COMPLETED.value == ChainStatus.COMPLETED.value == "COMPLETED"
    assert OutcomeStatus.FAILED.value == ChainStatus.FAILED.value == "FAILED"


@pytest.mark.parametrize("status", [s for s in OutcomeStatus if s not in ("COMPLETED", "FAILED")])
def test_a_finished_chain_is_completed_or_failed(status: OutcomeStatus) -> None:
    with pytest.raises(ValueError, match="COMPLETED or FAILED"):
        Finished(status=status, object="o", chain_id="c", hops=1, counters=Counters())


@pytest.mark.parametrize("status", [s for s in OutcomeStatus if s not in ("skipped", "already loaded")])
def test_a_skip_is_skipped_or_already_loaded(status: OutcomeStatus) -> None:
    with pytest.raises(ValueError, match="skipped or already loaded"):
        Skipped(status=status, object="o", reason="r")


def test_outcomes_are_frozen_and_fixed_statuses_cannot_be_passed() -> None:
    out = Continued(object="o", chain_id="c", hop=0, next_hop=1, offset=1, payload_bytes=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.hop = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Continued(
            status=OutcomeStatus.FAILED,
            object="o",
            chain_id="c",
            hop=0,
            next_hop=1,
            offset=1,
            payload_bytes=1,
        )  # type: ignore[call-arg]


def test_a_refusal_says_what_it_was_about_for_the_log() -> None:
    assert Refused(reason="r", object="s3://b/k", hop=2).where() == {"object": "s3://b/k", "hop": 2}
    assert Refused(reason="r", source="s3://b/p/", table=None).where() == {
        "source": "s3://b/p/",
        "table": None,
    }
    assert Refused(reason="r").where() == {}
