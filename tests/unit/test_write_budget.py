"""A worker's share of a sharded load's write budget changes while it runs (``WriteBudget``)."""

from __future__ import annotations

import asyncio

import pytest

from loader.retry import RateController, WriteBudget
from loader.spec import LoadSpec, RunKnobs


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_the_bucket_refills_at_the_budget_of_the_moment() -> None:
    t = FakeTime()
    budget = WriteBudget(100.0)
    rate = RateController(max_concurrency=4, max_wcu=None, clock=t.clock, sleep=t.sleep, budget=budget)
    assert rate.max_wcu == 100.0

    async def go() -> None:
        await rate.acquire_units(100)  # an empty bucket at 100/s: one second
        assert sum(t.slept) == pytest.approx(1.0)
        budget.set(400.0)  # another worker finished and handed its share on
        t.slept.clear()
        await rate.acquire_units(100)  # now a quarter of a second
        assert sum(t.slept) == pytest.approx(0.25)
        budget.set(None)  # no ceiling: no wait at all
        t.slept.clear()
        await rate.acquire_units(10_000)
        assert t.slept == []

    asyncio.run(go())


def test_a_budget_refuses_what_a_ceiling_cannot_be() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_wcu must be a finite positive number"):
            WriteBudget(bad)


def test_the_knobs_hand_the_same_budget_to_the_load_not_a_copy() -> None:
    budget = WriteBudget(50.0)
    spec = LoadSpec(source="/tmp/x.csv", table="t", max_wcu=100.0)
    config = spec.config(**RunKnobs(write_budget=budget).as_config())
    assert config.write_budget is budget  # a deep copy would never see the parent's hand-on
