"""Where rejected rows go: one JSON Lines file per run, in a local directory or under an S3 prefix.

Each line is ``{"row": N, "offset": BYTES, "raw": "the record as read", "reason": "why"}``.
``flush()`` makes every reject added so far durable; the pipeline calls it before each checkpoint,
so a checkpoint never counts a reject that is not on disk (or in S3). A run that is resumed from a
checkpoint may repeat reject lines of rows beyond that checkpoint in its own file (the offset tells
them apart).
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Protocol

from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from loader.errors import ConfigError
from loader.models import Reject


class RejectSink(Protocol):
    #: where this run's rejects go: a file path or an s3:// URI
    location: str
    count: int

    def add(self, reject: Reject) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> str | None:
        """Flush and close; the location if any reject was written, else None."""
        ...


def rejects_location(dest: str | None, *, run_id: str) -> str:
    """Where ``open_rejects(dest, run_id=run_id)`` writes: known before the run (a parent lists the
    files of workers that were killed before they could say)."""
    dest = dest or DEFAULT_REJECTS
    if dest.startswith("s3://"):
        bucket, _, prefix = dest[5:].partition("/")
        prefix = prefix.strip("/")
        return f"s3://{bucket}/{prefix}/{run_id}.jsonl" if prefix else f"s3://{bucket}/{run_id}.jsonl"
    return os.path.abspath(os.path.join(dest, f"{run_id}.jsonl"))


#: the rejects destination when none is given
DEFAULT_REJECTS = "s3ddb-rejects"


class LocalRejects:
    """Appends to ``DIR/RUN_ID.jsonl``; the file is created with the first reject."""

    def __init__(self, directory: str, *, run_id: str) -> None:
        self.location = rejects_location(directory, run_id=run_id)
        self.count = 0
        self._file: IO[bytes] | None = None
        self._dirty = False

    def add(self, reject: Reject) -> None:
        if self._file is None:
            try:
                os.makedirs(os.path.dirname(self.location), exist_ok=True)
                self._file = open(self.location, "ab")  # noqa: SIM115 - lives as long as the sink
            except OSError as exc:
                raise ConfigError(
                    f"rejects destination: cannot write {self.location}: {exc.strerror}"
                ) from exc
        self._file.write(reject.to_json() + b"\n")
        self.count += 1
        self._dirty = True

    def flush(self) -> None:
        if self._file is not None and self._dirty:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._dirty = False

    def close(self) -> str | None:
        self.flush()
        if self._file is None:
            return None
        self._file.close()
        return self.location


class S3Rejects:
    """Buffers to a temporary file and uploads it whole to ``s3://bucket/prefix/RUN_ID.jsonl`` on
    every flush that has something new: one object per run, durable at every checkpoint.
    (Rejects are expected to be few; a run with very many re-uploads a growing file.)"""

    def __init__(self, bucket: str, prefix: str, *, run_id: str, s3_client: Any) -> None:
        prefix = prefix.strip("/")
        self.prefix = prefix
        self.key = f"{prefix}/{run_id}.jsonl" if prefix else f"{run_id}.jsonl"
        self.bucket = bucket
        self.location = rejects_location(f"s3://{bucket}/{prefix}", run_id=run_id)
        self.count = 0
        self._client = s3_client
        self._buf: IO[bytes] | None = None
        self._dirty = False

    def check(self) -> None:
        """ConfigError unless the bucket exists and this client may use it (HeadBucket).

        Rejects are uploaded at the first checkpoint that has some, after items were written: a
        bucket that is missing, misspelt or someone else's must stop the load before it starts.
        HeadBucket needs ``s3:ListBucket`` on the bucket; S3 answers 403 without it.
        """
        dest = f"rejects destination s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in ("404", "NoSuchBucket") or status == "404":
                raise ConfigError(
                    f"{dest}: bucket {self.bucket!r} does not exist; create it, or fix the bucket name"
                ) from None
            if code in ("403", "AccessDenied", "Forbidden") or status == "403":
                raise ConfigError(
                    f"{dest}: access to bucket {self.bucket!r} is denied (HeadBucket said {code or status}); "
                    f"grant s3:ListBucket on arn:aws:s3:::{self.bucket} (the check before loading) and "
                    f"s3:PutObject on arn:aws:s3:::{self.bucket}/{self.prefix + '/' if self.prefix else ''}* "
                    "to these credentials, or name a bucket they may write"
                ) from None
            raise  # a throttle or server fault that outlasted the client's retries: not a setting
        except ParamValidationError as exc:
            raise ConfigError(f"{dest}: {self.bucket!r} is not a valid bucket name: {exc}") from None
        except EndpointConnectionError as exc:
            where = f"{self._client.meta.region_name} (endpoint {self._client.meta.endpoint_url})"
            raise ConfigError(f"{dest}: cannot reach S3 at {where}: {exc}") from exc

    def add(self, reject: Reject) -> None:
        if self._buf is None:
            self._buf = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the sink
        self._buf.write(reject.to_json() + b"\n")
        self.count += 1
        self._dirty = True

    def flush(self) -> None:
        if self._buf is None or not self._dirty:
            return
        self._buf.flush()
        self._buf.seek(0)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self.key, Body=self._buf, ContentType="application/x-ndjson"
            )
        except Exception as exc:
            raise ConfigError(f"rejects destination: cannot write {self.location}: {exc}") from exc
        finally:
            self._buf.seek(0, os.SEEK_END)
        self._dirty = False

    def close(self) -> str | None:
        self.flush()
        if self._buf is None:
            return None
        self._buf.close()
        return self.location


def open_rejects(dest: str | None, *, run_id: str, s3_client: Any | None = None) -> RejectSink:
    """``dest`` is an ``s3://bucket/prefix`` or a local directory (default ``./s3ddb-rejects``).

    An S3 destination is checked here (``S3Rejects.check``), before anything is written.
    """
    dest = dest or DEFAULT_REJECTS
    if dest.startswith("s3://"):
        bucket, _, prefix = dest[5:].partition("/")
        if not bucket:
            raise ConfigError(f"rejects destination {dest!r}: no bucket named")
        if s3_client is None:
            raise ConfigError("--rejects to S3 needs an S3 client")
        sink = S3Rejects(bucket, prefix, run_id=run_id, s3_client=s3_client)
        sink.check()
        return sink
    return LocalRejects(dest, run_id=run_id)
