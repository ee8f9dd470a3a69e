"""LoadConfig refuses numbers that switch a limit off; CsvSpec refuses encodings a byte-exact
line splitter cannot read, and every encoding it accepts decodes exactly, cut anywhere."""

from __future__ import annotations

import codecs
import csv
import encodings
import encodings.aliases
import io
import pkgutil
import random
from typing import Any

import pytest

from loader.config import CsvSpec, LoadConfig
from loader.csvdecode import CsvDecoder
from loader.errors import ConfigError

# -- non-finite numbers ---------------------------------------------------------------------------

NUMBERS = [
    ("max_wcu", "--max-wcu"),
    ("backoff_base_s", "--backoff-base"),
    ("backoff_cap_s", "--backoff-cap"),
    ("checkpoint_interval_s", "checkpoint_interval_s"),
    ("stop_poll_s", "stop_poll_s"),
]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("field", "option"), NUMBERS, ids=[n[0] for n in NUMBERS])
def test_non_finite_numbers_are_config_errors_naming_the_option(
    field: str, option: str, value: float
) -> None:
    kw: dict[str, Any] = {field: value}
    if field == "backoff_base_s":
        kw["backoff_cap_s"] = float("inf") if value == float("inf") else 20.0  # not "base > cap"
    with pytest.raises(ConfigError, match=f"^{option} must be a finite number, got {value}$"):
        LoadConfig(table="t", **kw)


@pytest.mark.parametrize(("field", "option"), NUMBERS, ids=[n[0] for n in NUMBERS])
def test_negative_numbers_are_config_errors_naming_the_option(field: str, option: str) -> None:
    with pytest.raises(ConfigError, match=f"^{option} must be"):
        LoadConfig(table="t", **{field: -1.0})


def test_finite_numbers_are_taken() -> None:
    cfg = LoadConfig(
        table="t",
        max_wcu=250,
        backoff_base_s=0.01,
        backoff_cap_s=0.01,
        checkpoint_interval_s=0,
        stop_poll_s=1e-3,
    )
    assert (cfg.max_wcu, cfg.backoff_base_s, cfg.checkpoint_interval_s) == (250, 0.01, 0)
    with pytest.raises(ConfigError, match="--max-wcu must be positive"):
        LoadConfig(table="t", max_wcu=0)
    with pytest.raises(ConfigError, match="--backoff-base must be positive and at most --backoff-cap"):
        LoadConfig(table="t", backoff_base_s=2.0, backoff_cap_s=1.0)


# -- encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "why"),
    [
        ("hex", "is not a text encoding"),
        ("base64", "is not a text encoding"),
        ("rot13", "is not a text encoding"),
        ("zlib", "is not a text encoding"),
        ("idna", "is not ASCII-compatible"),
        ("punycode", "is not ASCII-compatible"),
        ("utf-7", r"is not ASCII-compatible \('\\x00' encodes to b'\+AAA-'\)"),
        ("cp037", r"is not ASCII-compatible \(the byte b'\\x04' decodes to '\\x9c'\)"),
        ("cp500", "is not ASCII-compatible"),
        ("utf-16", "is not ASCII-compatible"),
        ("utf-32-le", "is not ASCII-compatible"),
        ("hz", "is not ASCII-compatible"),
        ("iso2022_jp", "is not ASCII-compatible"),
        ("unicode_escape", "is not ASCII-compatible"),
        (
            "raw_unicode_escape",
            r"is not ASCII-compatible \(runs of ASCII bytes are escape or shift sequences",
        ),
        ("shift_jis_2004", r"is not ASCII-compatible \(the byte b'\\\\' decodes to '¥'\)"),
        ("undefined", "is not ASCII-compatible"),
        ("klingon", "is not a known encoding"),
    ],
)
def test_encodings_that_break_a_byte_splitter_are_refused_with_the_reason(encoding: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"^--encoding {encoding!r} {why}"):
        CsvSpec(encoding=encoding)


ACCEPTED = [
    *("utf-8", "UTF8", "utf-8-sig", "ascii", "latin-1", "cp1252", "iso8859-15", "koi8-r", "mac-roman"),
    *("shift_jis", "cp932", "euc_jp", "gbk", "gb18030", "big5", "cp950", "euc_kr", "cp949", "johab"),
]


@pytest.mark.parametrize("encoding", ACCEPTED)
def test_ascii_compatible_encodings_are_taken(encoding: str) -> None:
    assert CsvSpec(encoding=encoding).encoding == encoding


def _stdlib_codecs() -> list[str]:
    names = set(encodings.aliases.aliases.values()) | {
        m.name for m in pkgutil.iter_modules(encodings.__path__)
    }
    found: set[str] = set()
    for name in names:
        try:
            found.add(codecs.lookup(name).name)
        except LookupError:
            continue  # platform codecs (mbcs, oem, cp65001) and helper modules
    return sorted(found)


def _alphabet(name: str, rnd: random.Random) -> list[str]:
    """ASCII that matters to csv plus up to 40 characters of the encoding, two-byte ones first."""
    chars: set[str] = set()
    for lead in range(0x80, 0x100):
        for trail in [*range(0x21, 0x7F), *rnd.sample(range(0x80, 0x100), 8)]:
            try:
                text = bytes((lead, trail)).decode(name)
            except UnicodeDecodeError:
                continue
            if len(text) == 1 and text.isprintable():
                chars.add(text)
    picked = rnd.sample(sorted(chars), min(40, len(chars)))
    return [*picked, "a", "Z", "0", " ", ",", '"', "\n", "\r\n", "\\", "|", "@", ";", "~"]


@pytest.mark.parametrize("name", _stdlib_codecs())
def test_every_encoding_taken_decodes_exactly_wherever_the_bytes_are_cut(name: str) -> None:
    try:
        CsvSpec(encoding=name)
    except ConfigError:
        return  # refused with a reason (the tests above check which, and why)
    rnd = random.Random(name)
    alphabet = _alphabet(name, rnd)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["c0", "c1", "c2"])
    for _ in range(40):
        writer.writerow(["".join(rnd.choices(alphabet, k=rnd.randint(1, 6))) for _ in range(3)])
    text = buf.getvalue()
    data = text.encode(name)
    expected = list(csv.reader(io.StringIO(text, newline="")))[1:]
    for _ in range(20):
        cuts = sorted(rnd.sample(range(1, len(data)), 12))
        dec = CsvDecoder(CsvSpec(encoding=name))
        parts = [dec.feed(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        parts.append(dec.finish())
        rows = [row for p in parts for row in p.rows]
        assert [p.errors for p in parts if p.errors] == []
        assert rows == expected
        ends = [e for p in parts for e in p.ends]
        starts = [s for p in parts for s in p.starts]
        for (start, end), row in zip(zip(starts, ends, strict=True), rows, strict=True):
            assert list(csv.reader(io.StringIO(data[start:end].decode(name), newline=""))) == [row]
