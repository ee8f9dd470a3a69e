"""The ``s3ddb`` command: load, validate, the local stand-ins, and the deployed function: a chain's
status, a backfill, the replay of its failure queue (``--stack`` reads the names from the stack).

Exit status: 0 the object is fully accounted for; 2 usage or configuration error (one line on
stderr saying what to fix); 3 more rejects than ``--max-rejects``; 4 writes failed past the retry
policy; 130 interrupted. Runs that stop early always leave a checkpoint to ``--resume`` from.
``replay``: 0 every message was resent (or there was none), 1 some were left in the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from loader.config import CsvSpec, SchemaSpec
from loader.errors import ConfigError, S3ddbError, SourceError
from loader.models import Checkpoint, Counters, Progress, RunResult
from loader.spec import LoadSpec, RunKnobs

if TYPE_CHECKING:
    from lambda_src.admin import ReplayItem, StackOutputs
    from loader.workers import ShardedCheckpoint

#: service error codes that mean "fix the command or the setup" (exit 2)
_CONFIG_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "NoSuchBucket",
        "NoSuchKey",
        "UnrecognizedClientException",
        "InvalidParameterValueException",
        "ValidationException",
    }
)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

#: the function ``s3ddb local up`` hosts, and the default when no stack names one
LOCAL_FUNCTION = "s3ddb-loader"
#: the ledger ``s3ddb local up`` creates, and the default when no stack or S3DDB_LEDGER_TABLE names one
LOCAL_LEDGER = "s3ddb-ledger"


def _add_spec_options(p: argparse.ArgumentParser, *, source_help: str) -> None:
    """The options that make a ``LoadSpec``: what lands in the table. Their defaults are None so a
    resume can tell an option given (checked against the pinned spec) from one left out (pinned)."""
    p.add_argument("source", help=source_help)
    p.add_argument(
        "--version-id", help="the S3 object version to load (default: the current one, pinned at start)"
    )
    p.add_argument("--table", required=True, help="target DynamoDB table (its key schema is read from it)")
    p.add_argument("--schema", metavar="FILE", help='JSON: {"columns": {"col": "N"}, "rename": {...}, ...}')
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="COL=TYPE",
        help="column type, repeatable: S N BOOL NULL JSON SS NS B (overrides --schema)",
    )
    p.add_argument("--delimiter", help="field delimiter (default ,); \\t for tab")
    p.add_argument("--no-header", action="store_true", help="the object has no header row (needs --columns)")
    p.add_argument("--columns", help="comma-separated column names, with --no-header")
    p.add_argument("--encoding", help="text encoding, ASCII-compatible (default utf-8)")
    p.add_argument(
        "--compression",
        choices=["infer", "none", "gzip", "zstd", "bz2"],
        help="default: by extension (.gz .zst .bz2)",
    )
    p.add_argument(
        "--on-duplicate",
        choices=["last", "first", "error"],
        help="which row wins when a key repeats (default last)",
    )


def _add_load_options(p: argparse.ArgumentParser) -> None:
    _add_spec_options(p, source_help="s3://bucket/key (the key taken literally) or a local path")
    p.add_argument("--concurrency", type=int, help="BatchWriteItem calls in flight (default 40)")
    p.add_argument("--max-wcu", type=float, help="ceiling on write units per second")
    p.add_argument(
        "--shuffle-window",
        type=int,
        metavar="ROWS",
        help="write rows in a random order within windows of ROWS rows (rows of one key keep their "
        "order): for input sorted by partition key, so writes spread over the table's partitions "
        "(default 0, off; ~2 KB of memory a row of window)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=12,
        help="BatchWriteItem attempts per batch before the load stops with its checkpoint (default 12)",
    )
    p.add_argument(
        "--backoff-base", type=float, default=0.05, help="first retry backoff, seconds (default 0.05)"
    )
    p.add_argument(
        "--backoff-cap", type=float, default=20.0, help="longest retry backoff, seconds (default 20)"
    )
    p.add_argument("--max-rejects", type=int, help="more rejects than this stops the load with exit 3")
    p.add_argument(
        "--rejects", metavar="DEST", help="s3:// prefix or local directory (default ./s3ddb-rejects)"
    )
    p.add_argument("--checkpoint", metavar="FILE", help="write the checkpoint here as the load advances")
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="continue from this checkpoint, with the load spec pinned in it (options that change "
        "what lands in the table must match it or be left out)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    p.add_argument(
        "--sender",
        choices=["lean", "botocore"],
        default=os.environ.get("S3DDB_SENDER", "lean"),
        help="write path: lean (items encoded once, own SigV4, raw keep-alive HTTP; default) "
        "or botocore (aiobotocore, the reference)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="processes, each loading a record-aligned byte range of the object (default: the number "
        "of cores when the object is uncompressed and at least 64 MB a worker, else 1)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--verbose", "-v", action="store_true", help="log retries and rate changes")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="s3ddb", description="Bulk-load CSV from S3 into DynamoDB.")
    sub = parser.add_subparsers(dest="command", required=True)

    load = sub.add_parser("load", help="load a CSV object into a table")
    _add_load_options(load)
    validate = sub.add_parser("validate", help="read, type and size-check every row; write nothing")
    _add_load_options(validate)

    local = sub.add_parser("local", help="the local stand-ins (DynamoDB Local, moto S3, Lambda emulator)")
    lsub = local.add_subparsers(dest="local_command", required=True)
    up = lsub.add_parser("up", help="start them (idempotent) and print export lines for eval")
    up.add_argument("--dir", help="state directory (default ~/.s3ddb/local)")
    up.add_argument("--dynamodb-port", type=int, default=8000)
    up.add_argument("--s3-port", type=int, default=4566)
    up.add_argument("--lambda-port", type=int, default=9001)
    up.add_argument("--lambda-timeout", type=float, default=900.0, help="function timeout, seconds")
    down = lsub.add_parser("down", help="stop what `local up` started")
    down.add_argument("--dir", help="state directory (default ~/.s3ddb/local)")
    notify = lsub.add_parser("notify", help="send the S3 ObjectCreated:Put event for an object")
    notify.add_argument("uri")
    notify.add_argument("--function", default=LOCAL_FUNCTION)

    status = sub.add_parser(
        "status",
        help="the ledger's record of an object's load (and of each of its shards), or of a prefix backfill",
    )
    status.add_argument(
        "uri", help="s3://bucket/key, or s3://bucket/prefix/ for the latest backfill of a prefix, added up"
    )
    status.add_argument("--table", help="the chain that loads into this table (default: the latest)")
    _add_stack_option(status, beaten_by="--ledger-table")
    status.add_argument(
        "--ledger-table",
        help="the ledger (default: the stack's LedgerTable output, else $S3DDB_LEDGER_TABLE, else "
        f"{LOCAL_LEDGER})",
    )
    status.add_argument("--json", action="store_true")

    invoke = sub.add_parser("invoke", help="start a backfill chain in the Lambda function")
    _add_spec_options(invoke, source_help="s3://bucket/key or s3://bucket/prefix/ (a prefix ends in /)")
    invoke.add_argument(
        "--reload",
        action="store_true",
        help="load an object again although the ledger says it was loaded into this table",
    )
    _add_stack_option(invoke, beaten_by="--function")
    invoke.add_argument(
        "--function", help=f"the function (default: the stack's FunctionName output, else {LOCAL_FUNCTION})"
    )
    invoke.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="cut each object into N record-aligned byte ranges, each loaded by its own chain "
        "(1-64, at most the function's S3DDB_MAX_CHAINS; default 1). A compressed object, or one too "
        "small to cut, loads as one chain, and the answer says so",
    )
    invoke.add_argument(
        "--max-wcu",
        type=float,
        help="write units per second for each object's load, shared by its shards (the function's "
        "S3DDB_MAX_WCU caps it)",
    )
    invoke.add_argument(
        "--max-rejects",
        type=int,
        help="rejected rows after which a chain (each shard, with --parallel) stops FAILED",
    )
    invoke.add_argument(
        "--shuffle-window",
        type=int,
        metavar="ROWS",
        help="write rows in a random order within windows of ROWS rows, for input sorted by "
        "partition key (default: the function's S3DDB_SHUFFLE_WINDOW)",
    )

    replay = sub.add_parser(
        "replay",
        help="resend the events in the function's failure queue",
        description=(
            "Resend what reached the function's on-failure destination queue: each message is the "
            "record Lambda wrote when an asynchronous invocation failed all its attempts "
            "(RetriesExhausted) or grew too old (EventAgeExceeded). Its requestPayload, the original "
            "event, is sent to the function again as an Event invoke, and the message is deleted once "
            "Lambda accepted it (202). Resending is safe: the ledger fences every chain, so a stale "
            "continuation is refused by its token, an object already loaded answers 'already loaded', "
            "and a chain that is running is not forked. Messages that are not such records, or are "
            "records of another function, stay in the queue and are reported. Messages are hidden "
            f"from other readers while they are handled ({_replay_visibility_s()} s if the replay is "
            "interrupted); those left are made visible again at the end."
        ),
    )
    _add_stack_option(replay, beaten_by="--queue-url / --function")
    replay.add_argument("--queue-url", help="the failure queue (default: the stack's FailureQueueUrl output)")
    replay.add_argument(
        "--function",
        help=f"send to this function (default: the stack's FunctionName output, else {LOCAL_FUNCTION}); "
        "only records of this function are resent",
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be resent; send and delete nothing (every message stays in the queue)",
    )
    replay.add_argument("--max", type=int, metavar="N", help="handle at most N messages (default: all)")
    replay.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser


def _replay_visibility_s() -> int:
    from lambda_src.admin import REPLAY_VISIBILITY_S

    return REPLAY_VISIBILITY_S


def _add_stack_option(p: argparse.ArgumentParser, *, beaten_by: str) -> None:
    p.add_argument(
        "--stack",
        help="the deployed CloudFormation stack (s3ddb's template) whose outputs name what this command "
        f"talks to (default: $S3DDB_STACK); an explicit {beaten_by} wins over the stack's output",
    )


# -- load / validate ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Plan:
    spec: LoadSpec
    knobs: RunKnobs
    resume: Checkpoint | None
    #: a sharded checkpoint being resumed (``--resume`` of a ``--workers`` load)
    sharded: ShardedCheckpoint | None = None


def _normalise_source(source: str) -> str:
    """``s3://bucket/key`` as given (the key literal), or an absolute local path."""
    from loader.source import parse_uri

    bucket, key, _version, path = parse_uri(source)
    return f"s3://{bucket}/{key}" if path is None else path


