"""plan_split over moto S3: ranged GETs pinned to a version (or an ETag) read the planned bytes."""

from __future__ import annotations

import csv
import io
import random
import uuid
from itertools import zip_longest
from typing import Any

import pytest

from loader.config import CsvSpec
from loader.csvdecode import CsvDecoder
from loader.errors import ConfigError, SourceError
from loader.split import plan_split, s3_range_reader

SPEC = CsvSpec()


def _data(seed: int, rows: int = 20_000) -> bytes:
    rnd = random.Random(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["id", "text", "json"])
    for i in range(rows):
        text = rnd.choice(["plain", "two\nlines", 'say "hi", then go', "crlf\r\ninside"])
        w.writerow([f"k{i:07d}", text, f'{{"n": {rnd.randrange(1000)}, "s": "x"}}'])
    return buf.getvalue().encode()


def _records(data: bytes, *, offset: int = 0, header: list[str] | None = None) -> list[Any]:
    dec = CsvDecoder(SPEC, offset=offset, header=header)
    parts = [dec.feed(data), dec.finish()]
    return [
        (p.starts[i], p.ends[i], p.rows[i], p.raws[i], p.errors.get(i))
        for p in parts
        for i in range(len(p.rows))
    ]


def test_a_plan_read_from_a_pinned_version(s3: Any, bucket: str) -> None:
    data = _data(1)
    version = s3.put_object(Bucket=bucket, Key="in/a b.csv", Body=data)["VersionId"]
    # the object is overwritten after it was pinned: the plan still reads the pinned version
    s3.put_object(Bucket=bucket, Key="in/a b.csv", Body=_data(2, rows=100))
    read = s3_range_reader(s3, bucket=bucket, key="in/a b.csv", version_id=version)
    plan = plan_split(read, size=len(data), spec=SPEC, n=7, name="in/a b.csv")
    assert len(plan.ranges) == 7 and plan.exact_scans == 0
    assert plan.header == data[: plan.data_start] and plan.reads == 7
    memory = plan_split(lambda a, b: data[a:b], size=len(data), spec=SPEC, n=7, name="in/a b.csv")
    assert memory == plan
    # each shard reads its range with a ranged GET of the pinned version: together, the whole parse
    shards: list[Any] = []
    for r in plan.ranges:
        body = read(r.start, r.end)
        shards += _records(body, offset=r.start, header=list(plan.header_names or ()))
    for x, y in zip_longest(shards, _records(data)):
        assert x == y


def test_an_etag_pin_refuses_an_overwritten_object(s3: Any) -> None:
    plain = f"b-{uuid.uuid4().hex[:12]}"  # no versioning: the ETag is the pin
    s3.create_bucket(Bucket=plain)
    data = _data(3)
    etag = s3.put_object(Bucket=plain, Key="k.csv", Body=data)["ETag"]
    read = s3_range_reader(s3, bucket=plain, key="k.csv", etag=etag)
    plan = plan_split(read, size=len(data), spec=SPEC, n=3, name="k.csv")
    assert len(plan.ranges) == 3
    s3.put_object(Bucket=plain, Key="k.csv", Body=_data(4))
    with pytest.raises(SourceError) as err:
        plan_split(read, size=len(data), spec=SPEC, n=3, name="k.csv")
    assert str(err.value) == (  # as a load that meets the change says it
        f"s3://{plain}/k.csv: the object changed while it was being read (its ETag no longer "
        "matches); load it again from the start"
    )


def test_a_missing_version_is_a_source_error(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k.csv", Body=b"a\n1\n")
    read = s3_range_reader(s3, bucket=bucket, key="k.csv", version_id="no-such-version")
    with pytest.raises(
        SourceError, match=rf"^s3://{bucket}/k\.csv: no such object \(version no-such-version; GetObject "
    ) as err:
        plan_split(read, size=4, spec=SPEC, n=2, name="k.csv")
    assert "\n" not in str(err.value)


def test_an_unpinned_reader_is_refused(s3: Any) -> None:
    with pytest.raises(ConfigError, match="give version_id or etag"):
        s3_range_reader(s3, bucket="b", key="k.csv")
