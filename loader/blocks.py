"""Blocks of clean rows typed at once: passes over whole columns in C, no Python code per row.

``RowConverter.convert`` runs Python once per row, and the lean sender then encodes the item
with orjson. :class:`BlockTyper` does the same work a column at a time with ``map`` over ``str``
methods, one ``orjson.dumps`` per string column (JSON-escaping every cell) and one bytes
``%``-format per row from a template made for this header, in about half the time (see
docs/performance.md). This is the measured hot path, hence the maps. String and number sets are
split once per column (see ``_set_cells``); JSON cells still go through their converter one at a
time.

Empty non-key cells follow the empty policy a column at a time (see ``BlockTyper``), so sparse
data stays here (a block with one empty cell used to go row by row: ~30% more instructions a row).
Sizes are ``loader.limits``' rules in their column forms (``utf8_sizes``, ``decimal_sizes``, ...).

It never guesses: any block it cannot type exactly as ``RowConverter`` + ``orjson.dumps`` would
(a CSV error, a wrong field count, an empty key, a value RowConverter rejects, an oversized item
or key, text that is not valid Unicode, a binary key) is declined with None, and the caller
converts that block row by row, where ``RowConverter`` explains every error. Tests check that
both give the same wire bytes, key and size for every row.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, compress, repeat
from operator import add, itemgetter
from typing import TypeVar

import orjson

from loader.errors import RowError
from loader.limits import (
    BOOL_BYTES,
    MAX_ITEM_BYTES,
    MAX_NUMBER_DIGITS,
    NULL_BYTES,
    decimal_sizes,
    integer_sizes,
    plain_integers,
    utf8_size,
    utf8_sizes,
)
from loader.models import Key
from loader.schema import BOOL_WORDS, ColumnPlan, Converter

__all__ = ["BlockTyper", "TypedBlock"]

#: lower-cased BOOL spellings -> JSON literal (``schema.BOOL_WORDS`` as wire bytes)
_BOOL_JSON = {text: b"true" if value else b"false" for text, value in BOOL_WORDS.items()}
_ZERO = "0"
_T = TypeVar("_T")


@dataclass(slots=True)
class TypedBlock:
    """Rows typed at once, as parallel lists in row order."""

    wires: list[bytes]
    keys: list[Key]
    sizes: list[int]


@dataclass(frozen=True, slots=True)
class _Column:
    """A non-key column: how its cells are typed and what an empty cell becomes."""

    index: int
    #: "S", "N", "BOOL", "SS", "NS", or "" (the column's converter, cell by cell)
    kind: str
    convert: Converter | None
    #: the attribute as template text: '"name":{"S":"%s"}', the cell's fragment for %s
    piece: bytes
    #: an empty cell's fragment where the column is sparse: b"" (omitted) or ',"name":{"NULL":true}'
    absent: bytes
    #: an empty cell's size, against what ``BlockTyper._const`` counts for the attribute
    absent_size: int


class _HasEmpty(Exception):
    """A typed column holds a cell that is empty once stripped (the empty policy's)."""


#: at most this many templates (one per set of sparse columns) are kept per header
_MAX_TEMPLATES = 64


class BlockTyper:
    """Types blocks of rows for one header, the way ``RowConverter`` built on ``plan`` does.

    Empty non-key cells follow the empty policy a column at a time: in a block where a column has
    an empty cell, its template piece becomes ``%s`` and each cell brings its own
    ``,"name":{...}`` (or ``b""`` when the attribute is omitted, ``,"name":{"NULL":true}`` under
    ``null``), so sparse columns stay on this path instead of sending the block row by row.
    """

    def __init__(self, plan: ColumnPlan) -> None:
        self._width = plan.width
        self._keep_empty_strings = plan.empty == "empty-string"
        self._const = 0  # attribute name sizes, and fixed value sizes (BOOL)
        self._keys: list[tuple[int, str, int]] = []  # (index, key type, limit)
        self._columns: list[_Column] = []
        #: False when no row can be typed here (a binary key): every block goes row by row
        self.usable = True
        key_pieces: list[bytes] = []
        for i, name, ktype, _label, limit in plan.keys:
            self._const += utf8_size(name)
            if ktype == "B":
                self.usable = False
            self._keys.append((i, ktype, limit))
            key_pieces.append(_name(name) + (b'{"S":"%s"}' if ktype == "S" else b'{"N":"%s"}'))
        self._key_template = b",".join(key_pieces)
        for i, name, nsize in plan.strings:
            self._add(i, name, "S", None, b'{"S":"%s"}', nsize, null=plan.empty == "null")
        for i, name, col, typ in plan.typed:
            null = typ == "NULL" or plan.empty == "null"
            nsize = utf8_size(name)
            if typ == "N":
                self._add(i, name, "N", plan.cell_converter(col, typ), b'{"N":"%s"}', nsize, null=null)
            elif typ == "BOOL":
                self._add(i, name, "BOOL", None, b'{"BOOL":%s}', nsize + BOOL_BYTES, null=null)
            elif typ in ("SS", "NS") and _set_safe(plan.delimiter):
                # the elements' JSON-escaped text, the delimiter between them made into '","'
                wrap = b'{"SS":["%s"]}' if typ == "SS" else b'{"NS":["%s"]}'
                self._add(i, name, typ, plan.cell_converter(col, typ), wrap, nsize, null=null)
            else:
                self._add(i, name, "", plan.cell_converter(col, typ), b"%s", nsize, null=null)
        self._delimiter = plan.delimiter
        self._templates: dict[tuple[bool, ...], bytes] = {}
        self._template((False,) * len(self._columns))

    def _add(
        self, i: int, name: str, kind: str, convert: Converter | None, wrap: bytes, fixed: int, *, null: bool
    ) -> None:
        piece = _name(name) + wrap
        absent, absent_size = b"", -fixed  # omitted: neither name nor value
        if null:  # the name and a NULL
            absent = (b"," + _name(name) + b"%s") % b'{"NULL":true}'
            absent_size = utf8_size(name) + NULL_BYTES - fixed
        self._const += fixed
        self._columns.append(_Column(i, kind, convert, piece, absent, absent_size))

    def _template(self, sparse: tuple[bool, ...]) -> bytes:
        """The row template for a block where the columns marked in ``sparse`` are ``%s``."""
        template = self._templates.get(sparse)
        if template is None:
            parts = [b"{", self._key_template]
            for column, cells in zip(self._columns, sparse, strict=True):
                parts.append(b"%s" if cells else b"," + column.piece)
            parts.append(b"}")
            template = b"".join(parts)
            if len(self._templates) < _MAX_TEMPLATES:
                self._templates[sparse] = template
        return template

    def type_rows(self, rows: Sequence[list[str] | None]) -> TypedBlock | None:
        """``rows`` typed, or None when any of them must go through ``RowConverter``."""
        if not self.usable or not rows or None in rows:
            return None
        width = self._width
        if min(map(len, rows)) != width or max(map(len, rows)) != width:  # type: ignore[arg-type]
            return None
        try:
            return self._type(rows)  # type: ignore[arg-type]
        except (RowError, UnicodeError, orjson.JSONEncodeError):
            return None

    def _type(self, rows: Sequence[list[str]]) -> TypedBlock | None:
        fragments: list[Sequence[bytes]] = []
        sizes: list[Iterable[int]] = []
        key_values: list[Sequence[str]] = []
        for i, ktype, limit in self._keys:
            col = list(map(itemgetter(i), rows))
            if ktype == "S":
                if "" in col:
                    return None
                lens = utf8_sizes(col)
                if max(lens) > limit:
                    return None
                key_values.append(col)
                fragments.append(_escaped(col))
                sizes.append(lens)
            else:
                if "" in col:
                    return None
                text = col  # digits have nothing to strip
                if not plain_integers(text):
                    text = list(map(str.strip, col))
                    if "" in text or not plain_integers(text):
                        return None
                digits = list(map(str.lstrip, text, repeat(_ZERO)))
                sizes.append(integer_sizes(digits))
                key_values.append([d or _ZERO for d in digits] if "" in digits else digits)
                fragments.append(_ascii(text))
        sparse: list[bool] = []
        for column in self._columns:
            col = list(map(itemgetter(column.index), rows))
            empty = "" in col and not (column.kind == "S" and self._keep_empty_strings)
            typed: tuple[Sequence[bytes], list[int] | None] | None = None
            if not empty:
                try:
                    typed = self._cells(column, col)
                except _HasEmpty:  # a cell of blanks: empty once stripped
                    empty = True
                else:
                    if typed is None:
                        return None
            if empty:
                typed = self._sparse(column, col)
                if typed is None:
                    return None
            assert typed is not None
            fragments.append(typed[0])
            if typed[1] is not None:
                sizes.append(typed[1])
            sparse.append(empty)
        total: Iterable[int] = repeat(self._const, len(rows))
        for s in sizes:
            total = map(add, total, s)
        item_sizes = list(total)
        if max(item_sizes) > MAX_ITEM_BYTES:
            return None
        wires = list(map(self._template(tuple(sparse)).__mod__, zip(*fragments, strict=True)))
        keys: list[Key] = list(zip(*key_values, strict=True))
        return TypedBlock(wires=wires, keys=keys, sizes=item_sizes)

    def _sparse(self, column: _Column, col: list[str]) -> tuple[list[bytes], list[int]] | None:
        """A column with empty cells: the others typed, each with its ``,"name":`` before it,
        and the empty policy's fragment and size in the empty ones' places."""
        present = list(map(bool, col if column.kind == "S" else map(str.strip, col)))
        cells = list(compress(col, present))
        wrapped: list[bytes] = []
        cell_sizes: list[int] = []
        if cells:
            try:
                typed = self._cells(column, cells)
            except _HasEmpty:  # pragma: no cover - the cells left are not empty
                return None
            if typed is None:
                return None
            wrapped = list(map((b"," + column.piece).__mod__, typed[0]))
            cell_sizes = typed[1] if typed[1] is not None else [0] * len(cells)
        return _scatter(present, wrapped, column.absent), _scatter(present, cell_sizes, column.absent_size)

    def _cells(self, column: _Column, col: list[str]) -> tuple[Sequence[bytes], list[int] | None] | None:
        """A column's cells as template fragments, and their sizes (None: a fixed size, already
        counted in ``_const``).

        None when a cell must go through RowConverter; ``_HasEmpty`` for a typed cell of blanks.
        The cells are stripped first, as RowConverter does, unless the plain check passes without
        it (digits, points and the common BOOL spellings have nothing to strip)."""
        kind = column.kind
        if kind == "S":
            return _escaped(col), utf8_sizes(col)
        if kind == "N":
            text = col
            number_sizes = decimal_sizes(text)
            if number_sizes is None:  # padding, signs, exponents, long or odd text: cell by cell
                text = list(map(str.strip, col))
                if "" in text:
                    raise _HasEmpty
                assert column.convert is not None
                number_sizes = list(map(itemgetter(1), map(column.convert, text)))
            return _ascii(text), number_sizes
        if kind == "BOOL":
            literals = list(map(_BOOL_JSON.get, col))
            if None in literals:
                text = list(map(str.strip, col))
                if "" in text:
                    raise _HasEmpty
                literals = list(map(_BOOL_JSON.get, map(str.lower, text)))
                if None in literals:
                    return None
            return literals, None  # type: ignore[return-value]
        text = list(map(str.strip, col))
        if "" in text:
            raise _HasEmpty
        assert column.convert is not None
        if kind == "SS" or kind == "NS":
            return _set_cells(text, self._delimiter, kind == "NS", column.convert)
        return _encode_cells(column.convert, text)


def _scatter(present: list[bool], values: Sequence[_T], fill: _T) -> list[_T]:
    """``values`` in the places ``present`` marks, in order, and ``fill`` in the others, in C:
    each place looks up its running count of present places (0 for the absent ones)."""
    table = [fill, *values]
    return list(map(table.__getitem__, map(operator.mul, accumulate(present), present)))


def _name(name: str) -> bytes:
    """``"name":`` as template text (a ``%`` in a name is doubled)."""
    return orjson.dumps(name).replace(b"%", b"%%") + b":"


_INSIDE = slice(1, -1)


def _escaped(col: list[str]) -> list[bytes]:
    """Each cell as the inside of a JSON string, exactly as orjson writes it.

    The column is encoded as one JSON array and cut at ``","``. With no quote inside any cell,
    every ``"`` in that array is a string delimiter, so the cut is exact; a column with a quote
    (escaped as ``\\"``, which a cell ending in ``",`` would turn into a false ``","``) is
    encoded cell by cell instead.
    """
    array = orjson.dumps(col)
    if b'\\"' in array:
        return list(map(bytes.__getitem__, map(orjson.dumps, col), repeat(_INSIDE)))
    return array[2:-2].split(b'","')


def _ascii(col: list[str]) -> list[bytes]:
    """Number text (ASCII, no newline: checked before) as bytes."""
    return "\n".join(col).encode("ascii").split(b"\n")


def _set_safe(delimiter: str) -> bool:
    """A set delimiter that JSON writes as itself and that no JSON escape sequence contains
    (escapes are a backslash and letters or hex digits), so replacing it in a JSON-escaped cell
    with '","' cuts exactly at the elements."""
    return (
        len(delimiter) == 1
        and delimiter.isascii()
        and delimiter.isprintable()
        and not (delimiter.isalnum() or delimiter in '"\\')
    )


#: '{"SS":["' / '{"NS":["': what orjson writes before a set's first element
_SET_HEAD = len(b'{"SS":["')
_SET_TAIL = len(b'"]}')


def _set_cells(
    text: list[str], delimiter: str, numbers: bool, convert: Converter
) -> tuple[list[bytes], list[int]] | None:
    """A whole SS or NS column (stripped, non-empty cells): each set's elements as JSON-escaped
    text joined by '","' (the template adds the brackets), and each set's size, as RowConverter's
    conv_ss / conv_ns give them; None when a cell has an empty element (RowConverter rejects it).

    Cells with a repeated element (sets keep the first of each) and, for NS, cells with an element
    RowConverter may write differently (not plain digits, a leading zero, over 38 digits) go
    through ``convert`` one at a time; the rest in C-level passes over the column.
    """
    parts = list(map(str.split, text, repeat(delimiter)))
    if any(map(operator.contains, parts, repeat(""))):
        return None
    counts = list(map(len, parts))
    redo = list(map(operator.ne, map(len, map(set, parts)), counts))  # a repeated element
    if numbers:
        joined = "".join(text).replace(delimiter, "")
        if not (joined.isdigit() and joined.isascii()):
            return _encode_sets(convert, text)
        flat = list(chain.from_iterable(parts))
        if max(map(len, flat)) > MAX_NUMBER_DIGITS:
            return _encode_sets(convert, text)
        # "007" and "7" are one number: cells with an element that starts with 0 go one by one
        zero = map(
            operator.or_,
            map(str.startswith, text, repeat(_ZERO)),
            map(operator.contains, text, repeat(delimiter + _ZERO)),
        )
        redo = list(map(operator.or_, redo, zero))
        element_sizes = list(accumulate(integer_sizes(flat), initial=0))
        ends = list(accumulate(counts))
        sizes = list(
            map(
                operator.sub,
                map(element_sizes.__getitem__, ends),
                map(element_sizes.__getitem__, [0, *ends[:-1]]),
            )
        )
        encoded = _ascii(text)
    else:
        # no repeats: the elements' sizes are the cell's minus the delimiters (one byte each)
        sizes = list(map(operator.sub, map(add, utf8_sizes(text), repeat(1)), counts))
        encoded = _escaped(text)
    sep = delimiter.encode()
    encoded = list(map(bytes.replace, encoded, repeat(sep), repeat(b'","')))
    if True in redo:
        again = list(compress(range(len(text)), redo))
        redone, redone_sizes = _encode_sets(convert, list(map(text.__getitem__, again)))
        for i, wire, size in zip(again, redone, redone_sizes, strict=True):
            encoded[i] = wire
            sizes[i] = size
    return encoded, sizes


def _encode_sets(convert: Converter, text: list[str]) -> tuple[list[bytes], list[int]]:
    """Every cell through ``convert``, cut to what the set template wraps."""
    encoded, sizes = _encode_cells(convert, text)
    return [e[_SET_HEAD:-_SET_TAIL] for e in encoded], sizes


def _encode_cells(convert: Converter, text: list[str]) -> tuple[list[bytes], list[int]]:
    """Each cell through its RowConverter converter and straight to JSON bytes, while the value
    is fresh (converting the whole column first, then encoding, measured ~20% slower per row on
    the benchmark's JSON and set columns)."""
    encoded: list[bytes] = []
    sizes: list[int] = []
    put, size_of = encoded.append, sizes.append
    dumps = orjson.dumps
    for v in text:
        value, size = convert(v)
        put(dumps(value))
        size_of(size)
    return encoded, sizes