def _spec_from_args(args: argparse.Namespace, *, pinned: LoadSpec | None = None) -> LoadSpec:
    """The ``LoadSpec`` the command line asks for. Options left out take the ``pinned`` value (a
    resume), else the defaults; an option given is taken as given (``differences`` then checks it)."""
    from loader.schema import load_schema_file, merge_types, parse_type_overrides

    source = args.source if args.command == "invoke" else _normalise_source(args.source)
    if args.schema or args.types:
        schema = load_schema_file(args.schema) if args.schema else SchemaSpec()
        if args.types:
            schema = merge_types(schema, parse_type_overrides(args.types))
    else:
        schema = pinned.schema if pinned is not None else SchemaSpec()
    base_csv = pinned.csv if pinned is not None else CsvSpec()
    csv_changes: dict[str, Any] = {}
    if args.delimiter is not None:
        csv_changes["delimiter"] = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    if args.columns is not None and not args.no_header:
        raise ConfigError("--columns goes with --no-header")
    if args.no_header:
        csv_changes["header"] = False
        csv_changes["columns"] = tuple(c.strip() for c in args.columns.split(",")) if args.columns else None
    if args.encoding is not None:
        csv_changes["encoding"] = args.encoding
    if args.compression is not None:
        csv_changes["compression"] = args.compression
    csv_spec = dataclasses.replace(base_csv, **csv_changes)

    def knob(name: str, default: Any) -> Any:
        given = getattr(args, name, None)
        if given is not None:
            return given
        return getattr(pinned, name) if pinned is not None else default

    return LoadSpec(
        source=source,
        table=args.table,
        version_id=args.version_id or (pinned.version_id if pinned is not None else None),
        etag=pinned.etag if pinned is not None else None,
        schema=schema,
        csv=csv_spec,
        on_duplicate=knob("on_duplicate", "last"),
        rejects=knob("rejects", None),
        concurrency=knob("concurrency", 40),
        max_wcu=knob("max_wcu", None),
        shuffle_window=knob("shuffle_window", 0),
    )


