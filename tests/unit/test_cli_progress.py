"""The terminal progress line: rows, items/s, rejects, and an ETA from the object size."""

from __future__ import annotations

import io

from loader.models import Progress
from s3ddb.cli import _ProgressBar


def snapshot(*, offset: int, size: int | None) -> Progress:
    return Progress(
        rows_read=12_345,
        items_written=12_000,
        rows_rejected=7,
        duplicates_collapsed=0,
        offset=offset,
        object_size=size,
        inflight_batches=3,
        max_backoff_s=0.0,
        elapsed_s=10.0,
        items_per_second=1_200.0,
    )


def test_progress_line_shows_rows_rate_rejects_percent_and_eta() -> None:
    out = io.StringIO()
    bar = _ProgressBar(out)
    bar(snapshot(offset=250, size=1000))
    bar.close()
    line = out.getvalue()
    assert "rows 12,345" in line and "1,200 items/s" in line and "rejects 7" in line
    assert "25.0%" in line
    assert "ETA 0:30" in line  # 10 s for a quarter: 30 s to go
    assert line.endswith("\n")


def test_without_a_known_size_there_is_no_percent_or_eta() -> None:
    out = io.StringIO()
    _ProgressBar(out)(snapshot(offset=250, size=None))
    line = out.getvalue()
    assert "rows 12,345" in line and "%" not in line and "ETA" not in line
