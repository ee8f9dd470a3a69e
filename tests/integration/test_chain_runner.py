"""ChainRunner against DynamoDB Local (the ledger), moto S3 and a local Lambda Invoke endpoint that
records what the function sends itself (or fails on demand). The engine is a scripted stand-in:
these tests are about lanes, backfills, resumes, tokens and pinned specs, not about loading rows
(tests/e2e does that).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import boto3
import botocore.config
import orjson
import pytest

from lambda_src import ledger as L
from lambda_src.admin import build_notification
from lambda_src.chain import (
    MAX_IDLE_HOPS,
    ChainRunner,
    HopRequest,
    InvocationContext,
    InvokeFailedError,
    LaneStalledError,
    StalledError,
)
from lambda_src.events import EventError
from lambda_src.handler import lambda_client_config
from lambda_src.ledger import Ledger, target_key, version_key
from lambda_src.observability import SERVICE, Telemetry
from lambda_src.settings import Settings
from loader.config import CsvSpec
from loader.models import Checkpoint, Counters, Progress, RunResult
from tests.support.invoke import InvokeEndpoint

SIZE = 1000


class Engine:
    """Scripted hops: each call takes the next outcome and returns what the engine would.

    * "complete": reads to the end of the object, 10 rows more;
    * "stopped": stopped by the deadline after 100 bytes and 10 rows;
    * "stuck": the deadline stopped it (``should_stop`` said so) before it moved at all;
    * "throttled": as "stuck", but the table threw the writes back (throttle events).

    ``during(req)`` runs inside the hop, while the chain is claimed (to look at the ledger then).
    """

    def __init__(self, *outcomes: str, during: Callable[[HopRequest], None] | None = None) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[HopRequest] = []
        self.during = during
        #: the remaining_ms the "stuck" outcomes set before asking should_stop (a late clock)
        self.left_ms: list[int] | None = None

    def __call__(self, req: HopRequest) -> RunResult:
        self.calls.append(req)
        if self.during is not None:
            self.during(req)
        outcome = self.outcomes.pop(0) if self.outcomes else "complete"
        start = req.resume.offset if req.resume is not None else 0
        before = req.resume.counters.rows_read if req.resume is not None else 0
        stuck = outcome in ("stuck", "throttled")
        rows = before if stuck else before + 10
        offset = SIZE if outcome == "complete" else start if stuck else start + 100
        c = Counters(
            rows_read=rows,
            items_written=rows,
            write_units=rows,
            throttle_events=3 if outcome == "throttled" else 0,
        )
        if stuck:
            assert self.left_ms is not None, "a stuck hop needs the invocation's clock"
            self.left_ms[0] = 1_000  # the hop ran out of time without moving
            p = Progress(
                rows_read=rows,
                items_written=rows,
                rows_rejected=0,
                duplicates_collapsed=0,
                offset=start,
                object_size=SIZE,
                inflight_batches=40,
                max_backoff_s=0.0,
                elapsed_s=599.0,
                items_per_second=0.0,
            )
            assert req.should_stop(p), "the deadline did not stop the hop"
        cp = Checkpoint(
            source=req.spec.source,
            table=req.spec.table,
            version_id=req.spec.version_id,
            etag=req.spec.etag,
            size=SIZE,
            header=["pk"],
            offset=offset,
            next_row=rows + 1,
            counters=c,
            complete=outcome == "complete",
        )
        stopped: Any = "complete" if outcome == "complete" else "stopped"
        return RunResult(counters=c, checkpoint=cp, stopped=stopped, seconds=0.1, rejects_location=None)


def _runner(
    ddb: Any,
    s3: Any,
    ledger: str,
    endpoint: InvokeEndpoint,
    engine: Engine,
    *,
    lambda_client: Any | None = None,
    sleep: Callable[[float], None] = lambda _s: None,
    rng: Callable[[], float] = lambda: 0.5,
    **settings: Any,
) -> ChainRunner:
    lam = lambda_client or boto3.client("lambda", endpoint_url=endpoint.url, config=lambda_client_config())
    return ChainRunner(
        settings=Settings(**{"ledger_table": ledger, "table": "target", **settings}),
        ledger=Ledger(ddb, ledger),
        s3=s3,
        lambda_client=lam,
        engine=engine,
        telemetry=Telemetry(),
        sleep=sleep,
        rng=rng,
    )


def _ctx(request_id: str, left_ms: list[int] | None = None) -> InvocationContext:
    left = left_ms or [600_000]
    return InvocationContext(request_id=request_id, function="s3ddb-loader", remaining_ms=lambda: left[0])


def _put(s3: Any, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * SIZE)


def _lane_event(bucket: str, *, lane: int = 0, lanes: int = 1, backfill_id: str = "bf") -> dict[str, Any]:
    return {
        "kind": "lane",
        "version": 1,
        "bucket": bucket,
        "prefix": "p/",
        "exact": False,
        "lane": lane,
        "lanes": lanes,
        "start_after": "",
        "table": "target",
        "schema": None,
        "csv": None,
        "on_duplicate": None,
        "backfill_id": backfill_id,
        "version_id": None,
        "reload": "",
    }


def _item(ddb: Any, ledger: str, uri: str) -> L.LedgerItem:
    items = Ledger(ddb, ledger).chains(uri)
    assert len(items) == 1
    return items[0]


def _raw(ddb: Any, ledger: str, uri: str) -> dict[str, Any]:
    """The chain's item as DynamoDB holds it: every attribute, ``rev`` included."""
    item = _item(ddb, ledger, uri)
    resp = ddb.get_item(
        TableName=ledger,
        Key={"object": {"S": item.object}, "target": {"S": item.target}},
        ConsistentRead=True,
    )
    return dict(resp["Item"])


