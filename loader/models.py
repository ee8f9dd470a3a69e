"""Plain records passed between the stages, and the two that outlive a run: Checkpoint, RunResult."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import repeat
from typing import Any, Literal, NamedTuple

import orjson

from loader.errors import ConfigError

#: One item in DynamoDB's wire JSON: ``{"attr": {"S": "text"}, "n": {"N": "12"}}``.
#: Binary values are base64 text (``{"B": "AAE="}``), exactly as they go over the wire.
Item = dict[str, Any]
#: A hashable, canonical key: the partition key value, then the sort key value if any.
#: Numbers are normalised ("1.0" and "01" are the key "1"), binary is base64 text.
Key = tuple[str, ...]
KeyType = Literal["S", "N", "B"]

#: 2: the load's pinned spec (``LoadSpec.to_dict()``) travels in the checkpoint; 1 is still read
CHECKPOINT_FORMAT = 2
_READABLE_CHECKPOINTS = (1, 2)


@dataclass(frozen=True, kw_only=True)
class KeySchema:
    """The table's primary key, from DescribeTable: attribute names and their types; and the key
    attributes of its secondary indexes (GSI and LSI), which an item may leave out (a sparse index)
    but may only carry with the declared type, or DynamoDB refuses the item."""

    partition: str
    partition_type: KeyType
    sort: str | None = None
    sort_type: KeyType | None = None
    #: every key attribute of a secondary index -> its type (AttributeDefinitions: one per name)
    index_keys: dict[str, KeyType] = field(default_factory=dict, hash=False)
    #: every key attribute of a secondary index -> the names of the indexes that key on it
    index_names: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.partition,) if self.sort is None else (self.partition, self.sort)


@dataclass(slots=True)
class RecordChunk:
    """CSV records decoded from one chunk of bytes, as parallel lists (cheap on the hot path).

    Record ``i`` has row number ``first_number + i`` (1-based, the header not counted), starts at
    byte ``starts[i]`` and ends at ``ends[i]`` (just after its line terminator) in the
    decompressed object. ``rows[i]`` is its fields, or None when the record is not valid CSV;
    then ``errors[i]`` says why. ``raws[i]`` is the record's text without its final terminator.
    """

    first_number: int
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    rows: list[list[str] | None] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


class Entry(NamedTuple):
    """A typed row on its way to a batch; it keeps where it came from for a reject record.

    A named tuple, not a dataclass: a block of rows becomes entries in one C-level pass
    (``map(tuple.__new__, ...)``, see ``entries_of``) instead of an ``__init__`` call per row.
    """

    #: the item as wire JSON; None when ``wire`` holds it (see ``item_of``)
    item: Item | None
    key: Key
    size: int
    number: int
    offset: int
    raw: str
    #: the item as JSON bytes for the request body, made while the item is fresh
    #: (see ``BatchSender.encode``); None when the sender takes items only
    wire: bytes | None = None

    def item_of(self) -> Item:
        """The item, parsed back from ``wire`` when only the bytes were kept."""
        if self.item is not None:
            return self.item
        assert self.wire is not None, "an entry holds its item or its wire bytes"
        item: Item = orjson.loads(self.wire)
        return item


def entries_of(
    keys: Iterable[Key],
    sizes: Iterable[int],
    numbers: Iterable[int],
    offsets: Iterable[int],
    raws: Iterable[str],
    wires: Iterable[bytes],
) -> list[Entry]:
    """Entries holding only their wire bytes, made from parallel columns without Python code per
    entry (``Entry(...)`` per row is ~0.5 us; this is ~0.15)."""
    rows = zip(repeat(None), keys, sizes, numbers, offsets, raws, wires)
    return list(map(tuple.__new__, repeat(Entry), rows))


@dataclass(slots=True)
class Batch:
    """At most 25 entries with distinct keys and at most 16 MB; ``seq`` orders batches in the file."""

    seq: int
    entries: list[Entry]
    nbytes: int


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not written, and why. Written as one JSON line to the rejects sink.

    ``offset`` is the record's first byte in the (decompressed) object, always absolute. ``row``
    is its row number counted from the first data row of the run's range: of the object for a
    whole-object load (``shard_start`` None); of the shard for a shard, whose range starts at byte
    ``shard_start`` (a shard cannot know how many rows come before it without reading them:
    ``loader.spec.renumber`` turns the row into the object's once the earlier shards are counted).
    """

    row: int
    offset: int
    raw: str
    reason: str
    shard_start: int | None = None

    def to_json(self) -> bytes:
        out: dict[str, Any] = {"row": self.row, "offset": self.offset, "raw": self.raw, "reason": self.reason}
        if self.shard_start is not None:
            out["shard_start"] = self.shard_start
        return orjson.dumps(out)


