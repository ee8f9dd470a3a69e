"""CSV rows to DynamoDB items: per-column converters, key extraction, and item size.

A :class:`RowConverter` is built once per load from the schema, the CSV header and the table's
key schema; building it checks everything that can be checked without data (``ConfigError``).
``convert()`` then turns one row into ``(item, key, size)`` or raises ``RowError`` with a reason
that names the column and the problem. Rows the block typer (``loader.blocks``) declines come here
(a row with an error, a binary key), and every row when the sender takes items instead of bytes
(the aiobotocore reference sender, ``validate``).

The canonical key (for duplicate detection) is a tuple of the key values as text: S as is, N
normalised (``1``, ``1.0``, ``01``, ``1e0`` are all ``"1"``), B as canonical base64 of its bytes.

Decisions (what a cell becomes):

* ``S``: the cell's text exactly as read; only ``""`` is empty.
* ``N``: validated against DynamoDB's rules (at most 38 significant digits, magnitude
  1E-130 .. 9.99..E+125, zero allowed; ASCII digits only) and written as the cell's text with
  surrounding whitespace stripped, not rewritten: DynamoDB stores the value, not the text.
* ``BOOL``: ``true/false/1/0/yes/no`` in any case; anything else is a ``RowError``, never false.
* ``NULL``: an empty cell or ``null`` (any case) is ``{"NULL": true}`` whatever the empty policy
  (the column's type already says "this is null"); anything else is a ``RowError``.
* ``JSON``: object -> M, array -> L, string -> S, number -> N with the number's exact text,
  true/false -> BOOL, null -> NULL. Numbers are validated like N, at most 31 nested arrays or
  objects (DynamoDB's 32 levels, the item itself being the first), no empty map keys.
* ``SS`` / ``NS``: split on ``set_delimiter``; duplicates removed (NS by numeric value, so
  ``1|1.0`` is one element; the first spelling is kept); an empty element is a ``RowError``.
* ``B``: base64 text, decoded strictly (``validate=True``); the item carries canonical base64 of
  the decoded bytes, which is what DynamoDB's JSON protocol expects for B.

For every type except S, surrounding whitespace is stripped first, and a cell that is then empty
is an empty cell. A non-key empty cell follows ``SchemaSpec.empty``; a key cell may never be empty.

Sizes and DynamoDB's limits (400 KB items, key sizes, 38-digit numbers and their range, 32
nesting levels) are ``loader.limits``' rules; this module applies them and words the reasons.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

import orjson

from loader.config import COLUMN_TYPES, ColumnType, SchemaSpec
from loader.errors import ConfigError, RowError
from loader.limits import (
    BOOL_BYTES,
    CONTAINER_BYTES,
    ELEMENT_BYTES,
    MAX_ITEM_BYTES,
    MAX_NESTING,
    MAX_NUMBER_DIGITS,
    MAX_PARTITION_KEY_BYTES,
    MAX_SORT_KEY_BYTES,
    NULL_BYTES,
    integer_set_size,
    integer_size,
    number_parts,
    number_size,
    parts_size,
    utf8_size,
)
from loader.models import Item, Key, KeySchema, KeyType

__all__ = [
    "BOOL_WORDS",
    "ColumnPlan",
    "Converted",
    "Converter",
    "RowConverter",
    "binary_attributes",
    "load_schema_file",
    "merge_types",
    "normalize_number",
    "parse_type_overrides",
    "schema_from_dict",
]

_SCHEMA_KEYS = ("columns", "rename", "empty", "set_delimiter")
_QUOTE_CHARS = 80

#: What a BOOL cell may say, lower-cased, and what it means; anything else is a RowError.
BOOL_WORDS: Mapping[str, bool] = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
}

#: (attribute value, its size in bytes, name size not included)
Converted = tuple[dict[str, Any], int]
Converter = Callable[[str], Converted]


# ----------------------------------------------------------------------------- schema files


def schema_from_dict(data: Mapping[str, Any]) -> SchemaSpec:
    """The ``--schema FILE`` JSON as a SchemaSpec. Type names may be given in any case."""
    if not isinstance(data, Mapping):
        raise ConfigError("schema: the file must hold a JSON object")
    unknown = [k for k in data if k not in _SCHEMA_KEYS]
    if unknown:
        raise ConfigError(f"schema: unknown key {unknown[0]!r}; allowed keys are {', '.join(_SCHEMA_KEYS)}")
    kwargs: dict[str, Any] = {}
    if "columns" in data:
        kwargs["columns"] = {
            col: _column_type(typ, f"schema: columns[{col!r}]")
            for col, typ in _str_map(data["columns"], "columns", "column names to types").items()
        }
    if "rename" in data:
        kwargs["rename"] = _str_map(data["rename"], "rename", "column names to attribute names")
    for name in ("empty", "set_delimiter"):
        if name in data:
            if not isinstance(data[name], str):
                raise ConfigError(f"schema: {name!r} must be a string, got {type(data[name]).__name__}")
            kwargs[name] = data[name]
    return SchemaSpec(**kwargs)


def load_schema_file(path: str) -> SchemaSpec:
    """Read and check a ``--schema`` file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"--schema {path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"--schema {path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--schema {path}: must hold a JSON object, got {type(data).__name__}")
    return schema_from_dict(data)


def parse_type_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["price=N", "tags=ss"]`` from repeated ``--type`` options -> ``{"price": "N", "tags": "SS"}``."""
    out: dict[str, str] = {}
    for item in items:
        col, sep, typ = item.rpartition("=")
        if not sep or not col:
            raise ConfigError(f"--type {item!r}: use COLUMN=TYPE, e.g. price=N")
        t = _column_type(typ, f"--type {item!r}")
        if out.get(col, t) != t:
            raise ConfigError(f"--type gives column {col!r} two types: {out[col]} and {t}")
        out[col] = t
    return out


def merge_types(spec: SchemaSpec, overrides: Mapping[str, str]) -> SchemaSpec:
    """The schema with ``--type`` overrides applied; an override beats the file."""
    columns: dict[str, ColumnType] = dict(spec.columns)
    for col, typ in overrides.items():
        columns[col] = _column_type(typ, f"--type {col}={typ}")
    return dataclasses.replace(spec, columns=columns)


def _column_type(value: Any, where: str) -> ColumnType:
    if isinstance(value, str) and value.upper() in COLUMN_TYPES:
        return cast(ColumnType, value.upper())
    raise ConfigError(f"{where}: type {value!r} is not one of {', '.join(COLUMN_TYPES)}")


def _str_map(value: Any, key: str, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"schema: {key!r} must be an object mapping {what} (strings)")
    return dict(value)


# ----------------------------------------------------------------------------- numbers


def binary_attributes(spec: SchemaSpec, keys: KeySchema) -> frozenset[str]:
    """Attributes that hold B values (schema columns after ``rename``, and B keys): the ones the
    aiobotocore sender must turn from base64 text into bytes."""
    names = {spec.rename.get(c, c) for c, t in spec.columns.items() if t == "B"}
    if keys.partition_type == "B":
        names.add(keys.partition)
    if keys.sort is not None and keys.sort_type == "B":
        names.add(keys.sort)
    return frozenset(names)


def _q(value: str) -> str:
    """A cell quoted for a reject reason, cut to about 80 characters."""
    if len(value) > _QUOTE_CHARS:
        value = value[: _QUOTE_CHARS - 3] + "..."
    return repr(value)


def _number(text: str, where: str) -> tuple[bool, str, int]:
    """``number_parts`` of a stripped cell; a RowError quoting it and saying where, if refused."""
    try:
        return number_parts(text)
    except ValueError as exc:
        raise RowError(f"{_q(text)} {where} {exc}") from None


def _canonical(negative: bool, sig: str, adj: int) -> str:
    """The text of the number whose ``number_parts`` these are, the same for equal values."""
    if not sig:
        return "0"
    last = adj - len(sig) + 1  # power of ten of the last significant digit
    if last >= 0 and adj <= 40:
        body = sig + "0" * last
    elif last < 0 and -40 <= adj <= 40:
        body = sig[: adj + 1] + "." + sig[adj + 1 :] if adj >= 0 else "0." + "0" * (-adj - 1) + sig
    else:
        body = (sig[0] + "." + sig[1:] if len(sig) > 1 else sig) + f"E{adj:+d}"
    return "-" + body if negative else body


def normalize_number(text: str) -> str:
    """The canonical text of a valid DynamoDB number: "1", "1.0", "01", "+1e0" are all "1".

    Equal values give equal text. Surrounding whitespace is ignored. Raises RowError.
    """
    return _canonical(*_number(text.strip(), "is not a valid DynamoDB number and"))


# ----------------------------------------------------------------------------- converters


def _make_converter(typ: ColumnType, col: str, delimiter: str) -> Converter:
    """The converter of one non-key, non-S column; it gets a stripped, non-empty cell."""
    where = f"in column {col!r}"

    if typ == "N":

        def conv_n(v: str) -> Converted:
            try:
                return {"N": v}, number_size(v)
            except ValueError as exc:
                raise RowError(f"{_q(v)} {where} {exc}") from None

        return conv_n
    if typ == "BOOL":

        def conv_bool(v: str) -> Converted:
            b = BOOL_WORDS.get(v.lower())
            if b is None:
                raise RowError(f"{_q(v)} {where} is not a boolean (use true/false, 1/0 or yes/no)")
            return {"BOOL": b}, BOOL_BYTES

        return conv_bool
    if typ == "NULL":

        def conv_null(v: str) -> Converted:
            if v.lower() != "null":
                raise RowError(f"{_q(v)} {where} is not null (a NULL column takes an empty cell or 'null')")
            return {"NULL": True}, NULL_BYTES

        return conv_null
    if typ == "B":

        def conv_b(v: str) -> Converted:
            data = _b64(v, where)
            return {"B": base64.b64encode(data).decode("ascii")}, len(data)

        return conv_b
    if typ == "JSON":

        def conv_json(v: str) -> Converted:
            return _json_cell(v, col)

        return conv_json
    if typ == "SS":
        dsize = utf8_size(delimiter)

        def conv_ss(v: str) -> Converted:
            parts = v.split(delimiter)
            if "" in parts:
                raise RowError(f"{_q(v)} {where} has an empty set element (delimiter {delimiter!r})")
            elems = list(dict.fromkeys(parts))
            if len(elems) == len(parts):  # no repeats: the elements' sizes are the cell's minus delimiters
                return {"SS": elems}, (len(v) if v.isascii() else len(v.encode())) - dsize * (len(parts) - 1)
            return {"SS": elems}, sum(map(utf8_size, elems))

        return conv_ss
    if typ == "NS":

        def conv_ns(v: str) -> Converted:
            parts = v.split(delimiter)
            joined = v.replace(delimiter, "") if len(parts) > 1 else v
            if joined.isdigit() and joined.isascii() and "" not in parts:
                # plain non-negative integers (most set elements): the canonical text of each is
                # itself without leading zeros
                fast: dict[str, str] = {}
                for p in parts:
                    if len(p) > MAX_NUMBER_DIGITS:
                        break
                    d = p.lstrip("0")
                    if d not in fast:
                        fast[d] = p
                else:
                    return {"NS": list(fast.values())}, integer_set_size(fast)
            seen: dict[str, str] = {}
            size = 0
            for part in parts:
                p = part.strip()
                if not p:
                    raise RowError(f"{_q(v)} {where} has an empty set element (delimiter {delimiter!r})")
                parsed = _number(p, where)
                canon = _canonical(*parsed)
                if canon not in seen:
                    seen[canon] = p
                    size += parts_size(*parsed)
            return {"NS": list(seen.values())}, size

        return conv_ns
    raise AssertionError(f"no converter for {typ}")  # pragma: no cover - S has its own fast path


def _b64(v: str, where: str) -> bytes:
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise RowError(f"{_q(v)} {where} is not valid base64") from None


class _JsonNumber(str):
    """A JSON number's exact text, kept apart from JSON strings."""

    __slots__ = ()


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


#: Only a JSON cell whose numbers a float holds exactly takes the orjson fast path (measured: ~4x
#: faster than json.loads with exact number hooks on the benchmark's JSON column): no run of 16+
#: digits/points and no digit or point before an exponent letter. Anything else is parsed with
#: exact number text. The test maps digits and points to "0" and "eE" to "e", then looks for 16
#: "0"s or "0e" (the regex ``\d[\d.]{15}|\d[eE]`` did the same in 2.1 us a cell, this in 1.3).
_JSON_SHAPE = bytes.maketrans(b"0123456789.eE", b"00000000000ee")


class _NotFast(Exception):
    """The fast JSON path declines; the exact path decides (and explains any error)."""


def _json_fast(obj: Any, depth: int) -> Converted:
    """A parsed JSON container (orjson: dict or list) as DynamoDB M / L, with its size.

    Leaves are handled inline in the loops (not by a call per value): a call per node was half of
    this column's cost on the benchmark's JSON column. The two loops repeat the leaf chain on
    purpose: one loop over ``values()`` feeding ``dict(zip(...))``, with a call per container for
    it, measured 10.8 against 7.4-8.0 us a cell. For the same reason ``utf8_size`` is written out
    for names and strings (a call for each was ~15% of this column). Numbers come from a float or
    int that holds the cell's text exactly (see _JSON_SHAPE), so ``repr`` is the same decimal value.
    """
    depth += 1
    if depth > MAX_NESTING:
        raise _NotFast
    size = CONTAINER_BYTES + ELEMENT_BYTES * len(obj)
    if type(obj) is dict:
        members: dict[str, dict[str, Any]] = {}
        for k, x in obj.items():
            if not k:
                raise _NotFast
            size += len(k) if k.isascii() else len(k.encode())
            t = type(x)
            if t is str:
                members[k] = {"S": x}
                size += len(x) if x.isascii() else len(x.encode())
            elif t is bool:
                members[k] = {"BOOL": x}
                size += BOOL_BYTES
            elif t is int:
                text = repr(x)
                members[k] = {"N": text}
                size += integer_size(text)
            elif x is None:
                members[k] = {"NULL": True}
                size += NULL_BYTES
            elif t is float:
                text = repr(x)
                members[k] = {"N": text}
                size += number_size(text)
            else:
                value, vsize = _json_fast(x, depth)
                members[k] = value
                size += vsize
        return {"M": members}, size
    items: list[dict[str, Any]] = []
    append = items.append
    for x in obj:
        t = type(x)
        if t is str:
            append({"S": x})
            size += len(x) if x.isascii() else len(x.encode())
        elif t is bool:
            append({"BOOL": x})
            size += BOOL_BYTES
        elif t is int:
            text = repr(x)
            append({"N": text})
            size += integer_size(text)
        elif x is None:
            append({"NULL": True})
            size += NULL_BYTES
        elif t is float:
            text = repr(x)
            append({"N": text})
            size += number_size(text)
        else:
            value, vsize = _json_fast(x, depth)
            append(value)
            size += vsize
    return {"L": items}, size


def _json_cell(v: str, col: str) -> Converted:
    try:
        shape = v.encode().translate(_JSON_SHAPE)
    except UnicodeEncodeError:
        shape = b"0e"  # a lone surrogate: the exact path says what is wrong
    if b"0000000000000000" not in shape and b"0e" not in shape:
        try:
            obj = orjson.loads(v)
            t = type(obj)
            if t is dict or t is list:
                return _json_fast(obj, 0)
            if t is str:
                return {"S": obj}, utf8_size(obj)
            if t is bool:
                return {"BOOL": obj}, BOOL_BYTES
            if obj is None:
                return {"NULL": True}, NULL_BYTES
            text = repr(obj)  # int or float
            return {"N": text}, number_size(text)
        except (ValueError, _NotFast, RecursionError):
            pass  # not JSON, a number DynamoDB refuses, ...: the exact path gives the precise reason
    try:
        obj = json.loads(v, parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_json_constant)
    except ValueError as exc:
        raise RowError(f"{_q(v)} in column {col!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise RowError(f"{_q(v)} in column {col!r} is nested too deeply") from None
    try:
        return _json_value(obj, v, col, 0)
    except UnicodeEncodeError:
        raise RowError(f"{_q(v)} in column {col!r} holds a string that is not valid Unicode text") from None


def _json_value(obj: Any, cell: str, col: str, depth: int) -> Converted:
    if isinstance(obj, str):
        if type(obj) is _JsonNumber:
            parsed = _number(str(obj), f"in JSON column {col!r}")
            return {"N": str(obj)}, parts_size(*parsed)
        return {"S": str(obj)}, utf8_size(obj)
    if obj is True or obj is False:
        return {"BOOL": obj}, BOOL_BYTES
    if obj is None:
        return {"NULL": True}, NULL_BYTES
    depth += 1
    if depth > MAX_NESTING:
        raise RowError(
            f"{_q(cell)} in column {col!r} nests more than {MAX_NESTING} arrays/objects "
            "(DynamoDB allows 32 levels)"
        )
    size = CONTAINER_BYTES
    if isinstance(obj, list):
        items: list[dict[str, Any]] = []
        for x in obj:
            value, vsize = _json_value(x, cell, col, depth)
            items.append(value)
            size += ELEMENT_BYTES + vsize
        return {"L": items}, size
    members: dict[str, dict[str, Any]] = {}
    for k, x in cast(dict[str, Any], obj).items():
        if not k:
            raise RowError(f"{_q(cell)} in column {col!r} has an empty object key (DynamoDB refuses it)")
        value, vsize = _json_value(x, cell, col, depth)
        members[k] = value
        size += ELEMENT_BYTES + utf8_size(k) + vsize
    return {"M": members}, size


# ----------------------------------------------------------------------------- row converter


def _key_number(v: str, label: str) -> tuple[str, str, int]:
    """A number key cell: ``(text to write, canonical text, size)``."""
    t = v.strip()
    if not t:
        raise RowError(f"empty {label}")
    if t.isdigit() and t.isascii() and len(t) <= MAX_NUMBER_DIGITS:
        return t, t.lstrip("0") or "0", integer_size(t)
    parsed = _number(t, f"in {label}")
    return t, _canonical(*parsed), parts_size(*parsed)


def _key_binary(v: str, label: str, limit: int) -> tuple[str, int]:
    """A binary key cell: ``(canonical base64, decoded size)``."""
    t = v.strip()
    if not t:
        raise RowError(f"empty {label}")
    data = _b64(t, f"in {label}")
    if not data:
        raise RowError(f"empty {label}")
    if len(data) > limit:
        raise RowError(f"{label} is {len(data)} bytes; DynamoDB allows at most {limit}")
    return base64.b64encode(data).decode("ascii"), len(data)


def _not_unicode(names: list[str], fields: list[str]) -> str:
    for name, cell in zip(names, fields, strict=False):
        try:
            cell.encode()
        except UnicodeEncodeError:
            return f"{_q(cell)} for attribute {name!r} is not valid Unicode text"
    return "a cell holds a JSON string that is not valid Unicode text"


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
    """What a RowConverter does with each column, for code that types rows another way
    (``loader.blocks``). The item's attributes come in this order: keys, strings, typed."""

    width: int
    #: (index, attribute name, key type, label for errors, size limit): partition key, then sort key
    keys: tuple[tuple[int, str, KeyType, str, int], ...]
    #: (index, attribute name, name size): non-key S columns in header order
    strings: tuple[tuple[int, str, int], ...]
    #: (index, attribute name, column name, type): the other non-key columns in header order
    typed: tuple[tuple[int, str, str, ColumnType], ...]
    empty: str
    delimiter: str

    def cell_converter(self, col: str, typ: ColumnType) -> Converter:
        """The converter RowConverter uses for a stripped, non-empty cell of a typed column."""
        return _make_converter(typ, col, self.delimiter)


class RowConverter:
    """Turns CSV rows (lists of fields) into ``(item, canonical key, size)``.

    ``attribute_names`` are the item's attribute names in header order (after ``rename``).

    ``convert`` is a closure made once per converter over the plan's columns (``_row_function``).
    """

    def __init__(self, spec: SchemaSpec, header: Sequence[str], keys: KeySchema) -> None:
        header = list(header)
        columns = ", ".join(header)
        for what, names in (("columns", spec.columns), ("rename", spec.rename)):
            for col in names:
                if col not in header:
                    raise ConfigError(
                        f"schema {what} names column {col!r}, which is not in the header: "
                        f"columns are {columns}"
                    )
        attrs = [spec.rename.get(col, col) for col in header]
        first: dict[str, int] = {}
        for i, attr in enumerate(attrs):
            if not attr:
                raise ConfigError(
                    f"column {i + 1} of the header has an empty attribute name; "
                    "give it a name with the schema's rename (or fix the header)"
                )
            try:
                attr.encode()
            except UnicodeEncodeError:
                raise ConfigError(
                    f"column {i + 1} of the header, {attr!r}, is not valid Unicode text"
                ) from None
            if attr in first:
                j = first[attr]
                raise ConfigError(
                    f"columns {header[j]!r} (#{j + 1}) and {header[i]!r} (#{i + 1}) both become attribute "
                    f"{attr!r}; rename one of them"
                )
            first[attr] = i
        self.attribute_names: list[str] = attrs

        key_cols: list[tuple[int, str, KeyType, str, int]] = []
        for role, name, ktype, limit in (
            ("partition key", keys.partition, keys.partition_type, MAX_PARTITION_KEY_BYTES),
            ("sort key", keys.sort, keys.sort_type, MAX_SORT_KEY_BYTES),
        ):
            if name is None:
                continue
            if ktype not in ("S", "N", "B"):
                raise ConfigError(f"the table's {role} {name!r} has type {ktype!r}; expected S, N or B")
            if name not in first:
                raise ConfigError(
                    f"key column {name!r} is not in the header: columns are {columns}"
                    + (f" (after rename: {', '.join(attrs)})" if spec.rename else "")
                )
            idx = first[name]
            typ = spec.columns.get(header[idx])
            if typ is not None and typ != ktype:
                raise ConfigError(
                    f"column {header[idx]!r} is typed {typ} in the schema, but the table's {role} "
                    f"{name!r} is {ktype}; change the schema to {ktype} or drop the type"
                )
            key_cols.append((idx, name, ktype, f"{role} {name!r}", limit))
        _check_index_keys(spec, header, first, keys)

        key_indexes = {k[0] for k in key_cols}
        s_cols: list[tuple[int, str, int]] = []
        typed_cols: list[tuple[int, str, str, ColumnType]] = []
        for i, (col, attr) in enumerate(zip(header, attrs, strict=True)):
            if i in key_indexes:
                continue
            typ = spec.columns.get(col, "S")
            if typ == "S":
                s_cols.append((i, attr, utf8_size(attr)))
            else:
                typed_cols.append((i, attr, col, typ))
        self.plan = ColumnPlan(
            width=len(header),
            keys=tuple(key_cols),
            strings=tuple(s_cols),
            typed=tuple(typed_cols),
            empty=spec.empty,
            delimiter=spec.set_delimiter,
        )
        self._convert = _row_function(self.plan)

    def convert(self, fields: list[str]) -> tuple[Item, Key, int]:
        """One row as ``(wire-JSON item, canonical key, item size in bytes)``; RowError if it can't be."""
        try:
            return self._convert(fields)
        except UnicodeEncodeError:
            # a lone surrogate (text decoded with errors="surrogateescape", or a JSON "\ud800")
            raise RowError(_not_unicode(self.attribute_names, fields)) from None


def _check_index_keys(spec: SchemaSpec, header: list[str], first: Mapping[str, int], keys: KeySchema) -> None:
    """ConfigError unless every column that becomes a secondary index key has the key's type.

    DynamoDB refuses an item whose index key attribute has another type (even a JSON value that
    happens to be a number), so a mismatch would reject every row that has the attribute, one
    bisected batch at a time. An index key that no column becomes is fine: the index is sparse.
    """
    problems: list[str] = []
    for attr, ktype in keys.index_keys.items():
        if attr in keys.names or attr not in first:
            continue  # the table's own keys are checked above; an absent attribute is sparse
        col = header[first[attr]]
        declared = spec.columns.get(col)
        typ = declared or "S"
        if typ == ktype:
            continue
        names = keys.index_names.get(attr, ())
        which = ("indexes " if len(names) > 1 else "index ") + ", ".join(map(repr, names))
        renamed = f" becomes attribute {attr!r}, which" if attr != col else ""
        if declared is None:
            read = "is read as S (the default type)"
        elif declared == "JSON":
            read = "is typed JSON, which writes each cell as the type its value has"
        else:
            read = f"is typed {declared}"
        fix = f"--type {col}={ktype}"
        if ktype == "S" and declared is not None:
            fix += " or drop its type"
        problems.append(
            f"column {col!r}{renamed} is a key of {which}, declared {ktype} in the table, but the "
            f"column {read}: DynamoDB refuses every item whose {attr!r} is not {ktype}; give the column "
            f'type {ktype} ({fix}, or "columns": {{{orjson.dumps(col).decode()}: "{ktype}"}} in the schema)'
        )
    if problems:
        raise ConfigError("; ".join(problems))


def _row_function(plan: ColumnPlan) -> Callable[[list[str]], tuple[Item, Key, int]]:
    """The row conversion ``RowConverter.convert`` runs for ``plan``: keys, then strings, then the
    typed columns, each in header order (the order ``loader.blocks`` writes them in too).

    Plain closures over the plan, no generated code: a string cell costs no call, a typed cell
    at most one or two. It runs for every row on the reference path and in ``validate``, and for
    the rows the block typer declines.
    """
    width = plan.width
    wrong_width = f"expected {width} fields, got "
    keys = plan.keys
    # names of the keys and string columns are in every item
    fixed = sum(utf8_size(k[1]) for k in keys) + sum(c[2] for c in plan.strings)
    single_s_key = len(keys) == 1 and keys[0][2] == "S"
    k_index, k_name, _, k_label, k_limit = keys[0]
    k_empty = "empty " + k_label
    strings = plan.strings
    s_names = [c[1] for c in strings]
    # a tuple of the string cells, in C
    s_cells = itemgetter(*(c[0] for c in strings)) if len(strings) > 1 else None
    s_index = strings[0][0] if len(strings) == 1 else -1
    omit = plan.empty == "omit"
    fix_empty = bool(strings) and plan.empty != "empty-string"
    n_kind, bool_kind, other_kind = 0, 1, 2
    typed = [
        (
            i,
            name,
            utf8_size(name),
            n_kind if typ == "N" else bool_kind if typ == "BOOL" else other_kind,
            plan.cell_converter(col, typ),
            f"in column {col!r}",
            utf8_size(name) + NULL_BYTES if typ == "NULL" or plan.empty == "null" else 0,
        )
        for i, name, col, typ in plan.typed
    ]

    def convert(fields: list[str]) -> tuple[Item, Key, int]:
        if len(fields) != width:
            raise RowError(wrong_width + str(len(fields)))
        size = fixed
        if single_s_key:
            v = fields[k_index]
            if not v:
                raise RowError(k_empty)
            n = len(v) if v.isascii() else len(v.encode())  # utf8_size, written out: once per row
            if n > k_limit:
                raise RowError(f"{k_label} is {n} bytes; DynamoDB allows at most {k_limit}")
            item: Item = {k_name: {"S": v}}
            key: Key = (v,)
            size += n
        else:
            item, key, n = _keys(keys, fields)
            size += n
        if strings:
            values: Sequence[str] = s_cells(fields) if s_cells is not None else (fields[s_index],)
            for name, v in zip(s_names, values, strict=True):
                item[name] = {"S": v}
            joined = "".join(values)
            size += len(joined) if joined.isascii() else len(joined.encode())
            if fix_empty and "" in values:
                for (_, name, nsize), v in zip(strings, values, strict=True):
                    if not v:
                        if omit:
                            del item[name]
                            size -= nsize
                        else:  # null
                            item[name] = {"NULL": True}
                            size += NULL_BYTES
        for i, name, nsize, kind, cell, where, absent in typed:
            t = fields[i].strip()
            if t:
                if kind == n_kind:
                    item[name] = {"N": t}
                    if t.isdigit() and t.isascii() and len(t) <= MAX_NUMBER_DIGITS:
                        size += nsize + integer_size(t)
                    else:
                        try:
                            size += nsize + number_size(t)
                        except ValueError as exc:
                            raise RowError(f"{_q(t)} {where} {exc}") from None
                elif kind == bool_kind and (b := BOOL_WORDS.get(t)) is not None:
                    item[name] = {"BOOL": b}
                    size += nsize + BOOL_BYTES
                else:  # the other types, and BOOL cells in other spellings (or wrong)
                    item[name], n = cell(t)
                    size += nsize + n
            elif absent:
                item[name] = {"NULL": True}
                size += absent
        if size > MAX_ITEM_BYTES:
            raise RowError(
                f"item is {size} bytes by DynamoDB's size rules; the limit is {MAX_ITEM_BYTES} (400 KB)"
            )
        return item, key, size

    return convert


def _keys(keys: tuple[tuple[int, str, KeyType, str, int], ...], fields: list[str]) -> tuple[Item, Key, int]:
    """The key attributes of a row: ``(item holding them, canonical key, their values' size)``."""
    item: Item = {}
    canonical: list[str] = []
    size = 0
    for i, name, ktype, label, limit in keys:
        v = fields[i]
        if ktype == "S":
            if not v:
                raise RowError("empty " + label)
            n = utf8_size(v)
            if n > limit:
                raise RowError(f"{label} is {n} bytes; DynamoDB allows at most {limit}")
            item[name] = {"S": v}
            canonical.append(v)
        elif ktype == "N":
            text, k, n = _key_number(v, label)
            item[name] = {"N": text}
            canonical.append(k)
        else:
            k, n = _key_binary(v, label, limit)
            item[name] = {"B": k}
            canonical.append(k)
        size += n
    return item, tuple(canonical), size
