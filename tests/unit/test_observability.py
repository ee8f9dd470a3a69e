"""Log keys follow the record being handled (a multi-record event must not log one object's chain
with another's), and every hop end reports the time left at its last ledger write."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lambda_src.observability import Telemetry


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_unbind_drops_the_previous_records_chain_and_hop(capsys: pytest.CaptureFixture[str]) -> None:
    t = Telemetry(service=f"test-{uuid.uuid4().hex[:8]}", namespace="test")
    t.start(request_id="r1")
    t.bind(object="s3://b/one.csv", chain_id="c1", hop=3)
    t.log.info("first")
    t.unbind("chain_id", "hop")
    t.bind(object="s3://b/two.csv")
    t.log.info("second")
    first, second = (
        line for line in _lines(capsys.readouterr().out) if line.get("message") in ("first", "second")
    )
    assert (first["chain_id"], first["hop"], first["object"]) == ("c1", 3, "s3://b/one.csv")
    assert "chain_id" not in second and "hop" not in second
    assert (second["object"], second["request_id"]) == ("s3://b/two.csv", "r1")


def test_remaining_at_checkpoint_is_a_metric_of_every_hop_end(capsys: pytest.CaptureFixture[str]) -> None:
    t = Telemetry(service=f"test-{uuid.uuid4().hex[:8]}", namespace="test")
    t.remaining_at_checkpoint(1234)
    t.flush()
    blobs = [line for line in _lines(capsys.readouterr().out) if "_aws" in line]
    assert blobs
    value = blobs[-1]["RemainingAtCheckpoint"]
    assert 1234 in (value if isinstance(value, list) else [value])


def _values(blob: dict[str, Any], name: str) -> list[float]:
    value = blob.get(name, [])
    return list(value) if isinstance(value, list) else [value]


def _hop_result(throttle_events: int) -> Any:
    from loader.models import Checkpoint, Counters, RunResult

    cp = Checkpoint(
        source="s3://b/k.csv",
        table="t",
        version_id=None,
        etag=None,
        size=None,
        header=[],
        offset=10,
        next_row=2,
        counters=Counters(),
    )
    return RunResult(
        counters=Counters(throttle_events=throttle_events),
        checkpoint=cp,
        stopped="stopped",
        seconds=1.0,
        rejects_location=None,
    )


def test_write_throttles_are_reported_while_the_hop_runs_and_add_up_to_the_hops(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hop throttled from start to end must put WriteThrottles datapoints in every few minutes of
    its 15, not one at its end: the template's alarm wants throttling in 3 of 3 five-minute periods."""
    from lambda_src.observability import THROTTLE_FLUSH_S, WRITE_THROTTLES

    now = [0.0]
    t = Telemetry(service=f"test-{uuid.uuid4().hex[:8]}", namespace="test", clock=lambda: now[0])
    t.hop_started(throttles_before=5)  # the chain's hops before this one were throttled 5 times
    t.throttles_marked(5)  # nothing new yet
    now[0] = 10.0
    t.throttles_marked(8)  # 3 of this hop's: recorded, not printed yet (the last print is 10 s old)
    assert not [line for line in _lines(capsys.readouterr().out) if WRITE_THROTTLES in line]
    now[0] = THROTTLE_FLUSH_S + 1
    t.throttles_marked(9)  # one more, and a minute has passed: printed now, mid-hop
    during = [line for line in _lines(capsys.readouterr().out) if WRITE_THROTTLES in line]
    assert len(during) == 1 and sum(_values(during[0], WRITE_THROTTLES)) == 4
    t.throttles_marked(9)  # the same checkpoint again: nothing twice
    t.hop_metrics(_hop_result(throttle_events=6), seconds=1.0)  # 2 more, above the last mark
    t.flush()
    end = [line for line in _lines(capsys.readouterr().out) if WRITE_THROTTLES in line]
    assert len(end) == 1 and sum(_values(end[0], WRITE_THROTTLES)) == 2  # 4 + 2 = the hop's 6


def test_a_hop_that_was_never_throttled_reports_no_write_throttles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lambda_src.observability import WRITE_THROTTLES

    t = Telemetry(service=f"test-{uuid.uuid4().hex[:8]}", namespace="test")
    t.hop_started(throttles_before=7)
    t.throttles_marked(7)
    t.hop_metrics(_hop_result(throttle_events=0), seconds=1.0)
    t.flush()
    blobs = [line for line in _lines(capsys.readouterr().out) if "_aws" in line]
    assert blobs and all(WRITE_THROTTLES not in b for b in blobs)
    assert all("ThrottleEvents" not in b for b in blobs)  # the one throttle metric is WriteThrottles
