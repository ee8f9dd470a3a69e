"""Deterministic CSV data for benchmarks: N rows, chosen column types, item size, key distribution.

``python -m benchmarks gen --rows 1000000 --out data.csv[.gz] [--columns name:S,score:N,...]
[--item-bytes 300] [--keys random|sorted|hot] [--rows-per-key 1] [--hot-keys 8] [--seed 1]``
writes the CSV and, beside it, ``<out>.schema.json`` in the ``s3ddb --schema`` format
(``{"columns": {...}, "set_delimiter": "|"}``) and ``<out>.meta.json`` (rows, the table key to
create, the seed). The same arguments always give the same bytes (gzip written with mtime 0).

Every row has the key columns ``pk`` (S) and ``sk`` (N, the row number, so keys never repeat):

* ``random``: ``pk`` is a random 16-hex-digit id, the table key is ``pk``;
* ``sorted``: ``pk`` is ``k`` + a zero-padded number, in order (a file sorted by partition key: a
  rolling hot partition). With ``--rows-per-key K`` (default 1) K consecutive rows share each
  ``pk`` (the number is the row number // K) and the table key is ``pk`` + ``sk``; with K = 1 it
  is the row number and the table key is ``pk``;
* ``hot``: ``pk`` is one of ``--hot-keys`` values, the table key is ``pk`` + ``sk``.

Column types: S (words), N (integers and decimals, some large), BOOL, JSON (a small object with
a nested list), SS and NS (1-4 elements joined by ``|``), B (base64), NULL (empty cells).
A ``payload`` S column pads each row to about ``--item-bytes``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import io
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

GEN_TYPES = ("S", "N", "BOOL", "JSON", "SS", "NS", "B", "NULL")
DEFAULT_COLUMNS = (
    ("name", "S"),
    ("score", "N"),
    ("active", "BOOL"),
    ("meta", "JSON"),
    ("tags", "SS"),
    ("nums", "NS"),
)
KEY_DISTRIBUTIONS = ("random", "sorted", "hot")
_POOL = 4096
_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "zürich",
    "café",
    "naïve",
    "東京",
    "données",
]


@dataclass(frozen=True, kw_only=True)
class Generated:
    """What ``generate`` wrote: paths, row count, and the table key the data wants."""

    path: str
    schema_path: str
    meta_path: str
    rows: int
    bytes: int
    key: tuple[tuple[str, str], ...]
    seconds: float


def _pool(rng: random.Random, typ: str) -> list[str]:
    """4096 ready-made cells of one type; rows pick from the pool (cheap, still varied)."""
    rr = rng.randrange
    words = _WORDS
    nw = len(words)
    out: list[str] = []
    for j in range(_POOL):
        if typ == "S":
            out.append(f"{words[rr(nw)]} {words[rr(nw)]} {j}")
        elif typ == "N":
            r = rr(100)
            if r < 60:
                out.append(str(rr(1_000_000)))
            elif r < 95:
                out.append(f"{rr(100_000)}.{rr(100):02d}")
            else:
                out.append(str(rr(10**37, 10**38)))  # 38 significant digits: DynamoDB's maximum
        elif typ == "BOOL":
            out.append("true" if j & 1 else "false")
        elif typ == "JSON":
            out.append(
                f'{{"w":"{words[rr(nw)]}","ok":{"true" if j & 1 else "false"},'
                f'"v":[{rr(1000)},{rr(1000)}.5,null],"m":{{"d":"x{j % 97}"}}}}'
            )
        elif typ == "SS":
            out.append("|".join(dict.fromkeys(words[rr(nw)] for _ in range(1 + rr(4)))))
        elif typ == "NS":
            out.append("|".join(dict.fromkeys(str(rr(10_000)) for _ in range(1 + rr(4)))))
        elif typ == "B":
            out.append(base64.b64encode(rng.randbytes(12)).decode("ascii"))
        else:  # NULL: an empty cell
            out.append("")
    return out


def parse_columns(spec: str) -> tuple[tuple[str, str], ...]:
    """``name:S,score:N`` -> (("name", "S"), ("score", "N"))."""
    out = []
    for part in spec.split(","):
        name, _, typ = part.strip().partition(":")
        typ = typ.upper() or "S"
        if not name or typ not in GEN_TYPES or name in ("pk", "sk", "payload"):
            raise ValueError(
                f"column {part!r}: want NAME:TYPE with TYPE in {','.join(GEN_TYPES)} (not pk/sk/payload)"
            )
        out.append((name, typ))
    return tuple(out)


def schema_for(columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The ``--schema`` JSON for these columns (``pk`` is S, ``sk`` N; NULL columns are left empty)."""
    types = {"sk": "N"}
    types.update({name: typ for name, typ in columns if typ != "NULL"})
    return {"columns": types, "set_delimiter": "|", "empty": "omit"}


