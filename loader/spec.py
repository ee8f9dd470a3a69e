"""A load is one pinned spec, and one builder turns it into a running pipeline.

``LoadSpec`` is everything that decides what lands in the table (the source object and its pinned
version, the table, the schema, the CSV options, the duplicate policy) plus where rejects go and
the operational knobs that may change between runs (concurrency, the write-unit ceiling). It is
frozen, versioned and serialisable: ``to_dict`` / ``from_dict`` (which checks size, depth and every
field, so an event or a checkpoint file cannot smuggle in what the command line would refuse).

The spec is pinned when a load starts: written into the CLI checkpoint and into the chain's
ledger item; a resume or a hop runs the pinned spec. ``differences`` names the data-affecting
fields that differ between two specs (a resume that would change them stops with exit 2).

``run`` is the one place a load is assembled: the CLI and the Lambda both call it with their
clients and sender, so the two cannot drift.

A shard is a load spec with a byte range: ``byte_range = (start, end)`` of the (uncompressed)
object, planned to start at a record boundary and to end where the next shard starts. The shard
reads only those bytes and is complete when every record before ``end`` is written or rejected; a
last record that is not terminated before ``end`` (when ``end`` is not the object's size) stops it
with a SourceError instead of being joined to the next shard's bytes. A shard past the header row
cannot read it: ``header_names`` is the header the planner read once (checked against the header
row by a shard that starts at byte 0). A compressed object cannot be cut by bytes: a range on one
is refused (run it as one shard).

Row numbers: a shard cannot know how many rows come before it without reading them, so its rows
are numbered from 1 at its first record (its checkpoint's ``next_row`` too). Every reject keeps the
exact absolute byte ``offset`` and carries ``shard_start``; once the earlier shards are counted,
``row_bases`` and ``renumber`` give each reject the row number the whole-object load gives it.
A shard's counters count its rows only; the counters of the shards of an object add up to a
whole-object load's when the shards tile it (rows read and rejected always; written and collapsed
too unless a repeated key straddles a shard boundary). Duplicates collapse only inside the batch
being built, so a key repeated in two shards is counted as a key repeated in two batches of one
load: both rows are written, neither is collapsed. Which write wins is different, though: one
load's writer orders the writes of a key in file order, shards do not share a writer, so the later
row wins only if its shard writes after the earlier one's (shards run in file order, or the
orchestrator orders them). ``first`` and ``error`` remember keys for one run, as across a resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from loader.config import CsvSpec, DuplicatePolicy, LoadConfig, SchemaSpec
from loader.errors import ConfigError, S3ddbError
from loader.models import Checkpoint, KeySchema, Progress, Reject, RunResult
from loader.retry import WriteBudget

__all__ = [
    "MAX_SPEC_BYTES",
    "SPEC_FORMAT",
    "LoadSpec",
    "RunKnobs",
    "check_depth",
    "csv_from_dict",
    "csv_to_dict",
    "renumber",
    "row_bases",
    "run",
    "schema_to_dict",
]

SPEC_FORMAT = 1
#: A spec (schema and CSV options included) is at most this large as JSON: it is stored in the
#: ledger item beside the checkpoint, and a DynamoDB item is at most 400 KB.
MAX_SPEC_BYTES = 64 * 1024
#: Deepest JSON nesting a spec may have (a schema is ``{"columns": {"col": "N"}}``: depth 3).
MAX_DEPTH = 6

_CSV_KEYS = ("delimiter", "quotechar", "header", "columns", "encoding", "compression")
_COMPRESSIONS = ("infer", "none", "gzip", "zstd", "bz2")
_DUPLICATES = ("last", "first", "error")
_SPEC_KEYS = (
    "format_version",
    "source",
    "version_id",
    "etag",
    "table",
    "schema",
    "csv",
    "on_duplicate",
    "rejects",
    "concurrency",
    "max_wcu",
    "shuffle_window",
    "byte_range",
    "header_names",
)
#: the fields a resume may not change (a different value would change what lands in the table)
DATA_FIELDS = (
    "source",
    "version_id",
    "etag",
    "table",
    "schema",
    "csv",
    "on_duplicate",
    "byte_range",
    "header_names",
)


def check_depth(value: Any, what: str, *, limit: int = MAX_DEPTH) -> None:
    """A ConfigError when ``value`` nests deeper than ``limit`` (iterative: no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                raise ConfigError(f"{what} nests deeper than {limit} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def schema_to_dict(schema: SchemaSpec) -> dict[str, Any]:
    return {
        "columns": dict(schema.columns),
        "rename": dict(schema.rename),
        "empty": schema.empty,
        "set_delimiter": schema.set_delimiter,
    }


def csv_to_dict(csv: CsvSpec) -> dict[str, Any]:
    return {
        "delimiter": csv.delimiter,
        "quotechar": csv.quotechar,
        "header": csv.header,
        "columns": None if csv.columns is None else list(csv.columns),
        "encoding": csv.encoding,
        "compression": csv.compression,
    }


def csv_from_dict(data: Any, *, where: str = "csv") -> CsvSpec:
    """CSV options from JSON (a backfill event's ``"csv"``, ``S3DDB_CSV``, a pinned spec)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a JSON object of CSV options ({', '.join(_CSV_KEYS)})")
    unknown = [k for k in data if k not in _CSV_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}; allowed: {', '.join(_CSV_KEYS)}")
    kwargs: dict[str, Any] = {}
    for name in ("delimiter", "quotechar", "encoding"):
        if name in data:
            if not isinstance(data[name], str):
                raise ConfigError(f"{where}: {name!r} must be a string")
            kwargs[name] = data[name]
    if kwargs.get("delimiter") in ("\\t", "tab"):
        kwargs["delimiter"] = "\t"
    if "header" in data:
        if not isinstance(data["header"], bool):
            raise ConfigError(f"{where}: 'header' must be true or false")
        kwargs["header"] = data["header"]
    if data.get("columns") is not None:
        cols = data["columns"]
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(f"{where}: 'columns' must be a list of column names")
        kwargs["columns"] = tuple(cols)
    if "compression" in data:
        if data["compression"] not in _COMPRESSIONS:
            raise ConfigError(f"{where}: 'compression' must be one of {', '.join(_COMPRESSIONS)}")
        kwargs["compression"] = data["compression"]
    if kwargs.get("columns") is not None and kwargs.get("header", True):
        raise ConfigError(
            f"{where}: 'columns' names the columns of an object without a header: set 'header': false"
        )
    return CsvSpec(**kwargs)


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """One load, pinned. ``source`` is ``s3://bucket/key`` (the key literal, never URL-decoded) or an
    absolute local path; ``version_id`` / ``etag`` pin the object once the load has opened it.

    Data-affecting (see ``DATA_FIELDS``): source and pin, table, schema, csv, on_duplicate, and a
    shard's ``byte_range`` (``(start, end)``: bytes ``[start, end)`` of the object, None for all of
    it) and ``header_names`` (the object's header row as the planner read it; required when
    ``start`` is past byte 0 of an object with a header row). Where rejects go, ``concurrency``
    (BatchWriteItem calls in flight: each holds one batch of at most 25 items), ``max_wcu``
    (write units per second, None for no ceiling) and ``shuffle_window`` (rows shuffled before
    batching, 0 for none: ``loader.shuffle``) may change between runs of the same load.
    """

    source: str
    table: str
    version_id: str | None = None
    etag: str | None = None
    schema: SchemaSpec = field(default_factory=SchemaSpec)
    csv: CsvSpec = field(default_factory=CsvSpec)
    on_duplicate: DuplicatePolicy = "last"
    rejects: str | None = None
    concurrency: int = 40
    max_wcu: float | None = None
    shuffle_window: int = 0
    byte_range: tuple[int, int] | None = None
    header_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError("the load spec has no source")
        if not isinstance(self.table, str) or not self.table:
            raise ConfigError("the load spec has no table")
        if self.on_duplicate not in _DUPLICATES:
            raise ConfigError(f"on_duplicate must be last, first or error, got {self.on_duplicate!r}")
        self._check_shard()
        # the knobs are checked where they are used, with the same messages
        self.config()

    def _check_shard(self) -> None:
        rng, names = self.byte_range, self.header_names
        if names is not None:
            if not isinstance(names, tuple) or not names or not all(isinstance(n, str) and n for n in names):
                raise ConfigError("header_names must be the header row's column names (non-empty strings)")
            if rng is None:
                raise ConfigError("header_names is the header of a shard: it goes with byte_range")
            if not self.csv.header:
                raise ConfigError(
                    "header_names is for an object with a header row; this csv has 'header': false"
                )
        if rng is None:
            return
        if (
            not isinstance(rng, tuple)
            or len(rng) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in rng)
        ):
            raise ConfigError(f"byte_range must be [start, end], two integers, got {_show(rng)}")
        start, end = rng
        if not 0 <= start <= end:
            raise ConfigError(f"byte_range [{start}, {end}) needs 0 <= start <= end")
        if self.source.endswith("/"):
            raise ConfigError("byte_range names part of one object; this source is a prefix")
        compression = _inferred(self.source, self.csv)
        if compression != "none":
            raise ConfigError(
                f"byte_range: a {compression}-compressed object cannot be split by bytes; "
                "load it as one shard (no byte_range)"
            )
        if start > 0 and self.csv.header and names is None:
            raise ConfigError(
                f"byte_range starts at byte {start}, past the header row it cannot read: "
                "give header_names (the planner reads the header once)"
            )

    @property
    def bucket(self) -> str | None:
        """The source bucket of an ``s3://`` source (what the bucket allow-list is checked against)."""
        if not self.source.startswith("s3://"):
            return None
        return self.source[5:].partition("/")[0]

    @property
    def key(self) -> str | None:
        """The key (or prefix) of an ``s3://`` source, literal (what the prefix allow-list is
        checked against)."""
        if not self.source.startswith("s3://"):
            return None
        return self.source[5:].partition("/")[2]

    def config(self, **run: Any) -> LoadConfig:
        """The engine's ``LoadConfig`` for this spec; ``run`` holds the per-run settings
        (``RunKnobs.as_config``: retry policy, max rejects, dry run, intervals)."""
        return LoadConfig(
            table=self.table,
            concurrency=self.concurrency,
            max_wcu=self.max_wcu,
            on_duplicate=self.on_duplicate,
            shuffle_window=self.shuffle_window,
            **run,
        )

    def _comparable(self) -> dict[str, Any]:
        out = self.to_dict()
        out["schema"]["columns"] = {c: t for c, t in out["schema"]["columns"].items() if t != "S"}
        out["csv"]["encoding"] = _canonical_encoding(self.csv.encoding)
        out["csv"]["compression"] = _inferred(self.source, self.csv)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SPEC_FORMAT,
            "source": self.source,
            "version_id": self.version_id,
            "etag": self.etag,
            "table": self.table,
            "schema": schema_to_dict(self.schema),
            "csv": csv_to_dict(self.csv),
            "on_duplicate": self.on_duplicate,
            "rejects": self.rejects,
            "concurrency": self.concurrency,
            "max_wcu": self.max_wcu,
            "shuffle_window": self.shuffle_window,
            "byte_range": None if self.byte_range is None else list(self.byte_range),
            "header_names": None if self.header_names is None else list(self.header_names),
        }

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "load spec") -> LoadSpec:
        """Check and build; a ConfigError says what is wrong (never a traceback)."""
        from loader.schema import schema_from_dict

        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a JSON object")
        check_depth(data, where)
        try:
            size = len(orjson.dumps(data))
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise ConfigError(f"{where}: not JSON: {exc}") from None
        if size > MAX_SPEC_BYTES:
            raise ConfigError(f"{where}: {size} bytes of JSON is over the {MAX_SPEC_BYTES}-byte limit")
        version = data.get("format_version", SPEC_FORMAT)
        if version != SPEC_FORMAT:
            raise ConfigError(
                f"{where}: format_version {version!r} is not supported (this s3ddb reads {SPEC_FORMAT})"
            )
        unknown = [k for k in data if k not in _SPEC_KEYS]
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")

        def opt_str(name: str) -> str | None:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}: {name!r} must be a string")
            return value or None

        concurrency = data.get("concurrency", 40)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise ConfigError(f"{where}: 'concurrency' must be an integer")
        max_wcu = data.get("max_wcu")
        if max_wcu is not None and (isinstance(max_wcu, bool) or not isinstance(max_wcu, int | float)):
            raise ConfigError(f"{where}: 'max_wcu' must be a number")
        window = data.get("shuffle_window", 0)
        if isinstance(window, bool) or not isinstance(window, int):
            raise ConfigError(f"{where}: 'shuffle_window' must be an integer (rows)")
        # a spec written before shards existed has neither: the whole object, as it always was
        byte_range = data.get("byte_range")
        if byte_range is not None:
            if not isinstance(byte_range, list):
                raise ConfigError(f"{where}: 'byte_range' must be [start, end], two integers")
            byte_range = tuple(byte_range)
        names = data.get("header_names")
        if names is not None:
            if not isinstance(names, list):
                raise ConfigError(f"{where}: 'header_names' must be a list of column names")
            names = tuple(names)
        return cls(
            source=opt_str("source") or "",
            table=opt_str("table") or "",
            version_id=opt_str("version_id"),
            etag=opt_str("etag"),
            schema=schema_from_dict(data.get("schema") or {}),
            csv=csv_from_dict(data.get("csv") or {}, where=f"{where}: csv"),
            on_duplicate=cast(DuplicatePolicy, data.get("on_duplicate") or "last"),
            rejects=opt_str("rejects"),
            concurrency=concurrency,
            max_wcu=None if max_wcu is None else float(max_wcu),
            shuffle_window=window,
            byte_range=byte_range,
            header_names=names,
        )

    @classmethod
    def loads(cls, raw: bytes | str, *, where: str = "load spec") -> LoadSpec:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON: {exc}") from None
        return cls.from_dict(data, where=where)

    def differences(self, other: LoadSpec) -> list[str]:
        """The data-affecting fields where ``other`` differs, each as ``name: pinned -> other``.
        Spellings of the same thing are the same (``UTF8`` and ``utf-8``; a column typed S and one
        not named; ``infer`` and the compression it infers)."""
        mine, theirs = self._comparable(), other._comparable()
        shown_mine, shown_theirs = self.to_dict(), other.to_dict()  # as the user wrote them
        out: list[str] = []
        for name in DATA_FIELDS:
            a, b = mine[name], theirs[name]
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                out.extend(
                    f"{name}.{sub}: {_show(shown_mine[name].get(sub))} pinned, "
                    f"{_show(shown_theirs[name].get(sub))} given"
                    for sub in sorted(set(a) | set(b))
                    if a.get(sub) != b.get(sub)
                )
            else:
                out.append(f"{name}: {_show(shown_mine[name])} pinned, {_show(shown_theirs[name])} given")
        return out


