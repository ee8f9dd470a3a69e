"""How many worker processes a hop runs: from the function's memory or S3DDB_HOP_WORKERS, and
never for what one process must load (compressed, first/error duplicates, a small range). And the
sub-ranges' state as the ledger keeps it."""

from __future__ import annotations

import pytest

from lambda_src.hopworkers import MIN_BYTES_PER_WORKER, HopSplit, workers_for_range
from lambda_src.settings import Settings, vcpus_for_memory
from loader.errors import ConfigError
from loader.models import Checkpoint, Counters
from loader.spec import LoadSpec
from loader.workers import ShardedCheckpoint, ShardState

BASE = {"S3DDB_LEDGER_TABLE": "ledger"}


@pytest.mark.parametrize(
    ("memory_mb", "vcpus"),
    [
        (None, 1),
        (128, 1),
        (1769, 1),
        (2048, 1),  # a little more than one vCPU: a second process would share it
        (2700, 2),
        (3008, 2),
        (3538, 2),
        (5307, 3),
        (7076, 4),
        (8845, 5),
        (10240, 6),
        (20000, 6),
    ],
)
def test_the_vcpus_of_a_function_come_from_its_memory(memory_mb: int | None, vcpus: int) -> None:
    assert vcpus_for_memory(memory_mb) == vcpus
    env = {**BASE, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb)} if memory_mb else BASE
    assert Settings.from_env(env).workers_per_hop == vcpus


@pytest.mark.parametrize(
    ("raw", "workers"), [("", 6), ("auto", 6), (" AUTO ", 6), ("1", 1), ("2", 2), ("6", 6)]
)
def test_s3ddb_hop_workers_is_auto_or_forces_the_number(raw: str, workers: int) -> None:
    settings = Settings.from_env(
        {**BASE, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240", "S3DDB_HOP_WORKERS": raw}
    )
    assert settings.workers_per_hop == workers


def test_the_cpu_count_of_a_small_function_does_not_make_workers() -> None:
    # os.cpu_count() says 2 at 128 MB: only the memory counts
    assert Settings.from_env({**BASE, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}).workers_per_hop == 1
    assert Settings.from_env(BASE).workers_per_hop == 1  # not in Lambda: one process


@pytest.mark.parametrize("raw", ["0", "7", "-1", "two", "1.5"])
def test_a_hop_workers_setting_out_of_range_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="S3DDB_HOP_WORKERS"):
        Settings.from_env({**BASE, "S3DDB_HOP_WORKERS": raw})


def _spec(**over: object) -> LoadSpec:
    return LoadSpec(source="s3://b/k.csv", table="t", version_id="v1", **over)  # type: ignore[arg-type]


MB = 1 << 20


@pytest.mark.parametrize(
    ("wanted", "size", "compression", "over", "workers"),
    [
        (1, 600 * MB, "none", {}, 1),
        (4, 600 * MB, "none", {}, 4),
        (6, 20 * MB, "none", {}, 2),  # 8 MB a worker at least
        (6, 15 * MB, "none", {}, 1),
        (2, 600 * MB, "gzip", {}, 1),
        (2, 600 * MB, "none", {"on_duplicate": "first"}, 1),
        (2, 600 * MB, "none", {"on_duplicate": "error"}, 1),
    ],
)
def test_a_hop_runs_workers_only_where_they_are_exact_and_worth_it(
    wanted: int, size: int, compression: str, over: dict[str, object], workers: int
) -> None:
    n = workers_for_range(
        _spec(**over),
        wanted=wanted,
        start=100,
        end=100 + size,
        compression=compression,
        min_bytes=MIN_BYTES_PER_WORKER,
    )
    assert n == workers


def _cp(
    offset: int, rows: int, *, rng: tuple[int, int] | None, complete: bool = False, rejected: int = 0
) -> Checkpoint:
    return Checkpoint(
        source="s3://b/k.csv",
        table="t",
        version_id="v1",
        etag=None,
        size=1000,
        header=["pk", "n"],
        offset=offset,
        next_row=rows + 1,
        counters=Counters(rows_read=rows, items_written=rows - rejected, rows_rejected=rejected),
        complete=complete,
        byte_range=rng,
    )


def test_the_chains_checkpoint_adds_up_its_sub_ranges_and_keeps_their_lowest_mark() -> None:
    spec = _spec()
    base = _cp(400, 40, rng=None)
    state = ShardedCheckpoint(
        spec=spec,
        size=1000,
        data_start=400,
        header_names=("pk", "n"),
        shards=(
            ShardState(
                start=400, end=700, checkpoint=_cp(700, 30, rng=(400, 700), complete=True, rejected=2)
            ),
            ShardState(start=700, end=1000, checkpoint=_cp(850, 15, rng=(700, 1000))),
        ),
        end=1000,
    )
    split = HopSplit(base=base, state=state)
    cp = split.checkpoint(hop=3, chain_id="c")
    assert (cp.offset, cp.complete, cp.hop, cp.chain_id) == (850, False, 3, "c")
    assert (cp.counters.rows_read, cp.counters.rows_rejected, cp.counters.balanced) == (85, 2, True)
    assert split.progress_offset() == 400 + 300 + 150
    # as the ledger keeps it: without the spec (the item has it), read back with it
    raw = split.to_ledger()
    assert "spec" not in raw["state"]
    assert HopSplit.from_ledger(raw, spec=spec.to_dict(), where="t") == split
    done = split.with_state(
        ShardedCheckpoint(
            **{
                **state.__dict__,
                "shards": (
                    state.shards[0],
                    ShardState(start=700, end=1000, checkpoint=_cp(1000, 31, rng=(700, 1000), complete=True)),
                ),
            }
        )
    )
    final = done.checkpoint(hop=4, chain_id="c")
    assert (final.offset, final.complete, final.counters.rows_read, final.next_row) == (1000, True, 101, 102)


def test_damaged_sub_ranges_are_a_config_error() -> None:
    spec = _spec()
    with pytest.raises(ConfigError, match="format"):
        HopSplit.from_ledger({"format": 99}, spec=spec.to_dict(), where="the chain's sub-ranges")
    state = ShardedCheckpoint(
        spec=spec,
        size=1000,
        data_start=400,
        header_names=None,
        shards=(ShardState(start=400, end=600), ShardState(start=700, end=1000)),
        end=1000,
    )
    raw = HopSplit(base=_cp(400, 0, rng=None), state=state).to_ledger()
    with pytest.raises(ConfigError, match="do not tile"):
        HopSplit.from_ledger(raw, spec=spec.to_dict(), where="the chain's sub-ranges")
