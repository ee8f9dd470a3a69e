"""s3ddb: stream a CSV object from S3 (or a local file) into a DynamoDB table, fast and exactly."""

from loader.config import LoadConfig
from loader.errors import (
    ConfigError,
    RowError,
    S3ddbError,
    SourceError,
    TooManyRejectsError,
    WriteFailedError,
)
from loader.models import Checkpoint, Counters, RunResult

__all__ = [
    "Checkpoint",
    "ConfigError",
    "Counters",
    "LoadConfig",
    "RowError",
    "RunResult",
    "S3ddbError",
    "SourceError",
    "TooManyRejectsError",
    "WriteFailedError",
]
