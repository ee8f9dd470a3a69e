"""The benchmark report's Markdown: every run listed, and medians when a case ran more than once."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import markdown

MACHINE = {
    "cpu_model": "cpu",
    "cores": 2,
    "memory_mb": 1,
    "python": "3.11",
    "os": "linux",
    "date": "d",
    "loadavg_at_start": [0.0],
    "command": "c",
}


def _case(run: int | None, ips: float, cpu: float) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "s3ddb",
        "target": "wire",
        "latency_ms": 0.0,
        "rows": 10,
        "items_per_second": ips,
        "client_cpu_us_per_item": cpu,
        "peak_rss_mb": 1.0,
        "ok": True,
    }
    if run is not None:
        c["run"] = run
    return c


def test_repeated_runs_get_a_median_line() -> None:
    md = markdown({"machine": MACHINE, "cases": [_case(1, 100, 30), _case(2, 300, 10), _case(3, 200, 20)]})
    assert md.count("| s3ddb | wire | 0 | 10 |") == 3
    assert "| s3ddb | wire | 0 | 3 | 200 (100-300) | 20.0 (10.0-30.0) |" in md


def test_single_runs_have_no_median_table() -> None:
    md = markdown({"machine": MACHINE, "cases": [_case(None, 100, 30)]})
    assert "Median" not in md


def test_the_data_line_gives_the_bytes_a_row_generated() -> None:
    data = {
        "rows": 1000,
        "object_bytes": 57_304,
        "bytes_per_row": 57.3,
        "columns": ["name:S", "score:N"],
        "item_bytes": 100,
        "keys": "random",
        "gzip": False,
        "seed": 1,
    }
    md = markdown({"machine": MACHINE, "data": data, "cases": [_case(None, 100, 30)]})
    assert "Data: 1,000 rows, 57,304 bytes (57.3 a row), columns pk, sk, name:S, score:N, payload" in md
    assert "--item-bytes 100" in md
    assert "Data:" not in markdown({"machine": MACHINE, "cases": [_case(None, 100, 30)]})
