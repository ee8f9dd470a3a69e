"""Review of hop worker processes (``lambda_src.hopworkers``, ``ChainRunner._run_split_hop``): each test
names a defect and asserts the behaviour the product promises. Same harness as
``test_hop_workers_chain``: a ChainRunner whose hops run real worker processes against DynamoDB
Local and moto S3, with a local Invoke endpoint recording the continuations; the hop's clock is
the test's (the context's ``remaining_ms``), changed between the workers' marks in ``save``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import threading
from typing import Any

import orjson
import pytest

from lambda_src.admin import build_notification, status
from lambda_src.chain import MAX_IDLE_HOPS, ChainRunner, HopRequest
from lambda_src.ledger import LedgerItem
from loader.models import RunResult
from loader.workers import ShardedCheckpoint, _main_not_imported
from tests.integration.test_hop_workers_chain import Hops, _answer, _ctx, _item, _moved, _runner
from tests.support.aws import scan_all
from tests.support.data import csv_bytes, multiline_csv
from tests.support.invoke import InvokeEndpoint

ROWS = 20_000


def _put(s3: Any, bucket: str, key: str, body: bytes) -> tuple[dict[str, Any], str]:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    head = s3.head_object(Bucket=bucket, Key=key)
    event = build_notification(
        bucket, key, size=len(body), etag=head["ETag"], version_id=head.get("VersionId")
    )
    return event, f"s3://{bucket}/{key}"


def _with_bad_rows(body: bytes, every: int) -> tuple[bytes, int]:
    """``body`` (a multiline_csv) with a bad number in every ``every``-th record; and how many."""
    lines = body.split(b"\n")
    bad = 0
    out = []
    for i, line in enumerate(lines):
        # records are two lines each (the text field spans a newline): odd lines start a record
        if i > 0 and i % (2 * every) == 1 and b"," in line:
            line = line.replace(b",", b",x", 1)
            bad += 1
        out.append(line)
    return b"\n".join(out), bad


async def _one_process(req: HopRequest) -> RunResult:
    """A one-process hop, as the Lambda container's engine runs it."""
    from loader import clients
    from loader import spec as load_spec

    session = clients.session()
    ddb = clients.dynamodb_client(session)
    keys = clients.describe_key_schema(ddb, req.spec.table)

    async def on_checkpoint(cp: Any) -> None:
        await asyncio.to_thread(req.on_checkpoint, cp)

    opened = clients.open_sender("lean", concurrency=req.spec.concurrency, ddb=ddb, binary_attrs=frozenset())
    async with opened as sender:
        return await load_spec.run(
            req.spec,
            keys=keys,
            sender=sender,
            run_id=req.run_id,
            s3_client=clients.s3_client(session),
            knobs=load_spec.RunKnobs(max_rejects=req.max_rejects, write_budget=req.write_budget),
            should_stop=req.should_stop,
            resume=req.resume,
            on_checkpoint=on_checkpoint,
            on_progress=req.on_progress,
            pin_into_checkpoints=False,
        )


def _listed_reject_offsets(item: LedgerItem) -> set[int]:
    offsets: set[int] = set()
    for location in item.rejects:
        assert not location.startswith("s3://"), location
        with open(location, "rb") as f:
            for line in f:
                if line.strip():
                    offsets.add(orjson.loads(line)["offset"])
    return offsets


# -- rejects of killed workers ----------------------------------------------------------------------


def test_rejects_of_workers_killed_at_the_deadline_are_listed_in_the_ledger(
    ddb: Any,
    s3: Any,
    bucket: str,
    table: str,
    ledger_name: str,
    endpoint: InvokeEndpoint,
    tmp_path: Any,
) -> None:
    """Defect: a hop whose workers are killed by ``should_abort`` (the deadline's last resort)
    commits their marks, whose counters count rows rejected below them, but lists none of their
    rejects files in the ledger (``_run_split_hop`` lists only ``result.rejects_location``, made
    of the results of workers that reported ``done``). Those rejected rows are counted by the
    chain and ``s3ddb status`` yet recorded nowhere it points to: every row the ledger counts as
    rejected must be in a file the ledger lists."""
    hops = Hops()
    rejects_dir = str(tmp_path / "rejects")
    runner = _runner(ddb, ledger_name, endpoint, hops, table, rejects=rejects_dir)
    body, _expected = multiline_csv(ROWS, pad=30)
    bad, n_bad = _with_bad_rows(body, 500)
    event, uri = _put(s3, bucket, "bad.csv", bad)
    left = [600_000]
    aborted: list[bool] = []

    def abort_once_rejects_are_committed(state: ShardedCheckpoint) -> None:
        if (
            not aborted
            and _moved(state)
            and all(
                s.checkpoint is not None and s.checkpoint.counters.rows_rejected > 0 for s in state.shards
            )
        ):
            left[0] = 900  # below the hand-over plus WORKER_ABORT_SLACK_S: the workers are killed
            aborted.append(True)

    hops.on_save = abort_once_rejects_are_committed
    out = _answer(runner.outcome(event, _ctx("req-0", left)))
    assert aborted and out["status"] == "continued", out
    committed = _item(ddb, ledger_name, uri, table)
    assert committed.counters.rows_rejected > 0 and committed.counters.balanced
    hops.on_save = None
    hop = 0
    while out["status"] == "continued":
        hop += 1
        assert hop < 10, "the chain does not end"
        left[0] = 600_000
        out = _answer(runner.outcome(endpoint.payloads[-1], _ctx(f"req-{hop}", left)))
    assert out["status"] == "COMPLETED", out
    item = _item(ddb, ledger_name, uri, table)
    assert (item.counters.rows_read, item.counters.rows_rejected) == (ROWS, n_bad)
    listed = _listed_reject_offsets(item)
    assert len(listed) == n_bad, (
        f"the ledger counts {n_bad} rejected rows, its rejects files {item.rejects} hold {len(listed)}"
    )
    assert multiprocessing.active_children() == []


