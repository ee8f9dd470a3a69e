"""The function's settings: the only place in ``lambda_src`` that reads the environment.

=========================  ===========================================================  ==========
variable                   meaning                                                      default
=========================  ===========================================================  ==========
S3DDB_TABLE                target table for S3 notifications (a backfill may name one)  (none)
S3DDB_SCHEMA               schema as JSON, or an ``s3://`` URI of a JSON document       (strings)
S3DDB_CSV                  CSV options as JSON: delimiter, encoding, header, columns,    (defaults)
                           quotechar, compression (``{"delimiter": "\\t"}``)
S3DDB_ON_DUPLICATE         which row wins when a key repeats: last, first or error      last
S3DDB_CONCURRENCY          concurrent BatchWriteItem calls per hop                      40
S3DDB_MAX_WCU              write units per second one load may spend, shared by its      (none)
                           shards (each hop: this over the shards still running)
S3DDB_REJECTS              where rejected rows go (``s3://bucket/prefix/`` or a dir)    (engine's)
S3DDB_LEDGER_TABLE         the ledger table (one item per object version and table)     required
S3DDB_MAX_HOPS             most hops one chain may take before it is FAILED             50
S3DDB_SAFETY_MARGIN_MS     time kept free at the end of every hop, on top of estimates  10000
S3DDB_ALLOWED_BUCKETS      comma-separated buckets a load may read (empty: any)         (any)
S3DDB_ALLOWED_TABLES       comma-separated tables a load may write (empty: any)         (any)
S3DDB_MAX_CHAINS           chains a backfill runs at once, shards included              4
S3DDB_CHECKPOINT_INTERVAL  seconds between committed low-water marks inside a hop       5
S3DDB_CHUNK_BYTES          source bytes read per step (the engine polls its stop between)  1048576
S3DDB_SENDER               ``lean`` (own signed HTTP) or ``botocore`` (aiobotocore, the reference)  lean
S3DDB_SHUFFLE_WINDOW       rows shuffled before batching (0: off, else 1000..1000000)    0
S3DDB_ALLOWED_PREFIX       the key prefix every object read must start with              (any)
S3DDB_HOP_WORKERS          worker processes per hop: ``auto`` (one per vCPU the memory buys)  auto
                           or 1..6 (forces it)
=========================  ===========================================================  ==========

``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` (set by Lambda) decides ``auto``: Lambda gives one vCPU per
1,769 MB, up to 6 at 10,240 MB. ``os.cpu_count()`` is no guide: it says 2 even at 128 MB, where
the function has a fraction of one vCPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from loader.config import CsvSpec, DuplicatePolicy
from loader.errors import ConfigError

__all__ = ["BOUNDS", "MAX_HOP_WORKERS", "MB_PER_VCPU", "Settings", "vcpus_for_memory"]

#: Lambda's memory per vCPU, and the most vCPUs a function gets (at 10,240 MB)
MB_PER_VCPU = 1769
MAX_HOP_WORKERS = 6

#: The integer settings and the range each accepts, inclusive, keyed by variable. The one table of
#: them: ``Settings`` checks its fields against it, and infra/template.yaml gives each parameter that
#: feeds one of these variables the same MinValue/MaxValue (tests/unit/test_template.py), so a stack
#: parameter the function would refuse at its first event is refused by CloudFormation instead.
BOUNDS: dict[str, tuple[int, int]] = {
    "S3DDB_CONCURRENCY": (1, 1024),
    "S3DDB_MAX_HOPS": (1, 100_000),
    "S3DDB_SAFETY_MARGIN_MS": (0, 900_000),
    "S3DDB_MAX_CHAINS": (1, 1000),
    "S3DDB_CHUNK_BYTES": (4096, 64 << 20),
    "S3DDB_SHUFFLE_WINDOW": (0, 1_000_000),
    "S3DDB_HOP_WORKERS": (1, MAX_HOP_WORKERS),  # or "auto"
}

#: the Settings field each bounded variable sets
_BOUNDED_FIELDS: dict[str, str] = {
    "concurrency": "S3DDB_CONCURRENCY",
    "max_hops": "S3DDB_MAX_HOPS",
    "safety_margin_ms": "S3DDB_SAFETY_MARGIN_MS",
    "max_chains": "S3DDB_MAX_CHAINS",
    "chunk_bytes": "S3DDB_CHUNK_BYTES",
    "shuffle_window": "S3DDB_SHUFFLE_WINDOW",
}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    """The variable as an integer (its range is checked by ``Settings``, against ``BOUNDS``)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    # float() accepts "nan" and "inf"; nan passes any "<= 0" test and would switch a limit off
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")
    return value


def _csv(raw: str) -> CsvSpec:
    if not raw:
        return CsvSpec()
    import orjson

    from loader.spec import csv_from_dict

    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"S3DDB_CSV is not JSON: {exc}") from None
    return csv_from_dict(data, where="S3DDB_CSV")


def _duplicate(raw: str) -> DuplicatePolicy:
    if raw not in ("last", "first", "error"):
        raise ConfigError(f"S3DDB_ON_DUPLICATE must be last, first or error, got {raw!r}")
    return cast(DuplicatePolicy, raw)


def vcpus_for_memory(memory_mb: int | None) -> int:
    """The whole vCPUs a function of ``memory_mb`` has, rounded to the nearest (1 per 1,769 MB,
    1..6): 3,008 MB is 2, 10,240 MB is 6, 2,048 MB is 1 (a second process there would share a
    little more than one vCPU with the first). 1 when the memory is unknown (not in Lambda)."""
    if not memory_mb or memory_mb <= 0:
        return 1
    return max(1, min(MAX_HOP_WORKERS, int(memory_mb / MB_PER_VCPU + 0.5)))


