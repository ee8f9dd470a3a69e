"""plan_split: shards that start at its cuts parse, together, exactly as the whole object parses.

Every test compares against the loader's own decoder: the records (rows, raw text, reject reasons,
absolute start and end offsets) of the whole object must equal the records of the ranges, each
parsed on its own and concatenated, both as a shard runs (``offset=start``, ``header_names``) and
with the plan's header bytes fed in front.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import random
import time
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pytest

from loader import split
from loader.config import CsvSpec
from loader.csvdecode import CsvDecoder
from loader.errors import ConfigError, SourceError
from loader.models import RecordChunk
from loader.split import DEFAULT_MAX_RECORD_BYTES, ByteRange, SplitPlan, local_range_reader, plan_split

Record = tuple[int, int, "tuple[str, ...] | None", str, "str | None"]
KIB = 1024
MIB = 1024 * 1024
SPEC = CsvSpec()


class Reader:
    """``read_range`` over bytes in memory; remembers every read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        assert 0 <= start < end <= len(self.data), (start, end)
        self.calls.append((start, end))
        return self.data[start:end]


def records(dec: CsvDecoder, data: bytes | memoryview, chunk: int = MIB) -> Iterator[Record]:
    """The decoder's records for ``data`` fed in ``chunk``-byte pieces (as the pipeline feeds it)."""
    view = memoryview(data)

    def parts() -> Iterator[RecordChunk]:
        for i in range(0, len(view), chunk):
            yield dec.feed(bytes(view[i : i + chunk]))
        yield dec.finish()

    for part in parts():
        for i, row in enumerate(part.rows):
            yield (
                part.starts[i],
                part.ends[i],
                None if row is None else tuple(row),
                part.raws[i],
                part.errors.get(i),
            )


def shard_records(data: bytes, plan: SplitPlan, spec: CsvSpec, max_record_bytes: int) -> Iterator[Record]:
    """Each range as a shard reads it: a decoder at the range's offset with the planned header."""
    view = memoryview(data)
    for r in plan.ranges:
        dec = CsvDecoder(
            spec,
            offset=r.start,
            header=None if plan.header_names is None else list(plan.header_names),
            max_record_bytes=max_record_bytes,
        )
        yield from records(dec, view[r.start : r.end])


def headed_records(data: bytes, plan: SplitPlan, spec: CsvSpec, max_record_bytes: int) -> Iterator[Record]:
    """Each range after the plan's header bytes, at offsets that put the range where it is."""
    # the decoder drops a BOM at offset 0 only: drop it here, so that every range reads the same
    header = plan.header.removeprefix(b"\xef\xbb\xbf")
    for r in plan.ranges:
        dec = CsvDecoder(spec, offset=r.start - len(header), max_record_bytes=max_record_bytes)
        got = list(records(dec, header + data[r.start : r.end]))
        if spec.header:
            assert dec.header_end == r.start
            assert dec.header is not None and tuple(dec.header) == plan.header_names
        yield from got


@functools.lru_cache(maxsize=4)
def whole_parse(
    data: bytes, spec: CsvSpec, max_record_bytes: int
) -> tuple[list[Record], tuple[str, ...] | None, int | None]:
    """The whole object's records, header and header end (kept for the tests that cut one object
    many ways)."""
    dec = CsvDecoder(spec, max_record_bytes=max_record_bytes)
    got = list(records(dec, data))
    return got, None if dec.header is None else tuple(dec.header), dec.header_end


