"""Blocks of clean rows typed at once: passes over whole columns in C, no Python code per row.

``RowConverter.convert`` runs generated Python once per row, and the lean sender then encodes the
item with orjson: ~6 us a row on the benchmark's simple rows (2-core EPYC, data fresh from the
decoder). :class:`BlockTyper` does the same work a column at a time with ``map`` over ``str``
methods, one ``orjson.dumps`` per string column (JSON-escaping every cell) and one bytes
``%``-format per row from a template made for this header: ~3 us a row on the same rows. This is
the measured hot path, hence the maps. String and number sets are split once per column (see
``_set_cells``); JSON cells still go through their converter one at a time.

It never guesses: any block it cannot type exactly as ``RowConverter`` + ``orjson.dumps`` would
(a CSV error, a wrong field count, an empty cell the empty policy decides, a value RowConverter
rejects, an oversized item or key, text that is not valid Unicode, a binary key) is declined with
None, and the caller converts that block row by row, where ``RowConverter`` explains every error.
Tests check that both give the same wire bytes, key and size for every row.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, compress, repeat
from operator import add, itemgetter

import orjson

from loader.config import MAX_ITEM_BYTES, MAX_NUMBER_DIGITS
from loader.errors import RowError
from loader.models import Key
from loader.schema import _BOOLS, ColumnPlan, Converter, _utf8_len

__all__ = ["BlockTyper", "TypedBlock"]

#: lower-cased BOOL spellings -> JSON literal (RowConverter's _BOOLS, as wire bytes)
_BOOL_JSON = {text: b"true" if value else b"false" for text, value in _BOOLS.items()}
_ZERO = "0"


@dataclass(slots=True)
class TypedBlock:
    """Rows typed at once, as parallel lists in row order."""

    wires: list[bytes]
    keys: list[Key]
    sizes: list[int]


class BlockTyper:
    """Types blocks of rows for one header, the way ``RowConverter`` built on ``plan`` does."""

    def __init__(self, plan: ColumnPlan) -> None:
        self._width = plan.width
        self._keep_empty_strings = plan.empty == "empty-string"
        self._const = 0  # attribute name sizes, and fixed value sizes (BOOL)
        self._keys: list[tuple[int, str, int]] = []  # (index, key type, limit)
        self._strings: list[int] = []
        self._typed: list[tuple[int, str, Converter | None]] = []  # (index, type, converter)
        #: False when no row can be typed here (a binary key): every block goes row by row
        self.usable = True
        pieces: list[bytes] = []
        for i, name, ktype, _label, limit in plan.keys:
            self._const += _utf8_len(name)
            if ktype == "B":
                self.usable = False
            self._keys.append((i, ktype, limit))
            pieces.append(_name(name) + (b'{"S":"%s"}' if ktype == "S" else b'{"N":"%s"}'))
        for i, name, nsize in plan.strings:
            self._const += nsize
            self._strings.append(i)
            pieces.append(_name(name) + b'{"S":"%s"}')
        for i, name, col, typ in plan.typed:
            self._const += _utf8_len(name)
            if typ == "N":
                pieces.append(_name(name) + b'{"N":"%s"}')
                self._typed.append((i, typ, plan.cell_converter(col, typ)))
            elif typ == "BOOL":
                self._const += 1
                pieces.append(_name(name) + b'{"BOOL":%s}')
                self._typed.append((i, typ, None))
            elif typ in ("SS", "NS") and _set_safe(plan.delimiter):
                # the elements' JSON-escaped text, the delimiter between them made into '","'
                pieces.append(_name(name) + (b'{"SS":["%s"]}' if typ == "SS" else b'{"NS":["%s"]}'))
                self._typed.append((i, typ, plan.cell_converter(col, typ)))
            else:
                pieces.append(_name(name) + b"%s")
                self._typed.append((i, "", plan.cell_converter(col, typ)))
        self._delimiter = plan.delimiter
        self._template = b"{" + b",".join(pieces) + b"}"

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
                lens = _utf8_lens(col)
                if max(lens) > limit:
                    return None
                key_values.append(col)
                fragments.append(_escaped(col))
                sizes.append(lens)
            else:
                if "" in col:
                    return None
                text = col  # digits have nothing to strip
                if not _digits_only(text):
                    text = list(map(str.strip, col))
                    if "" in text or not _digits_only(text):
                        return None
                digits = list(map(str.lstrip, text, repeat(_ZERO)))
                sizes.append(_number_sizes(digits))
                key_values.append([d or _ZERO for d in digits] if "" in digits else digits)
                fragments.append(_ascii(text))
        for i in self._strings:
            col = list(map(itemgetter(i), rows))
            if not self._keep_empty_strings and "" in col:
                return None
            fragments.append(_escaped(col))
            sizes.append(_utf8_lens(col))
        for i, typ, convert in self._typed:
            # cells are stripped first, as RowConverter does, unless the plain check passes without
            # it (digits, points and the common BOOL spellings have nothing to strip)
            col = list(map(itemgetter(i), rows))
            if "" in col:  # the empty policy (or NULL) decides: row by row
                return None
            if typ == "N":
                text = col
                number_sizes = _decimal_sizes(text)
                if number_sizes is None:  # padding, signs, exponents, long or odd text: _number_value
                    text = list(map(str.strip, col))
                    if "" in text:
                        return None
                    assert convert is not None
                    number_sizes = list(map(itemgetter(1), map(convert, text)))
                sizes.append(number_sizes)
                fragments.append(_ascii(text))
            elif typ == "BOOL":
                literals = list(map(_BOOL_JSON.get, col))
                if None in literals:
                    literals = list(map(_BOOL_JSON.get, map(str.lower, map(str.strip, col))))
                    if None in literals:
                        return None
                fragments.append(literals)  # type: ignore[arg-type]
            else:
                text = list(map(str.strip, col))
                if "" in text:
                    return None
                assert convert is not None
                if typ == "SS" or typ == "NS":
                    cells = _set_cells(text, self._delimiter, typ == "NS", convert)
                    if cells is None:
                        return None
                    encoded, cell_sizes = cells
                else:
                    encoded, cell_sizes = _encode_cells(convert, text)
                fragments.append(encoded)
                sizes.append(cell_sizes)
        total: Iterable[int] = repeat(self._const, len(rows))
        for s in sizes:
            total = map(add, total, s)
        item_sizes = list(total)
        if max(item_sizes) > MAX_ITEM_BYTES:
            return None
        wires = list(map(self._template.__mod__, zip(*fragments, strict=True)))
        keys: list[Key] = list(zip(*key_values, strict=True))
        return TypedBlock(wires=wires, keys=keys, sizes=item_sizes)


def _name(name: str) -> bytes:
    """``"name":`` as template text (a ``%`` in a name is doubled)."""
    return orjson.dumps(name).replace(b"%", b"%%") + b":"


def _utf8_lens(col: list[str]) -> list[int]:
    if "".join(col).isascii():
        return list(map(len, col))
    return list(map(len, map(str.encode, col)))  # UnicodeEncodeError for a lone surrogate


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


def _digits_only(col: list[str]) -> bool:
    """Every cell is ASCII digits only and at most 38 of them (a plain non-negative integer)."""
    joined = "".join(col)
    return joined.isdigit() and joined.isascii() and max(map(len, col)) <= MAX_NUMBER_DIGITS


def _number_sizes(digits: list[str]) -> list[int]:
    """DynamoDB sizes of plain non-negative integers (``digits``: each without leading zeros).

    RowConverter's digits-only formula, ``(len(d.rstrip("0")) + (len(d) & 1) + 1) // 2 + 1``
    (1 for zero), one ``map`` at a time, the constants folded: ``(... + 3) // 2``."""
    significant = map(len, map(str.rstrip, digits, repeat(_ZERO)))
    odd = map(operator.and_, map(len, digits), repeat(1))
    return list(map(operator.floordiv, map(add, map(add, significant, odd), repeat(3)), repeat(2)))


