"""Source against moto S3 over HTTP (and local files): offsets, compression, pins, resume."""

from __future__ import annotations

import bz2
import gzip
import os
import random
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import pytest
import zstandard

from loader.config import CsvSpec
from loader.errors import ConfigError, SourceError
from loader.source import iter_chunks, open_source
from tests.support.tcpcut import TcpCut

SPEC = CsvSpec()
COMPRESSORS = {
    "gzip": gzip.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "bz2": bz2.compress,
}


def _data(size: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return b"".join(b"%d,%s\n" % (i, rnd.randbytes(8).hex().encode()) for i in range(size // 20 + 1))[:size]


def _put(s3: Any, bucket: str, key: str, body: bytes) -> str:
    return str(s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"])


def _read(src: Any, offset: int = 0, chunk: int = 65536) -> bytes:
    with src.open(offset) as stream:
        return b"".join(iter_chunks(stream, chunk))


def test_open_at_offset_reads_exactly_the_rest(s3: Any, bucket: str) -> None:
    data = _data(300_000)
    version = _put(s3, bucket, "dir/a b+ç.csv", data)
    src = open_source(f"s3://{bucket}/dir/a b+ç.csv", s3_client=s3, spec=SPEC)
    info = src.info
    assert (info.uri, info.bucket, info.key, info.path) == (
        f"s3://{bucket}/dir/a b+ç.csv",
        bucket,
        "dir/a b+ç.csv",
        None,
    )
    assert (info.version_id, info.size, info.compression) == (version, len(data), "none")
    assert info.etag is not None
    for offset in (0, 1, 123_457, len(data) - 1, len(data)):
        assert _read(src, offset) == data[offset:]


def test_offset_past_the_end_is_a_source_error(s3: Any, bucket: str) -> None:
    _put(s3, bucket, "k.csv", b"a,b\n")
    src = open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC)
    with pytest.raises(SourceError, match="past the end"):
        src.open(5)


@pytest.mark.parametrize(("kind", "key"), [("gzip", "x.csv.gz"), ("zstd", "x.csv.zst"), ("bz2", "x.csv.bz2")])
def test_compressed_objects_decompress_and_honour_offset(s3: Any, bucket: str, kind: str, key: str) -> None:
    data = _data(200_000, seed=2)
    packed = COMPRESSORS[kind](data)
    _put(s3, bucket, key, packed)
    src = open_source(f"s3://{bucket}/{key}", s3_client=s3, spec=SPEC)
    assert (src.info.compression, src.info.size) == (kind, len(packed))
    for offset in (0, 7, 150_001, len(data)):
        assert _read(src, offset) == data[offset:]
    with pytest.raises(SourceError, match="past the end of the decompressed data"):
        src.open(len(data) + 1)


def test_compression_from_spec_when_the_key_has_no_extension(s3: Any, bucket: str) -> None:
    data = _data(5000)
    _put(s3, bucket, "noext", gzip.compress(data))
    src = open_source(f"s3://{bucket}/noext", s3_client=s3, spec=CsvSpec(compression="gzip"))
    assert _read(src, 10) == data[10:]


def test_corrupt_compressed_object_is_a_source_error(s3: Any, bucket: str) -> None:
    _put(s3, bucket, "bad.csv.gz", b"this is not gzip at all")
    src = open_source(f"s3://{bucket}/bad.csv.gz", s3_client=s3, spec=SPEC)
    with pytest.raises(SourceError, match="not a valid gzip stream"):
        _read(src)


def test_overwrite_after_open_still_reads_the_pinned_version(s3: Any, bucket: str) -> None:
    old, new = _data(50_000, seed=3), _data(60_000, seed=4)
    v1 = _put(s3, bucket, "k.csv", old)
    src = open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC)
    _put(s3, bucket, "k.csv", new)
    assert src.info.version_id == v1
    assert _read(src) == old
    assert _read(src, 1234) == old[1234:]
    # and a resume names the version explicitly, apart from the URI (whose key is literal)
    assert _read(open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC, version_id=v1)) == old
    assert _read(open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC)) == new
    with pytest.raises(SourceError, match=r"k\.csv\?versionId=.*: no such object"):
        open_source(f"s3://{bucket}/k.csv?versionId={quote(v1)}", s3_client=s3, spec=SPEC)


