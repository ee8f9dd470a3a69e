"""``run_workers`` when a worker cannot start (``Process.start`` raising: too many open files, no
more processes): the error goes out, the workers already started go with it, and the parent's
SIGINT/SIGTERM mask and handlers (blocked and ignored while workers start) are back as they were.

``SpawnProcess.start`` is the standard library's, replaced here to fail on the second worker: the
failure cannot be caused on demand otherwise."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import signal
from pathlib import Path
from typing import Any

import pytest

from loader import workers
from loader.spec import LoadSpec, RunKnobs


def test_a_worker_that_cannot_start_leaves_no_worker_and_the_signals_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"pk,n\n" + b"".join(b"k%07d,%d\n" % (i, i) for i in range(20_000)))
    spec = LoadSpec(source=str(path), table="t", rejects=str(tmp_path / "rejects"))
    state, _ = workers.plan(spec, n=2, size=path.stat().st_size, s3_client=None)
    assert len(state.shards) == 2
    real_start = multiprocessing.context.SpawnProcess.start
    started: list[Any] = []

    def start(self: Any) -> None:
        if started:
            raise OSError(24, "Too many open files")
        started.append(self)
        real_start(self)

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", start)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved: list[Any] = []
    with pytest.raises(OSError, match="Too many open files"):
        workers.run_workers(
            state,
            knobs=RunKnobs(),
            run_id="r",
            sender="lean",
            save=saved.append,
            should_stop=lambda: False,
        )
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    (first,) = started
    assert not first.is_alive() and multiprocessing.active_children() == []
    assert len(saved) == 1  # the checkpoint was saved before any worker started
