"""parse_uri: everything after an S3 URI's bucket is the key, literally; local paths made absolute."""

from __future__ import annotations

import os

import pytest

from loader.errors import ConfigError
from loader.source import parse_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/key.csv", ("bucket", "key.csv", None, None)),
        ("s3://bucket/dir/sub/key.csv", ("bucket", "dir/sub/key.csv", None, None)),
        ("S3://bucket/key.csv", ("bucket", "key.csv", None, None)),
        ("s3://bucket/a b+c%20d.csv", ("bucket", "a b+c%20d.csv", None, None)),
        ("s3://bucket/données/日本.csv", ("bucket", "données/日本.csv", None, None)),
        # nothing in a key is a query, a fragment or an escape: a version is passed apart
        ("s3://bucket/key.csv?versionId=abc123", ("bucket", "key.csv?versionId=abc123", None, None)),
        ("s3://bucket/key.csv?versionId=3%2FL4k", ("bucket", "key.csv?versionId=3%2FL4k", None, None)),
        ("s3://bucket/key.csv?versionId=", ("bucket", "key.csv?versionId=", None, None)),
        ("s3://bucket/?versionId=v", ("bucket", "?versionId=v", None, None)),
        ("s3://bucket/what?.csv", ("bucket", "what?.csv", None, None)),
        ("s3://bucket/k?x=1?versionId=v", ("bucket", "k?x=1?versionId=v", None, None)),
        ("s3://bucket/a#b.csv#frag", ("bucket", "a#b.csv#frag", None, None)),
        ("s3://bucket/a%2Fb%zz.csv", ("bucket", "a%2Fb%zz.csv", None, None)),
        ("s3://bucket//lead/../dot/./ ", ("bucket", "/lead/../dot/./ ", None, None)),
        ("/data/in.csv", (None, None, None, "/data/in.csv")),
        ("/data/../data/in.csv.gz", (None, None, None, "/data/in.csv.gz")),
        ("file:///data/a%20b.csv", (None, None, None, "/data/a b.csv")),
    ],
)
def test_parse_uri(uri: str, expected: tuple[str | None, ...]) -> None:
    assert parse_uri(uri) == expected


def test_relative_path_becomes_absolute() -> None:
    assert parse_uri("in.csv") == (None, None, None, os.path.join(os.getcwd(), "in.csv"))


def test_home_is_expanded() -> None:
    path = parse_uri("~/in.csv")[3]
    assert path == os.path.join(os.path.expanduser("~"), "in.csv")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://bucket", "use s3://bucket/key"),
        ("s3://bucket/", "use s3://bucket/key"),
        ("s3:///key.csv", "use s3://bucket/key"),
        ("https://example.com/x.csv", "only s3://bucket/key URIs and local paths"),
        ("gs://bucket/x.csv", "only s3://bucket/key URIs and local paths"),
        ("", "path is empty"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_uri(uri)
