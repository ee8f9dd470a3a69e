"""Load settings and the DynamoDB service limits the loader enforces before it sends."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Literal

from loader.errors import ConfigError

#: BatchWriteItem: at most 25 put requests per call.
MAX_BATCH_ITEMS = 25
#: BatchWriteItem: at most 16 MB per request.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: An item is at most 400 KB, measured by DynamoDB's size rules (names + values).
MAX_ITEM_BYTES = 400 * 1024
#: A partition key value is at most 2048 bytes, a sort key value at most 1024 bytes.
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
#: Numbers have at most 38 significant digits and magnitude within 1E-130 .. 9.99..E+125.
MAX_NUMBER_DIGITS = 38

DuplicatePolicy = Literal["last", "first", "error"]
EmptyPolicy = Literal["omit", "null", "empty-string"]
ColumnType = Literal["S", "N", "BOOL", "NULL", "JSON", "SS", "NS", "B"]
COLUMN_TYPES: tuple[str, ...] = ("S", "N", "BOOL", "NULL", "JSON", "SS", "NS", "B")


@dataclass(frozen=True, kw_only=True)
class SchemaSpec:
    """How CSV columns become attributes. Columns not named in ``columns`` are strings (S).

    ``empty`` says what an empty cell becomes: ``omit`` (no attribute, the default), ``null``
    (``{"NULL": true}``) or ``empty-string`` (``{"S": ""}``; for S columns only, others omit).
    A key column's cell may never be empty.
    """

    columns: dict[str, ColumnType] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    empty: EmptyPolicy = "omit"
    set_delimiter: str = "|"

    def __post_init__(self) -> None:
        for col, typ in self.columns.items():
            if typ not in COLUMN_TYPES:
                raise ConfigError(
                    f"schema: column {col!r} has type {typ!r}; use one of {', '.join(COLUMN_TYPES)}"
                )
        if self.empty not in ("omit", "null", "empty-string"):
            raise ConfigError(f"schema: empty={self.empty!r}; use omit, null or empty-string")
        if not self.set_delimiter:
            raise ConfigError("schema: set_delimiter may not be empty")
        targets = [self.rename.get(c, c) for c in self.rename]
        if len(set(targets)) != len(targets):
            raise ConfigError("schema: rename maps two columns to the same attribute")


@dataclass(frozen=True, kw_only=True)
class CsvSpec:
    """How the bytes are read as CSV.

    ``encoding`` must be ASCII-compatible (utf-8, latin-1, cp1252, ...): records are split on
    the byte ``\\n`` before decoding so that every record's byte offset is exact. A UTF-8 BOM
    at the start of the object is dropped. ``columns`` is required when ``header`` is False.
    ``compression`` is ``infer`` (by extension: .gz, .zst, .bz2), ``none``, or one of those.
    """

    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    columns: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    compression: Literal["infer", "none", "gzip", "zstd", "bz2"] = "infer"

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in ("\n", "\r", self.quotechar):
            raise ConfigError(
                f"--delimiter must be one character other than newline and quote, got {self.delimiter!r}"
            )
        try:
            info = codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(f"--encoding {self.encoding!r} is not a known encoding") from None
        if info.name.startswith(("utf-16", "utf-32")):
            raise ConfigError(
                f"--encoding {self.encoding!r} is not ASCII-compatible; convert the file to UTF-8"
            )
        if not self.header and not self.columns:
            raise ConfigError("--no-header needs --columns a,b,c")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ConfigError("--columns names a column twice")


@dataclass(frozen=True, kw_only=True)
class LoadConfig:
    """One load's settings.

    Memory in flight is bounded here: at most ``concurrency`` batches are being sent, plus
    ``queue_batches`` built batches waiting, each at most 25 items of at most 400 KB (in
    practice a few KB: 40 + 80 batches of 25 x 1 KB rows is about 3 MB), plus ``read_ahead``
    source chunks of ``chunk_bytes`` each.
    """

    table: str
    concurrency: int = 40
    max_wcu: float | None = None
    on_duplicate: DuplicatePolicy = "last"
    max_rejects: int | None = None
    dry_run: bool = False
    #: writer retry policy: attempts per batch for throttles/unprocessed/transient errors
    max_attempts: int = 12
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 20.0
    #: the checkpoint file is rewritten at most this often while the load advances
    checkpoint_interval_s: float = 5.0
    #: how often ``should_stop`` is also asked while the reader waits on the writer
    stop_poll_s: float = 0.25
    chunk_bytes: int = 1 << 20
    read_ahead: int = 4
    queue_batches: int = 80

    def __post_init__(self) -> None:
        if not self.table:
            raise ConfigError("--table is required")
        if not 1 <= self.concurrency <= 1024:
            raise ConfigError(f"--concurrency must be 1..1024, got {self.concurrency}")
        if self.max_wcu is not None and self.max_wcu <= 0:
            raise ConfigError(f"--max-wcu must be positive, got {self.max_wcu}")
        if self.on_duplicate not in ("last", "first", "error"):
            raise ConfigError(f"--on-duplicate must be last, first or error, got {self.on_duplicate!r}")
        if self.max_rejects is not None and self.max_rejects < 0:
            raise ConfigError(f"--max-rejects must be >= 0, got {self.max_rejects}")
        if self.max_attempts < 1:
            raise ConfigError(f"--max-attempts must be >= 1, got {self.max_attempts}")
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ConfigError("--backoff-base must be positive and at most --backoff-cap")
        if self.chunk_bytes < 4096 or self.read_ahead < 1 or self.queue_batches < 1:
            raise ConfigError("chunk_bytes >= 4096, read_ahead >= 1 and queue_batches >= 1 are required")
