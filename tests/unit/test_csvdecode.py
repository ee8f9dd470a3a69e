"""CsvDecoder: records, exact byte offsets and errors, for chunk boundaries anywhere."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from loader.config import CsvSpec
from loader.csvdecode import CsvDecoder
from loader.errors import SourceError


@dataclass
class Decoded:
    header: list[str] | None
    header_end: int | None
    numbers: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    rows: list[list[str] | None] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


class ExactTierOnly(CsvDecoder):
    """The decoder with its two fast tiers turned off: every chunk goes through the exact tier."""

    def _parse_lines(self, *args: Any) -> None:
        return None

    def _parse_joined(self, *args: Any) -> None:
        return None


def decode(
    data: bytes,
    chunks: list[bytes] | None = None,
    spec: CsvSpec | None = None,
    decoder: type[CsvDecoder] = CsvDecoder,
    **kw: Any,
) -> Decoded:
    dec = decoder(spec or CsvSpec(), **kw)
    out = Decoded(header=None, header_end=None)
    parts = [dec.feed(c) for c in (chunks if chunks is not None else [data])]
    parts.append(dec.finish())
    for part in parts:
        assert len(part.starts) == len(part.ends) == len(part.rows) == len(part.raws)
        assert part.first_number == (out.numbers[-1] + 1 if out.numbers else kw.get("first_row", 1))
        for i in range(len(part.rows)):
            if i in part.errors:
                out.errors[len(out.rows)] = part.errors[i]
                assert part.rows[i] is None
            else:
                assert part.rows[i] is not None
            out.numbers.append(part.first_number + i)
            out.starts.append(part.starts[i])
            out.ends.append(part.ends[i])
            out.rows.append(part.rows[i])
            out.raws.append(part.raws[i])
    out.header, out.header_end = dec.header, dec.header_end
    return out


def splits(data: bytes) -> list[list[bytes]]:
    """Every way to cut ``data`` in two, plus one byte at a time."""
    ways = [[data[:k], data[k:]] for k in range(len(data) + 1)]
    ways.append([data[i : i + 1] for i in range(len(data))])
    return ways


def decode_everywhere(data: bytes, spec: CsvSpec | None = None, **kw: Any) -> Decoded:
    """Decode in one chunk, then assert every other chunking gives exactly the same result."""
    whole = decode(data, spec=spec, **kw)
    for chunks in splits(data):
        assert decode(data, chunks, spec=spec, **kw) == whole, chunks
    return whole


CASES: list[tuple[str, bytes, dict[str, Any], list[list[str] | None], list[tuple[int, int]]]] = [
    ("plain", b"a,b\n1,2\n3,4\n", {}, [["1", "2"], ["3", "4"]], [(4, 8), (8, 12)]),
    ("quoted delimiter", b'a,b\n"x,y",z\n', {}, [["x,y", "z"]], [(4, 12)]),
    ("doubled quotes", b'a,b\n"say ""hi""",z\n', {}, [['say "hi"', "z"]], [(4, 19)]),
    ("quoted newline", b'a,b\n"l1\nl2",z\n3,4\n', {}, [["l1\nl2", "z"], ["3", "4"]], [(4, 14), (14, 18)]),
    ("quoted CRLF", b'a,b\r\n"l1\r\nl2",z\r\n', {}, [["l1\r\nl2", "z"]], [(5, 17)]),
    ("CRLF", b"a,b\r\n1,2\r\n3,4\r\n", {}, [["1", "2"], ["3", "4"]], [(5, 10), (10, 15)]),
    ("no trailing newline", b"a,b\n1,2\n3,4", {}, [["1", "2"], ["3", "4"]], [(4, 8), (8, 11)]),
    ("no trailing newline, CRLF", b"a,b\r\n1,2\r\n3,4", {}, [["1", "2"], ["3", "4"]], [(5, 10), (10, 13)]),
    ("BOM", b"\xef\xbb\xbfa,b\n1,2\n", {}, [["1", "2"]], [(7, 11)]),
    ("blank lines", b"\na,b\n\n1,2\n\r\n\n3,4\n\n", {}, [["1", "2"], ["3", "4"]], [(6, 10), (13, 17)]),
    ("empty fields", b'a,b\n,\n"",x\n', {}, [["", ""], ["", "x"]], [(4, 6), (6, 11)]),
    ("unicode", "a,b\nçé,日本\n".encode(), {}, [["çé", "日本"]], [(4, 16)]),
    ("latin-1", b"a,b\n\xe9t\xe9,2\n", {"encoding": "latin-1"}, [["été", "2"]], [(4, 10)]),
    ("cp1252", b"a,b\n\x80,2\n", {"encoding": "cp1252"}, [["€", "2"]], [(4, 8)]),
    (
        "semicolon + single quote",
        b"a;b\n'x;y';'it''s'\n",
        {"delimiter": ";", "quotechar": "'"},
        [["x;y", "it's"]],
        [(4, 18)],
    ),
    (
        "literal quote in unquoted field",
        b'a,b\n1,b"c\n2,3\n',
        {},
        [["1", 'b"c'], ["2", "3"]],
        [(4, 10), (10, 14)],
    ),
    (
        "literal quote beside a quoted newline",
        b'a,b\n1,b"c\n"x\ny",3\n',
        {},
        [["1", 'b"c'], ["x\ny", "3"]],
        [(4, 10), (10, 18)],
    ),
    ("header only", b"a,b\n", {}, [], []),
    ("header only, no newline", b"a,b", {}, [], []),
    ("empty", b"", {}, [], []),
]