def test_a_failed_lane_invoke_raises_and_the_retry_of_the_finishing_hop_advances_the_lane(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "p/a.csv")
    uri = f"s3://{bucket}/p/a.csv"
    # hop 0 (the lane walker) stops and hands over; the continuation is recorded
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(_lane_event(bucket), _ctx("r0"))
    assert out["status"] == "continued"
    (cont,) = endpoint.payloads
    assert cont["kind"] == "continue"
    # hop 1 completes the object, but the lane's next invoke fails: the request raises
    endpoint.failing = True
    with pytest.raises(LaneStalledError):
        _runner(ddb, s3, ledger_name, endpoint, Engine("complete")).handle(cont, _ctx("r1"))
    item = _item(ddb, ledger_name, uri)
    assert (item.status, item.finished_by) == (L.COMPLETED, "r1")
    # Lambda retries r1: the object is COMPLETED, yet its lane moves on
    endpoint.failing = False
    out = _runner(ddb, s3, ledger_name, endpoint, Engine()).handle(cont, _ctx("r1"))
    assert out["status"] == "skipped" and out.get("lane_advanced") is True
    lane = endpoint.payloads[-1]
    assert (lane["kind"], lane["start_after"], lane["backfill_id"]) == ("lane", "p/a.csv", "bf")
    # a duplicate of the continuation from another request does not send the lane again
    sent = len(endpoint.payloads)
    out = _runner(ddb, s3, ledger_name, endpoint, Engine()).handle(cont, _ctx("r2"))
    assert out["status"] == "skipped" and "lane_advanced" not in out
    assert len(endpoint.payloads) == sent


def test_a_lane_sent_twice_stops_at_the_object_its_lane_already_runs(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    for key in ("p/a.csv", "p/b.csv"):
        _put(s3, bucket, key)
    # the first walker of lane 0/1 runs p/a.csv (its hop is still running: stopped, handed over)
    first = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped"))
    assert first.handle(_lane_event(bucket), _ctx("r0"))["status"] == "continued"
    # the same lane again (a repeated backfill): it must not start p/b.csv alongside
    engine = Engine()
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(_lane_event(bucket), _ctx("r1"))
    assert out["status"] == "lane-owned", out
    assert engine.calls == []
    assert Ledger(ddb, ledger_name).chains(f"s3://{bucket}/p/b.csv") == []
    # a lane of another backfill walks past the running object
    out = _runner(ddb, s3, ledger_name, endpoint, Engine()).handle(
        _lane_event(bucket, backfill_id="other"), _ctx("r2")
    )
    assert out["status"] == L.COMPLETED and out["object"] == f"s3://{bucket}/p/b.csv"


def test_a_backfill_sent_twice_gets_the_same_lanes_and_a_failed_lane_invoke_raises(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    for key in ("p/a.csv", "p/b.csv", "p/c.csv"):
        _put(s3, bucket, key)
    event = {"kind": "backfill", "version": 1, "source": f"s3://{bucket}/p/", "table": "target"}
    runner = _runner(ddb, s3, ledger_name, endpoint, Engine(), max_chains=2)
    one = runner.handle(event, _ctx("r0"))
    two = runner.handle(event, _ctx("r1"))
    assert one["status"] == two["status"] == "accepted"
    assert one["backfill_id"] == two["backfill_id"] and one["lanes"] == 2
    ids = {(p["backfill_id"], p["lane"]) for p in endpoint.payloads}
    assert ids == {(one["backfill_id"], 0), (one["backfill_id"], 1)}
    other = runner.handle({**event, "table": "elsewhere"}, _ctx("r2"))
    assert other["backfill_id"] != one["backfill_id"]
    endpoint.failing = True
    with pytest.raises(Exception, match=r"ServiceException|500"):
        runner.handle(event, _ctx("r3"))


def test_a_chain_failed_by_max_hops_resumes_from_its_offset_once_the_limit_is_raised(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "big.csv")
    head = s3.head_object(Bucket=bucket, Key="big.csv")
    note = build_notification(
        bucket, "big.csv", size=SIZE, etag=head["ETag"], version_id=head.get("VersionId")
    )
    uri = f"s3://{bucket}/big.csv"
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped"), max_hops=2).handle(note, _ctx("r0"))
    assert out["objects"][0]["status"] == "continued"
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped"), max_hops=2).handle(
        endpoint.payloads[-1], _ctx("r1")
    )
    failed = _item(ddb, ledger_name, uri)
    assert failed.status == L.FAILED and failed.reason.startswith("S3DDB_MAX_HOPS=2")
    assert "re-send the notification" in failed.reason
    assert (failed.offset, failed.counters.rows_read) == (200, 20)
    # the same limit: still skipped
    again = _runner(ddb, s3, ledger_name, endpoint, Engine(), max_hops=2).handle(note, _ctx("r2"))
    assert again["objects"][0]["status"] == "skipped"
    # raised: the notification resumes the chain from offset 200 with its counters
    engine = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, engine, max_hops=5).handle(note, _ctx("r3"))
    assert out["objects"][0]["status"] == L.COMPLETED
    (req,) = engine.calls
    assert req.resume is not None and req.resume.offset == 200
    done = _item(ddb, ledger_name, uri)
    assert (done.status, done.hops, done.reason, done.last_error) == (L.COMPLETED, 3, "", "")
    assert (done.counters.rows_read, done.counters.write_units) == (30, 30)
    # a second resume attempt (a duplicate of that notification) finds it COMPLETED
    dup = _runner(ddb, s3, ledger_name, endpoint, Engine(), max_hops=5).handle(note, _ctx("r4"))
    assert dup["objects"][0]["status"] == "already loaded"


def test_the_self_invoke_client_does_not_retry_and_times_out_quickly() -> None:
    cfg = lambda_client_config()
    assert cfg.retries["max_attempts"] == 1
    assert cfg.connect_timeout <= 2 and cfg.read_timeout <= 5
    assert isinstance(cfg, botocore.config.Config)


