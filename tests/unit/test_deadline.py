"""The hop's deadline (lambda_src.deadline): when a hop stops, the safety-margin cap, too short a
function, and a hop that made no progress."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_src.deadline import Deadline, DurationEstimate, InvokeEstimate
from loader.models import Progress


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


class Clock:
    """``remaining_ms`` of a fake invocation."""

    def __init__(self, left_ms: int) -> None:
        self.left_ms = left_ms

    def __call__(self) -> int:
        return self.left_ms


def _run_until_stop(d: Deadline, clock: Clock, p: Progress, step_ms: int = 10) -> int:
    """Poll ``should_stop`` as the engine does, ``step_ms`` apart; the ms left at the stop."""
    while not d.should_stop(p):
        assert clock.left_ms > 0, "the hop never stopped"
        clock.left_ms -= step_ms
    assert d.remaining_at_stop_ms is not None
    return d.remaining_at_stop_ms


BUSY_NO_RATE = _progress(inflight_batches=40, items_per_second=0.0, elapsed_s=0.15)


def test_the_old_defect_40_batches_in_flight_no_longer_stop_a_10s_hop_at_once() -> None:
    # The old rule (chain.Deadline before this module): 40 in-flight batches with no rate yet
    # counted as 40 x 0.2 s of serial drain, plus 3 ledger writes (0.2 s) and 2 invokes (1.0 s).
    old_margin_ms = 2000 + 1000 * (40 * 0.2 + 3 * 0.2 + 2 * 1.0)
    assert old_margin_ms == pytest.approx(12_600)
    assert old_margin_ms > 9_800  # so it stopped ~0.15 s into the hop, with 9.8 s left
    clock = Clock(9_800)
    d = Deadline(clock, safety_margin_ms=2000)
    assert not d.should_stop(BUSY_NO_RATE)
    assert d.margin_ms(BUSY_NO_RATE) == pytest.approx(2000 + 200 + 2 * 200 + 1000)


@pytest.mark.parametrize(
    ("margin_ms", "capped", "effective_ms", "stop_at_most_ms", "work_at_least_ms"),
    [
        # margin + one latency (0.2 s) + commit and hand-over (2 x 0.2 s) + invoke (1.0 s) = 3.6 s
        (2_000, False, 2_000, 3_600, 6_400),
        # the default 10 s margin is capped to 25 % of the 10 s budget: 2.5 + 0.2 + 1.4 = 4.1 s
        (10_000, True, 2_500, 4_100, 5_900),
        (0, False, 0, 1_600, 8_400),
    ],
)
def test_a_10s_hop_with_40_batches_in_flight_uses_most_of_its_budget(
    margin_ms: int, capped: bool, effective_ms: int, stop_at_most_ms: int, work_at_least_ms: int
) -> None:
    clock = Clock(10_000)
    d = Deadline(clock, safety_margin_ms=margin_ms)
    assert (d.margin_capped, d.effective_margin_ms) == (capped, effective_ms)
    assert d.too_short() is None
    left = _run_until_stop(d, clock, BUSY_NO_RATE)
    assert stop_at_most_ms - 10 <= left <= stop_at_most_ms
    assert d.budget_ms - left >= work_at_least_ms
    assert d.budget_ms - left > d.budget_ms / 2  # most of the budget went to work


def test_measured_durations_from_earlier_hops_let_a_hop_run_longer() -> None:
    clock = Clock(10_000)
    d = Deadline(clock, safety_margin_ms=2000, ledger_write_s=0.02, invoke_s=0.08)
    left = _run_until_stop(d, clock, BUSY_NO_RATE)
    assert left <= 2000 + 200 + 40 + 80
    assert d.measured() == {"ledger_write_s": 0.02, "invoke_s": 0.08}


@pytest.mark.parametrize(
    ("budget_ms", "margin_ms", "capped", "effective_ms"),
    [
        (900_000, 10_000, False, 10_000),
        (900_000, 300_000, True, 225_000),
        (10_000, 10_000, True, 2_500),
        (10_000, 2_500, False, 2_500),  # exactly at the cap: applied whole
        (60_000, 10_000, False, 10_000),
        (30_000, 10_000, True, 7_500),
    ],
)
def test_the_safety_margin_is_capped_at_a_quarter_of_the_hops_budget(
    budget_ms: int, margin_ms: int, capped: bool, effective_ms: int
) -> None:
    d = Deadline(Clock(budget_ms), safety_margin_ms=margin_ms)
    assert (d.margin_capped, d.effective_margin_ms) == (capped, effective_ms)
    msg = d.cap_message()
    if capped:
        assert msg is not None
        for part in ("S3DDB_SAFETY_MARGIN_MS", str(margin_ms), str(effective_ms), str(budget_ms)):
            assert part in msg
        assert "\n" not in msg
    else:
        assert msg is None


def test_the_cap_fraction_is_a_parameter() -> None:
    d = Deadline(Clock(10_000), safety_margin_ms=10_000, margin_cap_fraction=0.5)
    assert (d.margin_capped, d.effective_margin_ms) == (True, 5_000)
    assert "50%" in (d.cap_message() or "")
    with pytest.raises(ValueError):
        Deadline(Clock(10_000), safety_margin_ms=1, margin_cap_fraction=0.0)


@pytest.mark.parametrize(
    ("budget_ms", "margin_ms", "short"),
    [
        (1_000, 10_000, True),  # the default margin in a 1 s function
        (1_000, 0, True),  # even without a margin: 1.4 s of hand-over, 0.2 s of writes, 1 s of work
        (3_000, 10_000, True),  # 750 + 2600 > 3000
        (3_500, 10_000, False),  # 875 + 2600 <= 3500
        (10_000, 10_000, False),
        (900_000, 10_000, False),
        (2_600, 0, False),
    ],
)
def test_too_short_a_function_is_found_at_construction(budget_ms: int, margin_ms: int, short: bool) -> None:
    d = Deadline(Clock(budget_ms), safety_margin_ms=margin_ms)
    reason = d.too_short()
    assert (reason is not None) == short
    if reason is not None:
        assert "function timeout" in reason and "S3DDB_SAFETY_MARGIN_MS" in reason
        assert str(budget_ms) in reason and str(margin_ms) in reason
        assert budget_ms < d.min_budget_ms()
    else:
        assert budget_ms >= d.min_budget_ms()


def test_a_1s_function_with_the_default_margin_is_told_what_to_change() -> None:
    d = Deadline(Clock(1_000), safety_margin_ms=10_000)
    reason = d.too_short()
    assert reason is not None
    # 2.6 s of fixed needs; with the margin capped at 25 %, 2.6 / 0.75 = 3.467 s
    assert d.min_budget_ms() == 3_467
    assert "at least 3467 ms" in reason
    assert "raise the function timeout to at least 4 s" in reason
    assert "10000" in reason and "1000 ms" in reason
    assert "cannot make room" in reason  # lowering the margin alone does not help here


def test_too_short_suggests_a_margin_that_would_fit_when_one_would() -> None:
    d = Deadline(Clock(3_000), safety_margin_ms=10_000)
    reason = d.too_short()
    assert reason is not None
    assert "lower S3DDB_SAFETY_MARGIN_MS to at most 400 ms" in reason
    fixed = Deadline(Clock(3_000), safety_margin_ms=400)
    assert fixed.too_short() is None


def test_a_hop_that_starts_late_in_a_long_invocation_is_not_too_short() -> None:
    # an S3 notification with several records: the second object's hop starts with 2 s left of 900
    d = Deadline(Clock(2_000), safety_margin_ms=10_000, invocation_budget_ms=900_000)
    assert d.too_short() is None
    assert d.started_late
    assert d.should_stop(_progress())
    assert d.no_progress_reason(100, 100, throttled=False) is None  # it hands over
    alone = Deadline(Clock(2_000), safety_margin_ms=10_000)
    assert alone.too_short() is not None and not alone.started_late


@pytest.mark.parametrize(
    ("inflight", "rate", "elapsed_s", "backoff_s", "drain_s"),
    [
        (0, 0.0, 1.0, 0.0, 0.2),  # nothing in flight: one latency (the read-ahead, the close)
        (40, 0.0, 0.1, 0.0, 0.2),  # no rate yet: one latency, not 40
        (40, 5_000.0, 30.0, 0.0, 0.2),  # Little: 1000 items / 5000 per s = 0.2 s
        (40, 1_000.0, 30.0, 0.0, 1.0),  # slower writes: 1000 / 1000 = 1 s
        (20, 250.0, 30.0, 0.0, 2.0),  # a write-unit ceiling: 500 / 250 = 2 s
        (40, 50_000.0, 30.0, 0.0, 0.2),  # never below one latency (Little says 0.02 s)
        (40, 100.0, 0.5, 0.0, 0.5),  # the first turn of the pipeline: bounded by the hop's age
        (40, 5_000.0, 30.0, 3.0, 3.2),  # a backoff adds
        (0, 0.0, 1.0, 1.5, 1.7),  # a backoff adds to the latency too
    ],
)
def test_the_drain_counts_concurrent_calls(
    inflight: int, rate: float, elapsed_s: float, backoff_s: float, drain_s: float
) -> None:
    d = Deadline(Clock(60_000), safety_margin_ms=1000, ledger_write_s=0.1, invoke_s=0.2)
    p = _progress(
        inflight_batches=inflight, items_per_second=rate, elapsed_s=elapsed_s, max_backoff_s=backoff_s
    )
    assert d.drain_s(p) == pytest.approx(drain_s)
    assert d.margin_ms(p) == pytest.approx(1000 + 1000 * (drain_s + 2 * 0.1 + 0.2))


def test_littles_law_moves_the_stop_and_a_backoff_moves_it_further() -> None:
    stops = []
    for p in (
        _progress(inflight_batches=40, items_per_second=5_000.0, elapsed_s=20.0),
        _progress(inflight_batches=40, items_per_second=500.0, elapsed_s=20.0),
        _progress(inflight_batches=40, items_per_second=500.0, elapsed_s=20.0, max_backoff_s=4.0),
    ):
        clock = Clock(60_000)
        d = Deadline(clock, safety_margin_ms=2000, ledger_write_s=0.1, invoke_s=0.1)
        stops.append(_run_until_stop(d, clock, p))
    assert stops[0] <= 2000 + 200 + 300
    assert stops[1] == pytest.approx(stops[0] + 1800, abs=10)  # 2 s of drain instead of 0.2
    assert stops[2] == pytest.approx(stops[1] + 4000, abs=10)


@pytest.mark.parametrize(
    ("ledger_s", "invoke_s", "tail_s"),
    [
        (0.2, 1.0, 1.4),  # the guesses: commit + hand-over + one invoke
        (0.01, 0.05, 0.07),
        (0.5, 2.0, 3.0),
    ],
)
def test_the_tail_is_two_ledger_writes_and_one_invoke(
    ledger_s: float, invoke_s: float, tail_s: float
) -> None:
    d = Deadline(Clock(60_000), safety_margin_ms=0, ledger_write_s=ledger_s, invoke_s=invoke_s)
    assert d.tail_s() == pytest.approx(tail_s)
    assert d.margin_ms(_progress()) == pytest.approx(1000 * (0.2 + tail_s))


def test_measured_ledger_writes_and_invokes_change_the_margin() -> None:
    d = Deadline(Clock(60_000), safety_margin_ms=0)
    assert d.measured() == {}  # only guesses so far
    guessed = d.margin_ms(_progress())
    d.observe_ledger_write(0.01)  # the first measurement replaces the guess
    d.observe_invoke(0.05)
    fast = d.margin_ms(_progress())
    assert fast == pytest.approx(1000 * (0.2 + 2 * 0.01 + 0.05))
    assert fast < guessed
    d.observe_ledger_write(1.0)  # a slow one raises it at once
    d.observe_invoke(2.0)
    slow = d.margin_ms(_progress())
    assert slow == pytest.approx(1000 * (0.2 + 2 * 1.0 + 2.0))
    d.observe_ledger_write(0.01)  # a fast one lowers it halfway
    assert d.ledger_write_s == pytest.approx(0.505)
    assert d.measured() == {"ledger_write_s": pytest.approx(0.505), "invoke_s": 2.0}


def test_a_duration_carried_from_an_earlier_hop_counts_as_measured() -> None:
    d = Deadline(Clock(60_000), safety_margin_ms=0, ledger_write_s=0.4)
    d.observe_ledger_write(0.0)  # not a replacement: it lowers the carried value halfway
    assert d.ledger_write_s == pytest.approx(0.2)


def test_the_invoke_estimate_is_measured() -> None:
    est = InvokeEstimate()
    assert (est.seconds, est.samples) == (1.0, 0)  # a guess until the first invoke is timed
    est.observe(0.05)
    assert est.seconds == pytest.approx(0.05)
    est.observe(3.0)
    assert est.seconds == pytest.approx(3.0)
    est.observe(0.05)
    assert 0.05 < est.seconds < 3.0
    assert isinstance(est, DurationEstimate) and est.samples == 3
    with pytest.raises(ValueError):
        DurationEstimate(float("nan"))


def test_the_stop_latches_and_records_when_it_happened() -> None:
    clock = Clock(10_000)
    d = Deadline(clock, safety_margin_ms=2000, ledger_write_s=0.1, invoke_s=0.1)
    assert not d.should_stop(_progress())
    assert (d.stop_requested, d.remaining_at_stop_ms) == (False, None)
    clock.left_ms = 2_400  # margin 2000 + 200 + 300 = 2500
    assert d.should_stop(_progress())
    assert d.remaining_at_stop_ms == 2_400
    assert d.margin_at_stop_ms == 2_500
    clock.left_ms = 60_000
    assert d.should_stop(_progress())  # latched
    assert d.remaining_at_stop_ms == 2_400
    assert d.summary()["remaining_at_stop_ms"] == 2_400


@pytest.mark.parametrize(
    ("stopped", "start", "end", "throttled", "fails"),
    [
        (True, 500, 500, False, True),  # the deadline ended it with nothing done: fail the chain
        (True, 500, 900, False, False),  # progress
        (True, 500, 500, True, False),  # throttled: hand over, as today
        (False, 500, 500, False, False),  # not ended by the deadline (lost its claim, failed)
    ],
)
def test_no_progress_reason(stopped: bool, start: int, end: int, throttled: bool, fails: bool) -> None:
    clock = Clock(10_000)
    d = Deadline(clock, safety_margin_ms=2000)
    if stopped:
        _run_until_stop(d, clock, BUSY_NO_RATE)
    reason = d.no_progress_reason(start, end, throttled=throttled)
    assert (reason is not None) == fails
    if reason is not None:
        assert "function timeout" in reason and "S3DDB_SAFETY_MARGIN_MS" in reason
        assert str(start) in reason and "2000" in reason


def test_a_hop_with_no_time_stops_before_its_first_batch_and_fails_without_progress() -> None:
    # 10 s function, margin 10000, old code: every hop stopped at once and handed over, 50 times.
    # Now the margin is capped and the hop works; if it still made nothing, the chain fails.
    clock = Clock(10_000)
    d = Deadline(clock, safety_margin_ms=10_000)
    assert d.too_short() is None
    assert not d.should_stop(_progress())  # the engine's first check, before reading
    clock.left_ms = 3_000
    assert d.should_stop(_progress())
    assert d.no_progress_reason(0, 0, throttled=False) is not None