def check(
    data: bytes, spec: CsvSpec = SPEC, n: int = 8, *, name: str = "data.csv", **kw: Any
) -> tuple[SplitPlan, int]:
    """Plan ``data``, check every property of the plan and its exactness; (plan, records)."""
    max_record_bytes = kw.get("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)
    reader = Reader(data)
    plan = plan_split(reader, size=len(data), spec=spec, n=n, name=name, **kw)
    assert plan.bytes_read == sum(end - start for start, end in reader.calls)
    assert plan.reads == len(reader.calls)
    assert plan.size == len(data)
    assert plan.header == data[: plan.data_start]
    whole, names, header_end = whole_parse(data, spec, max_record_bytes)
    if spec.header:
        if names is None:
            assert plan.ranges == () and plan.note is not None
            assert (plan.data_start, plan.header, plan.header_names) == (0, b"", None)
            return plan, 0
        assert plan.header_names == names
        assert plan.data_start == header_end
    else:
        assert plan.data_start == 0 and plan.header == b"" and plan.header_names is None
    if plan.data_start == len(data):
        assert plan.ranges == () and plan.note is not None
        return plan, 0
    assert 1 <= len(plan.ranges) <= n
    assert (plan.note is None) == (len(plan.ranges) == n), plan.note
    assert plan.ranges[0].start == plan.data_start and plan.ranges[-1].end == len(data)
    for a, b in zip(plan.ranges, plan.ranges[1:], strict=False):
        assert a.end == b.start
    bounds = {rec[0] for rec in whole} | {rec[1] for rec in whole} | {plan.data_start}
    for r in plan.ranges:
        assert r.size > 0
        assert r.start in bounds, r  # where a record of the whole parse starts or ends
    for got in (
        shard_records(data, plan, spec, max_record_bytes),
        headed_records(data, plan, spec, max_record_bytes),
    ):
        for i, (x, y) in enumerate(zip_longest(got, whole)):
            assert x == y, (i, x, y, plan)
    return plan, len(whole)


# -- corpus ----------------------------------------------------------------------------------


def _writer_bytes(rows: list[list[str]], *, terminator: str = "\r\n", **kw: Any) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=terminator, **kw).writerows(rows)
    return buf.getvalue().encode("utf-8")


def _mixed_rows(rnd: random.Random, count: int) -> list[list[str]]:
    """Realistic rows: a key, text with commas and quotes, notes with LF / CRLF / CR inside
    quotes, a JSON blob (every quote doubled), numbers, empty cells."""
    words = ["alpha", "bravo", "café", "東京", "naïve", "x,y", 'say "hi"', "tab\there"]
    rows = [["id", "name", "note", "meta", "score", "empty"]]
    for i in range(count):
        note = rnd.choice(["", "one line", "two\nlines", "crlf\r\ninside", "bare\rcr", "a\n\nb\r\n"])
        meta = '{"w": "' + rnd.choice(words) + f'", "v": [{i}, 2.5], "q": "\\"x\\""}}'
        name = " ".join(rnd.choice(words) for _ in range(rnd.randrange(1, 5)))
        rows.append([f"k{i:07d}", name, note, meta, str(rnd.randrange(10**6)), ""])
    return rows


@pytest.fixture(scope="module")
def mixed() -> bytes:
    return _writer_bytes(_mixed_rows(random.Random(5), 12_000))  # ~1.3 MB


@pytest.mark.parametrize("n", range(1, 17))
def test_quoted_newlines_crlf_and_doubled_quotes(mixed: bytes, n: int) -> None:
    plan, rows = check(mixed, n=n)
    assert rows == 12_000
    assert len(plan.ranges) == n and plan.exact_scans == 0
    # the header, then one first read per cut: the two hypotheses meet within a few records
    assert plan.reads == n
    assert plan.bytes_read <= n * 64 * KIB


@pytest.mark.parametrize("n", range(1, 17))
def test_a_record_straddles_every_candidate(n: int) -> None:
    # every record is one quoted field of 60 lines of CSV-looking text (about 2.4 KB): each
    # candidate offset falls inside one, and a line start there is inside a quoted field
    body = "\n".join(f"{j},inner,{j * 7}" for j in range(60))
    rows = [["id", "doc"]] + [[str(i), f'{body}\n"{i}",""'] for i in range(400)]
    data = _writer_bytes(rows, terminator="\n")
    whole = list(records(CsvDecoder(SPEC), data))
    size, start = len(data), whole[0][0]
    inside = 0
    for i in range(1, n):
        c = start + (size - start) * i // n
        rec = next(r for r in whole if r[0] <= c < r[1])
        inside += rec[0] < c
    assert inside == n - 1
    plan, got = check(data, n=n)
    assert got == 400 and len(plan.ranges) == n and plan.exact_scans == 0