def _notification(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    _put(s3, bucket, key)
    head = s3.head_object(Bucket=bucket, Key=key)
    return build_notification(bucket, key, size=SIZE, etag=head["ETag"], version_id=head.get("VersionId"))


def test_a_continuation_that_cannot_be_sent_stalls_the_chain_and_raises(
    ddb: Any,
    s3: Any,
    bucket: str,
    ledger_name: str,
    endpoint: InvokeEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    note = _notification(s3, bucket, "s.csv")
    endpoint.failing = True
    slept: list[float] = []
    draws = iter([0.5, 0.25])
    runner = _runner(
        ddb, s3, ledger_name, endpoint, Engine("stopped"), sleep=slept.append, rng=lambda: next(draws)
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=SERVICE), pytest.raises(StalledError) as info:
        runner.handle(note, _ctx("r0"))
    item = _item(ddb, ledger_name, f"s3://{bucket}/s.csv")
    assert (item.status, item.hop, item.offset) == (L.STALLED, 1, 100)
    assert "continuation invoke failed" in item.last_error
    assert "gave up after 3/3 attempts" in item.last_error and "ServiceException" in item.last_error
    # each attempt was timed: the next hop's margin uses what invokes really take
    assert runner.invoke_estimate.samples == runner.invoke_attempts == 3
    # full jitter between the attempts, drawn from the runner's random source: half of 0.5 s,
    # then a quarter of 1 s; and the last error is attached to what the request raises
    assert slept == pytest.approx([0.25, 0.25])
    gave_up = info.value.__cause__
    assert isinstance(gave_up, InvokeFailedError)
    assert "ServiceException" in str(gave_up.__cause__)
    lines = [r.getMessage() for r in _service_records(caplog)]
    assert [n for n in (1, 2, 3) if any(f"attempt {n}/3 failed" in m for m in lines)] == [1, 2]
    assert any(m.startswith("chain STALLED: continuation invoke failed") for m in lines)


def test_an_invoke_that_failed_but_was_delivered_does_not_stall_a_chain_that_moved_on(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "m.csv")
    uri = f"s3://{bucket}/m.csv"
    ledger = Ledger(ddb, ledger_name)

    def continuation_claims(payload: dict[str, Any]) -> None:
        # the continuation arrives and claims hop 1 while the sender still sees its call fail
        item = _item(ddb, ledger_name, uri)
        if item.claim == L.PENDING:
            assert ledger.claim(item, request_id="r-next", lease_until=item.lease_until, reclaim=False)

    endpoint.failing = True
    endpoint.on_post = continuation_claims
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(note, _ctx("r0"))
    assert out["objects"][0]["status"] == "superseded"
    item = _item(ddb, ledger_name, uri)
    assert (item.status, item.claim, item.last_error) == (L.RUNNING, "r-next", "")


# -- a continuation only points at the chain: its token, and the pinned spec's allow-lists ---------


def _handed_over(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint, key: str
) -> tuple[str, dict[str, Any]]:
    """A chain whose hop 0 ran and handed over to hop 1: its object URI and the continuation sent."""
    note = _notification(s3, bucket, key)
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(note, _ctx("r0"))
    assert out["objects"][0]["status"] == "continued"
    cont = endpoint.payloads[-1]
    assert (cont["kind"], cont["hop"]) == ("continue", 1)
    uri = f"s3://{bucket}/{key}"
    item = _item(ddb, ledger_name, uri)
    assert (item.status, item.hop, item.claim, item.token) == (L.RUNNING, 1, L.PENDING, cont["token"])
    return uri, cont


def _service_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SERVICE]


def test_a_forged_continuation_is_refused_logged_and_changes_nothing(
    ddb: Any,
    s3: Any,
    bucket: str,
    ledger_name: str,
    endpoint: InvokeEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri, cont = _handed_over(ddb, s3, bucket, ledger_name, endpoint, "forged.csv")
    before = _raw(ddb, ledger_name, uri)
    sent = len(endpoint.payloads)
    forged_token = "f" * len(cont["token"])
    assert forged_token != cont["token"]
    engine = Engine("complete")
    runner = _runner(ddb, s3, ledger_name, endpoint, engine)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=SERVICE):
        # exactly the object, target and hop the chain waits for; only the token is wrong
        out = runner.handle({**cont, "token": forged_token}, _ctx("r-forged"))
        # nor does a wrong token pass with another hop number, or as a repeat by the same request
        for hop in (0, 2, 7):
            other = runner.handle({**cont, "hop": hop, "token": forged_token}, _ctx("r-forged"))
            assert other["status"] == "refused", other
    assert out["status"] == "refused", out
    assert "token" in out["reason"] and out["object"] == uri and out["hop"] == 1
    assert engine.calls == []
    assert len(endpoint.payloads) == sent
    assert _raw(ddb, ledger_name, uri) == before  # rev, claim, token, checkpoint: all as they were
    records = _service_records(caplog)
    refusals = [r for r in records if r.levelno == logging.WARNING and r.getMessage().startswith("refused:")]
    assert len(refusals) == 4
    assert "token" in refusals[0].getMessage() and getattr(refusals[0], "object", None) == uri
    # neither the real token nor the forged one is written to the log
    for r in records:
        text = r.getMessage() + repr(r.__dict__)
        assert cont["token"] not in text and forged_token not in text
    # an empty token does not even pass the door
    with pytest.raises(EventError, match="token"):
        runner.handle({**cont, "token": ""}, _ctx("r-empty"))
    assert _raw(ddb, ledger_name, uri) == before
    # the refusals cost the chain nothing: the real continuation still takes hop 1
    out = runner.handle(cont, _ctx("r1"))
    assert out["status"] == L.COMPLETED
    (req,) = engine.calls
    assert req.resume is not None and req.resume.offset == 100


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        # the function now writes elsewhere: the chain's pinned table is no longer allowed
        (
            {"table": "elsewhere", "allowed_tables": frozenset({"elsewhere"})},
            "table 'target' is not in S3DDB_ALLOWED_TABLES",
        ),
        ({"allowed_buckets": frozenset({"some-other-bucket"})}, "is not in S3DDB_ALLOWED_BUCKETS"),
        ({"allowed_prefix": "incoming/"}, "is not under S3DDB_ALLOWED_PREFIX 'incoming/'"),
    ],
)
def test_a_continuation_whose_pinned_load_is_no_longer_allowed_is_refused_before_its_claim(
    ddb: Any,
    s3: Any,
    bucket: str,
    ledger_name: str,
    endpoint: InvokeEndpoint,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    message: str,
) -> None:
    uri, cont = _handed_over(ddb, s3, bucket, ledger_name, endpoint, "allowed.csv")
    item_before = _item(ddb, ledger_name, uri)
    engine = Engine("complete")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=SERVICE):
        out = _runner(ddb, s3, ledger_name, endpoint, engine, **settings).handle(cont, _ctx("r1"))
    assert out["status"] == "refused", out
    assert message in out["reason"] and "pinned" in out["reason"]
    if "allowed_buckets" in settings:
        assert repr(bucket) in out["reason"]
    assert engine.calls == []
    held = _item(ddb, ledger_name, uri)  # not claimed: STALLED with the reason, nothing else moved
    assert (held.status, held.claim, held.hop, held.offset) == (L.STALLED, L.PENDING, 1, item_before.offset)
    assert message in held.last_error and held.checkpoint == item_before.checkpoint
    assert any(message in r.getMessage() for r in _service_records(caplog) if r.levelno == logging.WARNING)
    # once the load is allowed again, the same continuation runs the hop
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(cont, _ctx("r2"))
    assert out["status"] == L.COMPLETED and len(engine.calls) == 1


