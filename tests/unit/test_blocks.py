"""loader.blocks: a block typed at once gives, row for row, what RowConverter + orjson give,
and declines every block that holds a row RowConverter would reject or type differently."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from loader.blocks import BlockTyper
from loader.config import SchemaSpec
from loader.errors import RowError
from loader.models import KeySchema
from loader.schema import RowConverter

S_KEY = KeySchema(partition="pk", partition_type="S")
S_N_KEY = KeySchema(partition="pk", partition_type="S", sort="sk", sort_type="N")
N_KEY = KeySchema(partition="id", partition_type="N")

WORDS = [
    "a",
    "zoë",
    "naïve café",
    'say "hi"',
    'ends ",',
    "\\",
    "\\\\",
    'x","y',
    "tab\there",
    "%s",
    "%",
    "日本",
    "",
    " pad ",
]


def _setup(
    columns: dict[str, Any], header: list[str], keys: KeySchema, **spec: Any
) -> tuple[RowConverter, BlockTyper]:
    conv = RowConverter(SchemaSpec(columns=columns, **spec), header, keys)
    return conv, BlockTyper(conv.plan)


def _expected(conv: RowConverter, rows: list[list[str]]) -> list[tuple[bytes, tuple[str, ...], int]]:
    out = []
    for row in rows:
        item, key, size = conv.convert(row)
        out.append((orjson.dumps(item), key, size))
    return out


def _check_same(conv: RowConverter, typer: BlockTyper, rows: list[list[str]]) -> None:
    block = typer.type_rows(rows)
    assert block is not None
    assert list(zip(block.wires, block.keys, block.sizes, strict=True)) == _expected(conv, rows)


def _random_rows(rnd: random.Random, n: int, *, with_quotes: bool) -> list[list[str]]:
    words = WORDS if with_quotes else [w for w in WORDS if '"' not in w]
    return [
        [
            f"user#{rnd.randrange(10**6)}" + rnd.choice(["", "é", "\\"]),
            str(rnd.choice([0, 7, 10, 100, 1200, rnd.randrange(10**12)])).zfill(rnd.choice([1, 1, 4])),
            rnd.choice(words) + rnd.choice(words),
            rnd.choice(["12", "0", "0.5", "99022.77", "-3", "1e5", "007", "100", " 42 ", "1.250", "+8"]),
            rnd.choice(["true", "False", "1", "0", "YES", "no", " true "]),
            rnd.choice(['{"a":[1,2.5,null],"b":{"c":"d"}}', "[]", '"s"', "12", "true", '{"e":1e3}']),
            rnd.choice(["a|b", "x", "a|a|b", "日|本"]),
            rnd.choice(["1|2", "3", "1|1.0|2", "007|7"]),
            rnd.choice(["AAE=", "aGVsbG8=", ""]) or "AA==",
            rnd.choice(["null", "NULL"]),
            str(i),
        ]
        for i in range(n)
    ]


HEADER = ["pk", "sk", "name", "score", "active", "meta", "tags", "nums", "blob", "nothing", "n"]
TYPES = {
    "score": "N",
    "active": "BOOL",
    "meta": "JSON",
    "tags": "SS",
    "nums": "NS",
    "blob": "B",
    "nothing": "NULL",
}


@pytest.mark.parametrize("with_quotes", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_random_blocks_type_exactly_like_the_row_converter(seed: int, with_quotes: bool) -> None:
    rnd = random.Random(seed)
    conv, typer = _setup(TYPES, HEADER, S_N_KEY, empty="empty-string")
    _check_same(conv, typer, _random_rows(rnd, 300, with_quotes=with_quotes))


def test_every_cell_starting_or_ending_with_json_escapes_is_cut_exactly() -> None:
    conv, typer = _setup({}, ["pk", "a", "b"], S_KEY, empty="empty-string")
    cells = ['",', '","', '\\",', '"', "\\", ',"', "", "\n", "\x01", "\u2028", "%", "%%s"]
    rows = [[f"k{i}{j}", a, b] for i, a in enumerate(cells) for j, b in enumerate(cells)]
    _check_same(conv, typer, rows)


def test_number_keys_and_zero() -> None:
    conv, typer = _setup({}, ["id", "v"], N_KEY)
    rows = [[v, "x"] for v in ["0", "000", "7", "0070", "10", "100", "123456789012345678901234567890", " 5 "]]
    _check_same(conv, typer, rows)


def test_numbers_of_every_shape_match_sizes() -> None:
    conv, typer = _setup({"v": "N"}, ["pk", "v"], S_KEY)
    values = [
        "0",
        "0.0",
        "0.00",
        "5",
        "50",
        "500",
        "1.5",
        "12.25",
        ".5",
        "5.",
        "-1",
        "-0.001",
        "1E+5",
        "2e-3",
        "1" * 38,
    ]
    _check_same(conv, typer, [[f"k{i}", v] for i, v in enumerate(values)])
    _check_same(conv, typer, [[f"k{i}", v] for i, v in enumerate(["0", "00", "10", "1" * 38, "9"])])


@pytest.mark.parametrize(
    "cells",
    [
        ["1", "abc"],  # not a number
        ["1", "1" * 39],  # too many digits
        ["1", "1e200"],  # out of range
    ],
)
def test_blocks_with_a_row_the_converter_rejects_are_declined(cells: list[str]) -> None:
    conv, typer = _setup({"v": "N"}, ["pk", "v"], S_KEY)
    rows = [[f"k{i}", c] for i, c in enumerate(cells)]
    assert typer.type_rows(rows) is None
    with pytest.raises(RowError):
        conv.convert(rows[-1])


@pytest.mark.parametrize(
    "rows",
    [
        [["a", "x"], None],  # a CSV error
        [["a", "x"], ["b"]],  # too few fields
        [["a", "x"], ["b", "y", "z"]],  # too many
        [["a", "x"], ["", "y"]],  # empty key
        [["a", "x"], ["b" * 2049, "y"]],  # key too long
        [["a", "x"], ["b", "y" * (400 * 1024)]],  # item too large
        [["a", "x"], ["b", "\ud800"]],  # not valid Unicode
    ],
)
def test_declines_rows_that_must_go_row_by_row(rows: list[Any]) -> None:
    _conv, typer = _setup({}, ["pk", "v"], S_KEY)
    assert typer.type_rows(rows) is None


@pytest.mark.parametrize("policy", ["empty-string", "omit", "null"])
def test_empty_cells_follow_the_policy(policy: str) -> None:
    conv, typer = _setup({}, ["pk", "v"], S_KEY, empty=policy)
    _check_same(conv, typer, [["a", "x"], ["b", ""]])
    _check_same(conv, typer, [["a", ""], ["b", ""]])  # a column empty in the whole block
    # an empty typed cell, or one of blanks, is the empty policy's too, whatever the policy
    conv, typer = _setup({"v": "N", "w": "BOOL"}, ["pk", "v", "w"], S_KEY, empty=policy)
    _check_same(conv, typer, [["a", "1", ""], ["b", " ", "true"], ["c", "", " "], ["d", "2.5", " no "]])


@pytest.mark.parametrize("policy", ["empty-string", "omit", "null"])
@pytest.mark.parametrize("seed", range(6))
def test_random_sparse_blocks_type_exactly_like_the_row_converter(seed: int, policy: str) -> None:
    """Empty and blank cells anywhere but the keys, in every column type, under every policy:
    the sparse columns' cells carry their own attribute names (or nothing, or NULL)."""
    rnd = random.Random(seed)
    conv, typer = _setup(TYPES, HEADER, S_N_KEY, empty=policy)
    rows = _random_rows(rnd, 200, with_quotes=True)
    gone = set(rnd.sample(range(2, len(HEADER)), 2))  # columns empty in every row of the block
    for row in rows:
        for j in range(2, len(row)):
            if j in gone or rnd.random() < 0.3:
                row[j] = rnd.choice(["", "", " ", "\t "])
    block = typer.type_rows(rows)
    assert block is not None, "sparse rows go through the block typer"
    assert list(zip(block.wires, block.keys, block.sizes, strict=True)) == _expected(conv, rows)


