"""Shards through the real services (moto S3, DynamoDB Local): an object split into N byte ranges at
record boundaries, each run as its own load spec through ``spec.run``, lands exactly what the
whole-object load lands, with the same counters and the same rejects once renumbered; a shard stops
and resumes exactly, refuses another range's checkpoint, reads only its range with bounded GETs
that resume on a broken stream, and fails loudly where a split is wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import orjson
import pytest

from loader import clients
from loader import spec as load_spec
from loader.config import CsvSpec
from loader.errors import ConfigError, SourceError
from loader.models import Checkpoint, Progress, Reject, RunResult
from loader.source import iter_chunks, open_source
from loader.spec import LoadSpec, RunKnobs, renumber, row_bases
from tests.support.aws import scan_all
from tests.support.data import by_pk
from tests.support.tcpcut import TcpCut
from tests.unit.test_shard_range import HEADER, SCHEMA, layout, make_object, plan, rejects_of, totals

ROWS = 50_000


def load(
    spec: LoadSpec,
    *,
    run_id: str,
    resume: Checkpoint | None = None,
    should_stop: Callable[[Progress], bool] | None = None,
    saved: list[Checkpoint] | None = None,
    dry_run: bool = False,
) -> RunResult:
    """One run of ``spec``, assembled as the command line assembles a load."""

    async def save(cp: Checkpoint) -> None:
        if saved is not None:
            saved.append(cp)

    async def go() -> RunResult:
        keys = clients.describe_key_schema(clients.dynamodb_client(), spec.table)
        async with clients.open_dynamodb_sender(concurrency=16) as sender:
            return await load_spec.run(
                spec,
                keys=keys,
                sender=None if dry_run else sender,
                run_id=run_id,
                s3_client=clients.s3_client(),
                knobs=RunKnobs(chunk_bytes=256 * 1024, dry_run=dry_run),
                should_stop=should_stop,
                resume=resume,
                on_checkpoint=save,
            )

    return asyncio.run(go())


def put(s3: Any, bucket: str, key: str, body: bytes) -> tuple[str, str]:
    version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    return f"s3://{bucket}/{key}", str(version)


@pytest.mark.slow
@pytest.mark.parametrize(("newline", "terminated"), [("\n", True), ("\r\n", False)], ids=["lf", "crlf"])
def test_shards_of_an_object_land_exactly_what_the_whole_object_load_lands(
    newline: str,
    terminated: bool,
    s3: Any,
    ddb: Any,
    bucket: str,
    table_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    data = make_object(ROWS, newline=newline, terminated=terminated)
    uri, version = put(s3, bucket, "big.csv", data)
    lay = layout(data)
    whole_spec = LoadSpec(source=uri, table=table_factory(), schema=SCHEMA, rejects=str(tmp_path / "whole"))
    whole = load(whole_spec, run_id="whole")
    landed = by_pk(scan_all(ddb, whole_spec.table))
    expected_rejects = rejects_of(tmp_path / "whole")
    c = whole.counters
    assert whole.complete and c.rows_read == len(lay.ends) == ROWS and c.balanced
    assert c.rows_rejected == len(expected_rejects) > 80 and c.duplicates_collapsed > 100
    assert len(landed) == c.items_written
    assert all(lay.starts[r["row"] - 1] == r["offset"] for r in expected_rejects)  # row N: the Nth record
    assert sum("\n" in it["s"]["S"] for it in landed.values()) > 500  # quoted newlines survived

    for n, first_at_header in [(1, False), (2, False), (4, False), (7, True)]:
        ranges = plan(data, lay, n, first_at_header=first_at_header)
        table = table_factory()
        rejects = tmp_path / f"n{n}"
        results = []
        for i, rng in enumerate(ranges):
            spec = dataclasses.replace(
                whole_spec,
                table=table,
                version_id=version,  # the planner pins the version it split
                byte_range=rng,
                header_names=tuple(HEADER),
                rejects=str(rejects),
            )
            result = load(spec, run_id=f"shard{i}")
            cp = result.checkpoint
            assert result.complete and cp.byte_range == rng and cp.offset == rng[1], (n, i)
            assert cp.spec is not None and cp.spec["byte_range"] == list(rng)
            assert result.counters.balanced
            results.append(result)
        assert by_pk(scan_all(ddb, table)) == landed, n
        assert totals(results) == totals([whole]), n
        bases = row_bases((rng, r.counters.rows_read) for rng, r in zip(ranges, results, strict=True))
        shard_rejects = rejects_of(rejects)
        assert all(r["shard_start"] in bases for r in shard_rejects)
        got = [orjson.loads(renumber(Reject(**r), bases).to_json()) for r in shard_rejects]
        assert sorted(got, key=lambda r: r["offset"]) == expected_rejects, n


def test_shards_planned_by_the_split_planner_land_what_the_whole_object_load_lands(
    s3: Any, ddb: Any, bucket: str, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    from loader.split import plan_split, s3_range_reader

    data = make_object(20_000, newline="\r\n", terminated=False)
    uri, version = put(s3, bucket, "planned.csv", data)
    whole_spec = LoadSpec(source=uri, table=table_factory(), schema=SCHEMA, rejects=str(tmp_path / "whole"))
    whole = load(whole_spec, run_id="whole")
    read = s3_range_reader(clients.s3_client(), bucket=bucket, key="planned.csv", version_id=version)
    split = plan_split(read, size=len(data), spec=whole_spec.csv, n=4, name="planned.csv")
    assert len(split.ranges) == 4 and split.header_names == tuple(HEADER)
    table = table_factory()
    results = []
    for i, r in enumerate(split.ranges):
        spec = dataclasses.replace(
            whole_spec,
            table=table,
            version_id=version,
            byte_range=(r.start, r.end),
            header_names=split.header_names,
            rejects=str(tmp_path / "shards"),
        )
        results.append(load(spec, run_id=f"shard{i}"))
    assert all(r.complete for r in results)
    assert by_pk(scan_all(ddb, table)) == by_pk(scan_all(ddb, whole_spec.table))
    # a key and its repeat on either side of a cut are two writes instead of a write and a collapse
    split_pairs = sum(r.start in layout(data).no_cut for r in split.ranges)
    read_, written, rejected, collapsed = totals(results)
    c = whole.counters
    assert (read_, rejected) == (c.rows_read, c.rows_rejected)
    assert (written, collapsed) == (c.items_written + split_pairs, c.duplicates_collapsed - split_pairs)
    bases = row_bases(
        ((r.start, r.end), x.counters.rows_read) for r, x in zip(split.ranges, results, strict=True)
    )
    got = [orjson.loads(renumber(Reject(**r), bases).to_json()) for r in rejects_of(tmp_path / "shards")]
    assert sorted(got, key=lambda r: r["offset"]) == rejects_of(tmp_path / "whole")


def test_a_shard_stopped_midway_resumes_exactly_and_refuses_another_ranges_checkpoint(
    s3: Any, ddb: Any, bucket: str, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    data = make_object(20_000, newline="\r\n")
    uri, version = put(s3, bucket, "resume.csv", data)
    ranges = plan(data, layout(data), 4)
    straight_table, table = table_factory(), table_factory()
    base = LoadSpec(source=uri, table=table, schema=SCHEMA, version_id=version)
    specs = [
        dataclasses.replace(base, byte_range=r, header_names=tuple(HEADER), rejects=str(tmp_path / f"s{i}"))
        for i, r in enumerate(ranges)
    ]
    straight = load(dataclasses.replace(specs[2], table=straight_table), run_id="straight")
    assert straight.complete

    calls: list[int] = []

    def stop(_: Progress) -> bool:
        calls.append(1)
        return len(calls) > 40

    saved: list[Checkpoint] = []
    first = load(specs[2], run_id="first", should_stop=stop, saved=saved)
    assert first.stopped == "stopped"
    cp = Checkpoint.loads(saved[-1].dumps())  # as a worker would read it back
    assert ranges[2][0] < cp.offset < ranges[2][1] and cp.byte_range == ranges[2]
    assert 1 < cp.next_row <= straight.counters.rows_read  # rows count from the shard's start
    written = len(scan_all(ddb, table))
    for other in (specs[3], specs[1], base):
        with pytest.raises(ConfigError, match="resume each shard from its own checkpoint"):
            load(other, run_id="refused", resume=cp)
    assert len(scan_all(ddb, table)) == written  # nothing refused wrote anything

    second = load(specs[2], run_id="second", resume=cp)
    assert second.complete and second.checkpoint.offset == ranges[2][1]
    assert second.checkpoint.counters == straight.checkpoint.counters
    assert second.checkpoint.next_row == straight.checkpoint.next_row
    assert by_pk(scan_all(ddb, table)) == by_pk(scan_all(ddb, straight_table))
    resumed = {
        r["offset"]: r for r in rejects_of(tmp_path / "s2", "first") + rejects_of(tmp_path / "s2", "second")
    }
    assert sorted(resumed.values(), key=lambda r: r["offset"]) == rejects_of(tmp_path / "s2", "straight")


def test_a_range_that_ends_inside_a_record_stops_the_shard_loudly(
    s3: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    data = make_object(2_000)
    uri, _ = put(s3, bucket, "cut.csv", data)
    lay = layout(data)
    record = 700
    end = lay.starts[record] + 3  # three bytes into row 701
    spec = LoadSpec(
        source=uri,
        table=table,
        byte_range=(lay.starts[100], end),
        header_names=tuple(HEADER),
        rejects=str(tmp_path),
    )
    with pytest.raises(
        SourceError, match=f"the record at byte {lay.starts[record]} does not end by byte {end}"
    ):
        load(spec, run_id="cut")
    gz = LoadSpec(source=uri + ".gz", table=table)
    with pytest.raises(ConfigError, match="gzip-compressed object cannot be split by bytes"):
        dataclasses.replace(gz, byte_range=(0, 10))


# -- the source: bounded ranged GETs -------------------------------------------------------------


def _moto_address() -> tuple[str, int]:
    parts = urlsplit(os.environ["AWS_ENDPOINT_URL_S3"])
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _read(src: Any, offset: int, chunk: int = 65536) -> bytes:
    with src.open(offset) as stream:
        return b"".join(iter_chunks(stream, chunk))


def test_a_shard_reads_its_range_with_one_bounded_get_that_resumes_where_it_broke(
    s3: Any, bucket: str, aws_env: dict[str, str]
) -> None:
    data = make_object(60_000)
    uri, version = put(s3, bucket, "range.csv", data)
    start, end = 100_003, len(data) - 250_001
    with TcpCut(_moto_address()) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url)
        src = open_source(uri, s3_client=client, spec=CsvSpec(), byte_range=(start, end))
        put(s3, bucket, "range.csv", b"overwritten\n")  # the resumed GET must not see this
        assert _read(src, start) == data[start:end]
        assert _read(src, end - 10) == data[end - 10 : end]
        assert _read(src, end) == b""  # nothing left: no request
        gets = [r for r in proxy.requests if r.method == "GET"]
        assert [g.headers.get("range") for g in gets] == [
            f"bytes={start}-{end - 1}",
            f"bytes={end - 10}-{end - 1}",
        ]
        proxy.requests.clear()
        proxy.arm(after_bytes=1_000_000)
        assert _read(src, start, chunk=256 * 1024) == data[start:end]
    cut = proxy.cut_body_offset
    assert cut is not None and 0 < cut < end - start
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert [g.headers.get("range") for g in gets] == [
        f"bytes={start}-{end - 1}",
        f"bytes={start + cut}-{end - 1}",
    ]
    for get in gets:
        assert f"versionId={quote(version, safe='')}" in get.target


def test_a_ranged_read_of_an_unversioned_object_is_pinned_by_its_etag(s3: Any) -> None:
    name = f"u-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    data = make_object(1_000)
    s3.put_object(Bucket=name, Key="k.csv", Body=data)
    src = open_source(f"s3://{name}/k.csv", s3_client=s3, spec=CsvSpec(), byte_range=(10, 5_000))
    assert src.info.version_id is None and src.info.etag
    assert _read(src, 10) == data[10:5_000]
    newer = make_object(1_000, seed=2)
    s3.put_object(Bucket=name, Key="k.csv", Body=newer)
    with pytest.raises(SourceError, match="the object changed while it was being read"):
        _read(src, 10)
    with pytest.raises(SourceError, match=f"ends past the end of the object \\({len(newer)} bytes\\)"):
        open_source(f"s3://{name}/k.csv", s3_client=s3, spec=CsvSpec(), byte_range=(0, len(newer) + 1))