class _Killed(BaseException):
    """The Lambda runtime ending the invocation (a timeout, or the sandbox dying): no except clause
    of the function runs; Lambda retries the request later."""


class _DyingLambdaClient:
    """A self-invoke client whose invocation is killed while it sends the continuation."""

    def invoke(self, **_kw: Any) -> dict[str, Any]:
        raise _Killed()


@pytest.mark.parametrize("how", ["invoke failed: STALLED", "killed after the handover"])
def test_lambdas_retry_of_a_continuation_that_handed_over_resumes_the_chain(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint, how: str
) -> None:
    uri, cont1 = _handed_over(ddb, s3, bucket, ledger_name, endpoint, "retry.csv")
    # hop 1 (request r1, from the continuation cont1) runs, hands over to hop 2, and its invoke of
    # hop 2 fails (StalledError) or the invocation dies right after the handover
    if how == "invoke failed: STALLED":
        endpoint.failing = True
        with pytest.raises(StalledError):
            _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(cont1, _ctx("r1"))
        assert _item(ddb, ledger_name, uri).status == L.STALLED
        endpoint.failing = False
    else:
        dying = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped"), lambda_client=_DyingLambdaClient())
        with pytest.raises(_Killed):
            dying.handle(cont1, _ctx("r1"))
        item = _item(ddb, ledger_name, uri)
        assert (item.status, item.claim, item.handed_by, item.hop) == (L.RUNNING, L.PENDING, "r1", 2)
    # Lambda retries r1 with the same event: the chain goes on from hop 2's checkpoint
    engine = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(cont1, _ctx("r1"))
    assert out["status"] == L.COMPLETED, out
    (req,) = engine.calls
    assert req.resume is not None and req.resume.offset == 200


# -- the ledger key has the table ------------------------------------------------------------------


def test_the_same_object_version_loaded_into_another_table_is_another_chain(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "two.csv")
    uri = f"s3://{bucket}/two.csv"
    out_a = _runner(ddb, s3, ledger_name, endpoint, Engine("complete"), table="A").handle(note, _ctx("r0"))
    assert out_a["objects"][0]["status"] == L.COMPLETED
    # the same notification for a function that now writes table B: a new chain, not "already loaded"
    engine_b = Engine("complete")
    out_b = _runner(ddb, s3, ledger_name, endpoint, engine_b, table="B").handle(note, _ctx("r1"))
    assert out_b["objects"][0]["status"] == L.COMPLETED
    (req,) = engine_b.calls
    assert (req.spec.table, req.resume) == ("B", None)
    chains = Ledger(ddb, ledger_name).chains(uri)
    assert len(chains) == 2
    version = version_key(chains[0].version, None)
    assert {c.target for c in chains} == {target_key("A", version), target_key("B", version)}
    assert {c.table: c.status for c in chains} == {"A": L.COMPLETED, "B": L.COMPLETED}
    assert chains[0].chain_id != chains[1].chain_id
    assert {c.table: (c.spec or {}).get("table") for c in chains} == {"A": "A", "B": "B"}
    # and into A again: already loaded, nothing runs
    engine = Engine()
    again = _runner(ddb, s3, ledger_name, endpoint, engine, table="A").handle(note, _ctx("r2"))
    assert again["objects"][0]["status"] == "already loaded"
    assert engine.calls == [] and len(Ledger(ddb, ledger_name).chains(uri)) == 2


# -- backfill of a loaded object, and reload -------------------------------------------------------