def _read_checkpoint(path: str) -> Checkpoint:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"--resume {path}: {exc.strerror}") from exc
    try:
        return Checkpoint.loads(raw)
    except ConfigError as exc:
        raise ConfigError(f"--resume {path}: {exc}") from None


def _pinned_spec(args: argparse.Namespace, resume: Checkpoint) -> LoadSpec:
    """The spec a resume runs: the checkpoint's pinned one, checked against the command line."""
    path = args.resume
    source = _normalise_source(args.source)
    if resume.source != source:
        raise ConfigError(
            f"--resume {path} is the checkpoint of {resume.source}, not of {source}: resume it with "
            "that source, or start a new load without --resume"
        )
    if resume.spec is None:  # a format-1 checkpoint: the command line is the spec, pinned to its version
        print(
            f"s3ddb: warning: --resume {_printable(path)} was written by an older s3ddb and pins no load "
            "spec: the options on this command line (types, CSV options, duplicate policy) are used, "
            "and must be the ones the load started with",
            file=sys.stderr,
        )
        legacy = LoadSpec(
            source=resume.source, table=resume.table, version_id=resume.version_id, etag=resume.etag
        )
        spec = _spec_from_args(args, pinned=legacy)
        return dataclasses.replace(spec, version_id=resume.version_id, etag=resume.etag)
    pinned = LoadSpec.from_dict(resume.spec, where=f"--resume {path}: spec")
    given = _spec_from_args(args, pinned=pinned)
    diffs = pinned.differences(given)
    if diffs:
        raise ConfigError(
            f"--resume {path}: the load was started with other options that decide what lands in the "
            f"table ({'; '.join(diffs)}): leave those options out to resume with the pinned ones, or "
            "start a new load"
        )
    return given


def _read_sharded(path: str) -> ShardedCheckpoint | None:
    """The sharded checkpoint in ``path``, or None when it holds a one-process checkpoint."""
    from loader import workers

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"--resume {path}: {exc.strerror}") from exc
    if not workers.is_sharded(raw):
        return None
    return workers.ShardedCheckpoint.from_dict(orjson.loads(raw), where=f"--resume {path}")


def _sharded_spec(args: argparse.Namespace, state: ShardedCheckpoint) -> LoadSpec:
    """The spec a sharded resume runs: the pinned one, checked against the command line."""
    source = _normalise_source(args.source)
    if state.spec.source != source:
        raise ConfigError(
            f"--resume {args.resume} is the checkpoint of {state.spec.source}, not of {source}: resume it "
            "with that source, or start a new load without --resume"
        )
    given = _spec_from_args(args, pinned=state.spec)
    diffs = state.spec.differences(given)
    if diffs:
        raise ConfigError(
            f"--resume {args.resume}: the load was started with other options that decide what lands in "
            f"the table ({'; '.join(diffs)}): leave those options out to resume with the pinned ones, or "
            "start a new load"
        )
    return given


def _plan(args: argparse.Namespace, *, dry_run: bool) -> _Plan:
    if dry_run and (args.checkpoint or args.resume):
        raise ConfigError("validate writes nothing, so it takes no --checkpoint or --resume")
    most = max(8, 4 * (os.cpu_count() or 1))  # more processes than that only contend for the cores
    if args.workers is not None and not 1 <= args.workers <= most:
        raise ConfigError(f"--workers must be 1..{most} on this machine, got {args.workers}")
    sharded = _read_sharded(args.resume) if args.resume else None
    resume = _read_checkpoint(args.resume) if args.resume and sharded is None else None
    if sharded is not None:
        spec = _sharded_spec(args, sharded)
        sharded = dataclasses.replace(sharded, spec=spec)
    elif resume is not None:
        spec = _pinned_spec(args, resume)
    else:
        spec = _spec_from_args(args)
    knobs = RunKnobs(
        dry_run=dry_run,
        max_rejects=args.max_rejects,
        max_attempts=args.max_attempts,
        backoff_base_s=args.backoff_base,
        backoff_cap_s=args.backoff_cap,
    )
    spec.config(**knobs.as_config())  # every knob checked before anything is opened
    if args.checkpoint:
        _check_writable(os.path.dirname(os.path.abspath(args.checkpoint)), what="--checkpoint")
    if not (spec.rejects or "").startswith("s3://"):
        _check_writable(os.path.abspath(spec.rejects or "s3ddb-rejects"), what="--rejects")
    return _Plan(spec=spec, knobs=knobs, resume=resume, sharded=sharded)


def _check_writable(directory: str, *, what: str) -> None:
    """Fail before any write when a file could not be created under ``directory`` (or the
    nearest existing folder above it, which the load would create it in)."""
    probe = directory
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: cannot write under {directory} ({probe} is not a writable directory)")


