"""Writer.stop() at any moment accounts for every submitted batch and lets drain() return."""

from __future__ import annotations

import asyncio
from typing import Any

from loader.config import LoadConfig
from loader.models import Batch, Entry
from loader.writer import Abandoned, BatchOutcome, Writer


class _Sender:
    encode = None

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, table: str, items: list[Any], wire: list[bytes] | None = None) -> list[Any]:
        self.calls += 1
        await asyncio.sleep(0)
        return []

    async def aclose(self) -> None:
        return None


def _batch(seq: int, key: str) -> Batch:
    return Batch(seq=seq, entries=[Entry({"pk": {"S": key}}, (key,), 10, seq + 1, seq * 10, key)], nbytes=10)


async def test_a_stop_right_after_submit_before_the_task_starts_still_reports_the_batch() -> None:
    done: list[BatchOutcome] = []
    sender = _Sender()
    w = Writer(sender=sender, table="t", config=LoadConfig(table="t"), on_done=done.append)
    await w.submit(_batch(0, "a"))
    await w.submit(_batch(1, "a"))  # waits on batch 0's key
    w.stop()  # as the pipeline's stop timer may, in the same loop pass, before either task ran
    await asyncio.wait_for(w.drain(), 5)
    assert sorted(o.seq for o in done) == [0, 1]
    assert all(isinstance(o.error, Abandoned) for o in done), done
    assert w.inflight == 0 and sender.calls == 0


async def test_a_stop_while_calls_are_on_the_wire_lets_them_finish() -> None:
    done: list[BatchOutcome] = []
    sender = _Sender()
    w = Writer(sender=sender, table="t", config=LoadConfig(table="t"), on_done=done.append)
    for seq in range(3):
        await w.submit(_batch(seq, f"k{seq}"))
    await asyncio.sleep(0)  # the three tasks start and put their calls on the wire
    w.stop()
    await asyncio.wait_for(w.drain(), 5)
    assert sorted(o.seq for o in done) == [0, 1, 2]
    assert sender.calls == 3 and all(o.error is None for o in done), done