def test_a_loaded_object_is_already_loaded_and_a_reload_restarts_it_exactly_once(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "once.csv")
    uri = f"s3://{bucket}/once.csv"
    backfill = {"kind": "backfill", "version": 1, "source": uri, "table": "target"}
    runner = _runner(ddb, s3, ledger_name, endpoint, Engine())
    first = runner.handle(backfill, _ctx("r0"))
    assert first["status"] == "accepted" and first["lanes"] == 1
    lane = endpoint.payloads[-1]
    assert (lane["kind"], lane["exact"], lane["reload"]) == ("lane", True, "")
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("complete")).handle(lane, _ctx("r1"))
    assert out["status"] == L.COMPLETED
    loaded = _item(ddb, ledger_name, uri)
    assert (loaded.status, loaded.counters.rows_read) == (L.COMPLETED, 10)

    # the same backfill again: answered at once, nothing sent, nothing changed
    sent = len(endpoint.payloads)
    before = _raw(ddb, ledger_name, uri)
    again = runner.handle(backfill, _ctx("r2"))
    assert again["status"] == "already loaded", again
    assert (again["chain_id"], again["table"], again["version"]) == (
        loaded.chain_id,
        "target",
        loaded.version,
    )
    assert again["counters"]["rows_read"] == 10 and again["finished_at"] == loaded.finished_at
    assert "reload" in again["reason"]
    assert len(endpoint.payloads) == sent
    assert _raw(ddb, ledger_name, uri) == before

    # with reload: accepted as a backfill of its own (another id), and its lane restarts the load
    reload = runner.handle({**backfill, "reload": True}, _ctx("r3"))
    assert reload["status"] == "accepted" and reload["reload"] is True
    assert reload["backfill_id"] != first["backfill_id"]
    reload_lane = endpoint.payloads[-1]
    assert reload_lane["kind"] == "lane" and reload_lane["reload"]
    seen: list[L.LedgerItem] = []
    engine = Engine("complete", during=lambda _req: seen.append(_item(ddb, ledger_name, uri)))
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(reload_lane, _ctx("r4"))
    assert out["status"] == L.COMPLETED
    (req,) = engine.calls
    assert req.resume is None  # from the start of the object
    (during,) = seen
    assert during.chain_id != loaded.chain_id
    assert (during.status, during.hop, during.hops, during.offset, during.claim) == (L.RUNNING, 0, 1, 0, "r4")
    assert during.counters == Counters()
    assert (during.checkpoint, during.finished_at, during.reloaded_by) == (None, "", reload_lane["reload"])
    reloaded = _item(ddb, ledger_name, uri)
    assert (reloaded.status, reloaded.chain_id) == (L.COMPLETED, during.chain_id)
    assert reloaded.counters.rows_read == 10  # counted afresh, not 20

    # the same reload's lane delivered again (at-least-once): no second restart
    before = _raw(ddb, ledger_name, uri)
    engine = Engine("complete")
    dup = _runner(ddb, s3, ledger_name, endpoint, engine).handle(reload_lane, _ctx("r5"))
    # the lane walks past its one object, already loaded by this very reload, and ends
    assert dup["status"] == "lane-done", dup
    assert [o["status"] for o in dup["skipped"]] == ["already loaded"], dup
    assert engine.calls == []
    assert _raw(ddb, ledger_name, uri) == before
    assert len(Ledger(ddb, ledger_name).chains(uri)) == 1


def test_a_reload_lane_delivered_twice_while_its_restart_runs_does_not_restart_it_again(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "twice.csv")
    uri = f"s3://{bucket}/twice.csv"
    backfill = {"kind": "backfill", "version": 1, "source": uri, "table": "target"}
    runner = _runner(ddb, s3, ledger_name, endpoint, Engine())
    runner.handle(backfill, _ctx("r0"))
    assert runner.handle(endpoint.payloads[-1], _ctx("r1"))["status"] == L.COMPLETED
    runner.handle({**backfill, "reload": True}, _ctx("r2"))
    reload_lane = endpoint.payloads[-1]
    # the reload's hop 0 stops and hands over: the chain is RUNNING, pending its hop 1
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(reload_lane, _ctx("r3"))
    assert out["status"] == "continued"
    restarted = _item(ddb, ledger_name, uri)
    before = _raw(ddb, ledger_name, uri)
    engine = Engine()
    dup = _runner(ddb, s3, ledger_name, endpoint, engine).handle(reload_lane, _ctx("r4"))
    assert dup["status"] == "lane-owned", dup
    assert engine.calls == []
    assert _raw(ddb, ledger_name, uri) == before
    assert _item(ddb, ledger_name, uri).chain_id == restarted.chain_id

    # a reload sent while that chain runs is refused, and says why: reload is for finished loads
    sent = len(endpoint.payloads)
    again = runner.handle({**backfill, "reload": True}, _ctx("r5"))
    assert again["status"] == "refused" and "RUNNING" in again["reason"], again
    assert len(endpoint.payloads) == sent
    assert _raw(ddb, ledger_name, uri) == before


def test_a_prefix_backfill_walks_past_objects_already_loaded(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "p/b.csv")
    # p/a.csv was loaded by its notification
    note = _notification(s3, bucket, "p/a.csv")
    out = _runner(ddb, s3, ledger_name, endpoint, Engine()).handle(note, _ctx("r0"))
    assert out["objects"][0]["status"] == L.COMPLETED
    # a one-lane backfill of p/ skips it and loads p/b.csv
    engine = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(_lane_event(bucket), _ctx("r1"))
    assert out["status"] == L.COMPLETED and out["object"] == f"s3://{bucket}/p/b.csv", out
    assert [r.spec.source for r in engine.calls] == [f"s3://{bucket}/p/b.csv"]


# -- the spec is pinned when the chain starts ------------------------------------------------------