@pytest.mark.parametrize("last", ["", "\n", "\r\n", '"open\nquote\n', '"open\nquote', 'x,"multi\r\nline"'])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_the_last_line_with_or_without_a_terminator(last: str, n: int) -> None:
    rows = [["a", "b"]] + [[str(i), f"v\n{i}"] for i in range(300)]
    data = _writer_bytes(rows) + last.encode()
    plan, _ = check(data, n=n)
    assert len(plan.ranges) == n


def test_fewer_records_than_shards_gives_fewer_ranges() -> None:
    data = b'h1,h2\r\n1,"a\r\nb"\r\n2,x\r\n3,"y"\r\n'
    plan, _ = check(data, n=16)
    assert [(r.start, r.end) for r in plan.ranges] == [(7, 17), (17, 22), (22, 29)]
    assert plan.note == "3 of 16 ranges: the object has no record boundary left to cut at"


@pytest.mark.parametrize(
    ("data", "header", "ranges", "note"),
    [
        (b"", True, 0, "no header row: the object is empty; nothing to split"),
        (b"\n\r\n\n", True, 0, "no header row: the object is only blank lines; nothing to split"),
        (b"a,b", True, 0, "no data after the header row; nothing to split"),
        (b"\xef\xbb\xbf\n\na,b\r\n", True, 0, "no data after the header row; nothing to split"),
        # blank lines after the header: one range, with no record in it
        (b"a,b\n\n\n", True, 1, "1 of 2 ranges: the object has no record boundary left to cut at"),
        (b"a,b\n1,2", True, 1, "1 of 2 ranges: the object has no record boundary left to cut at"),
        (b"", False, 0, "the object is empty; nothing to split"),
        (b"\xef\xbb\xbf1,2\n3,4\n", False, 2, None),  # no header: the first range starts at byte 0
    ],
)
def test_empty_and_header_only_objects(data: bytes, header: bool, ranges: int, note: str | None) -> None:
    spec = CsvSpec(header=header, columns=None if header else ("a", "b"))
    plan, _ = check(data, spec, n=2)
    assert len(plan.ranges) == ranges
    assert plan.note == note


def test_rows_of_doubled_quotes_fall_back_to_the_exact_scan() -> None:
    # '"",""' reads the same inside a quoted field ("" is an escaped quote) and outside it: no
    # window tells the two apart, so each cut is found by scanning from the previous one
    data = b"a,b,c\r\n" + b'"","",""\r\n' * 250_000 + b"1,2,3\r\n"  # 2.5 MB
    plan, rows = check(data, n=3, window=64 * KIB)
    assert rows == 250_001 and len(plan.ranges) == 3
    assert plan.exact_scans == 2
    assert plan.bytes_read < len(data) + 3 * 64 * KIB  # every byte about once, no more


def test_a_quoted_field_longer_than_the_window_falls_back_to_the_exact_scan() -> None:
    # one field of 400 KB of CSV-looking lines: a candidate inside it sees records under R and
    # an open quote under Q for the whole 64 KiB window; the opening quote is within reach behind
    rnd = random.Random(3)
    rows = [["id", "text"]] + [[str(i), "w" * rnd.randrange(50)] for i in range(2000)]
    rows.insert(1000, ["big", "\n".join(f"{j},{j},x" for j in range(40_000))])
    data = _writer_bytes(rows)
    plan, _ = check(data, n=3, window=64 * KIB)
    assert len(plan.ranges) == 3 and plan.exact_scans == 1


