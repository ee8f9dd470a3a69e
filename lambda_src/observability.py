"""Structured logs and EMF metrics (aws-lambda-powertools), imported lazily on first use.

Every log line carries the keys bound so far (``chain_id``, ``hop``, ``object``); metrics go to
the ``s3ddb`` namespace as CloudWatch Embedded Metric Format when :meth:`Telemetry.flush` runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

    from loader.models import RunResult

__all__ = ["NAMESPACE", "SERVICE", "Telemetry"]

NAMESPACE = "s3ddb"
SERVICE = "s3ddb-loader"


class Telemetry:
    """One per container: a powertools Logger and Metrics, with per-invocation keys."""

    def __init__(self, *, service: str = SERVICE, namespace: str = NAMESPACE) -> None:
        from aws_lambda_powertools import Logger, Metrics

        self.log: Logger = Logger(service=service)
        self.metrics: Metrics = Metrics(namespace=namespace, service=service)
        self._has_metrics = False
        self._bound: set[str] = set()

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

    def hop_metrics(self, result: RunResult, *, seconds: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        c = result.counters
        self.count("ItemsWritten", c.items_written)
        self.count("RowsRejected", c.rows_rejected)
        self.count("ThrottleEvents", c.throttle_events)
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
