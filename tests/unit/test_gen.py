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
from benchmarks.gen import main as gen_main

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


@pytest.mark.parametrize("per_key", [1, 7, 100])
def test_sorted_keys_repeat_in_runs_of_rows_per_key(tmp_path: Path, per_key: int) -> None:
    out = tmp_path / f"sorted-{per_key}.csv"
    g = generate(str(out), rows=1050, keys="sorted", rows_per_key=per_key, seed=5)
    rows = _rows(out)
    pks = [r["pk"] for r in rows]
    assert pks == sorted(pks)  # the file is sorted by partition key
    runs: dict[str, int] = {}
    for pk in pks:
        runs[pk] = runs.get(pk, 0) + 1
    # every key holds rows_per_key consecutive rows; the last one takes what is left over
    assert list(runs.values()) == [per_key] * (1050 // per_key) + ([1050 % per_key] if 1050 % per_key else [])
    assert len({(r["pk"], r["sk"]) for r in rows}) == 1050  # the table key never repeats
    meta = json.loads(Path(g.meta_path).read_text())
    assert meta["rows_per_key"] == per_key
    if per_key == 1:
        assert g.key == (("pk", "S"),) and meta["key"] == [["pk", "S"]]
    else:
        assert g.key == (("pk", "S"), ("sk", "N")) and meta["key"] == [["pk", "S"], ["sk", "N"]]


def test_rows_per_key_is_the_same_bytes_for_the_same_arguments(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    generate(str(a), rows=300, keys="sorted", rows_per_key=10, seed=2)
    generate(str(b), rows=300, keys="sorted", rows_per_key=10, seed=2)
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.csv"
    generate(str(c), rows=300, keys="sorted", rows_per_key=1, seed=2)
    assert [r["pk"] for r in _rows(c)] != [r["pk"] for r in _rows(a)]


def test_rows_per_key_needs_sorted_keys_and_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs keys='sorted'"):
        generate(str(tmp_path / "r.csv"), rows=10, keys="random", rows_per_key=3)
    with pytest.raises(ValueError, match="rows_per_key >= 1"):
        generate(str(tmp_path / "z.csv"), rows=10, keys="sorted", rows_per_key=0)


def test_the_command_line_writes_sorted_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.csv"
    assert gen_main(["--rows", "40", "--out", str(out), "--keys", "sorted", "--rows-per-key", "20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["key"] == [["pk", "S"], ["sk", "N"]]
    assert [r["pk"] for r in _rows(out)] == ["k000000000000"] * 20 + ["k000000000001"] * 20
