"""The deployment model (``benchmarks/model.py``): its arithmetic, and the README's tuning tables
being exactly what it prints from the committed results file (so the two cannot drift)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import model

ROOT = Path(__file__).resolve().parents[2]


def test_items_per_second_follow_the_cpu_share_up_to_one_vcpu_then_the_hop_workers() -> None:
    rows = model.lambda_rows(20.0, (512, 1024, model.FULL_VCPU_MB, 2048, 3008, 10240))
    by_mb = {r.memory_mb: r for r in rows}
    assert by_mb[1024].items_per_s == pytest.approx(2 * by_mb[512].items_per_s)
    assert by_mb[model.FULL_VCPU_MB].items_per_s == pytest.approx(50_000)  # 1e6 / 20 µs
    # one process up to ~1.5 vCPU (S3DDB_HOP_WORKERS=auto rounds), then one worker per vCPU
    assert by_mb[2048].processes == 1 and by_mb[2048].items_per_s == pytest.approx(50_000)
    # ... sharing the vCPU the memory buys (3,008 MB: 1.7 vCPU for two processes)
    assert by_mb[3008].processes == 2 and by_mb[3008].items_per_s == pytest.approx(50_000 * 3008 / 1769)
    assert by_mb[10240].processes == 6 and by_mb[10240].items_per_s == pytest.approx(50_000 * 10240 / 1769)


def test_lambda_cost_per_row_is_flat_below_one_vcpu_and_grows_above() -> None:
    rows = model.lambda_rows(20.0, (512, 1024, model.FULL_VCPU_MB, 2048, 3008))
    flat = [r.lambda_usd_per_million for r in rows[:3]]
    assert flat[0] == pytest.approx(flat[1]) == pytest.approx(flat[2])
    # 20 s of one vCPU at 1,769 MB: 20 * 1769/1024 GB-s at the arm64 price
    assert flat[2] == pytest.approx(20 * 1769 / 1024 * model.PRICES.lambda_gb_s_arm64)
    # 2,048 MB is still one process: the memory above a vCPU is paid for and idle
    assert rows[3].lambda_usd_per_million == pytest.approx(flat[2] * 2048 / model.FULL_VCPU_MB)
    # 3,008 MB runs two workers on its 1.7 vCPU: as cheap a row as one full vCPU
    assert rows[4].lambda_usd_per_million == pytest.approx(flat[2])
    assert all(r.writes_usd_per_million == model.PRICES.ddb_on_demand_per_million_wru for r in rows)


def test_a_hop_is_capped_by_its_calls_in_flight_or_its_cpu() -> None:
    rows = model.write_rows(30_000.0, (10, 40), (10.0,))
    low, high = rows
    assert low.wire_items_per_s == pytest.approx(25_000) and low.items_per_s == pytest.approx(25_000)
    assert high.wire_items_per_s == pytest.approx(100_000) and high.items_per_s == pytest.approx(30_000)
    assert low.chains_for_table == 2 and high.chains_for_table == 2  # ceil(40,000 / rate)
    assert low.partitions_needed == 25 and high.partitions_needed == 30


def test_the_measured_input_is_the_median_of_the_s3ddb_runs_at_the_latency(tmp_path: Path) -> None:
    cases = [
        {"name": "s3ddb", "latency_ms": 10.0, "client_cpu_us_per_item": v, "ok": True}
        for v in (30.0, 10.0, 20.0)
    ]
    cases += [
        {"name": "s3ddb", "latency_ms": 0.0, "client_cpu_us_per_item": 99.0, "ok": True},
        {"name": "batch_writer", "latency_ms": 10.0, "client_cpu_us_per_item": 250.0, "ok": True},
    ]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"cases": cases}))
    assert model.measured_us_per_item(path, latency_ms=10.0) == 20.0
    with pytest.raises(ValueError, match="no s3ddb run at 5 ms"):
        model.measured_us_per_item(path, latency_ms=5.0)


def test_the_readme_tuning_tables_are_the_models_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert model.main([]) == 0
    printed = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    assert printed.strip() in readme, "README's tuning tables differ from `python -m benchmarks model`"


def test_shards_add_up_until_the_write_budget_or_the_partitions_hold_them() -> None:
    rows = model.fleet_rows(10_000.0, 20.0, (1, 2, 4, 8), table_wcu=40_000, budget_share=0.9)
    assert [r.items_per_s for r in rows] == [10_000, 20_000, 36_000, 36_000]
    assert [r.limited_by for r in rows] == ["shards", "shards", "write budget", "write budget"]
    assert rows[0].minutes_per_100m == pytest.approx(1e8 / 10_000 / 60)
    hot = model.fleet_rows(10_000.0, 20.0, (8,), partitions=4)[0]
    assert (hot.items_per_s, hot.limited_by) == (4_000, "partitions")
    few = model.fleet_rows(10_000.0, 20.0, (8,), lambda_concurrency=2, table_wcu=1e9)[0]
    assert (few.items_per_s, few.limited_by) == (20_000, "Lambda concurrency")
    # the cost does not depend on the shards: the same CPU time and the same write units
    assert len({r.usd_per_100m for r in rows}) == 1
    assert rows[0].usd_per_100m == pytest.approx(
        100 * model.PRICES.ddb_on_demand_per_million_wru
        + 1769 / 1024 * 1e8 * 20e-6 * model.PRICES.lambda_gb_s_arm64
    )


def test_a_machine_shared_with_its_stand_ins_is_capped_by_their_cpu_per_item() -> None:
    assert model.local_ceiling(cores=2, machine_us_per_item=25.0) == pytest.approx(80_000)
    # one worker: its own core (1e6 / 20 µs) comes first while the machine has room
    one = model.local_ceiling(cores=2, machine_us_per_item=24.0, workers=1, client_us_per_item=20.0)
    assert one == pytest.approx(50_000)
    # two workers: the machine's two cores, shared with the stand-ins, come first
    two = model.local_ceiling(cores=2, machine_us_per_item=25.0, workers=2, client_us_per_item=20.0)
    assert two == pytest.approx(80_000)
    # more workers than cores get no more than the cores
    four = model.local_ceiling(cores=2, machine_us_per_item=20.0, workers=4, client_us_per_item=20.0)
    assert four == pytest.approx(100_000)


@pytest.mark.parametrize(
    "name",
    [
        "workers-2-vs-1.json",
        "workers-2-vs-1-local-2m-explore.json",
        "workers-2-vs-1-local-2m.json",
        "workers-2-vs-1-local-2m-b.json",
        "workers-2-vs-1-s3-2m.json",
        "workers-2-vs-1-breakdown-1m.json",
    ],
)
def test_the_model_explains_the_measured_workers_on_this_machine(name: str) -> None:
    """benchmarks/results/workers-2-vs-1*.json: every run is held by the lower of its workers' own
    cores (1e6 / the loader's CPU per item, per worker) and the machine's two cores shared with
    the wire endpoint and whatever else ran (``local_ceiling``): one worker by its core, two by the
    machine, which is why two workers are well under 2x here."""
    data = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
    cores = int(data["machine"]["cores"])
    runs = data["cases"]
    assert {r["workers"] for r in runs} == {1, 2}
    for r in runs:
        rate = float(r["items_per_second"])
        ceiling = model.local_ceiling(
            cores=cores,
            machine_us_per_item=float(r["machine_cpu_us_per_item"]),
            workers=int(r["workers"]),
            client_us_per_item=float(r["client_cpu_us_per_item"]),
        )
        # items/s leaves out interpreter start-up, the CPU per item counts it: a little over is possible
        assert 0.8 * ceiling <= rate <= 1.1 * ceiling, (r["workers"], r.get("run"), rate, ceiling)
