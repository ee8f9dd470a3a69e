"""The exception tree.

::

    S3ddbError                     every error the loader raises on purpose
    ├── ConfigError                a setting, schema or table is wrong: fix it and run again (exit 2)
    ├── SourceError                the object cannot be opened or read as CSV (exit 2)
    ├── RowError                   one row cannot become an item: it is rejected, the load goes on
    ├── TooManyRejectsError        more rejects than --max-rejects allows (exit 3)
    ├── WriteFailedError           the writer could not outlast a fault; checkpoint written (exit 4)
    └── SendError                  raised by a BatchSender for one BatchWriteItem call (writer-internal)
        ├── ThrottledError         ProvisionedThroughputExceeded / Throttling / RequestLimitExceeded
        ├── BatchValidationError   the service refused the batch as invalid (bisect to find the item)
        └── TransientSendError     network error, 5xx, InternalServerError: retry with backoff

A row error is data, not a crash: the pipeline turns it into a reject record and writes the
row's neighbours. Only errors that stop the whole load reach the caller.
"""

from __future__ import annotations

from typing import Any


class S3ddbError(Exception):
    """Base of every error s3ddb raises on purpose.

    When a run stops on an error after it started writing, ``result`` holds its RunResult (with the
    low-water-mark checkpoint that was written before the error was raised).
    """

    exit_code = 1
    result: Any = None


class ConfigError(S3ddbError):
    """A setting, the schema, or the target table is wrong; the message says what to fix."""

    exit_code = 2


class SourceError(S3ddbError):
    """The source object is missing, unreadable, or not decodable with the given settings."""

    exit_code = 2


class RowError(S3ddbError):
    """One row cannot become a valid item. ``reason`` is what goes in the reject record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooManyRejectsError(S3ddbError):
    """More rows were rejected than ``max_rejects`` allows."""

    exit_code = 3


class WriteFailedError(S3ddbError):
    """Writes kept failing past the retry policy; the load stopped with its checkpoint written."""

    exit_code = 4


class SendError(S3ddbError):
    """One BatchWriteItem call failed as a whole. ``code`` is the service's error code, if any."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ThrottledError(SendError):
    """The whole call was throttled: slow the writer down and retry."""


class BatchValidationError(SendError):
    """The service refused the batch as invalid; some item in it is poison."""


class TransientSendError(SendError):
    """A network error or server fault: retry with backoff, up to the policy's cap."""