def test_quote_free_text_is_cut_by_reading_back_for_the_nearest_quote() -> None:
    rows = [["k", "v"]] + [[f"k{i:08d}", "plain text, no quote" * (i % 3)] for i in range(150_000)]
    data = _writer_bytes(rows).replace(b'"', b"")  # no quote character at all (~4.6 MB)
    # no quoted field can span a cut when no quote occurs within max_record_bytes before it
    plan, _ = check(data, n=8, max_record_bytes=256 * KIB)
    assert len(plan.ranges) == 8 and plan.exact_scans == 0
    assert plan.bytes_read < 7 * (256 * KIB + 2 * 64 * KIB) + 64 * KIB
    # with the decoder's 4 MiB limit and shards smaller than that, proving it reads about all
    plan, _ = check(data, n=8)
    assert plan.exact_scans == 0 and plan.bytes_read <= len(data) + 8 * 64 * KIB


def test_quote_sparse_text_stops_reading_back_at_the_nearest_quote() -> None:
    rows = [["k", "v"]] + [[f"k{i:08d}", "a,b" if i % 500 == 0 else "plain"] for i in range(100_000)]
    data = _writer_bytes(rows)
    plan, _ = check(data, n=8)
    assert len(plan.ranges) == 8 and plan.exact_scans == 0
    assert plan.bytes_read <= 8 * 64 * KIB + 7 * 64 * KIB


def _malformed_rows(rnd: random.Random, count: int) -> bytes:
    out = [b"id,a,b\r\n"]
    for i in range(count):
        r = rnd.random()
        if r < 0.005:
            out.append(b'%d,"ok"tail,x\r\n' % i)  # text after the closing quote
        elif r < 0.01:
            out.append(b'%d,"never closed,x\r\n' % i)  # an unbalanced quote
        elif r < 0.015:
            out.append(b"%d,bare\rcr,x\r\n" % i)
        elif r < 0.02:
            out.append(b"%d,\xff\xfe,x\n" % i)  # not UTF-8
        elif r < 0.04:
            out.append(b'%d,"multi\r\nline ""q""",x\r\n' % i)
        else:
            out.append(b"%d,plain %d,x\r\n" % (i, rnd.randrange(10**9)))
    return b"".join(out)


@pytest.mark.parametrize("n", range(1, 17))
def test_malformed_rows_and_records_cut_for_length(n: int) -> None:
    data = _malformed_rows(random.Random(11), 40_000)  # ~1 MB
    plan, _ = check(data, n=n, max_record_bytes=KIB)
    assert len(plan.ranges) == n and plan.exact_scans == 0
    reasons = [rec[4] or "" for rec in records(CsvDecoder(SPEC, max_record_bytes=KIB), data)]
    for kind in ("longer than 1024 bytes", "text after the closing quote", "not valid utf-8", "new-line"):
        assert any(kind in reason for reason in reasons), kind


def test_no_cut_after_a_record_cut_for_length_while_its_quote_is_open() -> None:
    # the whole parse cuts '"open...' to its first line (too long) and reads on; a shard ending
    # within max_record_bytes after it would see an unterminated quote at its end instead
    lines = (
        [b"h\n"] + [b"r%d\n" % i for i in range(50)] + [b'"open\n'] + [b"r%d\n" % i for i in range(50, 400)]
    )
    data = b"".join(lines)
    for n in range(1, 17):
        plan, _ = check(data, n=n, max_record_bytes=300, window=64, first_read=16)
        opened = data.index(b'"open')
        assert not any(opened < r.start <= opened + 300 for r in plan.ranges), plan