def _hop_workers(env: Mapping[str, str]) -> int | None:
    raw = env.get("S3DDB_HOP_WORKERS", "").strip().lower()
    if raw in ("", "auto"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"S3DDB_HOP_WORKERS={raw!r} must be auto or an integer") from None


def _memory(env: Mapping[str, str]) -> int | None:
    raw = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "").strip()
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def _names(env: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the handler needs to know that is not in the event. Checks itself.

    Empty allow-lists mean "no restriction" (a deployment should set both; the template does).
    """

    ledger_table: str
    table: str | None = None
    schema: str | None = None
    csv: CsvSpec = field(default_factory=CsvSpec)
    on_duplicate: DuplicatePolicy = "last"
    concurrency: int = 40
    max_wcu: float | None = None
    rejects: str | None = None
    max_hops: int = 50
    safety_margin_ms: int = 10_000
    allowed_buckets: frozenset[str] = frozenset()
    allowed_tables: frozenset[str] = frozenset()
    #: the key prefix every object read must start with ("": any key)
    allowed_prefix: str = ""
    max_chains: int = 4
    checkpoint_interval_s: float = 5.0
    chunk_bytes: int = 1 << 20
    #: rows shuffled before batching (0: off); a backfill's ``shuffle_window`` replaces it
    shuffle_window: int = 0
    sender: str = "lean"
    #: S3DDB_HOP_WORKERS: None is ``auto`` (from ``memory_mb``)
    hop_workers: int | None = None
    #: AWS_LAMBDA_FUNCTION_MEMORY_SIZE, the function's memory in MB (None: not in Lambda)
    memory_mb: int | None = None

    def __post_init__(self) -> None:
        if self.sender not in ("lean", "botocore"):
            raise ConfigError(f"S3DDB_SENDER must be lean or botocore, got {self.sender!r}")
        if not self.ledger_table:
            raise ConfigError("S3DDB_LEDGER_TABLE is required: the table that fences each chain")
        for name, var in _BOUNDED_FIELDS.items():
            value = getattr(self, name)
            low, high = BOUNDS[var]
            if not low <= value <= high:
                raise ConfigError(f"{var}={value} must be in {low}..{high}")
        if self.checkpoint_interval_s <= 0:
            raise ConfigError("S3DDB_CHECKPOINT_INTERVAL must be positive")
        from loader.shuffle import check_window

        problem = check_window(self.shuffle_window, "S3DDB_SHUFFLE_WINDOW")
        if problem is not None:
            raise ConfigError(problem)
        if self.hop_workers is not None:
            low, high = BOUNDS["S3DDB_HOP_WORKERS"]
            if not low <= self.hop_workers <= high:
                raise ConfigError(f"S3DDB_HOP_WORKERS={self.hop_workers} must be auto or in {low}..{high}")

    @property
    def workers_per_hop(self) -> int:
        """Worker processes a hop may run: S3DDB_HOP_WORKERS when it is a number, else the vCPUs
        the function's memory buys (``vcpus_for_memory``). A hop runs fewer when its range is
        small, and one in-process run when it is 1 (see ``lambda_src.chain``)."""
        if self.hop_workers is not None:
            return self.hop_workers
        return vcpus_for_memory(self.memory_mb)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``S3DDB_*`` variables (``env`` defaults to ``os.environ``)."""
        env = os.environ if env is None else env
        return cls(
            ledger_table=env.get("S3DDB_LEDGER_TABLE", "").strip(),
            table=env.get("S3DDB_TABLE", "").strip() or None,
            schema=env.get("S3DDB_SCHEMA", "").strip() or None,
            csv=_csv(env.get("S3DDB_CSV", "").strip()),
            on_duplicate=_duplicate(env.get("S3DDB_ON_DUPLICATE", "").strip() or "last"),
            concurrency=_int(env, "S3DDB_CONCURRENCY", 40),
            max_wcu=_float(env, "S3DDB_MAX_WCU", None),
            rejects=env.get("S3DDB_REJECTS", "").strip() or None,
            max_hops=_int(env, "S3DDB_MAX_HOPS", 50),
            safety_margin_ms=_int(env, "S3DDB_SAFETY_MARGIN_MS", 10_000),
            allowed_buckets=_names(env, "S3DDB_ALLOWED_BUCKETS"),
            allowed_tables=_names(env, "S3DDB_ALLOWED_TABLES"),
            allowed_prefix=env.get("S3DDB_ALLOWED_PREFIX", ""),
            max_chains=_int(env, "S3DDB_MAX_CHAINS", 4),
            checkpoint_interval_s=_float(env, "S3DDB_CHECKPOINT_INTERVAL", 5.0) or 5.0,
            chunk_bytes=_int(env, "S3DDB_CHUNK_BYTES", 1 << 20),
            shuffle_window=_int(env, "S3DDB_SHUFFLE_WINDOW", 0),
            sender=env.get("S3DDB_SENDER", "").strip().lower() or "lean",
            hop_workers=_hop_workers(env),
            memory_mb=_memory(env),
        )

    def bucket_allowed(self, bucket: str) -> bool:
        return not self.allowed_buckets or bucket in self.allowed_buckets

    def key_allowed(self, key: str) -> bool:
        """Whether ``key`` (an object's key, or a prefix whose objects will be read) is under
        ``allowed_prefix``: a prefix backfill must name a prefix inside it, not one above it."""
        return key.startswith(self.allowed_prefix)

    def table_allowed(self, table: str) -> bool:
        return not self.allowed_tables or table in self.allowed_tables
