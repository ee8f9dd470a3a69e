"""Adversarial review of ``s3ddb load --workers N``: each test names one defect and fails until it is
fixed. Through the real services (moto S3, DynamoDB Local), the CLI as a subprocess; the
one-process load (``--workers 1``) is the oracle wherever there is one.
"""

from __future__ import annotations

import copy
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader.models import Checkpoint, Counters
from loader.spec import LoadSpec
from loader.workers import ShardedCheckpoint, ShardState, _progress, _Worker

# -- helpers --------------------------------------------------------------------------------------


def _cli(
    *argv: str, cwd: str | Path | None = None, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3ddb", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env or _env(),
        check=False,
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _popen(*argv: str, cwd: Path, new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "s3ddb", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_env(),
        start_new_session=new_session,
    )


def _csv(rows: int, *, bad: Callable[[int], bool] = lambda i: False) -> bytes:
    """``pk,n`` rows ``k000000..``; rows where ``bad(i)`` have a non-number ``n`` (rejected with
    ``--type n=N``). Row i is row number i + 1 of a one-process load."""
    out = ["pk,n\n"]
    out += [f"k{i:06d},{'bad' if bad(i) else i}\n" for i in range(rows)]
    return "".join(out).encode()


def _json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"--json must print exactly one object, got {stdout!r}"
    out: dict[str, Any] = orjson.loads(lines[0])
    return out


def _reject_lines(directory: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(glob.glob(str(directory / "*.jsonl"))):
        out += [orjson.loads(line) for line in Path(f).read_bytes().splitlines() if line.strip()]
    return out


def _stray_checkpoints(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("s3ddb-checkpoint-*"))


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry))
    return kids


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def _some_items(ddb: Any, table: str) -> bool:
    return bool(ddb.scan(TableName=table, Select="COUNT", Limit=5)["Count"] > 0)


def _item_count(ddb: Any, table: str) -> int:
    n, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        page = ddb.scan(**kwargs)
        n += int(page["Count"])
        if "LastEvaluatedKey" not in page:
            return n
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _make_table(ddb: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name)
    return name


#: a load long enough to be stopped midway: ~20k rows at 2000 WCU over 2 workers (~10 s)
SLOW_ROWS = 20_000
SLOW = ("--workers", "2", "--max-wcu", "2000", "--json", "--quiet")


# -- 1. --max-rejects ----------------------------------------------------------------------------


def test_max_rejects_is_the_limit_of_the_load_not_of_each_shard(table: str, tmp_path: Path) -> None:
    """DEFECT: ``--max-rejects`` is applied per shard (each worker gets the same knob), so four
    rejects spread over four shards pass ``--max-rejects 2`` with exit 0, where the one-process load
    of the same object stops with exit 3 ("more rejects than --max-rejects stops the load")."""
    src = tmp_path / "bad.csv"
    src.write_bytes(_csv(4000, bad=lambda i: i % 1000 == 500))  # one bad row in each quarter
    common = ("--type", "n=N", "--max-rejects", "2", "--json", "--quiet", "--rejects", str(tmp_path / "r"))
    one = _cli("load", str(src), "--table", table, "--workers", "1", *common, cwd=tmp_path)
    assert one.returncode == 3, one.stderr  # the oracle
    four = _cli("load", str(src), "--table", table, "--workers", "4", *common, cwd=tmp_path)
    assert four.returncode == 3, (four.stdout, four.stderr)
    assert _json(four.stdout)["status"] == "failed"


# -- 2. errors only a worker finds -----------------------------------------------------------------


