"""ChainRunner hops that run worker processes (``lambda_src.hopworkers``), against DynamoDB Local
(ledger and target table), moto S3 and a local Invoke endpoint that records the continuations.
The workers are real processes loading real rows; a hop's time is the test's clock (the context's
``remaining_ms``), turned low once the workers have committed a mark, so hops end mid-range.
What the tests do between the workers' marks (turn the clock, take the claim as another request
would, kill a worker as the kernel would) runs in the ``save`` the runner gives the workers.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from lambda_src.admin import build_notification, status
from lambda_src.chain import ChainRunner, HopRequest, InvocationContext
from lambda_src.events import EVENT_VERSION
from lambda_src.handler import lambda_client_config
from lambda_src.hopworkers import HopWorkersRequest, run_hop_workers
from lambda_src.ledger import Ledger, LedgerItem, target_key, version_key
from lambda_src.observability import Telemetry
from lambda_src.settings import Settings
from loader.models import RunResult
from loader.workers import ShardedCheckpoint, WorkersFailed
from tests.support.aws import scan_all
from tests.support.data import multiline_csv
from tests.support.invoke import InvokeEndpoint

ROWS = 60_000
#: small sub-ranges (the object is ~5 MB): the runner's minimum per worker, lowered for the test
MIN_BYTES = 256 << 10


def _no_single_process(req: HopRequest) -> RunResult:
    raise AssertionError(f"a hop ran in one process: {req.run_id}")


class Hops:
    """The hop engine of the runner: the real worker processes, with ``on_save(state)`` run
    after every ``save`` of theirs (in the hop's own process, between two marks)."""

    def __init__(self) -> None:
        self.requests: list[HopWorkersRequest] = []
        self.on_save: Callable[[ShardedCheckpoint], None] | None = None

    def __call__(self, req: HopWorkersRequest) -> tuple[RunResult, ShardedCheckpoint]:
        self.requests.append(req)

        def save(state: ShardedCheckpoint) -> None:
            req.save(state)
            if self.on_save is not None:
                self.on_save(state)

        return run_hop_workers(HopWorkersRequest(**{**req.__dict__, "save": save}))


def _runner(
    ddb: Any,
    ledger: str,
    cont: InvokeEndpoint,
    hops: Hops,
    table: str,
    *,
    min_bytes: int = MIN_BYTES,
    engine: Callable[[HopRequest], RunResult] = _no_single_process,
    **settings: Any,
) -> ChainRunner:
    """A runner whose hops run 2 workers (``hops``), with small chunks and frequent checkpoints;
    ``settings`` replace the defaults; ``engine``: what a one-process hop runs (none, by default)."""
    lam = boto3.client("lambda", endpoint_url=cont.url, config=lambda_client_config())
    base: dict[str, Any] = {
        "ledger_table": ledger,
        "table": table,
        "schema": '{"columns": {"n": "N"}}',
        "hop_workers": 2,
        "checkpoint_interval_s": 0.2,
        "chunk_bytes": 16384,
    }
    return ChainRunner(
        settings=Settings(**{**base, **settings}),
        ledger=Ledger(ddb, ledger),
        s3=boto3.client("s3"),
        lambda_client=lam,
        engine=engine,
        telemetry=Telemetry(),
        sleep=lambda _s: None,
        hop_engine=hops,
        min_bytes_per_worker=min_bytes,
    )


def _ctx(request_id: str, left: list[int]) -> InvocationContext:
    return InvocationContext(request_id=request_id, function="s3ddb-loader", remaining_ms=lambda: left[0])


def _object(s3: Any, bucket: str) -> tuple[dict[str, Any], str, bytes, dict[str, dict[str, Any]]]:
    body, expected = multiline_csv(ROWS, pad=30)
    s3.put_object(Bucket=bucket, Key="in.csv", Body=body)
    head = s3.head_object(Bucket=bucket, Key="in.csv")
    event = build_notification(
        bucket, "in.csv", size=len(body), etag=head["ETag"], version_id=head.get("VersionId")
    )
    return event, f"s3://{bucket}/in.csv", body, expected


def _item(ddb: Any, ledger: str, uri: str, table: str) -> LedgerItem:
    ledger_ = Ledger(ddb, ledger)
    found = [i for i in ledger_.chains(uri) if i.table == table]
    assert len(found) == 1, found
    item = ledger_.get(uri, found[0].target)
    assert item is not None
    return item


def _moved(state: ShardedCheckpoint) -> bool:
    """Whether every sub-range has a mark past its start (each worker committed rows)."""
    return all(s.checkpoint is not None and s.checkpoint.offset > s.start for s in state.shards)


def _answer(outcome: Any) -> dict[str, Any]:
    """The answer about the one object of an event (a notification answers per object)."""
    out: dict[str, Any] = outcome.to_dict()
    return out["objects"][0] if "objects" in out else out


def _table(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {it["pk"]["S"]: it for it in scan_all(ddb, table)}


def test_sub_ranges_resume_each_from_its_own_mark_across_hops_and_load_exact(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    hops = Hops()
    runner = _runner(ddb, ledger_name, endpoint, hops, table)
    event, uri, body, expected = _object(s3, bucket)
    left = [600_000]
    at_start: list[list[int]] = []  # the marks when the running hop's workers started

    def end_the_hop(state: ShardedCheckpoint) -> None:
        marks = [s.checkpoint.offset if s.checkpoint is not None else s.start for s in state.shards]
        if len(at_start) < len(hops.requests):
            at_start.append(marks)  # the save before the workers start
        elif all(m > m0 for m, m0 in zip(marks, at_start[-1], strict=True)):
            left[0] = 8_000  # under the deadline's margin, above the point where workers are killed

    hops.on_save = end_the_hop
    out = _answer(runner.outcome(event, _ctx("req-0", left)))
    assert out["status"] == "continued", out
    marks: list[list[tuple[int, int]]] = []
    hop = 0
    while out["status"] == "continued":
        hop += 1
        assert hop < 20, "the chain does not end"
        item = _item(ddb, ledger_name, uri, table)
        assert item.sub_ranges is not None and item.hop == hop
        subs = item.to_status()["workers"]
        marks.append([(s["range"][0], s["offset"]) for s in subs])
        # the chain's checkpoint stands for the sub-ranges: lowest mark, counters added up
        assert item.offset == min(s["offset"] for s in subs if not s["complete"])
        assert item.counters.rows_read == sum(s["rows_read"] for s in subs) and item.counters.balanced
        left[0] = 600_000
        if hop == 3:
            hops.on_save = None  # the fourth hop runs to the end
        payload = endpoint.payloads[-1]
        assert (payload["kind"], payload["hop"]) == ("continue", hop)
        out = _answer(runner.outcome(payload, _ctx(f"req-{hop}", left)))
        # this hop resumed every sub-range from the mark the ledger held for it
        resumed = hops.requests[-1].state.shards
        assert [(s.start, s.checkpoint.offset if s.checkpoint else s.start) for s in resumed] == marks[-1]
    assert out["status"] == "COMPLETED", out
    assert len(marks) >= 3, marks  # the chain went on across at least three hand-overs
    # the plan was made once: every hop ran the same sub-ranges
    assert len({tuple(s.start for s in r.state.shards) for r in hops.requests}) == 1
    assert len(hops.requests[0].state.shards) == 2
    # each hop moved both marks on
    for before, after in itertools.pairwise(marks):
        assert all(b[1] < a[1] for b, a in zip(before, after, strict=True)), (before, after)
    st = status(uri, ledger_table=ledger_name, ddb_client=ddb)
    assert st["status"] == "COMPLETED", st
    assert (st["rows_read"], st["items_written"], st["rows_rejected"], st["duplicates_collapsed"]) == (
        ROWS,
        ROWS,
        0,
        0,
    )
    assert (st["offset"], st["hops"]) == (len(body), len(marks) + 1), st
    assert _table(ddb, table) == expected
    assert multiprocessing.active_children() == []


def test_a_hop_that_loses_its_claim_stops_its_workers_and_writes_nothing_more(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    hops = Hops()
    runner = _runner(ddb, ledger_name, endpoint, hops, table)
    event, uri, _body, _expected = _object(s3, bucket)
    ledger = Ledger(ddb, ledger_name)
    stolen: list[LedgerItem] = []

    def steal(state: ShardedCheckpoint) -> None:
        if _moved(state) and not stolen:
            item = _item(ddb, ledger_name, uri, table)
            # another request takes the hop over (as one whose lease check passed would)
            assert ledger.claim(item, request_id="thief", lease_until=item.lease_until, reclaim=True)
            stolen.append(_item(ddb, ledger_name, uri, table))

    hops.on_save = steal
    out = _answer(runner.outcome(event, _ctx("req-0", [600_000])))
    assert out["status"] == "superseded", out
    after = _item(ddb, ledger_name, uri, table)
    assert stolen and after.claim == "thief"
    # nothing the hop did after the theft reached the ledger, and no continuation was sent
    assert (after.rev, after.checkpoint, after.sub_ranges) == (
        stolen[0].rev,
        stolen[0].checkpoint,
        stolen[0].sub_ranges,
    )
    assert endpoint.payloads == []
    assert multiprocessing.active_children() == []
    # the rows below the marks are what the ledger counts
    assert after.counters.rows_read > 0 and after.counters.balanced


def test_a_worker_that_dies_keeps_the_marks_and_lambdas_retry_finishes_exact(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    hops = Hops()
    runner = _runner(ddb, ledger_name, endpoint, hops, table)
    event, uri, body, expected = _object(s3, bucket)
    killed: list[str] = []

    def kill_one(state: ShardedCheckpoint) -> None:
        if _moved(state) and not killed:
            worker = next(p for p in multiprocessing.active_children() if p.name.startswith("s3ddb-shard-"))
            worker.kill()  # as the kernel's OOM killer would
            killed.append(worker.name)

    hops.on_save = kill_one
    with pytest.raises(WorkersFailed, match="died") as failed:
        runner.outcome(event, _ctx("req-0", [600_000]))
    assert failed.value.error_type == "WorkerDied" and killed
    item = _item(ddb, ledger_name, uri, table)
    # the claim is kept for Lambda's retry, the error said, the marks committed
    assert (item.status, item.claim, item.hop) == ("RUNNING", "req-0", 0)
    assert "died" in item.last_error
    assert item.sub_ranges is not None and item.counters.rows_read > 0 and item.counters.balanced
    marks = [(s["range"][0], s["offset"]) for s in item.to_status()["workers"]]
    assert multiprocessing.active_children() == []

    hops.on_save = None
    out = _answer(runner.outcome(event, _ctx("req-0", [600_000])))  # Lambda retries the request
    assert out["status"] == "COMPLETED", out
    resumed = hops.requests[-1].state.shards
    assert [(s.start, s.checkpoint.offset if s.checkpoint else s.start) for s in resumed] == marks
    st = status(uri, ledger_table=ledger_name, ddb_client=ddb)
    assert (st["status"], st["rows_read"], st["items_written"], st["rows_rejected"]) == (
        "COMPLETED",
        ROWS,
        ROWS,
        0,
    ), st
    assert st["offset"] == len(body) and st["reclaims"] == 1
    assert _table(ddb, table) == expected


def test_rejects_of_every_sub_range_count_against_the_chains_max_rejects(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    hops = Hops()
    runner = _runner(ddb, ledger_name, endpoint, hops, table)
    body, _expected = multiline_csv(ROWS, pad=30)
    lines = body.split(b"\n")
    # a bad number in every 1,000th row: 60 rejects in all, spread over both sub-ranges
    bad = b"\n".join(
        line.replace(b",", b",x", 1) if i % 2000 == 1 and i > 0 else line for i, line in enumerate(lines)
    )
    s3.put_object(Bucket=bucket, Key="bad.csv", Body=bad)
    head = s3.head_object(Bucket=bucket, Key="bad.csv")
    event = build_notification(
        bucket, "bad.csv", size=len(bad), etag=head["ETag"], version_id=head["VersionId"]
    )
    uri = f"s3://{bucket}/bad.csv"
    # a backfill's knob: the chain fails once more than 50 rows are rejected, whatever worker did
    item_target = target_key(table, version_key(head["VersionId"], head["ETag"]))
    out = _answer(runner.outcome(event, _ctx("req-0", [600_000])))
    assert out["status"] == "COMPLETED"  # no limit: every row written or rejected
    st = status(uri, ledger_table=ledger_name, ddb_client=ddb)
    assert st["rows_rejected"] == 60 and st["rows_read"] == ROWS and st["items_written"] == ROWS - 60
    assert len(Ledger(ddb, ledger_name).get(uri, item_target).rejects) == 2  # one file per worker

    limited = _runner(ddb, ledger_name, endpoint, hops, table)
    reload = {
        "kind": "backfill",
        "version": EVENT_VERSION,
        "source": uri,
        "table": table,
        "reload": True,
        "max_rejects": 50,
    }
    runner_out = limited.outcome(reload, _ctx("req-1", [600_000])).to_dict()
    assert runner_out["status"] == "accepted", runner_out
    lane = endpoint.payloads[-1]
    out = limited.outcome(lane, _ctx("req-2", [600_000])).to_dict()
    assert out["status"] == "FAILED", out
    assert out["reason"].startswith("TooManyRejectsError: more than max_rejects 50"), out
    item = Ledger(ddb, ledger_name).get(uri, item_target)
    assert item is not None and item.counters.balanced and item.counters.rows_rejected > 50
