"""The benchmark data generator: deterministic, typed as its schema says, keys as asked."""

from __future__ import annotations

import base64
import csv
import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from benchmarks.gen import generate, parse_columns

COLUMNS = parse_columns("name:S,score:N,active:BOOL,meta:JSON,tags:SS,nums:NS,blob:B,gone:NULL")


def _rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    generate(str(a), rows=500, columns=COLUMNS, seed=3)
    generate(str(b), rows=500, columns=COLUMNS, seed=3)
    generate(str(c), rows=500, columns=COLUMNS, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_gzip_holds_the_same_rows_and_is_deterministic(tmp_path: Path) -> None:
    plain, gz1, gz2 = tmp_path / "p.csv", tmp_path / "g1.csv.gz", tmp_path / "g2.csv.gz"
    generate(str(plain), rows=300, seed=9)
    generate(str(gz1), rows=300, seed=9)
    generate(str(gz2), rows=300, seed=9)
    assert gzip.decompress(gz1.read_bytes()) == plain.read_bytes()
    assert gz1.read_bytes() == gz2.read_bytes()


def test_cells_parse_as_the_schema_types(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    g = generate(str(out), rows=400, columns=COLUMNS, seed=1)
    schema = json.loads(Path(g.schema_path).read_text())
    assert schema["set_delimiter"] == "|"
    assert schema["columns"] == {
        "sk": "N", "name": "S", "score": "N", "active": "BOOL", "meta": "JSON",
        "tags": "SS", "nums": "NS", "blob": "B",
    }  # fmt: skip
    rows = _rows(out)
    assert len(rows) == g.rows == 400
    assert list(rows[0]) == [
        "pk",
        "sk",
        "name",
        "score",
        "active",
        "meta",
        "tags",
        "nums",
        "blob",
        "gone",
        "payload",
    ]
    big = 0
    for r in rows:
        n = Decimal(r["score"])
        big += len(n.as_tuple().digits) == 38
        assert len(n.as_tuple().digits) <= 38
        assert r["active"] in ("true", "false")
        assert isinstance(json.loads(r["meta"]), dict)
        tags = r["tags"].split("|")
        assert all(tags) and len(set(tags)) == len(tags)
        nums = [Decimal(x) for x in r["nums"].split("|")]
        assert len(set(nums)) == len(nums)
        assert len(base64.b64decode(r["blob"], validate=True)) == 12
        assert r["gone"] == ""
        assert int(r["sk"]) >= 0
    assert big > 0  # some numbers use DynamoDB's full 38 digits
    assert any(any(ord(ch) > 127 for ch in r["name"]) for r in rows)  # some unicode


def test_item_size_is_about_what_was_asked(tmp_path: Path) -> None:
    small = generate(str(tmp_path / "s.csv"), rows=1000, item_bytes=200)
    large = generate(str(tmp_path / "l.csv"), rows=1000, item_bytes=1200)
    assert 150 <= small.bytes / 1000 <= 300
    assert 1000 <= large.bytes / 1000 <= 1400


@pytest.mark.parametrize("keys", ["random", "sorted", "hot"])
def test_key_distributions(tmp_path: Path, keys: str) -> None:
    out = tmp_path / f"{keys}.csv"
    g = generate(str(out), rows=2000, keys=keys, hot_keys=5, seed=2)
    rows = _rows(out)
    pks = [r["pk"] for r in rows]
    pairs = {(r["pk"], r["sk"]) for r in rows}
    assert len(pairs) == 2000  # the table key never repeats
    meta = json.loads(Path(g.meta_path).read_text())
    if keys == "hot":
        assert len(set(pks)) == 5
        assert g.key == (("pk", "S"), ("sk", "N"))
        assert meta["key"] == [["pk", "S"], ["sk", "N"]]
    else:
        assert len(set(pks)) == 2000
        assert g.key == (("pk", "S"),)
    if keys == "sorted":
        assert pks == sorted(pks)
    if keys == "random":
        assert pks != sorted(pks)


def test_bad_column_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="TYPE"):
        parse_columns("x:FLOAT")
    with pytest.raises(ValueError):
        parse_columns("pk:S")