def test_a_sparse_column_still_declines_a_bad_cell() -> None:
    conv, typer = _setup({"v": "N"}, ["pk", "v"], S_KEY)
    rows = [["a", ""], ["b", "abc"]]
    assert typer.type_rows(rows) is None
    with pytest.raises(RowError):
        conv.convert(rows[1])


def test_bad_booleans_and_binary_keys_are_declined() -> None:
    conv, typer = _setup({"b": "BOOL"}, ["pk", "b"], S_KEY)
    assert typer.type_rows([["a", "true"], ["b", "maybe"]]) is None
    _check_same(conv, typer, [["a", "TRUE"], ["b", " no "]])
    _conv, typer = _setup({}, ["pk", "v"], KeySchema(partition="pk", partition_type="B"))
    assert not typer.usable
    assert typer.type_rows([["AAE=", "x"]]) is None


def test_renamed_attributes_and_names_with_percent() -> None:
    conv, typer = _setup({"n%s": "N"}, ["pk", "n%s", "v%"], S_KEY, rename={"v%": "v%%d"})
    _check_same(conv, typer, [["a", "1", "x"], ["b", "2.5", "%s"]])


def test_entries_of_makes_the_entries_entry_would() -> None:
    from loader.models import Entry, entries_of

    made = entries_of([("a",), ("b", "1")], [10, 20], [1, 2], [0, 7], ["a,x", "b,1,y"], [b"{}", b'{"b":1}'])
    assert made == [
        Entry(None, ("a",), 10, 1, 0, "a,x", b"{}"),
        Entry(None, ("b", "1"), 20, 2, 7, "b,1,y", b'{"b":1}'),
    ]
    assert all(type(e) is Entry for e in made)
    assert made[1].key == ("b", "1") and made[1].item_of() == {"b": 1}