@pytest.mark.parametrize(
    ("key", "version"), [("missing.csv", None), ("k.csv", "no-such-version"), ("k.csv", "deleted")]
)
def test_missing_object_is_a_source_error(s3: Any, bucket: str, key: str, version: str | None) -> None:
    v1 = _put(s3, bucket, "k.csv", b"a\n")
    if version == "deleted":
        _put(s3, bucket, "k.csv", b"b\n")
        s3.delete_object(Bucket=bucket, Key="k.csv", VersionId=v1)
        version = v1
    with pytest.raises(SourceError, match=rf"s3://{bucket}/{key}: no such object"):
        open_source(f"s3://{bucket}/{key}", s3_client=s3, spec=SPEC, version_id=version)


def test_missing_bucket_is_a_source_error_that_names_the_bucket(s3: Any, bucket: str) -> None:
    name = f"nb-{uuid.uuid4().hex[:12]}"
    with pytest.raises(SourceError, match=rf"s3://{name}/k.csv: bucket '{name}' does not exist$"):
        open_source(f"s3://{name}/k.csv", s3_client=s3, spec=SPEC)
    with pytest.raises(SourceError, match=rf"bucket '{name}' does not exist$"):
        open_source(f"s3://{name}/k.csv", s3_client=s3, spec=SPEC, version_id="v1")
    # a missing key in a bucket that exists is still "no such object"
    with pytest.raises(SourceError, match=rf"s3://{bucket}/k.csv: no such object"):
        open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC)


def test_bucket_deleted_after_open_is_named_by_the_get(s3: Any) -> None:
    name = f"gone-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k.csv", Body=b"a\n")
    src = open_source(f"s3://{name}/k.csv", s3_client=s3, spec=SPEC)
    s3.delete_object(Bucket=name, Key="k.csv")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(SourceError, match=rf"bucket '{name}' does not exist \(GetObject said NoSuchBucket\)"):
        _read(src)


LITERAL_KEYS = [
    "k.csv?versionId=x",
    "dir/k.csv?versionId=3%2FL4k&x=1",
    "a#b.csv",
    "a%20b.csv",
    "a+b.csv",
    "a b.csv",
    "données/日本 ü.csv",
    "?versionId=",
    "dir//odd/../%2e%2e/?#[]@!$&'()*,;= ~.csv",
]


@pytest.mark.parametrize("key", LITERAL_KEYS)
def test_keys_are_taken_literally(s3: Any, bucket: str, key: str) -> None:
    body = b"pk,v\n" + key.encode() + b",1\n" + b"x" * 5000 + b"\n"
    version = _put(s3, bucket, key, body)
    # decoys: what a URI parser that treats ?, #, % or + specially would open instead
    decoys = {key.partition("?")[0], key.partition("#")[0], key.replace("%20", " "), key.replace("+", " ")}
    for decoy in decoys:
        if decoy and decoy != key:
            _put(s3, bucket, decoy, b"decoy\n")
    src = open_source(f"s3://{bucket}/{key}", s3_client=s3, spec=SPEC)
    assert (src.info.uri, src.info.bucket, src.info.key) == (f"s3://{bucket}/{key}", bucket, key)
    assert src.info.version_id == version and src.info.size == len(body)
    assert _read(src) == body
    assert _read(src, 7) == body[7:]  # a ranged GET on the same literal key
    pinned = open_source(f"s3://{bucket}/{key}", s3_client=s3, spec=SPEC, version_id=version)
    assert _read(pinned, 3) == body[3:]