def test_multibyte_encodings_whose_trail_bytes_are_the_delimiter_or_the_quote() -> None:
    # shift_jis: "ポ" is 83 7C ("|" as its trail byte), "表" 95 5C ("\\"): csv sees characters
    rnd = random.Random(8)
    text = ["ポ表ソ", "ポ|表", "表\nポ", "ポ\\\r\nソ", "abc"]
    rows = [["名前", "値"]] + [[rnd.choice(text), rnd.choice(text)] for _ in range(20_000)]
    buf = io.StringIO()
    csv.writer(buf, delimiter="|", quotechar="\\", lineterminator="\r\n").writerows(rows)
    data = buf.getvalue().encode("shift_jis")
    assert b"\x83\x7c" in data and b"\x95\x5c" in data
    spec = CsvSpec(delimiter="|", quotechar="\\", encoding="shift_jis")
    for n in (2, 9, 16):
        plan, got = check(data, spec, n=n)
        assert got == 20_000 and len(plan.ranges) == n and plan.exact_scans == 0


def test_a_non_ascii_quote_character() -> None:
    rows = [["a", "b"]] + [[f"{i}", f"x«y\n{i}" if i % 3 else "z"] for i in range(5_000)]
    buf = io.StringIO()
    csv.writer(buf, quotechar="«", lineterminator="\n").writerows(rows)
    plan, _ = check(buf.getvalue().encode(), CsvSpec(quotechar="«"), n=7)
    assert len(plan.ranges) == 7 and plan.exact_scans == 0


def test_a_quote_the_encoding_cannot_write_is_one_range() -> None:
    data = b"a,b\n1,2\n3,4\n"
    plan, _ = check(data, CsvSpec(quotechar="東", encoding="latin-1"), n=4)
    assert plan.ranges == (ByteRange(4, len(data)),)
    assert plan.note == "the quote character '東' cannot be told apart in iso8859-1 text: read as one shard"


@pytest.mark.parametrize(
    ("name", "compression", "kind"),
    [("d/x.csv.gz", "infer", "gzip"), ("x.csv", "zstd", "zstd"), ("x.CSV.BZ2", "infer", "bz2")],
)
def test_a_compressed_object_is_one_shard(name: str, compression: Any, kind: str) -> None:
    reader = Reader(b"\x1f\x8b" + bytes(100))
    plan = plan_split(reader, size=102, spec=CsvSpec(compression=compression), n=8, name=name)
    assert plan.ranges == (ByteRange(0, 102),) and reader.calls == []
    assert plan.note == f"{kind} object: read as one shard (load it without a byte range)"


def test_an_object_shorter_than_planned_is_a_source_error() -> None:
    data = _writer_bytes([["a", "b"]] + [[str(i), "x"] for i in range(10_000)])
    with pytest.raises(SourceError) as err:
        plan_split(lambda a, b: data[a:b], size=len(data) + 10, spec=SPEC, n=4, name="x.csv")
    assert "changed or truncated" in str(err.value) and "\n" not in str(err.value)


def test_a_bad_header_row_is_the_loads_error() -> None:
    with pytest.raises(SourceError, match=r"^x\.csv: the header record .* names column 'a' twice"):
        plan_split(Reader(b"a,a\n1,2\n"), size=8, spec=SPEC, n=2, name="x.csv")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n": 0}, "the number of shards must be a positive integer, got 0"),
        ({"n": True}, "the number of shards must be a positive integer, got True"),
        ({"n": 2, "window": 10, "first_read": 20}, "the split window needs 1 <= first_read <= window"),
        ({"n": 2, "max_record_bytes": 0}, "max_record_bytes must be >= 1"),
    ],
)
def test_bad_arguments_are_config_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_split(Reader(b"a\n1\n"), size=4, spec=SPEC, name="x.csv", **kw)


def test_byte_ranges_are_never_empty() -> None:
    with pytest.raises(ValueError, match="0 <= start < end"):
        ByteRange(5, 5)


def test_public_names_are_pinned() -> None:
    assert sorted(split.__all__) == [
        "ByteRange",
        "DEFAULT_MAX_RECORD_BYTES",
        "DEFAULT_WINDOW",
        "RangeReader",
        "SplitPlan",
        "local_range_reader",
        "plan_split",
        "s3_range_reader",
    ]