def _canonical_encoding(name: str) -> str:
    import codecs

    return codecs.lookup(name).name


def _inferred(source: str, csv: CsvSpec) -> str:
    if source.endswith("/"):
        return csv.compression  # a prefix: each object infers its own
    from loader.source import compression_of

    return compression_of(source, csv)


def _show(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, kw_only=True)
class RunKnobs:
    """Per-run settings that are not part of the spec (they never change what lands in the table)."""

    dry_run: bool = False
    max_rejects: int | None = None
    max_attempts: int = 12
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 20.0
    checkpoint_interval_s: float = 5.0
    chunk_bytes: int = 1 << 20
    #: a write-unit ceiling that may change while the run goes (a worker's share of a sharded
    #: load's ``max_wcu``); None: the spec's ``max_wcu``
    write_budget: WriteBudget | None = None

    def as_config(self) -> dict[str, Any]:
        # not dataclasses.asdict: it would deep-copy the budget, which must stay shared
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


async def run(
    spec: LoadSpec,
    *,
    keys: KeySchema,
    sender: Any,
    run_id: str,
    s3_client: Any | None,
    knobs: RunKnobs = RunKnobs(),
    should_stop: Callable[[Progress], bool] | None = None,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], Awaitable[None]] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    pin_into_checkpoints: bool = True,
) -> RunResult:
    """Open the spec's source (pinning its version), its rejects sink, and run the pipeline.

    Every checkpoint handed to ``on_checkpoint``, the result's and an error's carry the pinned
    spec (``Checkpoint.spec``) unless ``pin_into_checkpoints`` is False (the Lambda keeps it in the
    ledger item instead). A shard's checkpoints carry its byte range too, and ``resume`` must be
    one of them (a checkpoint of another range, or of the whole object, is a ConfigError).
    Raises like ``loader.pipeline.run``.
    """
    from loader import pipeline
    from loader.rejects import open_rejects
    from loader.source import open_source

    config = spec.config(**knobs.as_config())
    source = open_source(
        spec.source,
        s3_client=s3_client,
        spec=spec.csv,
        version_id=spec.version_id,
        etag=spec.etag,
        byte_range=spec.byte_range,
    )
    pinned = dataclasses.replace(spec, version_id=source.info.version_id, etag=source.info.etag)
    stamp = pinned.to_dict() if pin_into_checkpoints else None

    def stamped(cp: Checkpoint) -> Checkpoint:
        return cp if stamp is None else dataclasses.replace(cp, spec=stamp)

    async def checkpoint(cp: Checkpoint) -> None:
        if on_checkpoint is not None:
            await on_checkpoint(stamped(cp))

    rejects = open_rejects(spec.rejects, run_id=run_id, s3_client=s3_client)
    try:
        result = await pipeline.run(
            source=source,
            config=config,
            csv_spec=spec.csv,
            schema=spec.schema,
            keys=keys,
            sender=sender,
            rejects=rejects,
            should_stop=should_stop or (lambda _p: False),
            resume=resume,
            on_checkpoint=checkpoint,
            on_progress=on_progress,
            header=None if spec.header_names is None else list(spec.header_names),
        )
    except S3ddbError as exc:
        if isinstance(exc.result, RunResult):
            exc.result = dataclasses.replace(exc.result, checkpoint=stamped(exc.result.checkpoint))
        raise
    finally:
        rejects.close()
    return dataclasses.replace(result, checkpoint=stamped(result.checkpoint))