@pytest.mark.parametrize(
    ("data", "spec_kw", "rows", "spans"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_edge_cases(
    data: bytes, spec_kw: dict[str, Any], rows: list[list[str]], spans: list[tuple[int, int]]
) -> None:
    spec = CsvSpec(**spec_kw)
    got = decode_everywhere(data, spec)
    assert got.rows == rows
    assert list(zip(got.starts, got.ends, strict=True)) == spans
    assert got.errors == {}
    assert got.numbers == list(range(1, len(rows) + 1))
    for start, end, raw in zip(got.starts, got.ends, got.raws, strict=True):
        text = data[start:end].decode(spec.encoding)
        assert raw == text.removesuffix("\n").removesuffix("\r")
    if data:
        assert got.header == ["a", "b"]


def test_header_end_and_bom_offsets() -> None:
    got = decode_everywhere(b"\xef\xbb\xbf x , y \r\n1,2\r\n")
    assert got.header == ["x", "y"]  # names are stripped, the BOM is gone
    assert got.header_end == 12  # the BOM's 3 bytes still count
    assert (got.starts, got.ends) == ([12], [17])


def test_header_only_without_newline_ends_at_eof() -> None:
    got = decode_everywhere(b"a,b")
    assert (got.header, got.header_end, got.rows) == (["a", "b"], 3, [])


def test_bom_only_dropped_at_offset_zero() -> None:
    data = b"\xef\xbb\xbf1,2\n"
    got = decode(data, spec=CsvSpec(header=False, columns=("a", "b")), offset=100)
    assert got.rows == [["\ufeff1", "2"]]
    assert (got.starts, got.ends) == ([100], [107])


def test_no_header_uses_columns() -> None:
    got = decode_everywhere(b"1,2\n3,4\n", CsvSpec(header=False, columns=("x", "y")))
    assert got.header == ["x", "y"]
    assert got.header_end is None
    assert got.rows == [["1", "2"], ["3", "4"]]
    assert got.starts == [0, 4]


def test_resume_with_given_header() -> None:
    data = b"ignored-prefix\n1,2\n3,4\n"
    got = decode(data[15:], offset=15, first_row=42, header=["a", "b"])
    assert got.header == ["a", "b"]
    assert got.header_end is None
    assert got.rows == [["1", "2"], ["3", "4"]]  # not taken as a header
    assert got.numbers == [42, 43]
    assert (got.starts, got.ends) == ([15, 19], [19, 23])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,,b\n1,2,3\n", "column 2 has an empty name"),
        (b"a, \n1,2\n", "column 2 has an empty name"),
        (b"a,b, a\n1,2,3\n", "names column 'a' twice"),
        (b"a,\xffb\n1,2\n", "not valid utf-8 at byte 2"),
        (b'a,"b\n', "unterminated quoted field"),
    ],
)
def test_bad_header_stops_the_load(data: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        decode(data)


def test_invalid_utf8_is_an_error_record_that_keeps_its_number() -> None:
    data = b"a,b\n1,2\nx\xff,3\n4,5\n"
    got = decode_everywhere(data)
    assert got.rows == [["1", "2"], None, ["4", "5"]]
    assert got.errors == {1: "not valid utf-8 at byte 9"}
    assert got.numbers == [1, 2, 3]
    assert (got.starts[1], got.ends[1]) == (8, 13)
    assert got.raws[1] == "x\ufffd,3"


def test_invalid_utf8_inside_a_multiline_record() -> None:
    data = b'a,b\n"x\n\xfe",3\n4,5\n'
    got = decode_everywhere(data)
    assert got.rows == [None, ["4", "5"]]
    assert got.errors == {0: "not valid utf-8 at byte 7"}
    assert (got.starts, got.ends) == ([4, 12], [12, 16])


def test_unterminated_quote_at_eof_is_one_error_record() -> None:
    data = b'a,b\n1,2\n3,"open\n4,5\n'
    got = decode_everywhere(data)
    assert got.rows == [["1", "2"], None]
    assert got.errors == {1: "unterminated quoted field at end of data"}
    assert (got.starts, got.ends) == ([4, 8], [8, len(data)])
    assert got.raws[1] == '3,"open\n4,5'


def test_runaway_quote_is_bounded_and_parsing_restarts_on_the_next_line() -> None:
    body = b"".join(b"%d,x\n" % i for i in range(10, 30))
    data = b'a,b\n1,"oops\n' + body
    got = decode_everywhere(data, max_record_bytes=32)
    assert got.rows[0] is None
    assert got.errors == {0: "unterminated quoted field or record longer than 32 bytes"}
    assert (got.starts[0], got.ends[0], got.raws[0]) == (4, 12, '1,"oops')
    assert got.rows[1:] == [[str(i), "x"] for i in range(10, 30)]
    assert got.starts[1:] == [12 + 5 * i for i in range(20)]


def test_overlong_line_is_skipped_as_one_error_record() -> None:
    data = b"a,b\n" + b"y" * 50 + b"\n1,2\n"
    for chunks in ([data], [data[i : i + 7] for i in range(0, len(data), 7)]):
        got = decode(data, chunks, max_record_bytes=16)
        assert got.rows == [None, ["1", "2"]]
        assert got.errors == {0: "unterminated quoted field or record longer than 16 bytes"}
        assert (got.starts, got.ends) == ([4, 55], [55, 59])
        assert got.raws[0].startswith("yyyy")


def test_overlong_line_at_eof() -> None:
    data = b"a,b\n" + b"y" * 50
    got = decode(data, [data[:30], data[30:]], max_record_bytes=16)
    assert got.rows == [None]
    assert (got.starts, got.ends) == ([4], [54])


def test_a_large_field_under_the_limit_is_not_an_error() -> None:
    big = "z" * 300_000  # beyond csv's default field_size_limit of 128 KB
    data = f'a,b\n1,"{big}"\n'.encode()
    got = decode(data, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert got.rows == [["1", big]]


def test_bare_cr_in_unquoted_field_is_an_error_record() -> None:
    got = decode_everywhere(b"a,b\n1\r2,3\n4,5\n")
    assert got.rows == [None, ["4", "5"]]
    assert got.errors[0].startswith("not valid CSV: new-line character seen in unquoted field")
    assert (got.starts, got.ends) == ([4, 10], [10, 14])


def test_feed_after_finish_is_a_bug() -> None:
    dec = CsvDecoder(CsvSpec())
    dec.finish()
    with pytest.raises(RuntimeError):
        dec.feed(b"x")


# -- property: any CSV csv.writer produces, cut anywhere, decodes like csv.reader on the whole text --

_ALPHABET = ["a", "b", "Z", "0", " ", ",", '"', "\n", "\r\n", "\r", ";", "é", "日", "😀", "'", "\t"]


#: nothing csv.writer quotes (with QUOTE_MINIMAL): text the decoder splits with str.split
_PLAIN_ALPHABET = ["a", "b", "Z", "0", " ", ";", "é", "日", "😀", "'", "\t"]


def _random_csv(rnd: random.Random, *, plain: bool = False) -> tuple[bytes, list[list[str]], bool]:
    ncols = rnd.randint(1, 5)
    nrows = rnd.randint(0, 12)
    terminator = rnd.choice(["\n", "\r\n"])
    quoting = csv.QUOTE_MINIMAL if plain else rnd.choice([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
    alphabet = _PLAIN_ALPHABET if plain else _ALPHABET
    if not plain and quoting == csv.QUOTE_MINIMAL and terminator == "\n":
        # this writer leaves a lone "\r" unquoted, which readers take as a line break
        alphabet = [c for c in _ALPHABET if c != "\r"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=terminator, quoting=quoting)
    writer.writerow([f"c{i}" for i in range(ncols)])
    blanks = rnd.random() < 0.3
    for _ in range(nrows):
        row = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 6))) for _ in range(ncols)]
        if row == [""]:
            row = ["x"]  # a lone empty field is written as "" and fine, but keep it simple
        writer.writerow(row)
        if blanks and rnd.random() < 0.3:
            buf.write(terminator)
    text = buf.getvalue()
    if rnd.random() < 0.2 and text.endswith(terminator):
        text = text[: -len(terminator)]
    expected = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    return text.encode(), expected[1:], blanks