def _fallback_checkpoint_path(run_id: str) -> str:
    """Where a run that stopped early leaves its checkpoint when --checkpoint was not given."""
    return os.path.abspath(f"s3ddb-checkpoint-{run_id}.json")


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _ProgressBar:
    """One line on a terminal, redrawn at most a few times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0
        self.drawn = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.25:
            return
        self.last = now
        line = (
            f"rows {p.rows_read:,}  written {p.items_written:,}  {p.items_per_second:,.0f} items/s"
            f"  rejects {p.rows_rejected:,}"
        )
        if p.object_size and p.offset <= p.object_size:
            frac = p.offset / p.object_size
            width = 24
            filled = int(frac * width)
            line = f"[{'#' * filled}{'.' * (width - filled)}] {frac:5.1%}  " + line
            if frac > 0.001:
                eta = p.elapsed_s * (1 - frac) / frac
                line += f"  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self.stream.write("\r" + line[:160] + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _run_load(args: argparse.Namespace, *, dry_run: bool) -> tuple[RunResult, str | None]:
    """One load: over worker processes when the object is cut into shards, else in this one."""
    import uvloop

    from loader import clients

    plan = _plan(args, dry_run=dry_run)
    # one session for every client and the lean sender's credentials (see clients.session)
    session = clients.session()
    sharded = plan.sharded or _shards(args, plan, session=session)
    if sharded is not None:
        return _load_sharded(args, plan, sharded, session=session)
    return uvloop.run(_load(args, plan, session=session))


#: an explicit ``--workers N`` still gives each worker at least this many bytes (a process for a
#: few rows costs more than it loads)
_MIN_BYTES_PER_SHARD = 8 << 10


def _shards(args: argparse.Namespace, plan: _Plan, *, session: Any) -> ShardedCheckpoint | None:
    """The shards of a new load with ``--workers`` (given, or the default for the object's size);
    None to load in one process (one worker, a resume of a one-process load, a compressed object,
    a duplicate policy that needs every key of the object in one process, an object the planner
    cuts into one range)."""
    from loader import clients, workers
    from loader.source import open_source

    if plan.resume is not None or args.workers == 1:
        return None
    spec = plan.spec
    s3 = clients.s3_client(session) if spec.source.startswith("s3://") else None
    info = open_source(
        spec.source, s3_client=s3, spec=spec.csv, version_id=spec.version_id, etag=spec.etag
    ).info
    n = args.workers or workers.default_workers(info.size, compressed=info.compression != "none")
    if n <= 1 or not info.size:
        return None
    if info.compression != "none":
        print(
            f"s3ddb: note: a {info.compression} object cannot be cut by bytes: one worker loads it",
            file=sys.stderr,
        )
        return None
    if spec.on_duplicate != "last":
        print(
            f"s3ddb: note: --on-duplicate {spec.on_duplicate} remembers every key of the object, which "
            "only one process can: one worker loads it",
            file=sys.stderr,
        )
        return None
    if args.workers is not None and n > max(1, info.size // _MIN_BYTES_PER_SHARD):
        n = max(1, info.size // _MIN_BYTES_PER_SHARD)
        print(
            f"s3ddb: note: {n} worker(s) for a {info.size:,}-byte object (at least 8 KB each)",
            file=sys.stderr,
        )
        if n <= 1:
            return None
    pinned = dataclasses.replace(spec, version_id=info.version_id, etag=info.etag)
    state, note = workers.plan(pinned, n=n, size=info.size, s3_client=s3)
    if note and args.workers is not None:
        print(f"s3ddb: note: {_printable(note)}", file=sys.stderr)
    return state if len(state.shards) > 1 else None


def _preflight_shards(state: ShardedCheckpoint, *, run_id: str, session: Any, resumed: bool) -> None:
    """What every worker would find wrong, found once before any starts: the object changed since
    it was pinned (``resumed``: a new plan was made from the object moments ago), a missing table, a
    key column the header lacks, an unusable rejects bucket."""
    from loader import clients
    from loader.rejects import open_rejects
    from loader.schema import RowConverter
    from loader.source import open_source

    spec = state.spec
    needs_s3 = spec.source.startswith("s3://") or (spec.rejects or "").startswith("s3://")
    s3 = clients.s3_client(session) if needs_s3 else None
    if resumed:
        open_source(spec.source, s3_client=s3, spec=spec.csv, version_id=spec.version_id, etag=spec.etag)
    keys = clients.describe_key_schema(clients.dynamodb_client(session), spec.table)
    header = state.header_names or (tuple(spec.csv.columns) if spec.csv.columns else None)
    if header is not None:
        RowConverter(spec.schema, list(header), keys)
    if (spec.rejects or "").startswith("s3://"):
        open_rejects(spec.rejects, run_id=run_id, s3_client=s3)  # checks the bucket; writes nothing


def _load_sharded(
    args: argparse.Namespace, plan: _Plan, state: ShardedCheckpoint, *, session: Any
) -> tuple[RunResult, str | None]:
    """Run the shards in worker processes; the checkpoint file holds every shard's mark."""
    from loader import workers

    spec = state.spec
    run_id = _run_id(spec.table)
    dry_run = plan.knobs.dry_run
    if plan.sharded is not None and args.workers is not None and args.workers != len(state.shards):
        print(
            f"s3ddb: note: the checkpoint's {len(state.shards)} shards are resumed as they were planned; "
            "--workers is ignored",
            file=sys.stderr,
        )
    if dry_run:
        import tempfile

        path = os.path.join(tempfile.gettempdir(), f"s3ddb-validate-{run_id}.json")
    else:
        path = os.path.abspath(args.checkpoint or _fallback_checkpoint_path(run_id))
        if os.path.isdir(path):
            raise ConfigError(f"--checkpoint {path} is a directory; name a file")
        _check_writable(os.path.dirname(path), what="the checkpoint")
    _preflight_shards(state, run_id=run_id, session=session, resumed=plan.sharded is not None)

    def write_file(target: str, data: bytes) -> None:
        try:
            _write_atomic(target, data)
        except OSError as exc:
            raise ConfigError(f"cannot write the checkpoint {target}: {exc.strerror or exc}") from exc

    interrupted: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted.append(signum)
        if len(interrupted) == 1:
            print(
                "\ns3ddb: stopping: workers finish their in-flight writes; writing the checkpoint "
                "(again to stop at once)",
                file=sys.stderr,
            )

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = _ProgressBar(sys.stderr) if not args.json and not args.quiet and sys.stderr.isatty() else None
    if not args.quiet and not args.json:
        shown = "" if dry_run else f" (checkpoint {path})"
        print(f"s3ddb: {len(state.shards)} workers{shown}", file=sys.stderr)
    try:
        result, _final = workers.run_workers(
            state,
            knobs=plan.knobs,
            run_id=run_id,
            sender=args.sender,
            save=lambda state: write_file(path, state.dumps()),
            should_stop=lambda: bool(interrupted),
            should_abort=lambda: len(interrupted) > 1,
            on_progress=bar,
        )
    except workers.WorkersFailed as exc:
        if not dry_run:
            exc.args = (f"{exc}; continue with --resume {path}",)
            exc.checkpoint_path = path  # type: ignore[attr-defined]
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if bar is not None:
            bar.close()
        if dry_run:
            with contextlib.suppress(OSError):
                os.unlink(path)
    saved: str | None = path
    if dry_run:
        saved = None
    elif result.complete and not args.checkpoint:
        with contextlib.suppress(OSError):
            os.unlink(path)
        saved = None
    if interrupted:
        raise _Interrupted(result, saved)
    return result, saved


def _run_id(table: str) -> str:
    """A run's name: its rejects file, its fallback checkpoint and its workers' files carry it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{table}-{stamp}-{uuid.uuid4().hex[:6]}"


async def _load(args: argparse.Namespace, plan: _Plan, *, session: Any) -> tuple[RunResult, str | None]:
    from loader import clients
    from loader import spec as load_spec
    from loader.schema import binary_attributes

    dry_run = plan.knobs.dry_run
    spec = plan.spec
    needs_s3 = spec.source.startswith("s3://") or (spec.rejects or "").startswith("s3://")
    s3 = clients.s3_client(session) if needs_s3 else None
    ddb = clients.dynamodb_client(session)  # DescribeTable, and the lean sender's connection
    keys = clients.describe_key_schema(ddb, spec.table)
    run_id = _run_id(spec.table)
    checkpoint_path: str | None = args.checkpoint

    async def on_checkpoint(cp: Checkpoint) -> None:
        if checkpoint_path:
            await asyncio.get_running_loop().run_in_executor(
                None, _write_atomic, checkpoint_path, orjson.dumps(cp.to_dict(), option=orjson.OPT_INDENT_2)
            )

    interrupted: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if interrupted:  # a second signal: stop now
            os._exit(EXIT_INTERRUPTED)
        interrupted.append(signum)
        print("\ns3ddb: stopping: finishing in-flight writes and writing the checkpoint", file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):
            pass

    bar = _ProgressBar(sys.stderr) if not args.json and not args.quiet and sys.stderr.isatty() else None

    async def go(sender: Any) -> RunResult:
        return await load_spec.run(
            spec,
            keys=keys,
            sender=sender,
            run_id=run_id,
            s3_client=s3,
            knobs=plan.knobs,
            should_stop=lambda _p: bool(interrupted),
            resume=plan.resume,
            on_checkpoint=on_checkpoint,
            on_progress=bar,
        )

    try:
        if dry_run:
            result = await go(None)
        else:
            async with clients.open_sender(
                args.sender,
                concurrency=spec.concurrency,
                ddb=ddb,
                binary_attrs=binary_attributes(spec.schema, keys),
            ) as sender:
                result = await go(sender)
    except S3ddbError as exc:
        if bar is not None:
            bar.close()
        progressed = exc.result is not None and exc.result.checkpoint.offset > 0
        if dry_run:
            pass
        elif progressed and not checkpoint_path and not exc.result.checkpoint.complete:
            path = _fallback_checkpoint_path(run_id)
            _write_atomic(path, orjson.dumps(exc.result.checkpoint.to_dict(), option=orjson.OPT_INDENT_2))
            exc.args = (f"{exc}; checkpoint written to {path} (continue with --resume {path})",)
            exc.checkpoint_path = path  # type: ignore[attr-defined]
        elif exc.result is not None and checkpoint_path:
            exc.args = (f"{exc}; continue with --resume {checkpoint_path}",)
            exc.checkpoint_path = checkpoint_path  # type: ignore[attr-defined]
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    if bar is not None:
        bar.close()
    saved = checkpoint_path
    if not result.complete and not checkpoint_path and not dry_run:
        saved = _fallback_checkpoint_path(run_id)
        _write_atomic(saved, orjson.dumps(result.checkpoint.to_dict(), option=orjson.OPT_INDENT_2))
    if interrupted:
        raise _Interrupted(result, saved)
    return result, saved


class _Interrupted(Exception):
    def __init__(self, result: RunResult, checkpoint: str | None) -> None:
        super().__init__("interrupted")
        self.result = result
        self.checkpoint = checkpoint


def summary(result: RunResult, *, checkpoint: str | None, dry_run: bool) -> dict[str, Any]:
    c = result.counters
    total = result.checkpoint.counters
    out: dict[str, Any] = {
        "status": result.stopped,
        "rows_read": c.rows_read,
        "items_written": c.items_written,
        "rows_rejected": c.rows_rejected,
        "duplicates_collapsed": c.duplicates_collapsed,
        "retries": c.retries,
        "throttle_events": c.throttle_events,
        "write_units": c.write_units,
        "seconds": round(result.seconds, 3),
        "items_per_second": round(c.items_written / result.seconds, 1) if result.seconds > 0 else 0.0,
        "rejects": result.rejects_location,
        "checkpoint": checkpoint,
        # a complete run balances its own rows; a stopped one balances the rows below its checkpoint
        # (rows above it are in batches left unfinished, and are read again on resume)
        "invariant_ok": c.balanced if result.complete else total.balanced,
        "object": {
            "source": result.checkpoint.source,
            "version_id": result.checkpoint.version_id,
            "offset": result.checkpoint.offset,
            "size": result.checkpoint.size,
            "complete": result.checkpoint.complete,
            "totals": total.to_dict(),
        },
    }
    if dry_run:
        out["dry_run"] = True
        out["items_valid"] = out["items_written"]
    return out


def _print_summary(s: dict[str, Any], *, stream: TextIO) -> None:
    verb = "valid" if s.get("dry_run") else "written"
    lines = [
        f"s3ddb: {s['status']} in {s['seconds']:.1f} s",
        f"  rows read             {s['rows_read']:>14,}",
        f"  items {verb:<15} {s['items_written']:>14,}   ({s['items_per_second']:,.0f} items/s)",
        f"  rows rejected         {s['rows_rejected']:>14,}"
        + (f"   -> {s['rejects']}" if s["rejects"] else ""),
        f"  duplicates collapsed  {s['duplicates_collapsed']:>14,}",
        f"  retries / throttles   {s['retries']:>7,} / {s['throttle_events']:,}",
        f"  write units           {s['write_units']:>14,}",
        f"  rows accounted for    {'yes' if s['invariant_ok'] else 'NO: counters do not balance'}",
    ]
    if s["checkpoint"]:
        lines.append(f"  checkpoint            {s['checkpoint']}")
    stream.write("\n".join(lines) + "\n")


def _cmd_load(args: argparse.Namespace, *, dry_run: bool) -> int:
    try:
        result, saved = _run_load(args, dry_run=dry_run)
    except _Interrupted as intr:
        s = summary(intr.result, checkpoint=intr.checkpoint, dry_run=dry_run)
        s["status"] = "interrupted"
        _emit(args, s)
        hint = f"; continue with --resume {intr.checkpoint}" if intr.checkpoint else ""
        print(f"s3ddb: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except S3ddbError as exc:
        if exc.result is None:
            raise  # nothing was read: main reports it (and the --json error object)
        s = summary(exc.result, checkpoint=getattr(exc, "checkpoint_path", None), dry_run=dry_run)
        s["status"] = "failed"
        s["error"] = _printable(str(exc))
        s["exit_code"] = exc.exit_code
        _emit(args, s)
        print(f"s3ddb: error: {_printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    s = summary(result, checkpoint=saved, dry_run=dry_run)
    _emit(args, s)
    if not s["invariant_ok"]:
        print("s3ddb: error: rows read do not balance written + rejected + collapsed", file=sys.stderr)
        return 1
    return EXIT_OK


def _error_summary(message: str, exit_code: int) -> dict[str, Any]:
    """The ``--json`` object of a load that stopped before it read a row: the summary's keys, zero."""
    zero = Counters().to_dict()
    return {
        "status": "error",
        "error": message,
        "exit_code": exit_code,
        **zero,
        "seconds": 0.0,
        "items_per_second": 0.0,
        "rejects": None,
        "checkpoint": None,
        "invariant_ok": True,
        "object": None,
    }


def _error_object(command: str, message: str, exit_code: int) -> dict[str, Any]:
    """The ``--json`` object of a command that stopped on an error: the keys its summary has."""
    if command != "replay":
        return _error_summary(message, exit_code)
    from lambda_src.admin import ReplayReport

    empty = ReplayReport(queue_url="", function="", dry_run=False, items=()).to_dict()
    return {
        **empty,
        "status": "error",
        "error": message,
        "exit_code": exit_code,
        "queue_url": None,
        "function": None,
        "stack": None,
    }


def _printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\x1b``, ``\\n``): error
    messages quote data from the object, which must not drive the terminal or split the line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _emit(args: argparse.Namespace, s: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(s).decode() + "\n")
    else:
        _print_summary(s, stream=sys.stdout)
    sys.stdout.flush()


