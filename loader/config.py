"""Load settings and the DynamoDB service limits the loader enforces before it sends."""

from __future__ import annotations

import codecs
import functools
import math
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

    ``encoding`` must be an ASCII-compatible text encoding (utf-8, latin-1, cp1252, shift_jis,
    gb18030, ...): records are split on the byte ``\\n`` before decoding so that every record's
    byte offset is exact, so the byte ``\\n`` must always be a newline and a newline always that
    byte. See ``_encoding_problem`` for what is refused and why. A UTF-8 BOM at the start of the
    object is dropped. ``columns`` is required when ``header`` is False.
    ``compression`` is ``infer`` (by extension: .gz, .zst, .bz2), ``none``, or one of those.
    """

    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    columns: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    compression: Literal["infer", "none", "gzip", "zstd", "bz2"] = "infer"

    def __post_init__(self) -> None:
        if len(self.quotechar) != 1 or self.quotechar in ("\n", "\r"):
            raise ConfigError(
                f"the quote character must be one character other than newline, got {self.quotechar!r}"
            )
        if len(self.delimiter) != 1 or self.delimiter in ("\n", "\r", self.quotechar):
            raise ConfigError(
                f"--delimiter must be one character other than newline and quote, got {self.delimiter!r}"
            )
        problem = _encoding_problem(self.encoding)
        if problem is not None:
            raise ConfigError(f"--encoding {self.encoding!r} {problem}")
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
        if self.max_wcu is not None:
            _positive("--max-wcu", self.max_wcu)
        if self.on_duplicate not in ("last", "first", "error"):
            raise ConfigError(f"--on-duplicate must be last, first or error, got {self.on_duplicate!r}")
        if self.max_rejects is not None and self.max_rejects < 0:
            raise ConfigError(f"--max-rejects must be >= 0, got {self.max_rejects}")
        if self.max_attempts < 1:
            raise ConfigError(f"--max-attempts must be >= 1, got {self.max_attempts}")
        _positive("--backoff-base", self.backoff_base_s)
        _positive("--backoff-cap", self.backoff_cap_s)
        if self.backoff_base_s > self.backoff_cap_s:
            raise ConfigError("--backoff-base must be positive and at most --backoff-cap")
        _positive("checkpoint_interval_s", self.checkpoint_interval_s, zero=True)
        _positive("stop_poll_s", self.stop_poll_s)
        if self.chunk_bytes < 4096 or self.read_ahead < 1 or self.queue_batches < 1:
            raise ConfigError("chunk_bytes >= 4096, read_ahead >= 1 and queue_batches >= 1 are required")


def _positive(option: str, value: float, *, zero: bool = False) -> None:
    """A ConfigError naming ``option`` unless ``value`` is a finite number > 0 (>= 0 with ``zero``).

    ``nan`` and ``inf`` are refused: ``nan`` compares false with everything, so a check written as
    ``value <= 0`` lets it through, and as a write-unit ceiling or a backoff it switches the limit
    off or sleeps forever.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{option} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{option} must be {'>= 0' if zero else 'positive'}, got {value}")


_ASCII = bytes(range(128))
#: ASCII text that escape-based or stateful codecs read as other characters (unicode-escape,
#: raw-unicode-escape, utf-7, hz, iso-2022-*): an ASCII-compatible codec reads it as itself.
_ESCAPES = b"\\u000a\\U0000000a\\x0a\\n\\\\+AAo-+-~{~}~~\x1b(B\x1b$B\x0e\x0f"


@functools.lru_cache(maxsize=32)
def _encoding_problem(encoding: str) -> str | None:
    """Why ``encoding`` cannot be read by a splitter that cuts records at the byte ``\\n``, or None.

    The decoder finds record ends in the BYTES (``b"\\n"``) and decodes each complete line on its
    own; csv, quotes and delimiters are then handled in the decoded TEXT. So an encoding is
    accepted when:

    * it is a text encoding (bytes <-> str): ``hex``, ``base64``, ``rot13``, ``zlib`` are not;
    * each of the 128 ASCII bytes decodes to the same character and encodes back to the same byte,
      alone and in a run (refuses EBCDIC such as ``cp037``, UTF-16/32, ``idna``, ``punycode``);
    * runs of ASCII bytes never form escape or shift sequences (refuses ``utf-7``, ``hz``,
      ``iso2022_*``, ``unicode_escape``, ``raw_unicode_escape``);
    * no valid multi-byte character contains the byte ``\\n`` or ``\\r`` or decodes to a newline
      (every valid two-byte sequence is checked once per process and codec; UTF-8 has this by
      construction, its continuation bytes are all >= 0x80).

    Multi-byte East Asian encodings (shift_jis, cp932, gbk, gb18030, big5, euc-kr, johab) pass:
    their trail bytes may be ASCII (0x30-0x39 or 0x40-0x7e: ``@``, ``\\``, ``|``, digits), but never
    ``\\n`` or ``\\r``, and a delimiter or quote byte inside a character does not matter because csv
    reads the decoded text, where that byte is part of the character. ``utf-8-sig`` is read as
    utf-8 (the decoder drops a BOM at the start of the object itself).
    """
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return "is not a known encoding"
    if not getattr(info, "_is_text_encoding", True):
        return (
            "is not a text encoding (it converts bytes to bytes or text to text); name the file's "
            "character set, e.g. utf-8, latin-1 or cp1252"
        )
    name = "utf-8" if info.name == "utf-8-sig" else info.name
    fix = "records are split on the byte \\n before decoding; convert the file to UTF-8"
    try:
        for b in range(128):
            byte, char = _ASCII[b : b + 1], chr(b)
            if (text := byte.decode(name)) != char:
                return f"is not ASCII-compatible (the byte {byte!r} decodes to {text!r}); {fix}"
            if (back := char.encode(name)) != byte:
                return f"is not ASCII-compatible ({char!r} encodes to {back!r}); {fix}"
        if _ASCII.decode(name) != _ASCII.decode("ascii") or _ESCAPES.decode(name) != _ESCAPES.decode("ascii"):
            return (
                "is not ASCII-compatible (runs of ASCII bytes are escape or shift sequences that stand "
                f"for other characters); {fix}"
            )
    except (UnicodeError, ValueError, TypeError) as exc:
        return f"is not ASCII-compatible ({type(exc).__name__}: {exc}); {fix}"
    if name == "utf-8":
        return None
    for lead in range(0x80, 0x100):
        for trail in range(0x100):
            pair = bytes((lead, trail))
            try:
                text = pair.decode(name)
            except UnicodeError:
                continue
            newlines = text.count("\n") + text.count("\r")
            if newlines and not (newlines == 1 and trail in (0x0A, 0x0D) and text.endswith(chr(trail))):
                return f"cannot be split at newline bytes (the bytes {pair!r} decode to {text!r}); {fix}"
    return None