def generate(
    path: str,
    *,
    rows: int,
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
    item_bytes: int = 300,
    keys: str = "random",
    hot_keys: int = 8,
    seed: int = 1,
    gzip_output: bool | None = None,
    rows_per_key: int = 1,
) -> Generated:
    """Write ``rows`` CSV rows to ``path`` (gzip when it ends in .gz, or when ``gzip_output``)."""
    if keys not in KEY_DISTRIBUTIONS:
        raise ValueError(f"keys={keys!r}: want one of {KEY_DISTRIBUTIONS}")
    if rows < 0 or hot_keys < 1 or rows_per_key < 1:
        raise ValueError("rows >= 0, hot_keys >= 1 and rows_per_key >= 1 are required")
    if rows_per_key > 1 and keys != "sorted":
        raise ValueError(f"rows_per_key={rows_per_key} needs keys='sorted', not {keys!r}")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    pools = [_pool(rng, typ) for _, typ in columns]
    header = ["pk", "sk", *(name for name, _ in columns), "payload"]
    use_gzip = path.endswith(".gz") if gzip_output is None else gzip_output
    raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed below, wrapped by gzip
    try:
        sink: Any = (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=1) if use_gzip else raw
        )
        text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=False)
        w = csv.writer(text, lineterminator="\n")
        w.writerow(header)
        getrandbits = rng.getrandbits
        hot = [f"hot-{h:03d}" for h in range(hot_keys)]
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 "
        pad_source = "".join(rng.choice(alphabet) for _ in range(4096)) * (1 + item_bytes // 4096)
        est = 60 + 25 * len(columns)  # typical bytes of the other cells
        pad_len = max(0, item_bytes - est)
        block: list[list[str]] = []
        for i in range(rows):
            if keys == "random":
                pk = f"{getrandbits(64):016x}"
            elif keys == "sorted":
                pk = f"k{i // rows_per_key:012d}"
            else:
                pk = hot[getrandbits(16) % hot_keys]
            off = getrandbits(12)
            block.append([pk, str(i), *[p[getrandbits(12)] for p in pools], pad_source[off : off + pad_len]])
            if len(block) == 4096:
                w.writerows(block)
                block.clear()
        w.writerows(block)
        text.flush()
        text.detach()
        if use_gzip:
            sink.close()
    finally:
        raw.close()
    compound = keys == "hot" or rows_per_key > 1
    key = (("pk", "S"), ("sk", "N")) if compound else (("pk", "S"),)
    schema_path = path + ".schema.json"
    meta_path = path + ".meta.json"
    with open(schema_path, "w", encoding="utf-8") as f:
        json.dump(schema_for(columns), f, indent=1)
    meta = {
        "rows": rows,
        "key": [list(k) for k in key],
        "keys": keys,
        "rows_per_key": rows_per_key,
        "columns": [list(c) for c in columns],
        "item_bytes": item_bytes,
        "seed": seed,
    }
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return Generated(
        path=path,
        schema_path=schema_path,
        meta_path=meta_path,
        rows=rows,
        bytes=os.path.getsize(path),
        key=key,
        seconds=time.perf_counter() - t0,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks gen", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", required=True, help="CSV path; .gz compresses")
    p.add_argument(
        "--columns", type=parse_columns, default=DEFAULT_COLUMNS, help="e.g. name:S,score:N,tags:SS"
    )
    p.add_argument("--item-bytes", type=int, default=300, help="approximate bytes per row")
    p.add_argument("--keys", choices=KEY_DISTRIBUTIONS, default="random")
    p.add_argument(
        "--rows-per-key",
        type=int,
        default=1,
        help="with --keys sorted: consecutive rows sharing each pk (table key pk + sk when > 1)",
    )
    p.add_argument("--hot-keys", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gzip", action="store_true", help="compress even without a .gz name")
    a = p.parse_args(argv)
    g = generate(
        a.out,
        rows=a.rows,
        columns=a.columns,
        item_bytes=a.item_bytes,
        keys=a.keys,
        hot_keys=a.hot_keys,
        seed=a.seed,
        gzip_output=True if a.gzip else None,
        rows_per_key=a.rows_per_key,
    )
    print(
        json.dumps(
            {
                "path": g.path,
                "schema": g.schema_path,
                "meta": g.meta_path,
                "rows": g.rows,
                "bytes": g.bytes,
                "key": g.key,
                "seconds": round(g.seconds, 2),
            }
        )
    )
    return 0