# -- local stand-ins and the Lambda chain -------------------------------------------------------


def _cmd_local(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from infra.local import stack
    except ImportError as exc:  # installed without the repository's infra/ package
        raise ConfigError(f"the local stand-ins are not installed with this copy of s3ddb ({exc})") from exc
    state_dir = Path(args.dir) if getattr(args, "dir", None) else None
    if args.local_command == "up":
        try:
            services = stack.up(
                state_dir=state_dir,
                dynamodb_port=args.dynamodb_port,
                s3_port=args.s3_port,
                lambda_port=args.lambda_port,
                lambda_timeout=args.lambda_timeout,
            )
        except (RuntimeError, OSError) as exc:  # a port taken, Java or npm missing, a service that died
            raise ConfigError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from exc
        sys.stdout.write(stack.format_exports(services.env) + "\n")
        return EXIT_OK
    if args.local_command == "down":
        stopped = stack.down(state_dir=state_dir)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}", file=sys.stderr)
        return EXIT_OK
    if args.local_command == "notify":
        import boto3

        from lambda_src import admin

        out = admin.notify(
            args.uri,
            function=args.function,
            lambda_client=boto3.client("lambda"),
            s3_client=boto3.client("s3"),
        )
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        return EXIT_OK
    raise ConfigError(f"unknown local command {args.local_command!r}")