def test_etag_mismatch_is_a_source_error(s3: Any, bucket: str) -> None:
    _put(s3, bucket, "k.csv", b"a\n")
    etag = open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC).info.etag
    assert etag is not None
    assert (
        open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC, etag=etag.strip('"')).info.etag == etag
    )
    _put(s3, bucket, "k.csv", b"b\n")
    with pytest.raises(SourceError, match="object changed since the checkpoint"):
        open_source(f"s3://{bucket}/k.csv", s3_client=s3, spec=SPEC, etag=etag)


def test_unversioned_bucket_pins_the_etag(s3: Any) -> None:
    name = f"u-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    old = _data(40_000, seed=5)
    s3.put_object(Bucket=name, Key="k.csv", Body=old)
    src = open_source(f"s3://{name}/k.csv", s3_client=s3, spec=SPEC)
    assert src.info.version_id is None
    assert src.info.etag is not None
    assert _read(src, 100) == old[100:]
    s3.put_object(Bucket=name, Key="k.csv", Body=_data(40_000, seed=6))
    with pytest.raises(SourceError, match="the object changed while it was being read"):
        _read(src, 100)
    with pytest.raises(SourceError, match="the object changed while it was being read"):
        _read(src)


def _moto_address() -> tuple[str, int]:
    parts = urlsplit(os.environ["AWS_ENDPOINT_URL_S3"])
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def test_open_at_offset_is_one_ranged_get(s3: Any, bucket: str, aws_env: dict[str, str]) -> None:
    data = _data(500_000, seed=7)
    _put(s3, bucket, "k.csv", data)
    with TcpCut(_moto_address()) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url)
        src = open_source(f"s3://{bucket}/k.csv", s3_client=client, spec=SPEC)
        assert _read(src, 400_000) == data[400_000:]
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert [g.headers.get("range") for g in gets] == ["bytes=400000-"]


def test_broken_read_resumes_at_its_offset_on_the_pinned_version(
    s3: Any, bucket: str, aws_env: dict[str, str]
) -> None:
    data = _data(3_000_000, seed=8)
    version = _put(s3, bucket, "big.csv", data)
    with TcpCut(_moto_address()) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url)
        src = open_source(f"s3://{bucket}/big.csv", s3_client=client, spec=SPEC)
        _put(s3, bucket, "big.csv", b"overwritten\n")  # the resumed GET must not see this
        proxy.arm(after_bytes=1_000_000)
        got = _read(src, 0, chunk=256 * 1024)
    assert got == data
    cut = proxy.cut_body_offset
    assert cut is not None and 0 < cut < len(data)
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert len(gets) == 2
    assert gets[0].headers["range"] == "bytes=0-"
    assert gets[1].headers["range"] == f"bytes={cut}-"
    for get in gets:
        assert f"versionId={quote(version, safe='')}" in get.target


def test_local_file_offsets_and_compression(tmp_path: Path) -> None:
    data = _data(100_000, seed=9)
    plain = tmp_path / "in.csv"
    plain.write_bytes(data)
    packed = tmp_path / "in.csv.zst"
    packed.write_bytes(COMPRESSORS["zstd"](data))
    src = open_source(str(plain), s3_client=None, spec=SPEC)
    assert (src.info.uri, src.info.path, src.info.size, src.info.compression) == (
        str(plain),
        str(plain),
        len(data),
        "none",
    )
    assert _read(src, 99_999) == data[99_999:]
    zsrc = open_source(f"file://{packed}", s3_client=None, spec=SPEC)
    assert zsrc.info.compression == "zstd"
    assert _read(zsrc, 54_321) == data[54_321:]


def test_missing_local_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nope.csv"), s3_client=None, spec=SPEC)
    with pytest.raises(SourceError, match="not a regular file"):
        open_source(str(tmp_path), s3_client=None, spec=SPEC)


def test_a_version_for_a_local_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a\n")
    with pytest.raises(ConfigError, match="a local file has no versions"):
        open_source(str(path), s3_client=None, spec=SPEC, version_id="v1")