@pytest.mark.parametrize("what", ["missing-table", "key-not-in-header", "missing-rejects-bucket"])
def test_a_setup_error_found_by_the_workers_is_one_line_without_a_checkpoint(
    ddb: Any, table_factory: Callable[..., str], tmp_path: Path, what: str
) -> None:
    """DEFECT: setup errors the one-process load reports before it reads a row (no table, the table's
    key not in the header, a missing rejects bucket) are found only inside each worker: the parent
    has already spawned N processes, writes a sharded checkpoint into the working directory and
    ends the one-line error with "continue with --resume <that file>", a resume that cannot help.
    The parent should check the table, the header against the key and schema, and the rejects
    destination before it spawns (or not offer/leave a checkpoint when no shard read a row)."""
    src = tmp_path / "a.csv"
    src.write_bytes(_csv(4000))
    extra: tuple[str, ...] = ("--rejects", str(tmp_path / "r"))
    if what == "missing-table":
        tbl = f"no-such-table-{uuid.uuid4().hex[:6]}"
    elif what == "key-not-in-header":
        tbl = table_factory(pk=("id", "S"))
    else:
        tbl = table_factory()
        extra = ("--rejects", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/rej")
    r = _cli("load", str(src), "--table", tbl, "--workers", "4", "--json", "--quiet", *extra, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "--resume" not in r.stderr, r.stderr
    assert _json(r.stdout)["checkpoint"] is None
    assert _stray_checkpoints(tmp_path) == []


# -- 3. damaged or hand-edited sharded checkpoints -------------------------------------------------


@pytest.fixture(scope="module")
def complete_sharded(ddb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A 4-shard load run to completion with --checkpoint: (source, table, checkpoint dict)."""
    d = tmp_path_factory.mktemp("sharded")
    src = d / "a.csv"
    src.write_bytes(_csv(4000))
    table = _make_table(ddb)
    cp = d / "cp.json"
    r = _cli(
        "load", str(src), "--table", table, "--workers", "4", "--quiet", "--json",
        "--checkpoint", str(cp), "--rejects", str(d / "r"), cwd=d,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = orjson.loads(cp.read_bytes())
    assert len(data["shards"]) == 4
    try:
        yield {"source": str(src), "table": table, "checkpoint": data}
    finally:
        ddb.delete_table(TableName=table)


def _cp_not_an_object(d: dict[str, Any]) -> None:
    d["shards"][1]["checkpoint"] = "x"


def _cp_a_list(d: dict[str, Any]) -> None:
    d["shards"][1]["checkpoint"] = [1]


def _cp_of_another_shard(d: dict[str, Any]) -> None:
    cp = d["shards"][1]["checkpoint"]
    cp["byte_range"] = d["shards"][2]["range"]
    cp["offset"] = d["shards"][2]["range"][0]
    cp["complete"] = False


def _cp_of_the_whole_object(d: dict[str, Any]) -> None:
    cp = d["shards"][1]["checkpoint"]
    del cp["byte_range"]
    cp["complete"] = False


def _cp_complete_but_at_its_start(d: dict[str, Any]) -> None:
    cp = d["shards"][1]["checkpoint"]
    cp["offset"] = d["shards"][1]["range"][0]
    cp["next_row"] = 1
    cp["counters"] = {k: 0 for k in cp["counters"]}  # complete: true is left as it is


def _header_names_a_string(d: dict[str, Any]) -> None:
    d["header_names"] = "pkn"


@pytest.mark.parametrize(
    "damage",
    [
        _cp_not_an_object,
        _cp_a_list,
        _cp_of_another_shard,
        _cp_of_the_whole_object,
        _cp_complete_but_at_its_start,
        _header_names_a_string,
    ],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_a_damaged_sharded_checkpoint_is_refused_before_any_worker_starts(
    complete_sharded: dict[str, Any], tmp_path: Path, damage: Callable[[dict[str, Any]], None]
) -> None:
    """DEFECT: ``ShardedCheckpoint.from_dict`` checks only that the ranges tile the object. A shard
    checkpoint that is not a JSON object crashes with an AttributeError traceback; one of another
    range (or of the whole object) is found only by its worker, after the others started, and
    the error offers "--resume" of a new file; a shard marked complete at its first byte, or
    ``header_names`` given as a string, is accepted and exits 0 (the shard's rows silently never
    loaded). Each must be "damaged sharded checkpoint", exit 2, one line, before any worker."""
    data = copy.deepcopy(complete_sharded["checkpoint"])
    damage(data)
    cp = tmp_path / "damaged.json"
    cp.write_bytes(orjson.dumps(data))
    r = _cli(
        "load", complete_sharded["source"], "--table", complete_sharded["table"], "--resume", str(cp),
        "--json", "--quiet", "--rejects", str(tmp_path / "r"), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "damaged" in lines[0], r.stderr
    assert "continue with --resume" not in r.stderr
    assert _stray_checkpoints(tmp_path) == []


# -- 4. rejects across a resume --------------------------------------------------------------------


def test_rejects_of_a_resumed_sharded_load_carry_whole_object_row_numbers(table: str, tmp_path: Path) -> None:
    """DEFECT: the rejects of shards are renumbered only when the load completes in one run, and
    only the files of the workers of that run are merged. A load stopped (here: one shard past
    --max-rejects) and resumed leaves the first run's per-shard files (``RUN-sK.jsonl``) with row
    numbers counted from the shard's first byte (``shard_start``), never the row numbers a
    one-process load gives, which the README promises for a local destination."""
    bad = {2100, 2200, 2300}  # all in the third quarter: one shard goes past --max-rejects 1
    src = tmp_path / "b.csv"
    src.write_bytes(_csv(4000, bad=lambda i: i in bad))
    rej = tmp_path / "rej"
    cp = tmp_path / "cp.json"
    first = _cli(
        "load", str(src), "--table", table, "--workers", "4", "--type", "n=N", "--max-rejects", "1",
        "--checkpoint", str(cp), "--rejects", str(rej), "--json", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 3, first.stderr
    resumed = _cli(
        "load", str(src), "--table", table, "--resume", str(cp), "--max-rejects", "10", "--json", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert _json(resumed.stdout)["object"]["totals"]["rows_rejected"] == 3
    lines = _reject_lines(rej)
    # a resumed run may repeat a reject (the offset tells them apart); every line's row is right
    data = src.read_bytes()
    assert {d["offset"] for d in lines} == {data.index(f"k{i:06d},bad".encode()) for i in bad}
    for d in lines:
        i = int(d["raw"].split(",")[0][1:])
        assert "shard_start" not in d and d["row"] == i + 1, d


# -- 5. writing the checkpoint ---------------------------------------------------------------------


def test_a_checkpoint_path_that_is_a_directory_is_a_one_line_error(table: str, tmp_path: Path) -> None:
    """DEFECT: ``--checkpoint DIR`` (an existing directory) passes ``_check_writable`` (it checks the
    parent) and the parent's first write raises IsADirectoryError: a two-part traceback (the
    ``finally`` of ``run_workers`` writes again), exit 1, no --json object. (The one-process load
    has the same hole.) Should be exit 2, one line, before any worker."""
    src = tmp_path / "a.csv"
    src.write_bytes(_csv(4000))
    (tmp_path / "cpdir").mkdir()
    r = _cli(
        "load", str(src), "--table", table, "--workers", "2", "--json", "--quiet",
        "--checkpoint", str(tmp_path / "cpdir"), "--rejects", str(tmp_path / "r"), cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 2, r.stderr
    _json(r.stdout)


def _read_only_dir(path: Path) -> Callable[[], None]:
    """Make ``path`` a directory this process cannot create files in (chmod for a user, the
    immutable flag for root, who writes anywhere); returns the undo."""
    path.mkdir()
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        return lambda: os.chmod(path, 0o755)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a read-only directory")

    def undo() -> None:
        subprocess.run([chattr, "-i", str(path)], check=False)

    return undo


def test_a_sharded_load_in_an_unwritable_directory_is_a_one_line_error(table: str, tmp_path: Path) -> None:
    """DEFECT: without --checkpoint, a sharded load always writes ``s3ddb-checkpoint-RUN.json`` in
    the working directory (a one-process load writes one only when it stops early), and nothing
    checks that directory first (``_plan`` checks --checkpoint's and --rejects' only): from a
    read-only directory the workers load the whole object and then the parent dies with a
    PermissionError traceback (twice chained), exit 1, no --json object."""
    src = tmp_path / "a.csv"
    src.write_bytes(_csv(4000))
    ro = tmp_path / "ro"
    undo = _read_only_dir(ro)
    try:
        r = _cli(
            "load", str(src), "--table", table, "--workers", "2", "--json", "--quiet",
            "--rejects", str(tmp_path / "r"), cwd=ro,
        )  # fmt: skip
    finally:
        undo()
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode in (0, 2), r.stderr
    _json(r.stdout)


# -- 6. signals ------------------------------------------------------------------------------------


def test_ctrl_c_while_the_workers_start_is_an_interrupt_not_a_worker_crash(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    """DEFECT: a terminal's Ctrl-C reaches the whole process group. A worker ignores SIGINT only
    once ``_worker_main`` runs; during its start-up (interpreter, imports, unpickling the job) the
    SIGINT kills it (a KeyboardInterrupt traceback on stderr), and the parent reports "the worker
    ... died (exit -2)", status failed, exit 1, instead of interrupted/130. Start the workers with
    SIGINT blocked (``pthread_sigmask`` around ``Process.start``) or in their own process group."""
    src = tmp_path / "slow.csv"
    src.write_bytes(_csv(SLOW_ROWS))
    cp = tmp_path / "cp.json"
    proc = _popen(
        "load", str(src), "--table", table, *SLOW, "--checkpoint", str(cp), "--rejects", str(tmp_path / "r"),
        cwd=tmp_path, new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: len(_children(proc.pid)) >= 2, "the workers to be spawned", step=0.005)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err[-2000:]
    assert proc.returncode == 130, err
    assert _json(out)["status"] == "interrupted"


def test_sigterm_to_the_process_group_stops_the_load_like_ctrl_c(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    """DEFECT: workers ignore SIGINT but not SIGTERM. A SIGTERM to the process group (systemd's
    default KillMode, ``kill -TERM -PGID``, CI job cancellation) kills every worker at once: the
    parent reports "the worker ... died (exit -15)", status failed, exit 1, and whatever the
    workers did since their last checkpoint (every 5 s) is lost; a SIGTERM to the parent alone
    stops cleanly with 130. Workers should ignore SIGTERM too (they die with the parent anyway)."""
    src = tmp_path / "slow.csv"
    src.write_bytes(_csv(SLOW_ROWS))
    cp = tmp_path / "cp.json"
    proc = _popen(
        "load", str(src), "--table", table, *SLOW, "--checkpoint", str(cp), "--rejects", str(tmp_path / "r"),
        cwd=tmp_path, new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: _some_items(ddb, table), "the first items", step=0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert _json(out)["status"] == "interrupted"
    assert "died" not in err, err


def test_a_second_ctrl_c_still_leaves_a_checkpoint_and_the_json_summary(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    """DEFECT: the second SIGINT calls ``os._exit(130)`` in ``_load_sharded.on_signal``: no --json
    object on stdout, and the checkpoint the parent holds is not written. Within the workers'
    first checkpoint interval (5 s) there is no checkpoint file at all, although the start
    message named it and thousands of items are written: nothing to --resume. The second signal
    can still write the parent's (always consistent) state and print the summary before exiting."""
    src = tmp_path / "slow.csv"
    src.write_bytes(_csv(SLOW_ROWS))
    cp = tmp_path / "cp.json"
    proc = _popen(
        "load", str(src), "--table", table, *SLOW, "--checkpoint", str(cp), "--rejects", str(tmp_path / "r"),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait(lambda: _some_items(ddb, table), "the first items", step=0.1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert _json(out)["status"] == "interrupted"
    assert cp.exists(), "no checkpoint to --resume from"
    resumed = _cli("load", str(src), "--table", table, "--resume", str(cp), "--json", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    totals = _json(resumed.stdout)["object"]["totals"]
    assert totals["rows_read"] == SLOW_ROWS and totals["items_written"] == SLOW_ROWS


def test_a_sharded_load_killed_in_its_first_seconds_leaves_a_checkpoint(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    """DEFECT: the parent writes the checkpoint file only once a worker has sent one (every
    ``checkpoint_interval_s`` = 5 s), so a load killed in its first seconds leaves no file at the
    path it announced ("N workers (checkpoint PATH)") although items were written. The plan (the
    shards, the pinned spec) is known before the first worker starts: write it then."""
    src = tmp_path / "slow.csv"
    src.write_bytes(_csv(SLOW_ROWS))
    cp = tmp_path / "cp.json"
    proc = _popen(
        "load", str(src), "--table", table, *SLOW, "--checkpoint", str(cp), "--rejects", str(tmp_path / "r"),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait(lambda: _some_items(ddb, table), "the first items", step=0.1)
        workers = _children(proc.pid)
        proc.kill()
        proc.communicate(timeout=30)
        _wait(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), "the workers to die", 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cp.exists(), "the killed load left no checkpoint to --resume from"
    resumed = _cli("load", str(src), "--table", table, "--resume", str(cp), "--json", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _json(resumed.stdout)["object"]["totals"]["rows_read"] == SLOW_ROWS


# -- 7. duplicate policies -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["error", "first"])
def test_on_duplicate_error_and_first_hold_across_shards(
    ddb: Any, table_factory: Callable[..., str], tmp_path: Path, policy: str
) -> None:
    """DEFECT: ``--on-duplicate error`` and ``first`` are kept per shard only. A key repeated in
    two shards is silently written twice: with ``error`` the later row overwrites the first and
    is counted as written (the one-process load rejects it), with ``first`` the later row wins.
    The README warns about ``last`` only. Refuse ``--workers`` > 1 with these policies (load in
    one process, with a note), or detect cross-shard repeats."""
    src = tmp_path / "dup.csv"
    src.write_bytes(_csv(4000) + b"k000010,99999\n")  # row 11's key again, in the last shard
    results = {}
    for workers in ("1", "4"):
        t = table_factory()
        r = _cli(
            "load", str(src), "--table", t, "--workers", workers, "--on-duplicate", policy, "--type", "n=N",
            "--json", "--quiet", "--rejects", str(tmp_path / f"r{workers}"), cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        s = _json(r.stdout)
        item = ddb.get_item(TableName=t, Key={"pk": {"S": "k000010"}}, ConsistentRead=True)["Item"]
        results[workers] = (item["n"], s["items_written"], s["rows_rejected"], s["duplicates_collapsed"])
    assert results["4"] == results["1"]


# -- 8. a changed object on resume -----------------------------------------------------------------


def test_resuming_a_changed_object_is_one_line_without_a_new_checkpoint(table: str, tmp_path: Path) -> None:
    """DEFECT: a sharded resume does not check the pin before spawning; every worker fails on its
    own and the error reads "...the file changed since the checkpoint ...; start a new load
    instead of resuming; continue with --resume s3ddb-checkpoint-NEW.json", a contradiction,
    and leaves that new checkpoint in the working directory. (Same for an S3 object overwritten on
    an unversioned bucket between the planning and a worker's open.)"""
    src = tmp_path / "e.csv"
    src.write_bytes(_csv(4000, bad=lambda i: i in (2100, 2200)))
    cp = tmp_path / "cp.json"
    first = _cli(
        "load", str(src), "--table", table, "--workers", "4", "--type", "n=N", "--max-rejects", "1",
        "--checkpoint", str(cp), "--rejects", str(tmp_path / "r"), "--json", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 3, first.stderr
    with open(src, "ab") as f:
        f.write(b"k999999,1\n")
    r = _cli("load", str(src), "--table", table, "--resume", str(cp), "--json", "--quiet", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "changed" in r.stderr and "--resume" not in r.stderr, r.stderr
    assert _stray_checkpoints(tmp_path) == []


# -- 9. validate ------------------------------------------------------------------------------------


def test_validate_with_workers_offers_no_resume_and_leaves_no_temp_checkpoint(
    table: str, tmp_path: Path
) -> None:
    """DEFECT: ``validate --workers N`` that stops (here past --max-rejects) says "continue with
    --resume /tmp/s3ddb-validate-RUN.json", which validate refuses ("takes no --checkpoint or
    --resume"), reports that path in the --json summary, and leaves the file in the temp
    directory. The one-process validate does neither."""
    src = tmp_path / "v.csv"
    src.write_bytes(_csv(4000, bad=lambda i: i == 1500))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "s3ddb-validate-*")))
    r = _cli(
        "validate", str(src), "--table", table, "--workers", "4", "--type", "n=N", "--max-rejects", "0",
        "--json", "--quiet", "--rejects", str(tmp_path / "r"), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "--resume" not in r.stderr, r.stderr
    assert _json(r.stdout)["checkpoint"] is None
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "s3ddb-validate-*"))) - before
    for f in left:
        os.unlink(f)
    assert not left, left


# -- 10. the number of workers --------------------------------------------------------------------


def test_workers_are_bounded_by_the_machine_and_by_the_object(table: str, tmp_path: Path) -> None:
    """``--workers N`` was not bounded: ``--workers 64`` on a 24-row object started 24 processes on a
    2-core machine, and ``--workers 100000`` would start thousands. Now N past a few processes per
    core is refused with one line, and each worker gets at least 8 KB of the object (a 24-row object
    loads in one process, with a note)."""
    src = tmp_path / "tiny.csv"
    src.write_bytes(_csv(24))
    cp = tmp_path / "cp.json"
    many = _cli("load", str(src), "--table", table, "--workers", "100000", "--json", cwd=tmp_path)
    assert many.returncode == 2 and "--workers must be 1.." in many.stderr
    assert len(many.stderr.strip().splitlines()) == 1
    r = _cli(
        "load", str(src), "--table", table, "--workers", "8", "--json", "--quiet",
        "--checkpoint", str(cp), "--rejects", str(tmp_path / "r"), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "1 worker(s) for a" in r.stderr
    data = orjson.loads(cp.read_bytes())
    assert "shards" not in data, "a 24-row object was cut into shards"
    assert _json(r.stdout)["rows_read"] == 24


# -- 11. the worker's pipe listener -----------------------------------------------------------------


def _worker_slow_to_exit(conn: Any, job: dict[str, Any]) -> None:
    """``workers._worker_main``, in a process that takes a moment to exit after it closed its end of
    the pipe (as a worker does while its executor threads wind down)."""
    import multiprocessing.connection as mpc

    from loader import workers

    original = mpc.Connection.close

    def close(self: Any) -> None:
        original(self)
        time.sleep(1.0)

    mpc.Connection.close = close  # type: ignore[method-assign]
    workers._worker_main(conn, job)


_HARNESS = """
import multiprocessing, os, sys, time
from tests.integration.test_workers_review import _worker_slow_to_exit
ctx = multiprocessing.get_context("spawn")
parent, child = ctx.Pipe(duplex=True)
job = {"parent": os.getpid(), "spec": {"source": "", "table": "t"}, "resume": None, "knobs": {},
       "run_id": "r", "sender": "lean", "budget": None}
p = ctx.Process(target=_worker_slow_to_exit, args=(child, job), daemon=True)
p.start()
child.close()
print(parent.recv()[0], flush=True)   # the worker's ("error", ...)
time.sleep(0.3)
parent.send(("stop",))                 # what stop_all() / hand_on() send the other workers
p.join(10)
"""


def test_a_message_to_a_worker_that_closed_its_pipe_prints_no_thread_traceback(tmp_path: Path) -> None:
    """DEFECT: a worker closes its end of the pipe in ``_worker_main``'s ``finally`` while its
    ``listen`` thread is blocked in ``conn.recv()``. A "stop" or "budget" the parent sends then
    (``stop_all`` right after another shard's error, ``hand_on`` after one finished) wakes the
    thread on a closed Connection, and ``recv`` raises TypeError ('NoneType' object cannot be
    interpreted as an integer), which ``except (EOFError, OSError)`` does not catch: "Exception in
    thread Thread-1 (listen): Traceback ..." lands on the CLI's stderr (seen in ~1 of 10 loads
    where every worker fails, e.g. a missing table, and in the changed-object resume above).
    Catch every exception in ``listen`` (or stop the listener before closing)."""
    root = str(Path(__file__).resolve().parents[2])
    r = subprocess.run(
        [sys.executable, "-c", _HARNESS], capture_output=True, text=True, cwd=root, env=_env(), timeout=60
    )
    assert r.stdout.strip() == "error", (r.stdout, r.stderr)
    assert "Exception in thread" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- 12. progress across a resume (the parent's arithmetic, no services) ---------------------------


def test_progress_of_a_resumed_shard_counts_its_earlier_rows() -> None:
    """DEFECT: ``workers._progress`` adds a running worker's progress counters, which count this
    run only, but a shard without progress yet by its checkpoint's counters, which count every run.
    On a resume the bar's rows/written first show the resumed shard's earlier rows, then DROP by
    them when its first progress message arrives, and jump back when it finishes. Add the
    worker's ``counters_at_start`` to its progress."""
    spec = LoadSpec(source="/tmp/x.csv", table="t")
    cp = Checkpoint(
        source="/tmp/x.csv",
        table="t",
        version_id=None,
        etag=None,
        size=1000,
        header=["pk"],
        offset=600,
        next_row=101,
        counters=Counters(rows_read=100, items_written=100),
        byte_range=(500, 1000),
    )
    state = ShardedCheckpoint(
        spec=spec,
        size=1000,
        data_start=3,
        header_names=("pk",),
        shards=(
            ShardState(start=3, end=500, checkpoint=dataclasses_replace_complete(cp, (3, 500))),
            ShardState(start=500, end=1000, checkpoint=cp),
        ),
    )
    w = _Worker(index=1, process=None, conn=None, counters_at_start=cp.counters.copy())  # type: ignore[arg-type]
    before = _progress(state, [w], time.monotonic())
    w.progress = {
        "rows_read": 10,
        "items_written": 10,
        "rows_rejected": 0,
        "duplicates_collapsed": 0,
        "inflight_batches": 0,
        "max_backoff_s": 0.0,
        "offset": 700,
    }
    after = _progress(state, [w], time.monotonic())
    assert after.rows_read >= before.rows_read, (before.rows_read, after.rows_read)
    assert after.rows_read == 50 + 100 + 10 and after.items_written == 50 + 100 + 10


def dataclasses_replace_complete(cp: Checkpoint, rng: tuple[int, int]) -> Checkpoint:
    import dataclasses

    done = Counters(rows_read=50, items_written=50)
    return dataclasses.replace(cp, offset=rng[1], byte_range=rng, complete=True, next_row=51, counters=done)