def _stack(args: argparse.Namespace) -> StackOutputs | None:
    """The outputs of the stack named by ``--stack``, else by ``$S3DDB_STACK``; None when neither
    names one. A stack that is not settled (being updated, say) is said on stderr."""
    import boto3

    from lambda_src import admin

    name = args.stack if args.stack is not None else os.environ.get("S3DDB_STACK", "").strip()
    if args.stack is None and not name:
        return None
    outputs = admin.stack_outputs(name.strip(), cfn_client=boto3.client("cloudformation"))
    if outputs.warning:
        print(f"s3ddb: warning: {_printable(outputs.warning)}", file=sys.stderr)
    return outputs


def _cmd_status(args: argparse.Namespace) -> int:
    import boto3

    from lambda_src import admin

    stack = _stack(args)
    ledger = (
        args.ledger_table
        or (stack.require("LedgerTable") if stack is not None else None)
        or os.environ.get("S3DDB_LEDGER_TABLE", "").strip()
        or LOCAL_LEDGER
    )
    record = admin.status(
        args.uri, ledger_table=ledger, ddb_client=boto3.client("dynamodb"), table=args.table
    )
    if args.json:
        sys.stdout.write(orjson.dumps(record, default=str).decode() + "\n")
    else:
        _print_status(record, stream=sys.stdout)
    return EXIT_OK