def test_every_hop_runs_the_spec_pinned_from_the_settings_when_the_chain_started(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "pinned.csv")
    uri = f"s3://{bucket}/pinned.csv"
    first = Engine("stopped")
    then: dict[str, Any] = {
        "schema": '{"columns": {"n": "N", "ok": "BOOL"}, "rename": {"n": "num"}}',
        "csv": CsvSpec(delimiter=";", encoding="latin-1"),
        "on_duplicate": "first",
    }
    out = _runner(ddb, s3, ledger_name, endpoint, first, **then).handle(note, _ctx("r0"))
    assert out["objects"][0]["status"] == "continued"
    (req0,) = first.calls
    pinned = req0.spec
    assert (pinned.schema.columns, pinned.schema.rename) == ({"n": "N", "ok": "BOOL"}, {"n": "num"})
    assert (pinned.csv.delimiter, pinned.csv.encoding, pinned.on_duplicate) == (";", "latin-1", "first")
    assert pinned.version_id == s3.head_object(Bucket=bucket, Key="pinned.csv")["VersionId"]
    assert _item(ddb, ledger_name, uri).spec == pinned.to_dict()
    # the function's settings change (a deploy) while the chain is between hops
    now: dict[str, Any] = {
        "schema": '{"columns": {"n": "S"}}',
        "csv": CsvSpec(delimiter="|"),
        "on_duplicate": "error",
        "concurrency": 7,
    }
    later = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, later, **now).handle(endpoint.payloads[-1], _ctx("r1"))
    assert out["status"] == L.COMPLETED
    (req1,) = later.calls
    # what lands in the table is decided by the pinned spec ...
    assert req1.spec.schema == pinned.schema and req1.spec.csv == pinned.csv
    assert (req1.spec.on_duplicate, req1.spec.source, req1.spec.table) == ("first", uri, "target")
    assert req1.spec.version_id == pinned.version_id
    assert req1.spec.differences(pinned) == []
    # ... the operational knobs are the function's of the moment
    assert (pinned.concurrency, req1.spec.concurrency) == (40, 7)


def test_a_schema_document_in_s3_is_read_once_when_the_chain_starts(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    s3.put_object(Bucket=bucket, Key="conf/schema.json", Body=orjson.dumps({"columns": {"n": "N"}}))
    schema_uri = f"s3://{bucket}/conf/schema.json"
    note = _notification(s3, bucket, "doc.csv")
    first = Engine("stopped")
    _runner(ddb, s3, ledger_name, endpoint, first, schema=schema_uri).handle(note, _ctx("r0"))
    # the document is replaced (and then made unreadable) before the next hop
    s3.put_object(Bucket=bucket, Key="conf/schema.json", Body=orjson.dumps({"columns": {"n": "JSON"}}))
    later = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, later, schema=schema_uri).handle(
        endpoint.payloads[-1], _ctx("r1")
    )
    assert out["status"] == L.COMPLETED
    assert first.calls[0].spec.schema.columns == later.calls[0].spec.schema.columns == {"n": "N"}
    s3.delete_object(Bucket=bucket, Key="conf/schema.json")
    # a new chain reads the setting again, and says what is wrong with it
    other = _notification(s3, bucket, "doc2.csv")
    engine = Engine()
    out = _runner(ddb, s3, ledger_name, endpoint, engine, schema=schema_uri).handle(other, _ctx("r2"))
    assert out["objects"][0]["status"] == "refused" and "S3DDB_SCHEMA" in out["objects"][0]["reason"]
    assert engine.calls == []


# -- hops that cannot work -----------------------------------------------------------------------


def test_a_function_timeout_too_short_for_one_hop_fails_the_chain_without_running_it(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "short.csv")
    engine = Engine()
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(note, _ctx("r0", [2_000]))
    result = out["objects"][0]
    assert result["status"] == L.FAILED
    assert "function timeout is too short" in result["reason"]
    assert engine.calls == [] and endpoint.payloads == []
    item = _item(ddb, ledger_name, f"s3://{bucket}/short.csv")
    assert (item.status, item.offset) == (L.FAILED, 0)
    assert "function timeout is too short" in item.reason


def _hop(
    ddb: Any,
    s3: Any,
    ledger_name: str,
    endpoint: InvokeEndpoint,
    event: dict[str, Any],
    outcome: str,
    rid: str,
) -> dict[str, Any]:
    """One hop with a fresh 600 s invocation whose engine does ``outcome``."""
    left = [600_000]
    engine = Engine(outcome)
    engine.left_ms = left
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(event, _ctx(rid, left))
    return out["objects"][0] if "objects" in out else out


def test_hops_that_make_no_progress_fail_the_chain_but_a_moving_or_throttled_hop_resets_the_count(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "stuck.csv")
    uri = f"s3://{bucket}/stuck.csv"
    # an idle hop, then a hop that moves, then idle hops: only MAX_IDLE_HOPS idle hops *in a row* fail
    out = _hop(ddb, s3, ledger_name, endpoint, note, "stuck", "r0")
    assert out["status"] == "continued", out
    assert _item(ddb, ledger_name, uri).idle_hops == 1
    out = _hop(ddb, s3, ledger_name, endpoint, endpoint.payloads[-1], "stopped", "r1")
    assert out["status"] == "continued", out
    assert _item(ddb, ledger_name, uri).idle_hops == 0
    for n in range(1, MAX_IDLE_HOPS + 1):
        out = _hop(ddb, s3, ledger_name, endpoint, endpoint.payloads[-1], "stuck", f"r{n + 1}")
        if n < MAX_IDLE_HOPS:
            assert out["status"] == "continued", out
            assert _item(ddb, ledger_name, uri).idle_hops == n
    assert out["status"] == L.FAILED, out
    assert out["reason"].startswith("no progress") and "S3DDB_SAFETY_MARGIN_MS" in out["reason"]
    item = _item(ddb, ledger_name, uri)
    assert (item.status, item.offset, item.hops) == (L.FAILED, 100, MAX_IDLE_HOPS + 2)
    assert item.reason == out["reason"]