def test_max_record_bytes_is_the_decoders() -> None:
    # a planner that judged records too long by another limit than the shards' decoders would
    # cut where a shard reads differently
    assert inspect.signature(CsvDecoder).parameters["max_record_bytes"].default == DEFAULT_MAX_RECORD_BYTES


def test_local_range_reader(tmp_path: Path, mixed: bytes) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(mixed)
    local = plan_split(local_range_reader(str(path)), size=len(mixed), spec=SPEC, n=5, name=str(path))
    memory = plan_split(Reader(mixed), size=len(mixed), spec=SPEC, n=5, name="m.csv")
    assert local == memory
    with pytest.raises(SourceError, match=r"gone\.csv: cannot open: "):  # as a load says it
        plan_split(local_range_reader(str(tmp_path / "gone.csv")), size=10, spec=SPEC, n=2, name="gone.csv")


# -- generated objects -----------------------------------------------------------------------


def _random_csv(rnd: random.Random, spec: CsvSpec) -> bytes:
    enc, d, q = spec.encoding, spec.delimiter.encode(spec.encoding), spec.quotechar.encode(spec.encoding)
    alphabet = {"utf-8": "abcxyz 019é東", "shift_jis": "abcポ表ソ 09", "latin-1": "abcxyz 09é§"}[enc]
    alphabet = "".join(ch for ch in alphabet if ch not in (spec.delimiter, spec.quotechar))

    def plain() -> bytes:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(12))).encode(enc)

    def newline() -> bytes:
        return rnd.choice([b"\n", b"\n", b"\r\n", b"\r\n", b"\r\r\n"])

    def quoted() -> bytes:
        parts = [rnd.choice([plain(), d, q + q, b"\n", b"\r\n", b"\r"]) for _ in range(rnd.randrange(6))]
        return q + b"".join(parts) + q

    def malformed() -> bytes:
        return rnd.choice(
            [
                q + plain() + q + b"tail",  # text after the closing quote
                q + plain(),  # an unbalanced quote
                plain() + b"\r" + plain() + b"x",  # a bare CR outside quotes
                b"ab" + q + b"c",  # a quote inside an unquoted field: literal for csv
                b"\xff\xfe" + plain(),  # undecodable
                q,
                q + q + q,
            ]
        )

    bad = rnd.choice([0.0, 0.02, 0.1, 0.3])
    out = [d.join(b"c%d" % i for i in range(rnd.randrange(1, 5))) + newline()] if spec.header else []
    for _ in range(rnd.randrange(60)):
        if rnd.random() < 0.05:
            out.append(newline())  # a blank line
            continue
        fields = []
        for _ in range(rnd.randrange(1, 5)):
            x = rnd.random()
            fields.append(malformed() if x < bad else quoted() if x < 0.45 else plain())
        out.append(d.join(fields) + newline())
    data = b"".join(out)
    if rnd.random() < 0.3:
        data = data.rstrip(b"\r\n")
    if rnd.random() < 0.1 and enc == "utf-8":
        data = b"\xef\xbb\xbf" + data
    return data


def _ambiguous_csv(rnd: random.Random, spec: CsvSpec) -> bytes:
    """Text that reads as records outside quotes and as one field inside: doubled quotes, quoted
    fields of CSV-looking lines, unbalanced quotes."""
    d, q = spec.delimiter.encode(), spec.quotechar.encode()
    out = [b"a" + d + b"b\n"] if spec.header else []
    for _ in range(rnd.randrange(40)):
        end = rnd.choice([b"\n", b"\r\n"])
        k = rnd.random()
        if k < 0.25:
            pieces = [b"x" + d + b"y", q + q, q + q + b"z" + q + q, d, b"\n", b"\r\n", b"w"]
            out.append(
                b"1" + d + q + b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 30))) + q + end
            )
        elif k < 0.35:
            out.append(q + b"open" + d + b"x" + end)
        elif k < 0.45:
            out.append(q * 4 + end)
        elif k < 0.55:
            out.append(q + b"a" + q + q + d + b"b" + q + end)
        else:
            out.append(b"p" + d + b"q" * rnd.randrange(20) + end)
    data = b"".join(out)
    return data.rstrip(b"\r\n") if rnd.random() < 0.3 else data