def row_bases(shards: Iterable[tuple[tuple[int, int], int]]) -> dict[int, int]:
    """How many rows of the object come before each shard: ``{start: rows}``, from every shard's
    ``(byte_range, rows_read)`` (its complete checkpoint's counters), in any order.

    The shards must tile one stretch of the object: each starting where the one before it ends
    (the first may start after the header row). A ValueError names a gap or an overlap.
    """
    bases: dict[int, int] = {}
    rows_before = 0
    previous_end: int | None = None
    for (start, end), rows in sorted(shards):
        if previous_end is not None and start != previous_end:
            what = "a gap" if start > previous_end else "an overlap"
            raise ValueError(f"the shards do not tile the object: {what} at bytes {previous_end}-{start}")
        if rows < 0 or end < start:
            raise ValueError(f"shard [{start}, {end}) with {rows} rows is not a shard")
        bases[start] = rows_before
        rows_before += rows
        previous_end = end
    return bases


def renumber(reject: Reject, bases: Mapping[int, int]) -> Reject:
    """``reject`` with the row number the whole-object load gives it (``bases`` from ``row_bases``);
    a reject of a whole-object load (``shard_start`` None) is returned as it is."""
    start = reject.shard_start
    if start is None:
        return reject
    if start not in bases:
        raise ValueError(f"no shard starts at byte {start}")
    return dataclasses.replace(reject, row=bases[start] + reject.row, shard_start=None)