SET_WORDS = ["a", "b", "zoë", "日本", 'say "hi"', "\\", "tab\there", "%s", "x,y", "p ad", "a\u2028b"]


def _random_sets(rnd: random.Random, delimiter: str, *, numbers: bool) -> str:
    if numbers:
        elems = [
            rnd.choice(
                [
                    str(rnd.randrange(10**9)),
                    "0",
                    "10",
                    "100",
                    "1" * 38,
                    "9" * 38,
                    str(rnd.randrange(100)).zfill(3),
                ]
            )
            for _ in range(rnd.randrange(1, 5))
        ]
        if rnd.random() < 0.1:
            elems.append(elems[0])  # a repeat: sets keep the first
    else:
        elems = [rnd.choice(SET_WORDS) for _ in range(rnd.randrange(1, 5))]
    return delimiter.join(elems)


def _converts(conv: RowConverter, row: list[str]) -> bool:
    try:
        conv.convert(row)
    except RowError:
        return False
    return True


@pytest.mark.parametrize("delimiter", ["|", ";", " ", "-", "ab", "x", "\t"])
@pytest.mark.parametrize("seed", range(4))
def test_set_columns_type_exactly_like_the_row_converter(seed: int, delimiter: str) -> None:
    rnd = random.Random(seed)
    conv, typer = _setup({"tags": "SS", "nums": "NS"}, ["pk", "tags", "nums"], S_KEY, set_delimiter=delimiter)
    rows = [
        [f"k{i}", _random_sets(rnd, delimiter, numbers=False), _random_sets(rnd, delimiter, numbers=True)]
        for i in range(300)
    ]
    # a cell is stripped first, and a word may hold the delimiter: drop the rows RowConverter
    # rejects for an empty element (declining is tested below)
    kept = [row for row in rows if _converts(conv, row)]
    assert len(kept) > 200
    _check_same(conv, typer, kept)
    # digits-only NS columns with no leading zero or repeat (the column-at-a-time path)
    plain = [
        [f"k{i}", "a", delimiter.join(str(rnd.randrange(1, 10**12)) for _ in range(3))] for i in range(50)
    ]
    _check_same(conv, typer, plain)


def test_set_columns_with_an_empty_element_are_declined() -> None:
    conv, typer = _setup({"tags": "SS", "nums": "NS"}, ["pk", "tags", "nums"], S_KEY)
    for bad in (["k", "a||b", "1"], ["k", "a|", "1"], ["k", "a", "1||2"], ["k", "a", "|1"]):
        assert typer.type_rows([["j", "x", "2"], bad]) is None
        with pytest.raises(RowError):
            conv.convert(bad)


def test_clean_set_cells_are_typed_without_the_per_cell_converter() -> None:
    from loader.blocks import _set_cells
    from loader.schema import _make_converter

    calls: list[str] = []

    def counting(converter: Any) -> Any:
        def convert(v: str) -> Any:
            calls.append(v)
            return converter(v)

        return convert

    ss = _make_converter("SS", "tags", "|")
    ns = _make_converter("NS", "nums", "|")
    text = ["a|b", "zoë", 'q"|\\', "a|a"]
    assert _set_cells(text, "|", False, counting(ss)) == (
        [b'a","b', "zoë".encode(), b'q\\"","\\\\', b"a"],
        [2, 4, 3, 1],
    )
    assert calls == ["a|a"]  # only the cell with a repeated element
    calls.clear()
    text = ["12|7", "0", "7|007", "5|5", "100"]
    encoded, sizes = _set_cells(text, "|", True, counting(ns))  # type: ignore[misc]
    assert encoded == [b'12","7', b"0", b"7", b"5", b"100"]
    assert sizes == [ns(v)[1] for v in text]
    assert calls == ["0", "7|007", "5|5"]  # a leading zero (zero itself) or a repeat