def test_generated_objects_split_exactly() -> None:
    """Thousands of generated CSVs (malformed rows included), every shard count 1..16, windows and
    record limits from a few bytes (every fallback taken) to the defaults."""
    seen = {"plans": 0, "cuts": 0, "scans": 0, "speculated": 0, "refused": 0}
    for seed in range(4000):
        rnd = random.Random(seed)
        enc = rnd.choice(["utf-8"] * 6 + ["shift_jis", "latin-1"])
        quote = rnd.choice(['"', '"', "'"] + (["«"] if enc == "utf-8" else ["§"] if enc == "latin-1" else []))
        header = rnd.random() < 0.7
        spec = CsvSpec(
            delimiter=rnd.choice([",", ";", "\t", "|"]),
            quotechar=quote,
            header=header,
            columns=None if header else ("a", "b"),
            encoding=enc,
        )
        ambiguous = seed % 3 == 2 and quote.isascii() and enc == "utf-8"
        data = _ambiguous_csv(rnd, spec) if ambiguous else _random_csv(rnd, spec)
        kw: dict[str, Any] = {}
        if rnd.random() < 0.5:
            kw["max_record_bytes"] = rnd.randrange(4, 300)
        kw["window"] = window = rnd.choice([4, 16, 64, 256, MIB])
        kw["first_read"] = rnd.randrange(1, min(window, 4096) + 1)
        n = rnd.randrange(1, 17)
        try:
            plan, _ = check(data, spec, n, **kw)
        except SourceError as exc:
            # a header row the decoder refuses (longer than a small max_record_bytes): the planner
            # refuses it with the load's words
            with pytest.raises(SourceError) as refused:
                list(
                    records(
                        CsvDecoder(
                            spec, max_record_bytes=kw.get("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)
                        ),
                        data,
                    )
                )
            assert str(exc) == f"data.csv: {refused.value}"
            seen["refused"] += 1
            continue
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: n={n} {kw} {spec}") from exc
        seen["plans"] += 1
        cuts = max(0, len(plan.ranges) - 1)
        seen["cuts"] += cuts
        seen["scans"] += plan.exact_scans
        if window == MIB:
            seen["speculated"] += cuts - plan.exact_scans
    # every path was taken: cuts found by speculation, and by the exact scan
    assert seen["plans"] + seen["refused"] == 4000 and seen["refused"] < 200 and seen["cuts"] > 20_000
    assert seen["speculated"] > 2_000 and seen["scans"] > 2_000, seen


@pytest.mark.slow
def test_a_50_mb_object_in_16_shards(tmp_path: Path) -> None:
    from benchmarks.gen import generate

    path = tmp_path / "big.csv"
    gen = generate(str(path), rows=200_000)  # the benchmark's rows: JSON, sets, numbers
    data = path.read_bytes()
    assert gen.bytes == len(data) > 45 * MIB
    t0 = time.perf_counter()
    plan = plan_split(local_range_reader(str(path)), size=len(data), spec=SPEC, n=16, name=str(path))
    seconds = time.perf_counter() - t0
    print(
        f"\n50 MB split 16 ways: {plan.bytes_read} bytes read of {len(data)} "
        f"({plan.bytes_read / len(data):.2%}) in {plan.reads} reads, {seconds * 1000:.0f} ms, "
        f"{plan.exact_scans} exact scans"
    )
    assert len(plan.ranges) == 16 and plan.exact_scans == 0
    assert plan.bytes_read < len(data) // 20
    whole = records(CsvDecoder(SPEC), data)
    count = 0
    for x, y in zip_longest(shard_records(data, plan, SPEC, DEFAULT_MAX_RECORD_BYTES), whole):
        assert x == y
        count += 1
    assert count == 200_000