def test_a_hop_held_back_by_throttling_hands_over_however_often(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "throttled.csv")
    uri = f"s3://{bucket}/throttled.csv"
    event = note
    for n in range(MAX_IDLE_HOPS + 1):
        out = _hop(ddb, s3, ledger_name, endpoint, event, "throttled", f"r{n}")
        assert out["status"] == "continued", out
        item = _item(ddb, ledger_name, uri)
        assert (item.status, item.hop, item.claim, item.offset, item.idle_hops) == (
            L.RUNNING,
            n + 1,
            L.PENDING,
            0,
            0,
        )
        event = endpoint.payloads[-1]
        assert event["kind"] == "continue"


def test_a_backfill_loads_the_literal_key_it_names(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    """Characters a URL would treat specially are part of the key: the object read and the ledger
    item are those of the key exactly as given (never URL-decoded, never a version or a fragment)."""
    keys = ["odd/a+b c.csv", "odd/100%25 #1?versionId=x.csv", "odd/ünï ファイル.csv"]
    for key in keys:
        _put(s3, bucket, key)
    for n, key in enumerate(keys):
        uri = f"s3://{bucket}/{key}"
        accepted = _runner(ddb, s3, ledger_name, endpoint, Engine()).handle(
            {"kind": "backfill", "version": 1, "source": uri, "table": "target"}, _ctx(f"b{n}")
        )
        assert accepted["status"] == "accepted" and accepted["source"] == uri, accepted
        engine = Engine("complete")
        out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(endpoint.payloads[-1], _ctx(f"l{n}"))
        assert (out["status"], out["object"]) == (L.COMPLETED, uri)
        (req,) = engine.calls
        head = s3.head_object(Bucket=bucket, Key=key)
        assert (req.spec.source, req.spec.version_id) == (uri, head["VersionId"])
        assert _item(ddb, ledger_name, uri).status == L.COMPLETED


@pytest.mark.parametrize("versioned", [True, False])
def test_a_notification_whose_etag_is_not_the_objects_is_refused_and_the_real_one_loads(
    versioned: bool, ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    if not versioned:
        bucket = f"u{bucket}"
        s3.create_bucket(Bucket=bucket)
    real = _notification(s3, bucket, "poison.csv")
    forged = copy.deepcopy(real)
    forged["Records"][0]["s3"]["object"]["eTag"] = "0" * 32
    engine = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(forged, _ctx("r1"))
    (answer,) = out["objects"]
    assert answer["status"] == "refused" and "ETag" in answer["reason"], answer
    assert Ledger(ddb, ledger_name).chains(f"s3://{bucket}/poison.csv") == [] and engine.calls == []
    out = _runner(ddb, s3, ledger_name, endpoint, engine).handle(real, _ctx("r2"))
    assert out["objects"][0]["status"] == L.COMPLETED, out
    assert _item(ddb, ledger_name, f"s3://{bucket}/poison.csv").status == L.COMPLETED


def test_hand_made_lanes_are_bounded_and_a_missing_object_is_answered(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    engine = Engine("complete")
    runner = _runner(ddb, s3, ledger_name, endpoint, engine, max_chains=4)
    out = runner.handle(_lane_event(bucket, lane=0, lanes=5), _ctx("r1"))
    assert out["status"] == "refused" and "S3DDB_MAX_CHAINS=4" in out["reason"], out
    exact = {**_lane_event(bucket), "exact": True, "prefix": "p/missing.csv"}
    out = runner.handle(exact, _ctx("r2"))
    assert out["status"] == "refused" and "no such object" in out["reason"], out
    out = runner.handle({**exact, "version_id": "nope"}, _ctx("r3"))
    assert out["status"] == "refused" and "version 'nope' does not exist" in out["reason"], out
    assert engine.calls == [] and endpoint.payloads == []


def test_a_reload_says_how_its_options_differ_from_the_last_loads(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "opts.csv")
    uri = f"s3://{bucket}/opts.csv"
    backfill = {
        "kind": "backfill",
        "version": 1,
        "source": uri,
        "table": "target",
        "schema": {"columns": {"n": "N"}},
        "csv": {"delimiter": ";"},
    }
    runner = _runner(ddb, s3, ledger_name, endpoint, Engine())
    runner.handle(backfill, _ctx("r0"))
    assert runner.handle(endpoint.payloads[-1], _ctx("r1"))["status"] == L.COMPLETED
    same = runner.handle({**backfill, "reload": True}, _ctx("r2"))
    assert same["status"] == "accepted" and "changes" not in same, same
    runner.handle(endpoint.payloads[-1], _ctx("r3"))
    # options left out are the function's defaults: the answer says what that changes
    other = runner.handle(
        {"kind": "backfill", "version": 1, "source": uri, "table": "target", "reload": True}, _ctx("r4")
    )
    assert other["status"] == "accepted", other
    assert any(c.startswith("schema.columns:") for c in other["changes"]), other
    assert any(c.startswith("csv.delimiter:") for c in other["changes"]), other


def test_answers_keep_their_keys(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "keys.csv")
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(note, _ctx("r0"))
    assert list(out) == ["status", "objects"]
    (cont,) = out["objects"]
    assert list(cont) == ["status", "object", "chain_id", "hop", "next_hop", "offset", "payload_bytes"]
    assert (cont["status"], cont["hop"], cont["next_hop"], cont["offset"]) == ("continued", 0, 1, 100)
    assert cont["payload_bytes"] == len(orjson.dumps(endpoint.payloads[-1]))
    done = _runner(ddb, s3, ledger_name, endpoint, Engine("complete")).handle(
        endpoint.payloads[-1], _ctx("r1")
    )
    assert list(done) == ["status", "object", "chain_id", "hops", "counters", "reason"]
    assert (done["status"], done["hops"], done["reason"], done["chain_id"]) == (
        "COMPLETED",
        2,
        "",
        cont["chain_id"],
    )
    assert done["counters"] == Counters(rows_read=20, items_written=20, write_units=20).to_dict()
    assert json.loads(json.dumps(done)) == done and type(done["status"]) is str


def test_a_backfill_with_no_table_anywhere_is_refused_and_says_so(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    event = {"kind": "backfill", "version": 1, "source": f"s3://{bucket}/p/"}
    out = _runner(ddb, s3, ledger_name, endpoint, Engine(), table=None).handle(event, _ctx("r0"))
    assert out == {
        "status": "refused",
        "reason": "no table: set S3DDB_TABLE or name one in the event",
        "source": f"s3://{bucket}/p/",
        "table": None,
    }
    assert endpoint.payloads == []


def test_a_ledger_item_with_an_unknown_status_stops_the_event_and_changes_nothing(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "odd.csv")
    uri = f"s3://{bucket}/odd.csv"
    out = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped")).handle(note, _ctx("r0"))
    assert out["objects"][0]["status"] == "continued"
    raw = _raw(ddb, ledger_name, uri)
    # written by something else (another version of s3ddb, a hand edit)
    ddb.put_item(TableName=ledger_name, Item={**raw, "status": {"S": "PAUSED"}})
    engine = Engine("complete")
    with pytest.raises(L.LedgerError, match="unknown status 'PAUSED'"):
        _runner(ddb, s3, ledger_name, endpoint, engine).handle(endpoint.payloads[-1], _ctx("r1"))
    with pytest.raises(L.LedgerError, match="unknown status 'PAUSED'"):
        _runner(ddb, s3, ledger_name, endpoint, engine).handle(note, _ctx("r2"))
    assert engine.calls == []
    after = ddb.get_item(
        TableName=ledger_name, Key={"object": raw["object"], "target": raw["target"]}, ConsistentRead=True
    )["Item"]
    assert after == {**raw, "status": {"S": "PAUSED"}}


def test_a_backfills_shuffle_window_reaches_every_hop_and_the_setting_is_the_default(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    _put(s3, bucket, "sorted.csv")
    _put(s3, bucket, "plain.csv")
    given = {"kind": "backfill", "version": 1, "source": f"s3://{bucket}/sorted.csv", "table": "target"}
    runner = _runner(ddb, s3, ledger_name, endpoint, Engine(), shuffle_window=2000)
    assert runner.handle({**given, "shuffle_window": 50_000}, _ctx("r0"))["status"] == "accepted"
    lane = endpoint.payloads[-1]
    assert lane["shuffle_window"] == 50_000
    first = Engine("stopped")
    _runner(ddb, s3, ledger_name, endpoint, first, shuffle_window=2000).handle(lane, _ctx("r1"))
    later = Engine("complete")
    out = _runner(ddb, s3, ledger_name, endpoint, later, shuffle_window=2000).handle(
        endpoint.payloads[-1], _ctx("r2")
    )
    assert out["status"] == L.COMPLETED
    assert [req.spec.shuffle_window for req in first.calls + later.calls] == [50_000, 50_000]
    assert _item(ddb, ledger_name, f"s3://{bucket}/sorted.csv").knobs["shuffle_window"] == 50_000
    # without one, a hop takes the function's setting of the moment
    plain = {**given, "source": f"s3://{bucket}/plain.csv"}
    assert runner.handle(plain, _ctx("r3"))["status"] == "accepted"
    engine = Engine("complete")
    _runner(ddb, s3, ledger_name, endpoint, engine, shuffle_window=3000).handle(
        endpoint.payloads[-1], _ctx("r4")
    )
    assert [req.spec.shuffle_window for req in engine.calls] == [3000]


def test_every_event_outside_the_allowed_prefix_is_refused_at_the_door(
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    """The function may read only under S3DDB_ALLOWED_PREFIX (the template's SourcePrefix, which is
    also all IAM grants): an event for another key is refused with the reason before anything is
    read or written, instead of failing later with AccessDenied."""
    engine = Engine("complete")
    runner = _runner(ddb, s3, ledger_name, endpoint, engine, allowed_prefix="incoming/")
    outside = _notification(s3, bucket, "elsewhere/a.csv")
    out = runner.handle(outside, _ctx("r0"))
    (obj,) = out["objects"]
    assert obj["status"] == "refused" and "is not under S3DDB_ALLOWED_PREFIX 'incoming/'" in obj["reason"]
    _put(s3, bucket, "incoming/b.csv")
    for source in (f"s3://{bucket}/elsewhere/a.csv", f"s3://{bucket}/", f"s3://{bucket}/incom"):
        backfill = {"kind": "backfill", "version": 1, "source": source, "table": "target"}
        out = runner.handle(backfill, _ctx("r1"))
        assert out["status"] == "refused" and "S3DDB_ALLOWED_PREFIX" in out["reason"], (source, out)
    lane = {
        "kind": "lane", "version": 1, "bucket": bucket, "prefix": "elsewhere/", "table": "target",
        "lane": 0, "lanes": 1, "start_after": "", "backfill_id": "x",
    }  # fmt: skip
    out = runner.handle(lane, _ctx("r2"))
    assert out["status"] == "refused" and "S3DDB_ALLOWED_PREFIX" in out["reason"], out
    assert engine.calls == [] and endpoint.payloads == []
    assert Ledger(ddb, ledger_name).chains(f"s3://{bucket}/elsewhere/a.csv") == []  # nothing written
    # under the prefix: accepted (an object, and a prefix inside it)
    for source in (f"s3://{bucket}/incoming/b.csv", f"s3://{bucket}/incoming/"):
        backfill = {"kind": "backfill", "version": 1, "source": source, "table": "target"}
        assert runner.handle(backfill, _ctx("r3"))["status"] in ("accepted", "already loaded")
