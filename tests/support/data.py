"""Test data: CSV bytes and the items a correct load must produce from them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any


def csv_bytes(
    header: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    *,
    delimiter: str = ",",
    newline: str = "\n",
    encoding: str = "utf-8",
) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator=newline)
    if header is not None:
        w.writerow(header)
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode(encoding)


def simple_rows(n: int, *, start: int = 0) -> list[tuple[str, str, str]]:
    """Rows (pk, n, s) with distinct keys; n is a number column, s a text column."""
    return [(f"k{i:07d}", str(i * 7 - 3), f'text {i} ü "q", x') for i in range(start, start + n)]


def simple_expected(rows: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
    """What scan_all returns for simple_rows loaded with --type n=N, keyed by pk."""
    return {pk: {"pk": {"S": pk}, "n": {"N": n}, "s": {"S": s}} for pk, n, s in rows}


def by_pk(items: Iterable[dict[str, Any]], attr: str = "pk") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for it in items:
        (v,) = it[attr].values()
        out[str(v)] = it
    return out


def multiline_csv(n: int, *, tag: str = "", pad: int = 40) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """A CSV of ``n`` rows (pk, n, s) whose text fields are quoted and span lines (a newline, a
    comma and doubled quotes in each), padded by ``pad`` characters; and the items a load with
    ``n`` as a number must produce from it, keyed by pk."""
    rows = []
    expected: dict[str, dict[str, Any]] = {}
    filler = "x" * pad
    for i in range(n):
        pk = f"{tag}k{i:07d}"
        text = f'first line {i}, "quoted"\nsecond line {filler}'
        rows.append((pk, str(i * 3 - 7), text))
        expected[pk] = {"pk": {"S": pk}, "n": {"N": str(i * 3 - 7)}, "s": {"S": text}}
    return csv_bytes(("pk", "n", "s"), rows), expected