#: the per-shard (or per-object) fields a status line shows, as ``name value``
_LINE_COUNTERS = ("rows_read", "items_written", "rows_rejected", "duplicates_collapsed")


def _print_status(record: dict[str, Any], *, stream: TextIO) -> None:
    """A load's status for a person: one ``key value`` line per field (the aggregate of a sharded
    load or of a prefix backfill), then one line per shard or per object."""
    for k, v in record.items():
        if k not in ("shards", "loads"):
            stream.write(_printable(f"{k:<22} {v}") + "\n")
    for shard in record.get("shards") or []:
        rng = shard.get("range") or ["?", "?"]
        counters = " ".join(f"{c}={shard.get(c, 0)}" for c in _LINE_COUNTERS)
        line = (
            f"shard {shard.get('shard')!s:>3}  bytes {rng[0]}-{rng[1]}  {shard.get('status')}  "
            f"hops={shard.get('hops')} {counters}"
        )
        if shard.get("wcu_share") is not None:
            line += f" wcu_share={shard['wcu_share']:g}"
        why = shard.get("reason") or shard.get("last_error")
        if why:
            line += f"  ({why})"
        stream.write(_printable(line) + "\n")
    for load in record.get("loads") or []:
        counters = " ".join(f"{c}={load.get(c) or 0}" for c in _LINE_COUNTERS)
        line = f"{load.get('status')!s:<10} {load.get('object')}  {counters}"
        if load.get("shards"):
            line += f" shards={load['shards']}"
        if load.get("reason"):
            line += f"  ({load['reason']})"
        stream.write(_printable(line) + "\n")


def _cmd_invoke(args: argparse.Namespace) -> int:
    """Send a backfill; exit 2 when the function refuses it, 1 when it failed, else 0."""
    import boto3

    from lambda_src import admin
    from loader.spec import csv_to_dict, schema_to_dict

    if not args.source.startswith("s3://"):
        raise ConfigError(
            f"{args.source!r}: the function loads from S3; use s3://bucket/key or s3://bucket/prefix/"
        )
    spec = _spec_from_args(args)  # every option checked here, as the function will check it
    LoadSpec.from_dict(spec.to_dict(), where="the backfill's options")  # the size and depth limits
    if args.version_id and (args.source.endswith("/") or args.source.count("/") < 3):
        raise ConfigError("--version-id names a version of one object, not of a prefix")
    import math

    from lambda_src.events import MAX_INT_OPTION, MAX_PARALLEL

    if args.parallel is not None and not 1 <= args.parallel <= MAX_PARALLEL:
        raise ConfigError(f"--parallel must be in 1..{MAX_PARALLEL}, got {args.parallel}")
    if args.max_wcu is not None and not (math.isfinite(args.max_wcu) and 0 < args.max_wcu <= MAX_INT_OPTION):
        raise ConfigError(f"--max-wcu must be a positive number, got {args.max_wcu}")
    if args.max_rejects is not None and not 0 <= args.max_rejects <= MAX_INT_OPTION:
        raise ConfigError(f"--max-rejects must be in 0..{MAX_INT_OPTION}, got {args.max_rejects}")
    csv_given = (
        any(v is not None for v in (args.delimiter, args.columns, args.encoding, args.compression))
        or args.no_header
    )
    stack = _stack(args)
    function = args.function or (stack.require("FunctionName") if stack is not None else LOCAL_FUNCTION)
    out = admin.send_backfill(
        args.source,
        table=spec.table,
        function=function,
        lambda_client=boto3.client("lambda"),
        schema=schema_to_dict(spec.schema) if args.schema or args.types else None,
        csv=csv_to_dict(spec.csv) if csv_given else None,
        on_duplicate=args.on_duplicate,
        version_id=args.version_id,
        reload=args.reload,
        parallel=args.parallel,
        max_wcu=args.max_wcu,
        max_rejects=args.max_rejects,
        shuffle_window=args.shuffle_window,
    )
    sys.stdout.write(orjson.dumps(out, default=str).decode() + "\n")
    if out.get("note"):
        print(f"s3ddb: note: {_printable(str(out['note']))}", file=sys.stderr)
    status = str(out.get("status", ""))
    if status == "refused":
        print(f"s3ddb: refused: {_printable(str(out.get('reason', '')))}", file=sys.stderr)
        return EXIT_CONFIG
    if status.lower() == "failed":
        print(f"s3ddb: failed: {_printable(str(out.get('reason', '')))}", file=sys.stderr)
        return 1
    return EXIT_OK


#: the replay's Lambda client: each Event invoke is bounded (2 attempts of 5 s connect + 10 s read)
#: so a batch of 10 is resent well inside the messages' visibility timeout (REPLAY_VISIBILITY_S)
_REPLAY_INVOKE_CONFIG: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"mode": "standard", "max_attempts": 2},
}


