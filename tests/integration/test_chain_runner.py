"""ChainRunner against DynamoDB Local (the ledger), moto S3 and a local Lambda Invoke endpoint that
records what the function sends itself (or fails on demand). The engine is a scripted stand-in:
these tests are about lanes, backfills and resumes, not about loading rows (tests/e2e does that).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import botocore.config
import pytest

from lambda_src import ledger as L
from lambda_src.admin import build_notification
from lambda_src.chain import ChainRunner, HopRequest, InvocationContext, LaneStalledError, StalledError
from lambda_src.handler import lambda_client_config
from lambda_src.ledger import Ledger, ensure_ledger_table
from lambda_src.observability import Telemetry
from lambda_src.settings import Settings
from loader.models import Checkpoint, Counters, RunResult

SIZE = 1000


@dataclass
class InvokeEndpoint:
    """``POST /2015-03-31/functions/{name}/invocations``: 202 and the payload recorded, or 500."""

    failing: bool = False
    payloads: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    #: runs with each request's payload before the answer (what else happens while an invoke is sent)
    on_post: Callable[[dict[str, Any]], None] | None = None


@pytest.fixture
def endpoint() -> Iterator[InvokeEndpoint]:
    ep = InvokeEndpoint()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if ep.on_post is not None:
                ep.on_post(json.loads(body))
            if ep.failing:
                status, out = 500, b'{"Type": "Service", "message": "injected"}'
            else:
                ep.payloads.append(json.loads(body))
                status, out = 202, b""
            self.send_response(status)
            if status != 202:
                self.send_header("x-amzn-ErrorType", "ServiceException")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ep.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield ep
    server.shutdown()
    server.server_close()


@pytest.fixture
def ledger_name(ddb: Any) -> Iterator[str]:
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    ensure_ledger_table(ddb, name)
    yield name
    ddb.delete_table(TableName=name)


class Engine:
    """Scripted hops: each call takes the next outcome ("stopped" or "complete"), moving 100 bytes."""

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[HopRequest] = []

    def __call__(self, req: HopRequest) -> RunResult:
        self.calls.append(req)
        stopped: Any = self.outcomes.pop(0) if self.outcomes else "complete"
        start = req.resume.offset if req.resume is not None else 0
        rows = (req.resume.counters.rows_read if req.resume is not None else 0) + 10
        offset = SIZE if stopped == "complete" else start + 100
        c = Counters(rows_read=rows, items_written=rows, write_units=rows)
        cp = Checkpoint(
            source=req.uri,
            table=req.table,
            version_id=req.version_id,
            etag=req.etag,
            size=SIZE,
            header=["pk"],
            offset=offset,
            next_row=rows + 1,
            counters=c,
            complete=stopped == "complete",
        )
        return RunResult(counters=c, checkpoint=cp, stopped=stopped, seconds=0.1, rejects_location=None)


def _runner(
    ddb: Any, s3: Any, ledger: str, endpoint: InvokeEndpoint, engine: Engine, **settings: Any
) -> ChainRunner:
    lam = boto3.client("lambda", endpoint_url=endpoint.url, config=lambda_client_config())
    return ChainRunner(
        settings=Settings(ledger_table=ledger, table="target", **settings),
        ledger=Ledger(ddb, ledger),
        s3=s3,
        lambda_client=lam,
        engine=engine,
        telemetry=Telemetry(),
        sleep=lambda _s: None,
    )


def _ctx(request_id: str) -> InvocationContext:
    return InvocationContext(request_id=request_id, function="s3ddb-loader", remaining_ms=lambda: 600_000)


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
        "backfill_id": backfill_id,
    }


def _item(ddb: Any, ledger: str, uri: str) -> L.LedgerItem:
    items = Ledger(ddb, ledger).versions(uri)
    assert len(items) == 1
    return items[0]


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
    assert Ledger(ddb, ledger_name).versions(f"s3://{bucket}/p/b.csv") == []
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
    assert dup["objects"][0]["status"] == "skipped"


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
    ddb: Any, s3: Any, bucket: str, ledger_name: str, endpoint: InvokeEndpoint
) -> None:
    note = _notification(s3, bucket, "s.csv")
    endpoint.failing = True
    runner = _runner(ddb, s3, ledger_name, endpoint, Engine("stopped"))
    with pytest.raises(StalledError):
        runner.handle(note, _ctx("r0"))
    item = _item(ddb, ledger_name, f"s3://{bucket}/s.csv")
    assert (item.status, item.hop, item.offset) == (L.STALLED, 1, 100)
    assert "continuation invoke failed" in item.last_error
    # each attempt was timed: the next hop's margin uses what invokes really take
    assert runner.invoke_estimate.samples == runner.invoke_attempts == 3


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