def _decimal_sizes(text: list[str]) -> list[int] | None:
    """Sizes of plain unsigned decimals (``12``, ``0.5``, ``99022.77``, at most 38 digits), or None
    when a cell is anything else.

    ``_number_value``'s formula a column at a time: the adjusted exponent is even exactly when
    the digits after leading zeros plus the fraction digits are odd in number; zero is 1 byte.
    """
    if "." not in "".join(text):
        return _number_sizes(list(map(str.lstrip, text, repeat(_ZERO)))) if _digits_only(text) else None
    parts = list(map(str.partition, text, repeat(".")))
    fractions = list(map(itemgetter(2), parts))
    plain = list(map(add, map(itemgetter(0), parts), fractions))
    joined = "".join(plain)
    if not (joined.isdigit() and joined.isascii()) or "" in plain or max(map(len, plain)) > MAX_NUMBER_DIGITS:
        return None
    digits = list(map(str.lstrip, plain, repeat(_ZERO)))
    lengths = list(map(len, digits))
    odd = map(operator.and_, map(add, lengths, map(len, fractions)), repeat(1))
    even = map(operator.and_, odd, map(bool, lengths))  # 0 for zero
    significant = map(len, map(str.rstrip, digits, repeat(_ZERO)))
    return list(map(operator.floordiv, map(add, map(add, significant, even), repeat(3)), repeat(2)))


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
        element_sizes = list(accumulate(_number_sizes(flat), initial=0))
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
        sizes = list(map(operator.sub, map(add, _utf8_lens(text), repeat(1)), counts))
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
