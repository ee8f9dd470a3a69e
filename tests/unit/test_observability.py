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