# -- the deadline: abort before stop -------------------------------------------------------------------


def test_hops_whose_workers_never_commit_fail_for_no_progress_when_the_margin_is_small(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    """Defect: with an effective safety margin under ~0.8 s (S3DDB_SAFETY_MARGIN_MS small, or a
    function of a few seconds, whose margin is capped at 25 %), the workers' abort line (tail +
    WORKER_ABORT_SLACK_S = 1 s) lies above the deadline's stop line (margin + drain 0.2 s + tail),
    and ``run_workers`` checks ``should_abort`` before ``should_stop``: a hop is always killed, the
    Deadline never records a stop, so ``no_progress_reason`` says None and a chain whose workers
    cannot start in time hands over hop after hop (until S3DDB_MAX_HOPS) instead of FAILING for
    no progress after MAX_IDLE_HOPS hops, as a one-process chain does."""
    hops = Hops()
    runner = _runner(ddb, ledger_name, endpoint, hops, table, safety_margin_ms=0, max_hops=20)
    body, _expected = multiline_csv(ROWS, pad=30)
    event, uri = _put(s3, bucket, "in.csv", body)
    left = [600_000]

    def time_runs_out(state: ShardedCheckpoint) -> None:
        # the save before the workers start: the workers are still importing when time runs low
        left[0] = 900

    hops.on_save = time_runs_out
    out = _answer(runner.outcome(event, _ctx("req-0", left)))
    outs = [out]
    hop = 0
    while out["status"] == "continued" and hop < MAX_IDLE_HOPS + 2:
        hop += 1
        item = _item(ddb, ledger_name, uri, table)
        assert item.counters.rows_read == 0, "the workers moved a mark: this test needs them slower"
        left[0] = 600_000
        out = _answer(runner.outcome(endpoint.payloads[-1], _ctx(f"req-{hop}", left)))
        outs.append(out)
    item = _item(ddb, ledger_name, uri, table)
    assert item.status == "FAILED" and "no progress" in item.reason, (
        f"after {len(outs)} hops without progress the chain is {item.status} "
        f"(idle_hops {item.idle_hops}): {[o['status'] for o in outs]}"
    )
    assert len(outs) <= MAX_IDLE_HOPS
    assert multiprocessing.active_children() == []


# -- a damaged sub_ranges attribute ------------------------------------------------------------------


def _first_hop_continued(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> tuple[ChainRunner, Hops, str, LedgerItem]:
    """A chain whose first hop ran workers and handed over mid-range (its item has sub_ranges)."""
    hops = Hops()
    runner = _runner(ddb, ledger_name, endpoint, hops, table)
    body, _expected = multiline_csv(ROWS, pad=30)
    event, uri = _put(s3, bucket, "in.csv", body)
    left = [600_000]
    started: list[bool] = []

    def end_the_hop(state: ShardedCheckpoint) -> None:
        if not started:
            started.append(True)
        elif _moved(state):
            left[0] = 8_000

    hops.on_save = end_the_hop
    out = _answer(runner.outcome(event, _ctx("req-0", left)))
    assert out["status"] == "continued", out
    hops.on_save = None
    item = _item(ddb, ledger_name, uri, table)
    assert item.sub_ranges is not None
    return runner, hops, uri, item


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param(json.dumps({"format": 1, "state": {}}), id="no-base"),
        pytest.param(json.dumps({"format": 1, "base": "x", "state": []}), id="wrong-types"),
    ],
)
def test_a_damaged_sub_ranges_attribute_fails_the_chain_with_one_line_and_status_still_reads(
    ddb: Any,
    s3: Any,
    bucket: str,
    table: str,
    ledger_name: str,
    endpoint: InvokeEndpoint,
    damage: str,
) -> None:
    """Defect: a damaged ``sub_ranges`` attribute is read without a guard. Not JSON: every read
    of the ledger item (``LedgerItem.from_raw``: ``orjson.loads``) raises, so ``s3ddb status``
    and every event of the chain end in a traceback (Lambda retries it, to no end). JSON of the
    wrong shape: ``HopSplit.from_ledger`` raises KeyError / TypeError, not the ConfigError that
    ``_run_hop`` turns into a FAILED chain. The chain must FAIL with one line naming its
    sub-ranges, and ``status`` must still answer."""
    runner, _hops, uri, item = _first_hop_continued(ddb, s3, bucket, table, ledger_name, endpoint)
    ddb.update_item(
        TableName=ledger_name,
        Key={"object": {"S": uri}, "target": {"S": item.target}},
        UpdateExpression="SET sub_ranges = :s",
        ExpressionAttributeValues={":s": {"S": damage}},
    )
    try:
        out = _answer(runner.outcome(endpoint.payloads[-1], _ctx("req-1", [600_000])))
    except Exception as exc:  # the defect: a traceback, and the chain stays RUNNING for ever
        pytest.fail(f"the continuation raised {type(exc).__name__}: {exc}")
    assert out["status"] == "FAILED", out
    reason = str(out.get("reason") or "")
    assert "sub-ranges" in reason and "\n" not in reason, out
    try:
        st = status(uri, ledger_table=ledger_name, ddb_client=ddb)
    except Exception as exc:
        pytest.fail(f"s3ddb status raised {type(exc).__name__}: {exc}")
    assert st["status"] == "FAILED", st
    assert multiprocessing.active_children() == []


