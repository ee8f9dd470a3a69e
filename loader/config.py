"""Load settings, and BatchWriteItem's request limits (an item's own limits are ``loader.limits``)."""

from __future__ import annotations

import codecs
import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from loader.errors import ConfigError

if TYPE_CHECKING:
    from loader.retry import WriteBudget

# An item's limits live with its size rules in loader.limits; this name stays for the callers
# that import it from here.

#: BatchWriteItem: at most 25 put requests per call.
MAX_BATCH_ITEMS = 25
#: BatchWriteItem: at most 16 MB per request.
MAX_REQUEST_BYTES = 16 * 1024 * 1024

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
    """One load's settings; each says what it costs.

    ``table``: the table written.

    ``concurrency`` (default 40): batches in flight at once, what bounds memory. The writer
    takes a batch only while fewer than ``concurrency`` are in flight (sending, backing off after
    a throttle, or waiting for an earlier batch that holds one of its keys); the reader waits for
    room, and BatchWriteItem calls never outnumber it (the rate controller opens fewer while
    throttled). A batch is at most 25 items, and its request body at most 16 MB.

    ``max_wcu``: write units per second, all calls together (None: no ceiling).
    ``write_budget``: instead of ``max_wcu``, a ceiling that may change while the load runs (one
    worker's share of a sharded load's ``--max-wcu``: ``loader.retry.WriteBudget``).

    ``on_duplicate``: ``last`` needs no memory beyond the open batch; ``first`` and ``error``
    remember every key of the run (about 100 bytes each).

    ``max_rejects``: rejected rows after which the load stops (None: no limit).

    ``dry_run``: convert and batch every row, send nothing.

    ``max_attempts``, ``backoff_base_s``, ``backoff_cap_s``: a batch that makes no progress for
    ``max_attempts`` calls in a row fails the load; before each retry it sleeps a random time up
    to ``backoff_base_s`` x 2**attempt, at most ``backoff_cap_s`` (full jitter).

    ``checkpoint_interval_s``: the checkpoint is written at most this often while the load
    advances (and always when it stops). ``stop_poll_s``: how often ``should_stop`` is also asked
    while the reader waits for the writer (a Lambda deadline is seen within this).

    ``chunk_bytes`` (default 1 MB): the size of each read from the source; one chunk is decoded
    while the next is read.

    ``shuffle_window`` (default 0, off): rows put in a random order before they are cut into
    batches, for input sorted by partition key (``loader.shuffle``: what it holds and costs).

    Memory (what a load holds besides the interpreter and its clients, ~50 MB):

    * **in flight**: ``concurrency`` + 1 batches (the writer's and the one being filled), at most
      25 items each. Each item holds its request JSON (with the lean sender; the aiobotocore
      sender keeps the item as Python dicts, several times larger), the row's CSV text (kept for
      a reject record) and its key. A call on the wire also holds its request body.
    * **reading**: 2 x ``chunk_bytes`` (the chunk being decoded and the one read ahead), the
      decoded rows of one 64 KB slice of it, one block of up to 512 rows typed at once, and a
      record still open at a chunk's end (at most 4 MB, the decoder's record limit).

    Typical (the defaults, the benchmark's 250-byte rows): an item holds about 1 KB (0.45 KB of
    JSON, 0.3 KB of text, its key and entry), 1.5 KB while its call is on the wire, so 41 x 25 x
    1.5 KB is about 1.5 MB, plus 2 MB of chunks; a load peaks ~20 MB above the interpreter
    (``python -m benchmarks rss``: 69 MB at 200k rows, 72 MB at 2M).

    Worst case (every item near 400 KB): the batcher keeps a request under 16 MB (it counts 2
    bytes of JSON per byte of item, so about 20 such items a batch), the rows' text is usually
    no larger, and a call on the wire holds its 16 MB body too: up to ~48 MB a batch, about 2 GB
    at ``concurrency`` 40. (Text padded around typed cells can make a row up to 4 MB while its
    item stays small: 100 MB a batch at worst.) For objects of very large items, lower
    ``concurrency``: each unit of it costs up to ~48 MB.
    """

    table: str
    concurrency: int = 40
    max_wcu: float | None = None
    on_duplicate: DuplicatePolicy = "last"
    max_rejects: int | None = None
    dry_run: bool = False
    max_attempts: int = 12
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 20.0
    checkpoint_interval_s: float = 5.0
    stop_poll_s: float = 0.25
    chunk_bytes: int = 1 << 20
    shuffle_window: int = 0
    write_budget: WriteBudget | None = field(default=None, compare=False)

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
        if self.chunk_bytes < 4096:
            raise ConfigError(f"chunk_bytes must be >= 4096, got {self.chunk_bytes}")
        from loader.shuffle import check_window

        problem = check_window(self.shuffle_window)
        if problem is not None:
            raise ConfigError(problem)


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
