"""A version-pinned byte stream from S3 or a local path.

``open_source`` resolves the object once (HeadObject) and pins it: the VersionId on a versioned
bucket, else the ETag, which every GET then sends as ``If-Match`` so an overwritten object fails
loudly instead of mixing two versions. ``Source.open(offset)`` returns a stream positioned at
``offset`` in the decompressed bytes:

* uncompressed S3 objects start one ranged GET at ``offset`` (``Range: bytes=offset-``);
* a broken read resumes where it stopped: smart_open's reader retries the body read and reopens
  with ``Range`` on the pinned version (tests/integration/test_source.py proves it);
* compressed objects (gzip, zstd, bz2) cannot seek: ``open(offset)`` reads from byte 0 and
  discards ``offset`` decompressed bytes. Resuming deep into a large compressed object costs a
  re-download and re-decompression of everything before the offset; prefer splitting large inputs.

Local paths get the same ``open(offset)`` contract (they are not pinned: a local file has no
version).

A shard opens only ``byte_range = (start, end)`` of an uncompressed object (``open_source(byte_range=
...)``): ``open(offset)`` (``start <= offset <= end``) is a stream of bytes ``[offset, end)`` and then
end of stream, so the reader downstream treats ``end`` as the end of the object. On S3 it is one GET
with ``Range: bytes=offset-(end-1)`` on the pinned version; a broken read reopens at the byte it
stopped at with the same bounded range (``_RangeReader``), never past ``end``. A local file seeks and
reads no further than ``end``. A compressed object cannot be cut by bytes: a range on one is refused.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import unquote

import zstandard
from botocore.exceptions import BotoCoreError, ClientError

from loader.config import CsvSpec
from loader.errors import ConfigError, SourceError

__all__ = ["Compression", "Source", "SourceInfo", "compression_of", "iter_chunks", "open_source", "parse_uri"]

Compression = Literal["none", "gzip", "zstd", "bz2"]

_EXTENSIONS: dict[str, Compression] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".bz2": "bz2",
}
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "405", "MethodNotAllowed"}
_DENIED = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled", "InvalidObjectState"}
_CHANGED = {"412", "PreconditionFailed"}
_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, BotoCoreError, ClientError)
_SKIP_BYTES = 1 << 20
#: A ranged read that breaks is reopened after each of these pauses (seconds), then it fails.
_REOPEN_DELAYS_S = (0.0, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True, kw_only=True)
class SourceInfo:
    """What was opened, and the pin that keeps a resumed load on the same bytes."""

    uri: str  # s3://bucket/key (the key as it is, no query) or an absolute local path
    bucket: str | None
    key: str | None
    path: str | None
    version_id: str | None
    etag: str | None
    size: int | None  # stored size (the compressed size for compressed objects)
    compression: Compression
    #: ``(start, end)``: only bytes ``[start, end)`` are read (a shard); None for the whole object
    byte_range: tuple[int, int] | None = None


def parse_uri(uri: str) -> tuple[str | None, str | None, None, str | None]:
    """``(bucket, key, None, path)`` of an ``s3://bucket/key`` URI or a local path.

    Everything after the bucket's ``/`` is the key, taken literally: S3 keys may contain ``?``,
    ``#``, ``%``, ``+``, spaces and any unicode, so nothing in them is a query, a fragment or an
    escape (``s3://b/k.csv?versionId=v`` names the object whose key is ``k.csv?versionId=v``). A
    version is passed apart (``open_source(version_id=...)``); the third item is always None and
    stays only so that callers keep their shape. ``file://`` URIs (percent-decoded, as file URIs
    are) and plain paths give an absolute path.
    """
    if uri[:5].lower() == "s3://":
        bucket, _, key = uri[5:].partition("/")
        if not bucket or not key:
            raise ConfigError(f"{uri!r} is not an S3 object URI; use s3://bucket/key")
        return bucket, key, None, None
    if uri[:7].lower() == "file://":
        path = unquote(uri[7:])
    elif "://" in uri:
        raise ConfigError(f"{uri!r}: only s3://bucket/key URIs and local paths are supported")
    else:
        path = uri
    if not path:
        raise ConfigError("the source path is empty")
    return None, None, None, os.path.abspath(os.path.expanduser(path))


def open_source(
    uri: str,
    *,
    s3_client: Any | None,
    spec: CsvSpec,
    version_id: str | None = None,
    etag: str | None = None,
    byte_range: tuple[int, int] | None = None,
) -> Source:
    """Resolve and pin the object. ``uri``'s key is taken literally (see ``parse_uri``);
    ``version_id`` names an S3 object version (``--version-id``, or a checkpoint's pin when
    resuming), ``etag`` a checkpoint's ETag. ``byte_range`` ``(start, end)`` limits every read to
    bytes ``[start, end)`` of the object (a shard).

    Raises SourceError when the bucket or object is missing, not readable, no longer the
    checkpoint's, or shorter than ``byte_range``; ConfigError for a range of a compressed object.
    """
    bucket, key, _, path = parse_uri(uri)
    if path is not None:
        if version_id is not None:
            raise ConfigError(f"{path}: a local file has no versions; --version-id is for s3:// sources")
        info = _stat_local(path, spec)
        if etag is not None and etag != info.etag:
            raise SourceError(
                f"{path}: the file changed since the checkpoint (size and modification time differ); "
                "start a new load instead of resuming"
            )
        return Source(_ranged(info, byte_range), s3_client=None)
    assert bucket is not None and key is not None
    if s3_client is None:
        raise ConfigError(f"s3://{bucket}/{key}: an S3 client is required for an s3:// source")
    info = _head_s3(s3_client, bucket, key, version_id, spec)
    if etag is not None and _unquote_etag(etag) != _unquote_etag(info.etag or ""):
        raise SourceError(
            f"{info.uri}: object changed since the checkpoint (ETag {info.etag} now, {etag} then); "
            "start a new load instead of resuming"
        )
    return Source(_ranged(info, byte_range), s3_client=s3_client)


def _ranged(info: SourceInfo, byte_range: tuple[int, int] | None) -> SourceInfo:
    """``info`` limited to ``byte_range``, checked against the object it was planned on."""
    if byte_range is None:
        return info
    start, end = byte_range
    if not 0 <= start <= end:
        raise ConfigError(f"{info.uri}: byte range [{start}, {end}) needs 0 <= start <= end")
    if info.compression != "none":
        raise ConfigError(
            f"{info.uri}: a {info.compression}-compressed object cannot be split by bytes: "
            "load it as one shard (no byte range)"
        )
    if info.size is not None and end > info.size:
        raise SourceError(
            f"{info.uri}: byte range [{start}, {end}) ends past the end of the object ({info.size} "
            "bytes): the range was planned on another object or version"
        )
    return dataclasses.replace(info, byte_range=(start, end))


class Source:
    """An opened, pinned source; ``open`` may be called any number of times."""

    def __init__(
        self, info: SourceInfo, *, s3_client: Any | None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.info = info
        self._client = s3_client
        self._sleep = sleep

    def open(self, offset: int = 0) -> BinaryIO:
        """A stream positioned at ``offset`` of the DECOMPRESSED bytes.

        Uncompressed: one ranged GET starting at ``offset`` (or a seek, for a local file).
        Compressed: read from byte 0 and discard ``offset`` decompressed bytes (a full re-read
        up to the offset; there is no way to seek in a gzip, zstd or bz2 stream).
        With a byte range: bytes ``[offset, end)`` only (see the module's docstring).
        """
        info = self.info
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if info.byte_range is not None:
            return self._open_range(offset, *info.byte_range)
        compressed = info.compression != "none"
        if not compressed and info.size is not None and offset > info.size:
            raise SourceError(
                f"{info.uri}: offset {offset} is past the end of the object ({info.size} bytes)"
            )
        raw = self._open_raw()
        try:
            if not compressed:
                try:
                    raw.seek(offset)  # S3: one GET with Range: bytes=offset-
                except _READ_ERRORS as exc:
                    raise _read_error(exc, info, offset) from exc
                return cast(BinaryIO, _Stream(raw, info=info, position=offset))
            stored = _Stream(raw, info=info, position=0)
            stream = _Stream(
                _decompressor(stored, info.compression), info=info, position=0, decompressed=True
            )
            _discard(stream, offset, info)
            return cast(BinaryIO, stream)
        except BaseException:
            raw.close()
            raise

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object, read whole (the split planner's reads): the same
        bounded reads of the pinned version (or ``If-Match`` its ETag) as a shard's stream, reopened
        where a body breaks; errors are the stream's SourceErrors."""
        if start == end:
            return b""
        stream = self._open_range(start, start, end)
        try:
            return stream.read()
        finally:
            stream.close()

    def _open_range(self, offset: int, start: int, end: int) -> BinaryIO:
        info = self.info
        if info.compression != "none":  # open_source refuses it; a hand-built SourceInfo must too
            raise ConfigError(f"{info.uri}: a compressed object cannot be read by byte range")
        if not start <= offset <= end:
            raise SourceError(f"{info.uri}: offset {offset} is outside the byte range [{start}, {end})")
        inner: Any
        if info.path is None:
            assert info.bucket is not None and info.key is not None
            inner = _RangeReader(self._client, info, offset, end, sleep=self._sleep)
        else:
            raw = self._open_raw()
            try:
                raw.seek(offset)
            except OSError as exc:
                raw.close()
                raise _read_error(exc, info, offset) from exc
            inner = _Limit(raw, offset, end)
        return cast(BinaryIO, _Stream(inner, info=info, position=offset))

    def _open_raw(self) -> io.BufferedIOBase:
        info = self.info
        if info.path is not None:
            try:
                return cast(io.BufferedIOBase, open(info.path, "rb"))  # the caller closes it
            except OSError as exc:
                raise SourceError(f"{info.path}: cannot open: {exc.strerror or exc}") from exc
        assert info.bucket is not None and info.key is not None
        client_kwargs: dict[str, Any] = {}
        if info.version_id is None and info.etag is not None:
            client_kwargs["S3.Client.get_object"] = {"IfMatch": info.etag}
        # imported here, not at module level: a local file never needs it, and importing smart_open
        # costs ~0.06 s of start-up CPU (it registers every transport, importing requests for http)
        import smart_open.s3

        try:
            return smart_open.s3.open(
                info.bucket,
                info.key,
                "rb",
                version_id=info.version_id,
                client=self._client,
                client_kwargs=client_kwargs,
                defer_seek=True,  # no GET until the first seek/read: open(offset) makes exactly one
            )
        except _READ_ERRORS as exc:
            raise _read_error(exc, info, 0) from exc


def iter_chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """Successive ``read(chunk_bytes)`` results until end of stream (never an empty chunk)."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    read = stream.read
    while chunk := read(chunk_bytes):
        yield chunk


class _Limit:
    """Bytes up to ``end`` of a local file positioned at ``position``; a file that ends sooner (cut
    short after it was opened) is an error, never a short range read as if it were complete."""

    def __init__(self, inner: io.BufferedIOBase, position: int, end: int) -> None:
        self._inner = inner
        self._position = position
        self._end = end

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._position
        if left <= 0:
            return b""
        data = self._inner.read(left if size < 0 else min(size, left))
        if not data:
            raise EOFError(f"the file ends at byte {self._position}, before its range ends at {self._end}")
        self._position += len(data)
        return data

    def close(self) -> None:
        self._inner.close()


class _RangeReader:
    """Bytes ``[position, end)`` of one pinned S3 object, read with ``Range: bytes=position-(end-1)``.

    A body that breaks mid-read (a reset or timed-out connection, a response cut short) is reopened
    at the byte it stopped at, with the same bounded range on the same version (or ``If-Match`` the
    pinned ETag), so no byte is skipped or read twice and nothing past ``end`` is ever requested
    (the next shard's bytes are not this one's to read). Gives up after ``_REOPEN_DELAYS_S``.
    An overwritten object (412), a missing or forbidden one raise the GET's ClientError.
    """

    def __init__(
        self, client: Any, info: SourceInfo, position: int, end: int, *, sleep: Callable[[float], None]
    ) -> None:
        self._client = client
        self._info = info
        self._position = position
        self._end = end
        self._sleep = sleep
        self._body: Any = None
        # imported here, as smart_open is: only an S3 shard needs it
        import urllib3.exceptions

        #: what a broken response body raises: a reset or timed-out connection, a body cut short
        self._broken: tuple[type[BaseException], ...] = (
            BotoCoreError,
            OSError,
            EOFError,
            urllib3.exceptions.HTTPError,
        )

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._position
        if left <= 0:
            return b""
        want = left if size < 0 else min(size, left)
        parts: list[bytes] = []
        got = 0
        delays = iter(_REOPEN_DELAYS_S)
        while got < want:
            if self._body is None:
                self._open()
            try:
                data: bytes = self._body.read(want - got)
                if not data:  # the body ended before its range did: a response cut short
                    raise EOFError(f"the response ended at byte {self._position}, before {self._end}")
            except self._broken as exc:
                self.close()
                delay = next(delays, None)
                if delay is None:
                    raise OSError(
                        f"the read broke {len(_REOPEN_DELAYS_S) + 1} times at byte {self._position}: {exc}"
                    ) from exc
                self._sleep(delay)
                continue
            parts.append(data)
            got += len(data)
            self._position += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _open(self) -> None:
        info = self._info
        params: dict[str, Any] = {
            "Bucket": info.bucket,
            "Key": info.key,
            "Range": f"bytes={self._position}-{self._end - 1}",
        }
        if info.version_id is not None:
            params["VersionId"] = info.version_id
        elif info.etag is not None:
            params["IfMatch"] = info.etag
        response = self._client.get_object(**params)
        body = response["Body"]
        if response["ResponseMetadata"]["HTTPStatusCode"] == 200:
            # the server ignored Range and sent the whole object: skip to the position
            skip = self._position
            while skip:
                chunk = body.read(min(skip, _SKIP_BYTES))
                if not chunk:
                    body.close()
                    raise EOFError(f"the object ends at byte {self._position - skip}")
                skip -= len(chunk)
        else:
            first = str(response.get("ContentRange", "")).removeprefix("bytes ").partition("-")[0]
            if first != str(self._position):
                body.close()
                raise SourceError(
                    f"{info.uri}: asked for bytes from {self._position}, got Content-Range "
                    f"{response.get('ContentRange')!r}"
                )
        self._body = body

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()


class _Stream(io.BufferedIOBase):
    """Wraps the reader stack; read errors become SourceError naming the object and offset.

    A compressed source has two: the stored bytes (network and S3 errors) and, above the
    decompressor, the decompressed bytes (a corrupt or truncated stream).
    """

    def __init__(self, inner: Any, *, info: SourceInfo, position: int, decompressed: bool = False) -> None:
        super().__init__()
        self._inner = inner
        self._info = info
        self._position = position
        self._decompressed = decompressed

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data: bytes = self._inner.read(-1 if size is None else size)
        except _READ_ERRORS as exc:
            raise _read_error(exc, self._info, self._position, decompressed=self._decompressed) from exc
        self._position += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                super().close()


def _decompressor(raw: _Stream, compression: Compression) -> Any:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(raw, "rb")
    source = cast(BinaryIO, raw)
    return zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=True)


def _discard(stream: _Stream, offset: int, info: SourceInfo) -> None:
    remaining = offset
    while remaining:
        got = len(stream.read(min(remaining, _SKIP_BYTES)))
        if not got:
            raise SourceError(
                f"{info.uri}: offset {offset} is past the end of the decompressed data "
                f"({offset - remaining} bytes)"
            )
        remaining -= got


def compression_of(name: str, spec: CsvSpec) -> Compression:
    if spec.compression != "infer":
        return spec.compression
    return _EXTENSIONS.get(os.path.splitext(name)[1].lower(), "none")


def _stat_local(path: str, spec: CsvSpec) -> SourceInfo:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not os.path.isfile(path):
        raise SourceError(f"{path}: not a regular file")
    return SourceInfo(
        uri=path,
        bucket=None,
        key=None,
        path=path,
        version_id=None,
        # a local file has no ETag: its size and modification time stand in, so a resume can
        # tell that the file it continues is the one the checkpoint was taken from
        etag=f"local:{st.st_size}:{st.st_mtime_ns}",
        size=st.st_size,
        compression=compression_of(path, spec),
    )


def _head_s3(client: Any, bucket: str, key: str, version_id: str | None, spec: CsvSpec) -> SourceInfo:
    uri = f"s3://{bucket}/{key}"
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id is not None:
        params["VersionId"] = version_id
    try:
        head = client.head_object(**params)
    except ClientError as exc:
        if _status(exc) == "404" and _bucket_missing(client, bucket):
            raise SourceError(f"{uri}: bucket {bucket!r} does not exist") from exc
        raise _client_error(exc, uri, version_id, "HeadObject") from exc
    except BotoCoreError as exc:
        raise SourceError(f"{uri}: cannot reach S3: {exc}") from exc
    pinned = version_id or head.get("VersionId")
    if pinned == "null":  # a null version is overwritten in place: pin the ETag instead
        pinned = None
    return SourceInfo(
        uri=uri,
        bucket=bucket,
        key=key,
        path=None,
        version_id=pinned,
        etag=head.get("ETag"),
        size=head.get("ContentLength"),
        compression=compression_of(key, spec),
    )


def _status(exc: ClientError) -> str:
    return str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _bucket_missing(client: Any, bucket: str) -> bool:
    """Whether ``bucket`` does not exist, asked after a HeadObject 404.

    A HEAD response has no body, so its 404 carries no error code: ``NoSuchKey`` and
    ``NoSuchBucket`` look the same. HeadBucket tells them apart; when it cannot (403: no
    s3:ListBucket, or any other failure) the caller keeps saying "no such object".
    """
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return _status(exc) == "404" or code in ("NoSuchBucket", "404", "NotFound")
    except BotoCoreError:
        return False
    return False


def _client_error(exc: ClientError, uri: str, version_id: str | None, operation: str) -> SourceError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = _status(exc)
    what = f"version {version_id}" if version_id else "current version"
    if code == "NoSuchBucket":  # a GET names it in its error body (a HEAD cannot: see _bucket_missing)
        bucket = uri[5:].partition("/")[0]
        return SourceError(f"{uri}: bucket {bucket!r} does not exist ({operation} said NoSuchBucket)")
    if code in _NOT_FOUND or status in ("404", "405") or (code in ("400", "InvalidArgument") and version_id):
        return SourceError(f"{uri}: no such object ({what}; {operation} said {code or status})")
    if code in _DENIED or status == "403":
        bucket, _, key = uri[5:].partition("/")
        perms = "s3:GetObject and s3:GetObjectVersion" if version_id else "s3:GetObject"
        return SourceError(
            f"{uri}: access denied ({operation} returned {code or status}). Grant {perms} on "
            f"arn:aws:s3:::{bucket}/{key} (and kms:Decrypt if the object is KMS-encrypted); without "
            "s3:ListBucket on the bucket, S3 also answers 403 for a key that does not exist"
        )
    if code in _CHANGED or status == "412":
        return SourceError(
            f"{uri}: the object changed while it was being read (its ETag no longer matches); "
            "load it again from the start"
        )
    return SourceError(f"{uri}: {operation} failed: {exc}")


def _read_error(
    exc: BaseException, info: SourceInfo, position: int, *, decompressed: bool = False
) -> SourceError:
    client_error = _find_client_error(exc)
    if client_error is not None:
        return _client_error(client_error, info.uri, info.version_id, "GetObject")
    if decompressed:
        return SourceError(
            f"{info.uri}: not a valid {info.compression} stream (at decompressed byte {position}): {exc}"
        )
    return SourceError(f"{info.uri}: read failed at byte {position}: {exc}")


def _find_client_error(exc: BaseException | None) -> ClientError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ClientError):
            return exc
        backend = getattr(exc, "backend_error", None)  # smart_open keeps the botocore error here
        if isinstance(backend, ClientError):
            return backend
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _unquote_etag(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')