def _replay_line(item: ReplayItem) -> str:
    """One message of a replay, for a person: action, request id, condition, event kind, object."""
    ident = item.request_id or f"message {item.message_id}"
    line = f"{item.action!s:<12} {ident}  {item.condition or '-'}  {item.kind or '-'}  {item.object or '-'}"
    if item.reason:
        line += f"  ({item.reason})"
    return _printable(line)


def _cmd_replay(args: argparse.Namespace) -> int:
    """Resend the failure queue's records; 0 all resent (or none there), 1 some left, 2 config."""
    import boto3
    import botocore.config

    from lambda_src import admin

    stack = _stack(args)
    if stack is None and not args.queue_url:
        raise ConfigError("replay needs --stack NAME (or S3DDB_STACK) or --queue-url URL")
    queue_url = args.queue_url or (stack.require("FailureQueueUrl") if stack is not None else "")
    function = args.function or (stack.require("FunctionName") if stack is not None else LOCAL_FUNCTION)
    # the stack's ARN tells its function from one of the same name in another account or region
    function_arn = None if args.function or stack is None else stack.get("FunctionArn")

    def on_item(item: ReplayItem) -> None:
        if not args.json:
            sys.stdout.write(_replay_line(item) + "\n")
            sys.stdout.flush()

    report = admin.replay_failures(
        queue_url,
        function=function,
        function_arn=function_arn,
        lambda_client=boto3.client("lambda", config=botocore.config.Config(**_REPLAY_INVOKE_CONFIG)),
        sqs_client=boto3.client("sqs"),
        dry_run=args.dry_run,
        max_messages=args.max,
        on_item=on_item,
    )
    code = EXIT_OK if report.ok else 1
    for warning in report.warnings:
        print(f"s3ddb: warning: {_printable(warning)}", file=sys.stderr)
    act = admin.ReplayAction
    if args.json:
        out = {**report.to_dict(), "stack": stack.name if stack is not None else None, "exit_code": code}
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    elif not report.items:
        sys.stdout.write("s3ddb: the failure queue has no visible messages\n")
    elif args.dry_run:
        sys.stdout.write(
            f"s3ddb: dry run, nothing sent or deleted: {len(report.items)} received, "
            f"{report.count(act.WOULD_RESEND)} would be resent, {report.count(act.LEFT)} would stay\n"
        )
    else:
        not_deleted = report.count(act.NOT_DELETED)
        sys.stdout.write(
            f"s3ddb: {len(report.items)} received, {report.count(act.RESENT)} resent; kept in the queue: "
            f"{report.count(act.LEFT)} not to resend, {report.count(act.FAILED)} failed to send"
            + (f", {not_deleted} resent but not deleted" if not_deleted else "")
            + "\n"
        )
    sys.stdout.flush()
    if code != EXIT_OK:
        kept = sum(1 for item in report.items if not item.ok)
        print(f"s3ddb: {kept} message(s) stay in the queue; the report says why", file=sys.stderr)
    return code


def _tune_gc() -> None:
    """A load allocates millions of short-lived dicts that never form cycles; the default
    collector thresholds (700) run a generation-0 pass every few rows. Measured on a 100k-row load:
    8.1 -> 5.2-5.9 CPU-seconds with these thresholds. Objects alive after start-up are frozen."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


class _UsageError(Exception):
    """argparse's complaint, raised instead of exiting so that ``--json`` still gets its object."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _UsageError(f"{self.format_usage().strip()}\n{self.prog}: error: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        lines = [_printable(line) for line in str(exc).splitlines()]
        if "--json" in argv:
            command = next((a for a in argv if not a.startswith("-")), "")
            sys.stdout.write(orjson.dumps(_error_object(command, lines[-1], EXIT_CONFIG)).decode() + "\n")
        print("\n".join(lines), file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="s3ddb: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "verbose", False):
        # basicConfig does nothing where the host already configured logging: ask for ours anyway
        logging.getLogger("loader").setLevel(logging.INFO)
        logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        if args.command in ("load", "validate"):
            _tune_gc()
            return _cmd_load(args, dry_run=args.command == "validate")
        if args.command == "local":
            return _cmd_local(args)
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "invoke":
            return _cmd_invoke(args)
        if args.command == "replay":
            return _cmd_replay(args)
    except (ConfigError, SourceError) as exc:
        return _fail(args, str(exc), EXIT_CONFIG)
    except (NoRegionError, NoCredentialsError) as exc:  # the setup, not the service: fix and rerun
        return _fail(args, str(exc), EXIT_CONFIG)
    except BotoCoreError as exc:  # a service or endpoint the command could not reach
        return _fail(args, str(exc), 1)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code, message = err.get("Code", ""), err.get("Message", "")
        return _fail(args, f"{code}: {message or exc}", EXIT_CONFIG if code in _CONFIG_CODES else 1)
    except KeyboardInterrupt:  # before the load had started: nothing to checkpoint
        return _fail(args, "interrupted", EXIT_INTERRUPTED, prefix="s3ddb: ")
    except S3ddbError as exc:
        return _fail(args, str(exc), exc.exit_code)
    parser.error(f"unknown command {args.command!r}")
    return EXIT_CONFIG  # pragma: no cover - parser.error raises


def _fail(args: argparse.Namespace, message: str, code: int, *, prefix: str = "s3ddb: error: ") -> int:
    """One line on stderr (escaped), and with ``--json`` the error object on stdout; ``code`` back."""
    message = _printable(message)
    if getattr(args, "json", False) and args.command in ("load", "validate", "invoke", "status", "replay"):
        sys.stdout.write(orjson.dumps(_error_object(args.command, message, code)).decode() + "\n")
        sys.stdout.flush()
    print(f"{prefix}{message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
