"""The harness's options for the scale-out and shuffle benchmarks: which runs a round holds and in
what order, the s3ddb command each run gets, and where the machine's CPU went."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks.harness import _runs, case_argv, cpu_breakdown, markdown, process_cpu_s, self_cpu_s
from tests.unit.test_harness_report import MACHINE


def test_a_round_alternates_the_s3ddb_variants_and_runs_other_cases_once() -> None:
    assert _runs(["s3ddb", "batch_writer"], [1, 2], [0, 50000]) == [
        ("s3ddb", 1, 0),
        ("s3ddb", 2, 0),
        ("s3ddb", 1, 50000),
        ("s3ddb", 2, 50000),
        ("batch_writer", None, None),
    ]
    assert _runs(["s3ddb"], [None], [None]) == [("s3ddb", None, None)]


def _argv(**kw: Any) -> list[str]:
    return case_argv(
        "s3ddb", source="/data/x.csv", table="T", schema="s.json", workdir="/w", sender="lean", **kw
    )


def test_the_s3ddb_command_carries_the_window_only_when_asked() -> None:
    argv = _argv(workers=2, shuffle_window=50000)
    i = argv.index("--shuffle-window")
    assert argv[i + 1] == "50000"
    assert argv[argv.index("--workers") + 1] == "2"
    assert argv[argv.index("load") + 1] == "/data/x.csv"  # a local path goes through as it is
    assert "--shuffle-window" in _argv(shuffle_window=0)  # 0 (off) is passed, not dropped
    assert "--shuffle-window" not in _argv()


def test_the_breakdown_divides_by_items_and_other_is_what_nobody_named_took() -> None:
    got = cpu_breakdown(
        items=1_000_000, machine_s=25.0, client_s=18.0, parts={"wire": 2.5, "s3": None, "harness": 0.5}
    )
    assert got == {"client": 18.0, "wire": 2.5, "harness": 0.5, "other": 4.0}  # s3 unmeasured: left out


def test_process_cpu_reads_a_running_process_and_none_for_one_that_is_gone() -> None:
    t = self_cpu_s()
    sum(i * i for i in range(300_000))  # spend some CPU
    mine = process_cpu_s(os.getpid())
    assert mine is not None and mine >= t - 0.02  # clock ticks vs rusage: the same time, coarser
    assert process_cpu_s(2**22 + 12345) is None  # above the kernel's pid_max default: no such pid


def test_the_report_shows_where_the_cpu_went_and_labels_the_variants() -> None:
    case = {
        "name": "s3ddb",
        "target": "wire",
        "latency_ms": 10.0,
        "rows": 10,
        "items_per_second": 100.0,
        "client_cpu_us_per_item": 18.0,
        "machine_cpu_us_per_item": 21.0,
        "peak_rss_mb": 1.0,
        "ok": True,
        "workers": 2,
        "shuffle_window": 50000,
        "source": "local file",
        "cpu_us_per_item": {"client": 18.0, "wire": 2.0, "other": 1.0},
    }
    md = markdown({"machine": MACHINE, "cases": [case]})
    assert "| s3ddb --workers 2 --shuffle-window 50000 (local file) | wire | 10 |" in md
    assert "| case | run | client | wire | other | machine |" in md
    assert "| s3ddb --workers 2 --shuffle-window 50000 (local file) | 1 | 18.00 | 2.00 | 1.00 | 21.0 |" in md


@pytest.mark.parametrize("rows_per_key, shown", [(1, False), (100, True)])
def test_the_data_line_says_how_many_rows_share_a_key(rows_per_key: int, shown: bool) -> None:
    data = {
        "rows": 1000,
        "object_bytes": 1,
        "bytes_per_row": 1.0,
        "columns": [],
        "item_bytes": 100,
        "keys": "sorted",
        "rows_per_key": rows_per_key,
        "seed": 1,
    }
    case = {
        "name": "s3ddb",
        "target": "wire",
        "latency_ms": 0.0,
        "rows": 10,
        "items_per_second": 1.0,
        "client_cpu_us_per_item": 1.0,
        "peak_rss_mb": 1.0,
        "ok": True,
    }
    md = markdown({"machine": MACHINE, "data": data, "cases": [case]})
    assert ("keys sorted (100 rows a key)" in md) is shown


def _run(run: int, ips: float, other: float) -> dict[str, Any]:
    return {
        "name": "s3ddb",
        "target": "wire",
        "latency_ms": 10.0,
        "rows": 10,
        "items_per_second": ips,
        "client_cpu_us_per_item": 20.0,
        "peak_rss_mb": 1.0,
        "ok": True,
        "run": run,
        "cpu_us_per_item": {"client": 20.0, "other": other},
    }


def test_medians_are_also_given_over_the_runs_nothing_else_shared_the_machine_with() -> None:
    runs = [_run(1, 100, 1.0), _run(2, 10, 40.0), _run(3, 300, 2.5), _run(4, 20, 3.5)]
    md = markdown({"machine": MACHINE, "cases": runs})
    assert "| s3ddb | wire | 10 | 4 | 60 (10-300) | 20.0 (20.0-20.0) |" in md  # all four
    assert "2 of 4 runs" in md
    assert "| s3ddb | wire | 10 | 2 | 200 (100-300) | 20.0 (20.0-20.0) |" in md  # other <= 3 only


def test_report_rewrites_the_markdown_from_the_json(tmp_path: Any) -> None:
    import json

    from benchmarks.harness import report_main

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"machine": MACHINE, "cases": [_run(1, 100, 1.0), _run(2, 300, 9.0)]}))
    assert report_main([str(path)]) == 0
    md = (tmp_path / "r.md").read_text()
    assert "| s3ddb | wire | 10 | 2 | 200 (100-300) |" in md and "1 of 2 runs" in md


def test_settle_waits_for_an_idle_second_or_gives_up_at_its_limit() -> None:
    from benchmarks.harness import settle

    clock = {"busy": 0.0}
    per_second = iter([1.5, 0.9, 0.05])  # cores busy in each sampled second: idle in the third

    def sleep(s: float) -> None:
        clock["busy"] += next(per_second) * s

    assert settle(30.0, busy=lambda: clock["busy"], sleep=sleep) == 3.0
    always = {"busy": 0.0}

    def busy_sleep(s: float) -> None:
        always["busy"] += 2.0 * s

    assert settle(4.0, busy=lambda: always["busy"], sleep=busy_sleep) == 4.0