@dataclass(slots=True)
class Counters:
    """What a run (or a chain of runs) did. Invariant: rows_read == written + rejected + collapsed."""

    rows_read: int = 0
    items_written: int = 0
    rows_rejected: int = 0
    duplicates_collapsed: int = 0
    retries: int = 0
    throttle_events: int = 0
    write_units: int = 0

    def add(self, other: Counters) -> None:
        # field by field, not a loop over dataclasses.fields(): it runs three times per batch
        self.rows_read += other.rows_read
        self.items_written += other.items_written
        self.rows_rejected += other.rows_rejected
        self.duplicates_collapsed += other.duplicates_collapsed
        self.retries += other.retries
        self.throttle_events += other.throttle_events
        self.write_units += other.write_units

    def copy(self) -> Counters:
        return dataclasses.replace(self)

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.items_written + self.rows_rejected + self.duplicates_collapsed

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counters:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})


#: the names of ``Counters``' fields, in order: the ledger's attributes and status's sums
COUNTER_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Counters))


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """The low-water mark of a load: every row before ``offset`` is written or rejected.

    ``offset`` is a record boundary in the decompressed object, ``next_row`` the row number of the
    record that starts there, ``counters`` count exactly the rows before ``offset``. A shard's
    checkpoint carries its ``byte_range`` (``[start, end)`` of the object): its ``offset`` is still
    absolute and lies in the range, while ``next_row`` and the counters count from the range's
    start (row 1 is the shard's first record). ``version_id``
    / ``etag`` pin the object so a resume never reads a newer object. ``spec`` is the load's pinned
    ``LoadSpec`` as a dict (``loader.spec``): a resume runs it, never the options of the moment
    (None in a format-1 checkpoint, and where the spec is kept beside it, as in the Lambda's ledger).
    Versioned JSON.
    """

    source: str
    table: str
    version_id: str | None
    etag: str | None
    size: int | None
    header: list[str]
    offset: int
    next_row: int
    counters: Counters
    complete: bool = False
    hop: int = 0
    chain_id: str = ""
    spec: dict[str, Any] | None = None
    byte_range: tuple[int, int] | None = None
    format_version: int = CHECKPOINT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "source": self.source,
            "table": self.table,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "header": list(self.header),
            "offset": self.offset,
            "next_row": self.next_row,
            "counters": self.counters.to_dict(),
            "complete": self.complete,
            "hop": self.hop,
            "chain_id": self.chain_id,
        }
        if self.spec is not None:
            out["spec"] = self.spec
        if self.byte_range is not None:  # a whole-object checkpoint keeps the shape it always had
            out["byte_range"] = list(self.byte_range)
        return out

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        version = data.get("format_version")
        if version not in _READABLE_CHECKPOINTS:
            raise ConfigError(
                f"checkpoint format_version {version!r} is not supported "
                f"(this s3ddb reads {', '.join(map(str, _READABLE_CHECKPOINTS))})"
            )
        spec = data.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise ConfigError("checkpoint is malformed: 'spec' must be an object")
        try:
            cp = cls(
                source=str(data["source"]),
                table=str(data["table"]),
                version_id=data.get("version_id"),
                etag=data.get("etag"),
                size=None if data.get("size") is None else int(data["size"]),
                header=[str(h) for h in data["header"]],
                offset=int(data["offset"]),
                next_row=int(data["next_row"]),
                counters=Counters.from_dict(data["counters"]),
                complete=bool(data.get("complete", False)),
                hop=int(data.get("hop", 0)),
                chain_id=str(data.get("chain_id", "")),
                spec=spec,
                byte_range=_byte_range(data.get("byte_range")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint is malformed: {exc!r}") from exc
        cp._check()
        return cp

    def _check(self) -> None:
        """Numbers a load could have written: anything else is a damaged or hand-edited file."""
        c = self.counters
        if self.offset < 0 or self.next_row < 1 or (self.size is not None and self.size < 0):
            raise ConfigError(
                f"checkpoint is malformed: offset {self.offset}, next_row {self.next_row}, size "
                f"{self.size} (offset >= 0, next_row >= 1 and size >= 0 are required)"
            )
        rng = self.byte_range
        if rng is not None and not rng[0] <= self.offset <= rng[1]:
            raise ConfigError(
                f"checkpoint is malformed: offset {self.offset} is outside its byte range "
                f"[{rng[0]}, {rng[1]})"
            )
        negative = [k for k, v in c.to_dict().items() if v < 0]
        if negative:
            raise ConfigError(f"checkpoint is malformed: negative counter {negative[0]!r}")
        if c.rows_read < c.items_written + c.rows_rejected + c.duplicates_collapsed:
            raise ConfigError("checkpoint is malformed: its counters account for more rows than were read")
        if self.next_row - 1 < c.rows_read:
            raise ConfigError(
                f"checkpoint is malformed: next_row {self.next_row} is below the {c.rows_read} rows read"
            )

    @classmethod
    def loads(cls, raw: bytes | str) -> Checkpoint:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"checkpoint is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("checkpoint is not a JSON object")
        return cls.from_dict(data)


def _byte_range(value: Any) -> tuple[int, int] | None:
    """A checkpoint's ``byte_range``: None, or ``[start, end]`` with 0 <= start <= end."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ConfigError(
            f"checkpoint is malformed: byte_range {value!r} is not [start, end] with 0 <= start <= end"
        )
    return value[0], value[1]


class StopReason(StrEnum):
    """Why a run returned. A ``StrEnum``: it equals, prints and serialises as its value."""

    #: every row of the object is written or rejected (``checkpoint.complete``)
    COMPLETE = "complete"
    #: ``should_stop`` said so (a deadline, Ctrl-C): the next run resumes from the checkpoint
    STOPPED = "stopped"
    #: the load cannot go on (a write that kept failing, too many rejects, a source error); the
    #: error that says why carries this result
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one run did. ``checkpoint`` is where the next run resumes (complete=True when done)."""

    counters: Counters
    checkpoint: Checkpoint
    #: a ``StopReason``; its value ("complete", ...) is accepted too and checked here
    stopped: StopReason
    seconds: float
    rejects_location: str | None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stopped", StopReason(self.stopped))

    @property
    def complete(self) -> bool:
        return self.stopped is StopReason.COMPLETE


@dataclass(frozen=True, kw_only=True)
class Progress:
    """A snapshot for progress bars and stop decisions (the Lambda's deadline margin uses it).

    ``offset`` is how far the decoder has read (decompressed bytes); ``object_size`` the object's
    size, or None for a compressed object (its stored size does not measure decompressed bytes).
    ``inflight_batches`` are being sent or waiting to be retried; ``max_backoff_s`` is the longest
    backoff any of them is sleeping or would sleep next.
    """

    rows_read: int
    items_written: int
    rows_rejected: int
    duplicates_collapsed: int
    offset: int
    object_size: int | None
    inflight_batches: int
    max_backoff_s: float
    elapsed_s: float
    items_per_second: float
