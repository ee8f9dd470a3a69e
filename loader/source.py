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
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import zlib
from collections.abc import Iterator
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
) -> Source:
    """Resolve and pin the object. ``uri``'s key is taken literally (see ``parse_uri``);
    ``version_id`` names an S3 object version (``--version-id``, or a checkpoint's pin when
    resuming), ``etag`` a checkpoint's ETag.

    Raises SourceError when the bucket or object is missing, not readable, or no longer the
    checkpoint's.
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
        return Source(info, s3_client=None)
    assert bucket is not None and key is not None
    if s3_client is None:
        raise ConfigError(f"s3://{bucket}/{key}: an S3 client is required for an s3:// source")
    info = _head_s3(s3_client, bucket, key, version_id, spec)
    if etag is not None and _unquote_etag(etag) != _unquote_etag(info.etag or ""):
        raise SourceError(
            f"{info.uri}: object changed since the checkpoint (ETag {info.etag} now, {etag} then); "
            "start a new load instead of resuming"
        )
    return Source(info, s3_client=s3_client)


class Source:
    """An opened, pinned source; ``open`` may be called any number of times."""

    def __init__(self, info: SourceInfo, *, s3_client: Any | None) -> None:
        self.info = info
        self._client = s3_client

    def open(self, offset: int = 0) -> BinaryIO:
        """A stream positioned at ``offset`` of the DECOMPRESSED bytes.

        Uncompressed: one ranged GET starting at ``offset`` (or a seek, for a local file).
        Compressed: read from byte 0 and discard ``offset`` decompressed bytes (a full re-read
        up to the offset; there is no way to seek in a gzip, zstd or bz2 stream).
        """
        info = self.info
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
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
