"""`s3ddb load` at its edges: numbers and encodings it must refuse, a bucket that does not exist,
keys that look like URIs, a field with text after its closing quote, and what ``-v`` shows.

moto S3 in, DynamoDB Local out, over HTTP; the fault proxy stands in front of DynamoDB where the
point is retries. ``-v`` is checked in a child process, where the command configures logging as
it does for a person at a terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3ddb.cli import main
from tests.support.aws import scan_all
from tests.support.data import by_pk, csv_bytes, simple_expected, simple_rows
from tests.support.faultproxy import FaultProxy


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (orjson.loads(out) if out.strip() else None), err


def put(s3: Any, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


# -- 1. non-finite numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "infinity"])
@pytest.mark.parametrize("option", ["--max-wcu", "--backoff-base", "--backoff-cap"])
def test_non_finite_numbers_are_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, option: str, value: str
) -> None:
    uri = put(s3, bucket, "f.csv", b"pk\na\n")
    code, _, err = run(capsys, "load", uri, "--table", table, f"{option}={value}")
    assert code == 2, err
    assert err.startswith(f"s3ddb: error: {option} must be ") and err.count("\n") == 1, err
    assert scan_all(ddb, table) == []  # refused before anything was written


# -- 2. encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "why"),
    [
        ("hex", "is not a text encoding"),
        ("rot13", "is not a text encoding"),
        ("idna", "is not ASCII-compatible"),
        ("utf-7", "is not ASCII-compatible"),
        ("cp037", "is not ASCII-compatible"),
        ("utf-16", "is not ASCII-compatible"),
        ("raw_unicode_escape", "is not ASCII-compatible"),
        ("no-such-codec", "is not a known encoding"),
    ],
)
def test_encodings_a_byte_splitter_cannot_read_are_refused(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, encoding: str, why: str
) -> None:
    uri = put(s3, bucket, "f.csv", b"pk,s\na,+AGE-\n")
    code, _, err = run(capsys, "load", uri, "--table", table, "--encoding", encoding)
    assert code == 2, err
    assert err.startswith(f"s3ddb: error: --encoding {encoding!r} {why}"), err
    assert "Traceback" not in err and err.count("\n") == 1
    assert scan_all(ddb, table) == []


def test_shift_jis_with_ascii_trail_bytes_loads_exactly(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    # 表 and ソ end in the byte 0x5c (a backslash), ポ and 竹 in 0x7c (the delimiter '|' here)
    assert [c.encode("shift_jis")[1:] for c in "表ソポ竹"] == [b"\\", b"\\", b"|", b"|"]
    rows = [("k1", "表ソポ竹"), ("k2", "|竹|"), ("k3", "plain")]
    text = "pk|s\n" + "".join(f'{pk}|"{s}"\n' if "|" in s else f"{pk}|{s}\n" for pk, s in rows)
    data = text.encode("shift_jis")
    assert b"\x5c" in data and data.count(b"|") > text.count("|")  # the trail bytes are really there
    uri = put(s3, bucket, "sjis.csv", data)
    code, s, err = run(
        capsys, "load", uri, "--table", table, "--encoding", "shift_jis", "--delimiter", "|", "--json",
        "--rejects", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert s is not None and (s["items_written"], s["rows_rejected"]) == (3, 0)
    assert {pk: item["s"]["S"] for pk, item in by_pk(scan_all(ddb, table)).items()} == dict(rows)


# -- 3. a bucket that does not exist --------------------------------------------------------------


def test_a_missing_bucket_is_named_and_exits_2(
    capsys: pytest.CaptureFixture[str], s3: Any, bucket: str, table: str
) -> None:
    name = f"nb-{uuid.uuid4().hex[:12]}"
    code, _, err = run(capsys, "load", f"s3://{name}/k.csv", "--table", table)
    assert code == 2
    assert err == f"s3ddb: error: s3://{name}/k.csv: bucket '{name}' does not exist\n"
    code, _, err = run(capsys, "load", f"s3://{bucket}/k.csv", "--table", table)
    assert code == 2
    assert f"s3://{bucket}/k.csv: no such object" in err and "does not exist" not in err


# -- 4. keys are literal --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["in/k.csv?versionId=x", "in/a#b c+d%20é.csv"])
def test_a_key_that_looks_like_a_query_loads_that_object(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, key: str, tmp_path: Path
) -> None:
    rows = simple_rows(30)
    uri = put(s3, bucket, key, csv_bytes(["pk", "n", "s"], rows))
    put(s3, bucket, re.split(r"[?#]", key)[0], b"pk\ndecoy\n")  # what a URI parser would open instead
    code, s, err = run(
        capsys, "load", uri, "--table", table, "--type", "n=N", "--json", "--rejects", str(tmp_path)
    )
    assert code == 0, err
    assert s is not None and s["items_written"] == 30
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)


# -- 5. text after a closing quote ----------------------------------------------------------------


def test_text_after_a_closing_quote_is_a_reject_not_a_glued_value(
    capsys: pytest.CaptureFixture[str], s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path
) -> None:
    body = b'pk,s\na,"ok"\nb,"ok"tail\nc,"x, y"\n'
    uri = put(s3, bucket, "q.csv", body)
    code, s, err = run(capsys, "load", uri, "--table", table, "--json", "--rejects", str(tmp_path / "rej"))
    assert code == 0, err
    assert s is not None
    assert (s["rows_read"], s["items_written"], s["rows_rejected"]) == (3, 2, 1)
    assert s["rejects"] is not None
    (rej,) = [orjson.loads(line) for line in Path(s["rejects"]).read_bytes().splitlines()]
    assert (rej["row"], rej["offset"], rej["raw"]) == (2, body.index(b"b,"), 'b,"ok"tail')
    assert "text after the closing quote" in rej["reason"]
    assert {pk: item["s"]["S"] for pk, item in by_pk(scan_all(ddb, table)).items()} == {
        "a": "ok",
        "c": "x, y",
    }


# -- 6. -v shows retries and rate changes ---------------------------------------------------------


@pytest.fixture
def proxy(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", p.url)
        yield p


_RETRY = re.compile(r"^s3ddb: batch \d+: attempt (\d+)/12 failed \((\w+): (.*)\); retrying in [\d.]+ s$")


def _cli(*argv: str) -> tuple[int, dict[str, Any], list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "s3ddb.cli", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ),  # the proxy fixture pointed AWS_ENDPOINT_URL_DYNAMODB at the proxy
        timeout=120,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, orjson.loads(done.stdout), done.stderr.splitlines()


@pytest.mark.parametrize("verbose", [True, False], ids=["-v", "quiet"])
def test_verbose_shows_each_retry_with_its_reason_and_each_rate_change(
    proxy: FaultProxy, s3: Any, ddb: Any, bucket: str, table: str, tmp_path: Path, verbose: bool
) -> None:
    rows = simple_rows(400)
    uri = put(s3, bucket, "v.csv", csv_bytes(["pk", "n", "s"], rows))
    proxy.throttle_next(3, code="ThrottlingException")
    proxy.unprocessed_fraction(0.5, times=3)
    argv = ["load", uri, "--table", table, "--type", "n=N", "--json", "--concurrency", "4",
            "--backoff-base", "0.001", "--backoff-cap", "0.01", "--rejects", str(tmp_path)]  # fmt: skip
    code, s, err = _cli(*argv, *(["-v"] if verbose else []))
    assert code == 0, err
    assert s["items_written"] == 400 and s["retries"] >= 4
    assert by_pk(scan_all(ddb, table)) == simple_expected(rows)
    retries = [m.groups() for m in map(_RETRY.match, err) if m]
    windows = [line for line in err if "concurrency window" in line]
    if not verbose:
        assert retries == [] and windows == [], err  # INFO lines stay out of a quiet run
        return
    assert len(retries) == s["retries"], err  # one line per retry, none per item
    reasons = {(kind, text.split(":")[0]) for _, kind, text in retries}
    assert ("ThrottledError", "ThrottlingException") in reasons, err
    assert any(
        kind == "UnprocessedItemsError" and "came back in UnprocessedItems" in text
        for _, kind, text in retries
    )
    assert {n for n, _, _ in retries} >= {"1"}
    assert any(
        re.fullmatch(r"s3ddb: throttled \(signal \d+\): concurrency window 4 -> 2 calls in flight", w)
        for w in windows
    ), err