def _cuts(rnd: random.Random, data: bytes) -> list[bytes]:
    points = sorted(rnd.sample(range(len(data) + 1), k=min(len(data) + 1, rnd.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("plain", [False, True], ids=["any", "quote-free"])
@pytest.mark.parametrize("decoder", [CsvDecoder, ExactTierOnly])
@pytest.mark.parametrize("seed", range(40))
def test_property_random_csv_any_chunking(seed: int, decoder: type[CsvDecoder], plain: bool) -> None:
    rnd = random.Random(seed)
    for case in range(10):
        data, expected, blanks = _random_csv(rnd, plain=plain)
        if plain:
            assert b'"' not in data
        chunkings = [[data]] + [_cuts(rnd, data) for _ in range(3)]
        if case == 0:
            chunkings.append([data[i : i + 1] for i in range(len(data))])
        for chunks in chunkings:
            got = decode(data, chunks, decoder=decoder)
            assert got.errors == {}
            assert got.rows == expected, chunks
            for i, row in enumerate(got.rows):
                piece = data[got.starts[i] : got.ends[i]]
                assert list(csv.reader(io.StringIO(piece.decode(), newline=""))) == [row]
                assert got.raws[i] == piece.decode().removesuffix("\n").removesuffix("\r")
                if i + 1 < len(got.rows):
                    between = data[got.ends[i] : got.starts[i + 1]]
                    assert between.strip(b"\r\n") == b""
                    if not blanks:
                        assert got.ends[i] == got.starts[i + 1]
            if got.rows:
                assert data[got.ends[-1] :].strip(b"\r\n") == b""
                assert data[got.header_end : got.starts[0]].strip(b"\r\n") == b""
                if not blanks:
                    assert got.ends[-1] == len(data)
                    assert got.starts[0] == got.header_end


# -- text after a closing quote: an error record, never a glued field ----------------------------

_AFTER_QUOTE = "not valid CSV: text after the closing quote of a quoted field (',' expected after '\"')"


@pytest.mark.parametrize("decoder", [CsvDecoder, ExactTierOnly])
@pytest.mark.parametrize(
    ("data", "rows", "spans", "raws"),
    [
        (b'a,b\n1,"ok"tail\n2,3\n', [None, ["2", "3"]], [(4, 15), (15, 19)], ['1,"ok"tail', "2,3"]),
        (b'a,b\n"ok"tail,1\n2,3\n', [None, ["2", "3"]], [(4, 15), (15, 19)], ['"ok"tail,1', "2,3"]),
        (b'a,b\n1,"ok" \n2,"x"\n', [None, ["2", "x"]], [(4, 12), (12, 18)], ['1,"ok" ', '2,"x"']),
        (b'a,b\r\n1,"ok"x\r\n2,3\r\n', [None, ["2", "3"]], [(5, 14), (14, 19)], ['1,"ok"x', "2,3"]),
        # the field spans lines; the record ends with the line the stray text is on
        (b'a,b\n1,"x\ny"tail\n2,3\n', [None, ["2", "3"]], [(4, 16), (16, 20)], ['1,"x\ny"tail', "2,3"]),
        # a quote opened after the stray text does not swallow the next lines: csv stops at the error
        (b'a,b\n"ok"t,"open\n2,3\n', [None, ["2", "3"]], [(4, 16), (16, 20)], ['"ok"t,"open', "2,3"]),
        (b'a,b\n1,"ok"tail', [None], [(4, 14)], ['1,"ok"tail']),
    ],
    ids=["last", "first", "space after quote", "CRLF", "multi-line", "then an open quote", "at EOF"],
)
def test_text_after_a_closing_quote_is_an_error_record(
    decoder: type[CsvDecoder],
    data: bytes,
    rows: list[list[str] | None],
    spans: list[tuple[int, int]],
    raws: list[str],
) -> None:
    got = decode(data, decoder=decoder)
    assert got.rows == rows
    assert list(zip(got.starts, got.ends, strict=True)) == spans
    assert got.raws == raws
    assert got.errors == {i: _AFTER_QUOTE for i, row in enumerate(rows) if row is None}
    assert got.numbers == list(range(1, len(rows) + 1))
    for chunks in splits(data):
        assert decode(data, chunks, decoder=decoder) == got, chunks


def test_text_after_a_closing_quote_among_many_good_quoted_rows() -> None:
    good = [f'{i},"v ""{i}""\n{i}",x' for i in range(200)]
    lines = ["a,b,c", *good[:120], '999,"ok"tail,x', *good[120:]]
    data = ("\n".join(lines) + "\n").encode()
    got = decode(data, [data[i : i + 97] for i in range(0, len(data), 97)])
    assert len(got.rows) == 201
    assert got.errors == {120: _AFTER_QUOTE}
    assert got.raws[120] == '999,"ok"tail,x'
    assert got.rows[:120] + got.rows[121:] == [[str(i), f'v "{i}"\n{i}', "x"] for i in range(200)]


def test_other_quote_characters_name_the_stray_text_too() -> None:
    got = decode_everywhere(b"a;b\n'ok'tail;1\n2;3\n", CsvSpec(delimiter=";", quotechar="'"))
    assert got.rows == [None, ["2", "3"]]
    assert got.errors[0] == (
        "not valid CSV: text after the closing quote of a quoted field (';' expected after ''')"
    )


def test_a_header_with_text_after_a_closing_quote_stops_the_load() -> None:
    with pytest.raises(SourceError, match="text after the closing quote"):
        decode(b'"a"x,b\n1,2\n')
