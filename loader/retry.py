"""Backoff with full jitter, the writer's retry policy, and its rate control (AIMD + token bucket).

The writer owns every retry (botocore's own retries are off, see ``loader.clients``) so that
these objects see every throttle, including the ones that come back as ``UnprocessedItems`` in
a 200 response, which botocore's adaptive mode never sees.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loader.errors import SendError, ThrottledError, TransientSendError, WriteFailedError

log = logging.getLogger(__name__)

__all__ = [
    "RETRYABLE",
    "Backoff",
    "RateController",
    "RetryPolicy",
    "Slot",
    "UnprocessedItemsError",
    "WriteBudget",
]


class UnprocessedItemsError(SendError):
    """Some items came back in ``UnprocessedItems``: the service throttled or failed them.

    Writer-internal: it is the "last error" attached to a ``WriteFailedError`` when a batch gave
    up while items kept coming back unprocessed.
    """


#: What the writer retries. ``BatchValidationError`` is not here: it is bisected, never retried;
#: ``ConfigError`` and anything unexpected stop the load at once.
RETRYABLE: tuple[type[SendError], ...] = (ThrottledError, TransientSendError, UnprocessedItemsError)


class Backoff:
    """Exponential backoff with FULL jitter: ``rng() * min(cap_s, base_s * 2**attempt)``.

    ``attempt`` counts from 0 (the delay before the first retry). Full jitter spreads retries of
    many batches throttled at the same moment instead of sending them back in lock-step.
    """

    def __init__(self, *, base_s: float, cap_s: float, rng: Callable[[], float] = random.random) -> None:
        if not (0 <= base_s < math.inf and 0 <= cap_s < math.inf):  # also refuses nan
            raise ValueError(f"backoff base and cap must be finite and >= 0, got {base_s} and {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng

    def ceiling(self, attempt: int) -> float:
        """The largest delay ``delay(attempt)`` can return."""
        # 2**60 * any sane base is far past any cap; bounding the exponent avoids float overflow.
        return min(self.cap_s, self.base_s * float(2 ** min(max(attempt, 0), 60)))

    def delay(self, attempt: int) -> float:
        return self._rng() * self.ceiling(attempt)


class RetryPolicy:
    """A named set of retryable errors, a cap on attempts, full-jitter backoff, one log line per retry.

    ``max_attempts`` counts BatchWriteItem calls for one set of items that wrote nothing; the
    writer gives up on a batch when that many calls in a row made no progress and raises
    ``give_up(...)``, a ``WriteFailedError`` whose ``__cause__`` is the last error.
    """

    retryable: tuple[type[SendError], ...] = RETRYABLE

    def __init__(self, *, max_attempts: int, backoff: Backoff, logger: logging.Logger = log) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._log = logger

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retryable)

    def exhausted(self, attempts: int) -> bool:
        """True when ``attempts`` calls without progress reach the cap."""
        return attempts >= self.max_attempts

    def next_delay(self, attempts: int, *, exponent: int, what: str, last: BaseException) -> float:
        """The sleep before the next call, after ``attempts`` unproductive calls; logs ``attempt n/max``.

        ``exponent`` drives the backoff (the writer keeps it growing while a batch is throttled,
        even when some items get through); ``attempts`` is what the cap counts.
        """
        delay = self.backoff.delay(exponent)
        # INFO, the level ``s3ddb load -v`` shows: one line per retry (a BatchWriteItem call, not
        # an item); WARNING from half the cap on, so a batch close to giving up shows without -v
        level = logging.WARNING if attempts * 2 >= self.max_attempts and attempts > 1 else logging.INFO
        if self._log.isEnabledFor(level):
            self._log.log(
                level,
                "%s: attempt %d/%d failed (%s: %s); retrying in %.3f s",
                what,
                attempts,
                self.max_attempts,
                type(last).__name__,
                last,
                delay,
            )
        return delay

    def give_up(self, *, attempts: int, what: str, last: BaseException) -> WriteFailedError:
        """The error to raise ``from last`` once the cap is reached."""
        return WriteFailedError(
            f"{what}: gave up after {attempts}/{self.max_attempts} attempts without progress; "
            f"last error: {type(last).__name__}: {last}"
        )


@dataclass(frozen=True, slots=True)
class Slot:
    """A permit for one BatchWriteItem call from ``RateController.acquire_slot``.

    ``epoch`` is the controller's decrease count when the call started: a throttle on a call that
    started before the last decrease says nothing new about the current window and is ignored.
    """

    epoch: int
    started: float


class WriteBudget:
    """A write-unit ceiling that may change while a load runs: the share of one load's
    ``--max-wcu`` that one of its workers may spend, raised when another worker finishes and hands
    its share on. ``wcu`` is read by the worker's ``RateController`` at every refill and set by one
    other thread (a float assignment; no lock needed). None: no ceiling."""

    def __init__(self, wcu: float | None) -> None:
        self.wcu = _check_wcu(wcu)

    def set(self, wcu: float | None) -> None:
        self.wcu = _check_wcu(wcu)


def _check_wcu(wcu: float | None) -> float | None:
    if wcu is not None and not 0 < wcu < math.inf:  # also refuses nan
        raise ValueError(f"max_wcu must be a finite positive number, got {wcu}")
    return wcu


class RateController:
    """Adaptive concurrency (AIMD) on BatchWriteItem calls, plus an optional write-unit token bucket.

    Window: starts at ``max_concurrency`` calls in flight. A throttle signal (a whole call
    throttled, or a response with ``UnprocessedItems``) halves it (never below 1), at most once per
    round trip: signals from calls that started before the last decrease are ignored, and so is any
    signal within ``cooldown_s`` of it, so 40 simultaneous throttles halve the window once, not 5
    times. Each successful call adds ``1/window`` (one call per window of successes, TCP's
    congestion avoidance) until it is back at ``max_concurrency``.

    Token bucket (only with ``max_wcu``): ``acquire_units(n)`` waits until ``n`` write units are
    available; it refills at ``max_wcu`` per second and holds at most one second of them. With a
    ``budget`` the ceiling is the budget's current ``wcu`` (read at every refill), not ``max_wcu``.
    A request larger than the bucket waits for a full bucket and leaves it in debt.

    Each halving, and the window's return to ``max_concurrency``, is logged at INFO (``-v``).

    Everything runs on one event loop; no locks other than the bucket's FIFO lock are needed.
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_wcu: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cooldown_s: float = 0.05,
        budget: WriteBudget | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._budget = budget if budget is not None else WriteBudget(max_wcu)
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._sleep = sleep
        self._cooldown_s = cooldown_s
        self._window = float(max_concurrency)
        self._inflight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._epoch = 0
        self._last_decrease: float | None = None
        #: every throttle signal received (whole-call throttles and UnprocessedItems responses)
        self.throttle_events = 0
        #: how many of them halved the window
        self.decreases = 0
        self._tokens = 0.0  # no burst at start: the ceiling holds from the first second
        self._refilled = clock()
        self._bucket_lock = asyncio.Lock()

    @property
    def max_wcu(self) -> float | None:
        """The write-unit ceiling now (None: none)."""
        return self._budget.wcu

    # -- concurrency window -------------------------------------------------------------

    @property
    def window(self) -> float:
        return self._window

    @property
    def limit(self) -> int:
        """Calls allowed in flight right now."""
        return max(1, int(self._window))

    @property
    def inflight(self) -> int:
        return self._inflight

    async def acquire_slot(self) -> Slot:
        """Wait until a call may start; pair every slot with one ``release_slot``."""
        if self._inflight < self.limit and not self._waiters:
            self._inflight += 1
            return Slot(self._epoch, self._clock())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # the slot was handed over just as we were cancelled: pass it on
                self._inflight -= 1
                self._wake()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return Slot(self._epoch, self._clock())

    def release_slot(self, slot: Slot, *, ok: bool, throttled: bool = False) -> None:
        """End a call. ``throttled``: it was throttled or returned UnprocessedItems (decrease);
        ``ok`` and not throttled: it succeeded (increase); neither: an error that says nothing
        about capacity (a network error, a validation error)."""
        self._inflight -= 1
        if throttled:
            self.throttle_events += 1
            now = self._clock()
            if slot.epoch == self._epoch and (
                self._last_decrease is None or now - self._last_decrease >= self._cooldown_s
            ):
                before = self.limit
                self._window = max(1.0, self._window / 2)
                self._epoch += 1
                self._last_decrease = now
                self.decreases += 1
                log.info(
                    "throttled (signal %d): concurrency window %d -> %d calls in flight",
                    self.throttle_events,
                    before,
                    self.limit,
                )
        elif ok and self._window < self.max_concurrency:
            self._window = min(float(self.max_concurrency), self._window + 1.0 / self._window)
            if self._window >= self.max_concurrency:  # once per recovery, not per call
                log.info("concurrency window back to %d calls in flight", self.max_concurrency)
        self._wake()

    def _wake(self) -> None:
        limit = self.limit
        waiters = self._waiters
        while waiters and self._inflight < limit:
            fut = waiters.popleft()
            if fut.done():
                continue
            self._inflight += 1
            fut.set_result(None)

    # -- write-unit token bucket --------------------------------------------------------

    def _refill(self, rate: float) -> None:
        now = self._clock()
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)  # holds one second
        self._refilled = now

    async def acquire_units(self, n: float) -> None:
        """Wait until ``n`` write units may be spent (no wait without a ceiling)."""
        if self._budget.wcu is None or n <= 0:
            return
        async with self._bucket_lock:  # FIFO: a big request is not starved by small ones
            rate = self._budget.wcu
            if rate is None:  # the ceiling was lifted while this call waited for the lock
                return
            self._refill(rate)
            while self._tokens < min(float(n), rate) - 1e-9:
                await self._sleep((min(float(n), rate) - self._tokens) / rate)
                rate = self._budget.wcu
                if rate is None:
                    return
                self._refill(rate)
            self._tokens -= n
