"""A hop's deadline: when a Lambda hop stops reading, so that what it still has to do after the
stop (let the writes on the wire finish, commit its last checkpoint, hand over, invoke the next
hop) fits in the time it has left.

Pure: the clock is the ``remaining_ms`` callable passed in (``context.get_remaining_time_in_millis``
in Lambda); nothing here sleeps or reads the environment. The settings (S3DDB_SAFETY_MARGIN_MS)
and the durations measured by earlier hops are passed in by the caller.

The stop rule
-------------
A hop stops reading as soon as ``remaining < margin``, where::

    margin = effective safety margin + drain + tail

**Effective safety margin.** S3DDB_SAFETY_MARGIN_MS is time kept free on top of the estimates. It
is capped at ``margin_cap_fraction`` (default 25 %) of the hop's budget (the time left when the
Deadline is built): a 10 s margin is right for a 900 s function, but with a 10 s function it left
no time at all, and every hop handed over without writing a row. The cap is reported
(``margin_capped``, ``cap_message()``) so the operator sees that the margin was not applied.

**Drain.** After a stop the engine's writer (``loader.writer.Writer.stop``) lets the calls on the
wire finish and abandons every batch still waiting for room, a key, a write unit or a backoff (their
rows stay above the low-water mark and the next hop writes them). The calls on the wire run
*concurrently*: draining 40 of them takes about one call latency, not 40 latencies. So:

* no write rate yet: one call latency (``call_latency_s``, default 0.2 s; a BatchWriteItem of 25
  items usually takes 10-50 ms, and the estimate errs long). The old rule, in-flight batches x
  latency, counted 40 x 0.2 s = 8 s of "drain" for calls that finish together, and so stopped every
  hop of a 10 s function after ~0.15 s with ~9.8 s left;
* a write rate known: Little's law, ``in-flight items / items per second``, the mean time an item
  spends in the writer. It is honest for concurrent calls: it equals one call latency when the
  writer runs freely, and grows when calls queue for write units, slow down or are retried. It
  errs long (time spent waiting and backing off counts, though a stop abandons that waiting). Two
  bounds: never less than one call latency; and never more than the hop has been running
  (``Progress.elapsed_s``). The rate is averaged since the hop started, and while fewer items have
  been written than are in flight (the first turn of the pipeline) that average counts the start-up
  (opening the object, the first reads) as time without writes: right after the first batch
  completes it would claim many seconds of drain. Once more items were written than are in flight,
  the estimate is below ``elapsed_s`` anyway, so the bound only acts on the start-up;
* plus the longest backoff being slept (``Progress.max_backoff_s``). The writer abandons sleeping
  batches on a stop, so this errs long; it is kept because it is the one sign that the table is
  pushing back, and a hop that is being throttled loses nothing by handing over a little earlier.

**Tail.** After the drain: the final checkpoint commit (``on_checkpoint``, one ledger write), the
hand-over (``Ledger.handover``, one ledger write) and the self-invoke. That is
``tail_ledger_writes`` (default 2) x the ledger-write duration + one invoke duration. Not counted:

* the STALLED write after a failed invoke, and the retries of a failed invoke. That path may run
  past the deadline, and that is safe: the hand-over is already committed (the ledger is PENDING,
  ``handed_by`` this request), so if Lambda ends the invocation, its retry of this very request
  takes the hop over (``chain.decide``), and a new event does once the pending lease runs out;
* ``Ledger.add_rejects`` (one more write, only in a hop that rejected rows); the safety margin
  covers it.

The old rule counted 3 writes + 2 invokes, i.e. it budgeted for the failure path on every hop.

Durations are measured (``observe_ledger_write``, ``observe_invoke``) and can be passed in from
earlier hops (``ledger_write_s``, ``invoke_s``; ``measured()`` gives back what to carry). An
estimate errs long: the first measurement replaces the guess, a slower one raises it at once, faster
ones lower it halfway each time (``DurationEstimate``).

Too short a function
--------------------
``too_short()`` says, at construction, when the function timeout cannot hold even one round of
writes and the hand-over: the budget is below ``effective margin + tail + one call latency +
min_work_s``. The chain should then FAIL at once with that reason (it names the function timeout and
S3DDB_SAFETY_MARGIN_MS, with numbers) instead of handing over hop after hop until S3DDB_MAX_HOPS.
``no_progress_reason()`` is the same judgement after the hop: a hop that the deadline ended without
moving the low-water mark, and without being throttled, will not do better next time.

How a caller uses it (``ChainRunner._run_hop``)::

    d = Deadline(ctx.remaining_ms, safety_margin_ms=settings.safety_margin_ms,
                 invocation_budget_ms=<remaining at handler entry>, **carried_timings)
    if (reason := d.too_short()) is not None: fail the chain with reason
    if (msg := d.cap_message()) is not None: log a warning with msg
    run the engine with should_stop=d.should_stop, timing ledger writes into d.observe_ledger_write
    if (reason := d.no_progress_reason(start, end, throttled=...)) is not None: fail the chain
    else hand over, carrying d.measured() in the ledger
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from loader.models import Progress

__all__ = [
    "DEFAULT_CALL_LATENCY_S",
    "DEFAULT_INVOKE_S",
    "DEFAULT_LEDGER_WRITE_S",
    "DEFAULT_MARGIN_CAP_FRACTION",
    "DEFAULT_MIN_WORK_S",
    "Deadline",
    "DurationEstimate",
    "InvokeEstimate",
]

#: One BatchWriteItem call, before any is measured (they usually take 10-50 ms).
DEFAULT_CALL_LATENCY_S = 0.2
#: One conditional ledger write, before any is measured (usually ~10 ms; the first one of a
#: container opens a connection).
DEFAULT_LEDGER_WRITE_S = 0.2
#: One asynchronous self-invoke, before any is measured (usually well under 0.1 s).
DEFAULT_INVOKE_S = 1.0
#: The safety margin may take at most this share of a hop's budget.
DEFAULT_MARGIN_CAP_FRACTION = 0.25
#: A hop is worth running only with at least this much time for reading and writing.
DEFAULT_MIN_WORK_S = 1.0


class DurationEstimate:
    """How long something takes, erring long. Starts at a guess (``initial_s``), or at a value
    measured earlier (``measured=True``). The first measurement replaces a guess; after that a
    slower one raises the estimate at once and faster ones lower it halfway each time."""

    def __init__(self, initial_s: float, *, measured: bool = False) -> None:
        if not initial_s >= 0 or math.isinf(initial_s):
            raise ValueError(f"a duration must be finite and >= 0, got {initial_s!r}")
        self.seconds = float(initial_s)
        self.samples = 1 if measured else 0

    @property
    def measured(self) -> bool:
        return self.samples > 0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        if self.samples == 0:
            self.seconds = seconds
        else:
            self.seconds = max(seconds, 0.5 * self.seconds + 0.5 * seconds)
        self.samples += 1


class InvokeEstimate(DurationEstimate):
    """How long a self-invoke takes, measured (kept per container, so every hop's margin uses what
    the previous invokes really took). Starts at ``initial_s``; a slow invoke raises it at once,
    fast ones lower it gradually. (As in ``chain.InvokeEstimate``: same constructor and default.)"""

    def __init__(self, initial_s: float = DEFAULT_INVOKE_S) -> None:
        super().__init__(initial_s)


def _ms(seconds: float) -> int:
    return math.ceil(1000.0 * seconds)


class Deadline:
    """``should_stop`` for one hop: stop reading when the time left is under what is still to do
    (see the module docstring for the rule and why).

    ``remaining_ms`` is the clock (ms left in the invocation). ``safety_margin_ms`` is
    S3DDB_SAFETY_MARGIN_MS as configured; it is capped at ``margin_cap_fraction`` of the hop's budget
    (``remaining_ms()`` when the Deadline is built). ``ledger_write_s`` and ``invoke_s`` are durations
    measured by earlier hops (None: not measured yet, the defaults are used until something is).
    ``invocation_budget_ms`` is the time the invocation had when it started, if the hop does not
    start it (an S3 notification with several records runs their hops one after the other): the
    function timeout is judged by it, not by a hop that started late.
    """

    def __init__(
        self,
        remaining_ms: Callable[[], int],
        *,
        safety_margin_ms: int,
        margin_cap_fraction: float = DEFAULT_MARGIN_CAP_FRACTION,
        call_latency_s: float = DEFAULT_CALL_LATENCY_S,
        ledger_write_s: float | None = None,
        invoke_s: float | None = None,
        tail_ledger_writes: int = 2,
        min_work_s: float = DEFAULT_MIN_WORK_S,
        batch_items: int = 25,
        invocation_budget_ms: int | None = None,
    ) -> None:
        if safety_margin_ms < 0:
            raise ValueError(f"safety_margin_ms must be >= 0, got {safety_margin_ms}")
        if not 0.0 < margin_cap_fraction <= 1.0:
            raise ValueError(f"margin_cap_fraction must be in (0, 1], got {margin_cap_fraction}")
        if not call_latency_s >= 0 or not min_work_s >= 0:
            raise ValueError("call_latency_s and min_work_s must be >= 0")
        if tail_ledger_writes < 0 or batch_items < 1:
            raise ValueError("tail_ledger_writes must be >= 0 and batch_items >= 1")
        self.remaining_ms = remaining_ms
        self.safety_margin_ms = int(safety_margin_ms)
        self.margin_cap_fraction = float(margin_cap_fraction)
        self.call_latency_s = float(call_latency_s)
        self.tail_ledger_writes = int(tail_ledger_writes)
        self.min_work_s = float(min_work_s)
        self.batch_items = int(batch_items)
        self.ledger_write = DurationEstimate(
            DEFAULT_LEDGER_WRITE_S if ledger_write_s is None else ledger_write_s,
            measured=ledger_write_s is not None,
        )
        self.invoke = DurationEstimate(
            DEFAULT_INVOKE_S if invoke_s is None else invoke_s, measured=invoke_s is not None
        )
        #: the hop's budget: ms left when it was built
        self.budget_ms = int(remaining_ms())
        #: the invocation's budget (the function timeout is judged by it)
        self.invocation_budget_ms = max(self.budget_ms, invocation_budget_ms or 0)
        #: S3DDB_SAFETY_MARGIN_MS as applied to this hop (at most the cap)
        self.effective_margin_ms = self._capped_margin_ms(self.budget_ms)
        self.margin_capped = self.effective_margin_ms < self.safety_margin_ms
        self.stop_requested = False
        self.remaining_at_stop_ms: int | None = None
        self.margin_at_stop_ms: int | None = None
        self.progress_at_stop: Progress | None = None
        self._too_short = self._judge_timeout()
        #: the invocation has time enough, but this hop started with too little of it left
        self.started_late = self._too_short is None and self.budget_ms < self._needed_ms(self.budget_ms)

    # -- measurements ------------------------------------------------------------------------

    def observe_ledger_write(self, seconds: float) -> None:
        """A ledger write took ``seconds``: it feeds the tail (commit + hand-over)."""
        self.ledger_write.observe(seconds)

    def observe_invoke(self, seconds: float) -> None:
        """A self-invoke took ``seconds``: it feeds the tail."""
        self.invoke.observe(seconds)

    @property
    def ledger_write_s(self) -> float:
        return self.ledger_write.seconds

    @property
    def invoke_s(self) -> float:
        return self.invoke.seconds

    def measured(self) -> dict[str, float]:
        """The durations measured so far (or passed in as measured), to carry to the next hop:
        ``Deadline(..., **d.measured())``. Guesses are left out."""
        out: dict[str, float] = {}
        if self.ledger_write.measured:
            out["ledger_write_s"] = self.ledger_write.seconds
        if self.invoke.measured:
            out["invoke_s"] = self.invoke.seconds
        return out

    # -- the parts of the margin -------------------------------------------------------------

    def _capped_margin_ms(self, budget_ms: int) -> int:
        cap = int(self.margin_cap_fraction * max(budget_ms, 0))
        return min(self.safety_margin_ms, cap)

    def tail_s(self) -> float:
        """The final checkpoint commit and the hand-over (``tail_ledger_writes`` ledger writes) and
        one self-invoke, as measured so far."""
        return self.tail_ledger_writes * self.ledger_write.seconds + self.invoke.seconds

    def drain_s(self, p: Progress) -> float:
        """How long the writes in flight take to finish once the hop stops (they run concurrently):
        one call latency, or Little's law when a write rate is known, plus the longest backoff."""
        drain = self.call_latency_s
        if p.items_per_second > 0 and p.inflight_batches > 0:
            little = p.inflight_batches * self.batch_items / p.items_per_second
            drain = max(drain, min(little, p.elapsed_s))
        return drain + max(0.0, p.max_backoff_s)

    def margin_ms(self, p: Progress) -> float:
        """The time a hop in state ``p`` still needs after it stops: effective safety margin +
        drain + tail."""
        return self.effective_margin_ms + 1000.0 * (self.drain_s(p) + self.tail_s())

    def should_stop(self, p: Progress) -> bool:
        """True once the time left is under ``margin_ms(p)``; it stays True (latched)."""
        if self.stop_requested:
            return True
        remaining = int(self.remaining_ms())
        margin = self.margin_ms(p)
        if remaining < margin:
            self.stop_requested = True
            self.remaining_at_stop_ms = remaining
            self.margin_at_stop_ms = math.ceil(margin)
            self.progress_at_stop = p
        return self.stop_requested

    def stop_now(self, p: Progress) -> None:
        """Latch a stop as ``should_stop`` does, whatever the time left (the hop's workers were
        killed at the last resort before the stop line was seen)."""
        if self.stop_requested:
            return
        self.stop_requested = True
        self.remaining_at_stop_ms = int(self.remaining_ms())
        self.margin_at_stop_ms = math.ceil(self.margin_ms(p))
        self.progress_at_stop = p

    # -- too short a function ----------------------------------------------------------------

    def _fixed_need_s(self) -> float:
        """What a hop needs on top of the safety margin: the tail, one round of writes, some work."""
        return self.tail_s() + self.call_latency_s + self.min_work_s

    def _needed_ms(self, budget_ms: int) -> int:
        return self._capped_margin_ms(budget_ms) + _ms(self._fixed_need_s())

    def min_budget_ms(self) -> int:
        """The least budget a hop can work in with these settings: ``b`` such that
        ``b == min(S3DDB_SAFETY_MARGIN_MS, fraction * b) + tail + one call latency + min_work_s``."""
        fixed = _ms(self._fixed_need_s())
        uncapped = self.safety_margin_ms + fixed
        if self.margin_cap_fraction >= 1.0:
            return uncapped
        return min(uncapped, math.ceil(fixed / (1.0 - self.margin_cap_fraction)))

    def _judge_timeout(self) -> str | None:
        budget = self.invocation_budget_ms
        if budget >= self._needed_ms(budget):
            return None
        fixed = _ms(self._fixed_need_s())
        need = self.min_budget_ms()
        margin = self._capped_margin_ms(budget)
        capped = f" (capped at {margin} ms)" if margin < self.safety_margin_ms else ""
        if budget - fixed > 0:
            lower = f", or lower S3DDB_SAFETY_MARGIN_MS to at most {budget - fixed} ms"
        else:
            lower = (
                "; lowering S3DDB_SAFETY_MARGIN_MS cannot make room: the hand-over, one round of "
                f"writes and the work alone need {fixed} ms"
            )
        return (
            f"the function timeout is too short: the invocation started with {budget} ms left and a "
            f"hop needs at least {need} ms: S3DDB_SAFETY_MARGIN_MS={self.safety_margin_ms}{capped}, "
            f"the hand-over {_ms(self.tail_s())} ms ({self.tail_ledger_writes} ledger writes of "
            f"{self.ledger_write.seconds:.3g} s and a self-invoke of {self.invoke.seconds:.3g} s), "
            f"one round of writes {_ms(self.call_latency_s)} ms and {_ms(self.min_work_s)} ms of work; "
            f"raise the function timeout to at least {math.ceil(need / 1000.0)} s{lower}"
        )

    def too_short(self) -> str | None:
        """Why the function timeout cannot hold one round of writes and the hand-over (judged when
        the Deadline was built, on the invocation's budget), naming the settings to change; else
        None. The caller fails the chain with this reason instead of running the hop."""
        return self._too_short

    def cap_message(self) -> str | None:
        """One line to log (a warning) when S3DDB_SAFETY_MARGIN_MS was capped for this hop; else None."""
        if not self.margin_capped:
            return None
        pct = round(100 * self.margin_cap_fraction)
        return (
            f"S3DDB_SAFETY_MARGIN_MS={self.safety_margin_ms} is more than {pct}% of this hop's "
            f"{self.budget_ms} ms budget: using {self.effective_margin_ms} ms (a longer function "
            f"timeout keeps the full margin)"
        )

    def no_progress_reason(self, start_offset: int, end_offset: int, *, throttled: bool) -> str | None:
        """Why the chain should FAIL after a hop that the deadline ended without moving the
        low-water mark (``end_offset <= start_offset``) and without being held back (``throttled``:
        throttle events or retries during the hop), naming the settings to change; else None.

        None too when the hop was not ended by this deadline (complete, failed, lost its claim), or
        when it only started late in an invocation that had time enough (``started_late``): those
        hand over as usual, and so does a throttled hop.
        """
        if not self.stop_requested or end_offset > start_offset or throttled or self.started_late:
            return None
        p = self.progress_at_stop
        drain = _ms(self.drain_s(p)) if p is not None else _ms(self.call_latency_s)
        left = self.remaining_at_stop_ms or 0
        work = self.budget_ms - left
        return (
            f"no progress: the hop stopped for its deadline after {work} ms, with {left} ms left of "
            f"{self.budget_ms} ms, still at offset {start_offset} and without throttling; the next hop "
            f"would have no more time: raise the function timeout (each hop keeps "
            f"S3DDB_SAFETY_MARGIN_MS={self.safety_margin_ms}, applied as {self.effective_margin_ms} ms, "
            f"plus {drain} ms of drain and {_ms(self.tail_s())} ms of hand-over) or lower "
            f"S3DDB_SAFETY_MARGIN_MS"
        )

    # -- logging -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Fields for the hop's log lines (started / stopped)."""
        return {
            "budget_ms": self.budget_ms,
            "safety_margin_ms": self.safety_margin_ms,
            "effective_margin_ms": self.effective_margin_ms,
            "margin_capped": self.margin_capped,
            "tail_ms": _ms(self.tail_s()),
            "ledger_write_s": round(self.ledger_write.seconds, 4),
            "invoke_s": round(self.invoke.seconds, 4),
            "remaining_at_stop_ms": self.remaining_at_stop_ms,
            "margin_at_stop_ms": self.margin_at_stop_ms,
        }