# -- the state-size guard -----------------------------------------------------------------------------


def test_a_wide_header_that_one_process_can_keep_does_not_fail_the_chain_with_six_workers(
    ddb: Any, s3: Any, bucket: str, table: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    """Defect: ``_hop_split`` checks the state size when it plans, with no sub-range mark yet;
    every sub-range's checkpoint then carries the whole CSV header (a shard's checkpoint keeps
    ``header_names``), so the ledger state grows to (workers + 2) x the header once the workers
    report. A ~55 KB header (kept by a one-process chain with room to spare under the 350 KB
    state limit) and 6 workers pass the planning check and then fail the chain mid-hop (or
    exceed DynamoDB's 400 KB item when it finishes). The guard must count what the sub-ranges
    will hold (or fall back to one process): the load completes."""
    columns = [f"column_{i:05d}_{'x' * 16}" for i in range(2000)]
    n_rows = 1200
    rows = [(f"k{i:07d}", str(i), *([""] * len(columns))) for i in range(n_rows)]
    body = csv_bytes(("pk", "n", *columns), rows)
    assert 50_000 < len(",".join(columns)) < 70_000
    event, uri = _put(s3, bucket, "wide.csv", body)
    hops = Hops()

    def one_process(req: HopRequest) -> RunResult:  # the fallback a correct guard may take
        return asyncio.run(_one_process(req))

    runner = _runner(
        ddb,
        ledger_name,
        endpoint,
        hops,
        table,
        hop_workers=6,
        min_bytes=64 << 10,
        engine=one_process,
    )
    try:
        out = _answer(runner.outcome(event, _ctx("req-0", [600_000])))
    except Exception as exc:
        pytest.fail(f"the hop raised {type(exc).__name__}: {exc}")
    hop = 0
    while out["status"] == "continued":
        hop += 1
        assert hop < 10
        out = _answer(runner.outcome(endpoint.payloads[-1], _ctx(f"req-{hop}", [600_000])))
    assert out["status"] == "COMPLETED", out
    st = status(uri, ledger_table=ledger_name, ddb_client=ddb)
    assert (st["status"], st["rows_read"], st["items_written"]) == ("COMPLETED", n_rows, n_rows), st
    assert len(scan_all(ddb, table)) == n_rows
    assert multiprocessing.active_children() == []


# -- the parent's __main__ while workers start ----------------------------------------------------


def test_main_module_is_restored_when_two_threads_start_workers_at_once() -> None:
    """Was a defect: ``_main_not_imported`` swapped ``sys.modules['__main__']`` with no lock. Two
    threads starting workers at once (A enters, B enters and saves A's bare module as "the real
    one", A restores, B restores the bare one) left the process with an empty ``__main__`` for
    good. Now they take turns: B does not get in while A is inside, and the real main module is
    back once both are done."""
    real = sys.modules["__main__"]
    a_in, b_in = threading.Event(), threading.Event()
    b_got_in_early: list[bool] = []

    def a() -> None:
        with _main_not_imported():
            a_in.set()
            # B is trying meanwhile; with the lock it cannot get in while A is inside
            b_got_in_early.append(b_in.wait(0.5))

    def b() -> None:
        assert a_in.wait(10)
        with _main_not_imported():
            b_in.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    after = sys.modules["__main__"]
    sys.modules["__main__"] = real
    assert not any(t.is_alive() for t in threads)
    assert b_got_in_early == [False] and b_in.is_set()
    assert after is real, f"__main__ is now {after!r}, not {real!r}"
