"""Structured logs and EMF metrics (aws-lambda-powertools), imported lazily on first use.

Every log line carries the keys bound so far (``chain_id``, ``hop``, ``object``); metrics go to
the ``s3ddb`` namespace as CloudWatch Embedded Metric Format when :meth:`Telemetry.flush` runs
(at the end of every invocation, and while a throttled hop runs: see :meth:`Telemetry.throttles_marked`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

    from loader.models import RunResult

__all__ = ["NAMESPACE", "SERVICE", "THROTTLE_FLUSH_S", "WRITE_THROTTLES", "Telemetry"]

NAMESPACE = "s3ddb"
#: the service name (the metrics' ``service`` dimension) when POWERTOOLS_SERVICE_NAME is not set;
#: the template sets it to the stack's own name, which its alarms watch
SERVICE = "s3ddb-loader"
#: write throttles on the target table (whole-call throttles and UnprocessedItems answers),
#: reported while the hop runs; infra/template.yaml alarms on it
WRITE_THROTTLES = "WriteThrottles"
#: how often, at most, a throttled hop prints its metrics before it ends. A hop lasts up to 15
#: minutes: reported only at its end, throttling that lasts the whole hop would fill one 5-minute
#: period in three, and an alarm on "throttled in 3 of 3 periods" could never fire.
THROTTLE_FLUSH_S = 60.0


class Telemetry:
    """One per container: a powertools Logger and Metrics, with per-invocation keys."""

    def __init__(
        self,
        *,
        service: str | None = None,
        namespace: str = NAMESPACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from aws_lambda_powertools import Logger, Metrics

        service = service or os.environ.get("POWERTOOLS_SERVICE_NAME", "").strip() or SERVICE
        #: the ``service`` dimension of every metric (and the logs' service key)
        self.service = service
        self.log: Logger = Logger(service=service)
        self.metrics: Metrics = Metrics(namespace=namespace, service=service)
        self._has_metrics = False
        self._bound: set[str] = set()
        self._clock = clock
        # the running hop's write throttles: the chain's count it resumed from (its checkpoint's
        # counters include the hops before), how many of its own it has reported, and when the
        # metrics were last printed
        self._throttles_base = 0
        self._throttles_reported = 0
        self._throttles_flushed_at = clock()

    @property
    def logger(self) -> logging.Logger:
        """The standard logger under ``log`` (the same name, handler and bound keys), for code that
        takes a ``logging.Logger`` (``loader.retry.RetryPolicy``)."""
        return logging.getLogger(self.log.name)

    def start(self, *, request_id: str) -> None:
        """A new invocation: forget the previous one's keys."""
        if self._bound:
            self.log.remove_keys(list(self._bound))
            self._bound.clear()
        self.bind(request_id=request_id)

    def bind(self, **keys: Any) -> None:
        self.log.append_keys(**keys)
        self._bound.update(keys)

    def unbind(self, *keys: str) -> None:
        """Drop keys bound earlier in this invocation (the previous record's chain and hop)."""
        present = [k for k in keys if k in self._bound]
        if present:
            self.log.remove_keys(present)
            self._bound.difference_update(present)

    def remaining_at_checkpoint(self, remaining_ms: int) -> None:
        """Time left when a hop's last ledger write (handover or finish) landed: every hop end."""
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(
            name="RemainingAtCheckpoint", unit=MetricUnit.Milliseconds, value=remaining_ms
        )
        self._has_metrics = True

    def count(self, name: str, value: float = 1) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        self._has_metrics = True

    def hop_started(self, *, throttles_before: int) -> None:
        """A hop starts from a checkpoint whose counters already hold ``throttles_before`` write
        throttles (0 for a chain's first hop)."""
        self._throttles_base = throttles_before
        self._throttles_reported = 0
        self._throttles_flushed_at = self._clock()

    def throttles_marked(self, total: int) -> None:
        """A checkpoint of the running hop counts ``total`` write throttles (the chain's, below its
        low-water mark): record the ones not reported yet as ``WriteThrottles``, and print the
        metrics when the last print is ``THROTTLE_FLUSH_S`` old, so a throttled hop reports while
        it runs instead of once at its end."""
        new = total - self._throttles_base - self._throttles_reported
        if new <= 0:
            return
        self._record_throttles(new)
        now = self._clock()
        if now - self._throttles_flushed_at >= THROTTLE_FLUSH_S:
            self.flush()
            self._throttles_flushed_at = now

    def _record_throttles(self, n: int) -> None:
        self.count(WRITE_THROTTLES, n)
        self._throttles_reported += n

    def hop_metrics(self, result: RunResult, *, seconds: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        c = result.counters
        self.count("ItemsWritten", c.items_written)
        self.count("RowsRejected", c.rows_rejected)
        # the hop's throttles its checkpoints did not report (batches above the last mark)
        if c.throttle_events > self._throttles_reported:
            self._record_throttles(c.throttle_events - self._throttles_reported)
        self.count("Retries", c.retries)
        rate = c.items_written / seconds if seconds > 0 else 0.0
        self.metrics.add_metric(name="ItemsPerSecond", unit=MetricUnit.CountPerSecond, value=rate)
        self.metrics.add_metric(name="HopDuration", unit=MetricUnit.Seconds, value=seconds)
        self.log.info(
            "hop done",
            extra={
                "stopped": result.stopped,
                "counters": c.to_dict(),
                "seconds": round(seconds, 3),
                "items_per_second": round(rate, 1),
                "offset": result.checkpoint.offset,
            },
        )

    def flush(self) -> None:
        """Print the EMF blob for this invocation (nothing when no metric was recorded)."""
        if self._has_metrics:
            self.metrics.flush_metrics()
            self._has_metrics = False
