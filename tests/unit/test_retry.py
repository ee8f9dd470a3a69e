"""Backoff, retry policy and rate control, on a fake clock whose sleep advances it (no real sleeping)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from loader.errors import (
    BatchValidationError,
    ConfigError,
    ThrottledError,
    TransientSendError,
    WriteFailedError,
)
from loader.retry import Backoff, RateController, RetryPolicy, Slot, UnprocessedItemsError


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- Backoff ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (5, 1.0), (100, 1.0), (100_000, 1.0)],
)
def test_backoff_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0, rng=lambda: 1.0)
    assert backoff.ceiling(attempt) == pytest.approx(ceiling)
    assert backoff.delay(attempt) == pytest.approx(ceiling)


def test_backoff_is_full_jitter() -> None:
    draws = iter([0.0, 0.25, 0.5, 0.999])
    backoff = Backoff(base_s=1.0, cap_s=100.0, rng=lambda: next(draws))
    assert [backoff.delay(3) for _ in range(4)] == pytest.approx([0.0, 2.0, 4.0, 7.992])


# -- RetryPolicy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (ThrottledError("x", code="ThrottlingException"), True),
        (TransientSendError("x"), True),
        (UnprocessedItemsError("x"), True),
        (BatchValidationError("x"), False),
        (ConfigError("x"), False),
        (ValueError("x"), False),
    ],
)
def test_policy_names_what_it_retries(exc: BaseException, retryable: bool) -> None:
    policy = RetryPolicy(max_attempts=3, backoff=Backoff(base_s=0.1, cap_s=1.0))
    assert policy.is_retryable(exc) is retryable


def test_policy_logs_attempt_n_of_max_and_gives_up_with_the_last_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RetryPolicy(max_attempts=4, backoff=Backoff(base_s=0.1, cap_s=1.0, rng=lambda: 0.5))
    last = ThrottledError("slow down", code="ThrottlingException")
    with caplog.at_level(logging.INFO, logger="loader.retry"):  # what `s3ddb load -v` shows
        assert policy.next_delay(1, exponent=0, what="batch 7", last=last) == pytest.approx(0.05)
        assert policy.next_delay(3, exponent=2, what="batch 7", last=last) == pytest.approx(0.2)
    assert len(caplog.records) == 2
    assert caplog.records[0].getMessage() == (
        "batch 7: attempt 1/4 failed (ThrottledError: slow down); retrying in 0.050 s"
    )
    assert caplog.records[0].levelno == logging.INFO
    assert caplog.records[1].levelno == logging.WARNING  # past half the cap: worth a look
    assert [policy.exhausted(n) for n in (3, 4, 5)] == [False, True, True]
    err = policy.give_up(attempts=4, what="batch 7", last=last)
    assert isinstance(err, WriteFailedError)
    assert "4/4" in str(err) and "slow down" in str(err)


# -- RateController: the AIMD window ---------------------------------------------------


async def test_window_starts_full_and_bounds_calls_in_flight() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=4, max_wcu=None, clock=t.clock, sleep=t.sleep)
    slots = [await rc.acquire_slot() for _ in range(4)]
    waiter = asyncio.create_task(rc.acquire_slot())
    await asyncio.sleep(0)
    assert not waiter.done() and rc.inflight == 4
    rc.release_slot(slots[0], ok=True)
    await waiter
    assert rc.inflight == 4


async def test_a_burst_of_throttles_halves_the_window_once() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=40, max_wcu=None, clock=t.clock, sleep=t.sleep)
    slots = [await rc.acquire_slot() for _ in range(40)]
    for slot in slots:  # 40 calls that were in flight together all come back throttled
        rc.release_slot(slot, ok=False, throttled=True)
    assert rc.limit == 20
    assert (rc.throttle_events, rc.decreases) == (40, 1)


async def test_throttles_keep_halving_once_per_round_down_to_one() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=40, max_wcu=None, clock=t.clock, sleep=t.sleep, cooldown_s=0.05)
    limits = []
    for _ in range(8):
        t.now += 0.1
        slot = await rc.acquire_slot()  # started after the last decrease
        rc.release_slot(slot, ok=False, throttled=True)
        limits.append(rc.limit)
    assert limits == [20, 10, 5, 2, 1, 1, 1, 1]


async def test_a_throttle_within_the_cooldown_is_ignored() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=40, max_wcu=None, clock=t.clock, sleep=t.sleep, cooldown_s=0.05)
    rc.release_slot(await rc.acquire_slot(), ok=False, throttled=True)
    rc.release_slot(await rc.acquire_slot(), ok=False, throttled=True)  # same instant
    assert (rc.limit, rc.decreases, rc.throttle_events) == (20, 1, 2)


async def test_window_changes_are_logged_at_info_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=8, max_wcu=None, clock=t.clock, sleep=t.sleep)
    with caplog.at_level(logging.INFO, logger="loader.retry"):
        slots = [await rc.acquire_slot() for _ in range(8)]
        for slot in slots:  # one decrease for the burst
            rc.release_slot(slot, ok=False, throttled=True)
        for _ in range(200):  # recovery: one line when the window is full again, none per call
            rc.release_slot(await rc.acquire_slot(), ok=True)
    assert rc.window == 8.0
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "throttled (signal 1): concurrency window 8 -> 4 calls in flight"),
        (logging.INFO, "concurrency window back to 8 calls in flight"),
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_backoff_and_rate_refuse_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Backoff(base_s=bad, cap_s=1.0)
    with pytest.raises(ValueError, match="finite"):
        Backoff(base_s=0.1, cap_s=bad)
    with pytest.raises(ValueError, match="finite"):
        RateController(max_concurrency=4, max_wcu=bad)


async def test_successes_grow_the_window_additively_back_to_max() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=40, max_wcu=None, clock=t.clock, sleep=t.sleep)
    rc.release_slot(await rc.acquire_slot(), ok=False, throttled=True)
    assert rc.limit == 20
    for _ in range(21):  # about one window of successes: +1
        rc.release_slot(await rc.acquire_slot(), ok=True)
    assert rc.limit == 21
    for _ in range(2000):
        rc.release_slot(await rc.acquire_slot(), ok=True)
    assert rc.window == 40.0
    rc.release_slot(await rc.acquire_slot(), ok=False)  # a plain error changes nothing
    assert rc.window == 40.0


async def test_a_smaller_window_wakes_waiters_one_by_one() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=2, max_wcu=None, clock=t.clock, sleep=t.sleep)
    a = await rc.acquire_slot()
    b = await rc.acquire_slot()
    rc.release_slot(a, ok=False, throttled=True)  # window 1, one call (b) still in flight
    c = asyncio.create_task(rc.acquire_slot())
    await asyncio.sleep(0)
    assert not c.done()
    rc.release_slot(b, ok=True)
    slot_c = await c
    assert rc.inflight == 1
    rc.release_slot(slot_c, ok=True)
    assert rc.inflight == 0


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=1, max_wcu=None, clock=t.clock, sleep=t.sleep)
    held = await rc.acquire_slot()
    waiter = asyncio.create_task(rc.acquire_slot())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    rc.release_slot(held, ok=True)
    assert rc.inflight == 0
    assert isinstance(await rc.acquire_slot(), Slot)


# -- RateController: the write-unit token bucket ---------------------------------------


async def test_no_max_wcu_never_waits() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=4, max_wcu=None, clock=t.clock, sleep=t.sleep)
    for _ in range(100):
        await rc.acquire_units(10_000)
    assert t.slept == []


async def test_token_bucket_paces_write_units() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=4, max_wcu=100.0, clock=t.clock, sleep=t.sleep)
    start = t.now
    await rc.acquire_units(100)  # the bucket starts empty: no burst above the ceiling
    assert t.now - start == pytest.approx(1.0)
    for _ in range(10):
        await rc.acquire_units(50)
    assert t.now - start == pytest.approx(6.0)  # 600 units at 100/s


async def test_a_request_bigger_than_the_bucket_waits_for_a_full_one_and_leaves_a_debt() -> None:
    t = FakeTime()
    rc = RateController(max_concurrency=4, max_wcu=100.0, clock=t.clock, sleep=t.sleep)
    await rc.acquire_units(100)  # 1 s to fill the empty bucket
    await rc.acquire_units(250)  # waits for a full bucket (1 s), goes 150 units in debt
    assert t.now - 100.0 == pytest.approx(2.0)
    await rc.acquire_units(10)  # the debt is paid first: 1.6 s more
    assert t.now - 100.0 == pytest.approx(3.6)


def test_request_too_large_is_split_not_fatal() -> None:
    import botocore.exceptions

    from loader.errors import BatchValidationError
    from loader.sender import classify_client_error

    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": "", "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": 413}}, "BatchWriteItem"
    )
    assert isinstance(classify_client_error(exc, "t"), BatchValidationError)
