"""Reject records are readable JSON Lines with row, offset, raw text and reason."""

from __future__ import annotations

from pathlib import Path

import orjson

from loader.models import Reject
from loader.rejects import LocalRejects, open_rejects


def test_local_rejects_are_written_only_when_there_are_some(tmp_path: Path) -> None:
    sink = open_rejects(str(tmp_path / "rej"), run_id="run1")
    assert isinstance(sink, LocalRejects)
    assert sink.close() is None
    assert not (tmp_path / "rej").exists()


def test_local_rejects_lines(tmp_path: Path) -> None:
    sink = open_rejects(str(tmp_path), run_id="run2")
    sink.add(Reject(row=3, offset=120, raw='x,"y\nz"', reason="bad number"))
    sink.add(Reject(row=9, offset=400, raw="ü", reason="empty partition key 'pk'"))
    sink.flush()
    location = sink.close()
    assert location == str(tmp_path / "run2.jsonl")
    lines = [orjson.loads(x) for x in Path(location).read_bytes().splitlines()]
    assert lines == [
        {"row": 3, "offset": 120, "raw": 'x,"y\nz"', "reason": "bad number"},
        {"row": 9, "offset": 400, "raw": "ü", "reason": "empty partition key 'pk'"},
    ]
