"""``python -m benchmarks run|rss|import-time``: side-by-side loads, measured from the outside.

``run --rows N --out FILE [--targets wire,dynamodb-local] [--latency 0,10]
[--cases s3ddb,batch_writer,naive_async,aioboto3]``

1. Services: S3 and DynamoDB Local come from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_DYNAMODB``
   when set, else ``infra.local.stack.start_services`` starts a private set (stopped at the end).
   The wire endpoint (``benchmarks.wire``) runs in its own process, one per latency.
2. One object is generated (``benchmarks.gen``) and uploaded to a fresh bucket.
3. Every target x latency x case runs as a SUBPROCESS with a fresh table. Client CPU is that
   child's own user+sys time (``os.wait4`` rusage) divided by the items it wrote, interpreter
   start and imports included; peak RSS is the child's own ``VmHWM`` (see ``run_child``: not
   ``ru_maxrss``, which carries this process's peak over). items/s is the child's own
   timing of the load (it excludes interpreter start); ``wall_s`` includes it.
   Latency applies to the wire target only: DynamoDB Local cannot add latency, so it runs at 0.
4. Writes ``FILE`` (JSON) and ``FILE`` with ``.md`` (a Markdown table).

``rss --rows 200000,2000000`` records s3ddb's peak RSS per size (wire target) in
``benchmarks/results/rss.json``; ``import-time`` records ``import lambda_src.handler`` in a fresh
interpreter in ``benchmarks/results/import_time.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gen import DEFAULT_COLUMNS, KEY_DISTRIBUTIONS, generate, parse_columns
from benchmarks.wire import WireProcess, start_wire

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CASES = ("s3ddb", "batch_writer", "naive_async", "aioboto3")
TARGETS = ("wire", "dynamodb-local")
_CREDS = {
    "AWS_ACCESS_KEY_ID": "s3ddblocal",
    "AWS_SECRET_ACCESS_KEY": "s3ddblocal",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# ----------------------------------------------------------------------------- machine and children


def machine_info(argv: Sequence[str]) -> dict[str, Any]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_mb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_mb": mem_mb,
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + shlex.join(argv),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@dataclass
class ChildResult:
    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str
    stderr: str


def compile_sources() -> None:
    """Write the repository's bytecode once, as ``pip install`` does for an installed package.

    With PYTHONDONTWRITEBYTECODE set (as on the development machine) every child would compile
    ``loader``, ``lambda_src`` and ``benchmarks`` from source: ~0.05-0.09 s of CPU per process,
    counted against whichever loader runs. Third-party packages are compiled at install already.
    """
    import compileall

    for pkg in ("loader", "lambda_src", "benchmarks"):
        compileall.compile_dir(str(ROOT / pkg), quiet=1)


def _vm_hwm_kib(pid: int) -> int:
    """``VmHWM`` of ``pid`` (KiB): the peak RSS of its current address space only; 0 if unknown."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def machine_busy_s() -> float:
    """CPU seconds every process of this machine has spent (``/proc/stat``, all cores, not idle or
    iowait): around a case, what the loader and the stand-ins it talks to (the wire endpoint, moto)
    cost together, and anything else the machine ran meanwhile."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one running process (``/proc/PID/stat``), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # fields after the command name, which may hold spaces and parentheses: utime, stime are 14, 15
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_breakdown(
    *, items: int, machine_s: float, client_s: float, parts: dict[str, float | None]
) -> dict[str, float]:
    """µs of CPU per item: the client's, each named stand-in's (None: not measured, left out), and
    ``other``: what the machine spent beyond all of them (processes not watched, the kernel's
    work not charged to a process, other users of a shared machine)."""
    known = {name: s for name, s in parts.items() if s is not None}
    out = {"client": client_s, **known, "other": machine_s - client_s - sum(known.values())}
    return {name: round(s / items * 1e6, 2) for name, s in out.items()}


def settle(
    max_wait_s: float,
    *,
    idle_cores: float = 0.15,
    sample_s: float = 1.0,
    busy: Callable[[], float] = machine_busy_s,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Wait until the machine is idle (less than ``idle_cores`` busy over ``sample_s``) or
    ``max_wait_s`` has passed; the seconds waited. On a shared machine a case started while
    someone else's work runs measures both: the per-run ``other`` CPU still says so afterwards."""
    waited = 0.0
    while True:
        b0 = busy()
        sleep(sample_s)
        waited += sample_s
        if (busy() - b0) / sample_s < idle_cores or waited >= max_wait_s:
            return waited


def run_child(argv: Sequence[str], *, env: dict[str, str], timeout_s: float) -> ChildResult:
    """Run ``argv``; measure its own CPU (``wait4`` rusage) and its own peak RSS (``VmHWM``).

    Not ``ru_maxrss`` for the peak: Popen starts the child with vfork, and exec() folds the
    address space it leaves (this process's, with its ``VmHWM``) into the child's ``ru_maxrss``.
    After generating and uploading 2M rows this process was at ~89 MB (VmRSS = VmHWM at the
    spawn), and the rss benchmark recorded 83-87 MB as the 2M load's peak (+19-26% over 200k);
    the load's own VmHWM was 74.3-74.4 MB against 69.8-69.9 at 200k (+6%). Popen returns after
    the exec, so every read is the child's own address space; ``VmHWM`` is monotonic and the
    kernel records it before any unmapping, so only growth in the last poll interval (~50 ms,
    the child's exit) could be missed.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=str(ROOT))
        deadline = t0 + timeout_s
        hwm_kib = 0
        while True:
            hwm_kib = max(hwm_kib, _vm_hwm_kib(proc.pid))
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(
            returncode=proc.returncode,
            wall_s=wall,
            cpu_s=ru.ru_utime + ru.ru_stime,
            maxrss_mb=(hwm_kib or ru.ru_maxrss) / 1024.0,  # Linux: KiB
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


# ----------------------------------------------------------------------------- services


@dataclass
class Env:
    #: None when no case reads S3 (``--s3ddb-source local`` with only the s3ddb case)
    s3: str | None
    dynamodb_local: str | None
    base: dict[str, str]
    stop: list[Any] = field(default_factory=list)
    #: stand-ins this harness started, by name (their CPU is recorded per case); empty when the
    #: endpoints came from the environment
    pids: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def services(targets: Sequence[str], *, need_s3: bool = True) -> Iterator[Env]:
    """The stand-ins the run needs: none at all when nothing reads S3 and only the wire endpoint
    is written to (then no idle DynamoDB Local or moto shares the machine with the loads)."""
    base = {k: os.environ.get(k, v) for k, v in _CREDS.items()}
    s3 = os.environ.get("AWS_ENDPOINT_URL_S3")
    ddb = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    started = None
    if (need_s3 and not s3) or ("dynamodb-local" in targets and not ddb):
        try:
            from infra.local.stack import start_services
        except ImportError as exc:
            raise SystemExit(
                f"no AWS_ENDPOINT_URL_S3/_DYNAMODB set and infra.local.stack is unavailable ({exc}): "
                "start the stand-ins (s3ddb local up) and export their endpoints"
            ) from exc
        print("benchmarks: starting DynamoDB Local and moto S3 ...", file=sys.stderr)
        started = start_services(state_dir=None)
        s3 = s3 or started.env["AWS_ENDPOINT_URL_S3"]
        ddb = ddb or started.env["AWS_ENDPOINT_URL_DYNAMODB"]
    try:
        yield Env(s3=s3, dynamodb_local=ddb, base=base, pids=dict(started.pids) if started else {})
    finally:
        if started is not None:
            started.stop()


def _boto(service: str, endpoint: str, base: dict[str, str]) -> Any:
    import boto3

    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name=base["AWS_DEFAULT_REGION"],
        aws_access_key_id=base["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=base["AWS_SECRET_ACCESS_KEY"],
    )


def create_table(ddb: Any, name: str, key: Sequence[Sequence[str]]) -> None:
    schema = [{"AttributeName": key[0][0], "KeyType": "HASH"}]
    if len(key) > 1:
        schema.append({"AttributeName": key[1][0], "KeyType": "RANGE"})
    ddb.create_table(
        TableName=name,
        KeySchema=schema,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in key],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def count_items(ddb: Any, table: str) -> int:
    n = 0
    kwargs: dict[str, Any] = {"TableName": table, "Select": "COUNT"}
    while True:
        page = ddb.scan(**kwargs)
        n += int(page["Count"])
        if "LastEvaluatedKey" not in page:
            return n
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# ----------------------------------------------------------------------------- cases


def case_argv(
    case: str,
    *,
    source: str,
    table: str,
    schema: str,
    workdir: str,
    sender: str,
    workers: int | None = None,
    max_wcu: float | None = None,
    shuffle_window: int | None = None,
) -> list[str]:
    py = sys.executable
    if case == "s3ddb":
        argv = [
            py, "-m", "s3ddb.cli", "load", source, "--table", table, "--schema", schema,
            "--json", "--quiet", "--rejects", os.path.join(workdir, "rejects"), "--sender", sender,
        ]  # fmt: skip
        if workers is not None:
            argv += ["--workers", str(workers)]
        if max_wcu is not None:
            argv += ["--max-wcu", f"{max_wcu:g}"]
        if shuffle_window is not None:
            argv += ["--shuffle-window", str(shuffle_window)]
        return argv
    return [py, "-m", "benchmarks.baselines", case, source, "--table", table, "--schema", schema]


def capacity_summary(stats: dict[str, Any]) -> dict[str, Any] | None:
    """What the capacity-enforcing endpoint saw: the sustained rate of accepted write units (the
    mean over the whole seconds of the load: from its first second with writes, which carries the
    starting burst and is left out, to its last, which is partial and left out too), and the share
    of calls refused whole."""
    cap = stats.get("capacity")
    if not cap:
        return None
    series = list(cap["units_per_second"])
    while series and series[-1] == 0:
        series.pop()
    while series and series[0] == 0:
        series.pop(0)
    steady = series[1:-1]
    calls = max(1, int(stats["calls"]))
    return {
        "budget_wcu": cap["table_wcu"],
        "partitions": cap["partitions"],
        "sustained_wcu": round(sum(steady) / len(steady), 1) if steady else None,
        "seconds_measured": len(steady),
        "throttled_calls": int(stats["throttled_calls"]),
        "throttled_call_share": round(int(stats["throttled_calls"]) / calls, 4),
        "unprocessed_items": int(stats["unprocessed_items"]),
        "calls": calls,
    }


def _child_summary(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                return data
    return {}


def run_case(
    *,
    case: str,
    target: str,
    latency_ms: float,
    endpoint: str,
    ddb: Any,
    wire: WireProcess | None,
    source: str,
    schema: str,
    key: Sequence[Sequence[str]],
    rows: int,
    env: Env,
    workdir: str,
    sender: str,
    timeout_s: float,
    workers: int | None = None,
    max_wcu: float | None = None,
    shuffle_window: int | None = None,
    settle_s: float = 0.0,
) -> dict[str, Any]:
    table = f"bench-{case}-{uuid.uuid4().hex[:8]}"
    create_table(ddb, table, key)
    if wire is not None:
        wire.post("/reset")
    child_env = dict(os.environ)
    child_env.update(env.base)
    child_env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
    if env.s3 is not None:
        child_env["AWS_ENDPOINT_URL_S3"] = env.s3
    child_env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else ""
    )
    argv = case_argv(
        case, source=source, table=table, schema=schema, workdir=workdir, sender=sender,
        workers=workers, max_wcu=max_wcu, shuffle_window=shuffle_window,
    )  # fmt: skip
    waited = settle(settle_s) if settle_s > 0 else None
    print(f"benchmarks: {case} -> {target} @ {latency_ms:g} ms ...", file=sys.stderr, flush=True)
    wire0 = float(wire.stats()["server_cpu_s"]) if wire is not None else 0.0
    cpu0 = {name: process_cpu_s(pid) for name, pid in env.pids.items()}
    self0 = self_cpu_s()
    busy0 = machine_busy_s()
    res = run_child(argv, env=child_env, timeout_s=timeout_s)
    machine_cpu_s = machine_busy_s() - busy0
    parts: dict[str, float | None] = {"harness": self_cpu_s() - self0}
    for name, pid in env.pids.items():
        before, after = cpu0[name], process_cpu_s(pid)
        parts[name] = after - before if before is not None and after is not None else None
    summary = _child_summary(res.stdout)
    reported = int(summary.get("items_written", summary.get("items", 0)) or 0)
    capacity = None
    if wire is not None:
        stats = wire.stats()
        parts["wire"] = float(stats["server_cpu_s"]) - wire0
        landed = int(stats["items"])
        capacity = capacity_summary(stats)
    else:
        landed = count_items(ddb, table)
        with contextlib.suppress(Exception):
            ddb.delete_table(TableName=table)
    ok = res.returncode == 0 and landed == rows
    load_s = float(summary.get("seconds") or res.wall_s)
    out: dict[str, Any] = {
        "name": case,
        "target": target,
        "latency_ms": latency_ms,
        "rows": rows,
        "items_per_second": round(landed / load_s, 1) if load_s > 0 else None,
        "client_cpu_us_per_item": round(res.cpu_s / landed * 1e6, 2) if landed else None,
        "peak_rss_mb": round(res.maxrss_mb, 1),
        "wall_s": round(res.wall_s, 2),
        "load_s": round(load_s, 2),
        "client_cpu_s": round(res.cpu_s, 2),
        "machine_cpu_us_per_item": round(machine_cpu_s / landed * 1e6, 2) if landed else None,
        "items_landed": landed,
        "items_reported": reported,
        "ok": ok,
    }
    if case == "s3ddb":
        out["sender"] = sender
        if workers is not None:
            out["workers"] = workers
        if max_wcu is not None:
            out["max_wcu"] = max_wcu
        if shuffle_window is not None:
            out["shuffle_window"] = shuffle_window
        if not source.startswith("s3://"):
            out["source"] = "local file"
    if capacity is not None:
        out["capacity"] = capacity
    if waited is not None:
        out["settled_s"] = waited
    if landed:
        out["cpu_us_per_item"] = cpu_breakdown(
            items=landed, machine_s=machine_cpu_s, client_s=res.cpu_s, parts=parts
        )
    if not ok:
        out["error"] = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][:300]
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
    print(f"benchmarks:   {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def run_matrix(
    *,
    rows: int,
    targets: Sequence[str],
    latencies: Sequence[float],
    cases: Sequence[str],
    keys: str = "random",
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
    item_bytes: int = 300,
    seed: int = 1,
    gzip_output: bool = False,
    sender: str = "lean",
    timeout_s: float = 3600.0,
    repeat: int = 1,
    data: dict[str, Any] | None = None,
    workers: Sequence[int | None] = (None,),
    max_wcu: float | None = None,
    wire_capacity: str | None = None,
    rows_per_key: int = 1,
    shuffle_windows: Sequence[int | None] = (None,),
    s3ddb_source: str = "s3",
    wire_validate: str = "full",
    settle_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Every case on every target; with ``repeat`` > 1 each case runs that many times in turn
    (case A, B, C, then A, B, C again), so a shared machine's drift falls on all of them alike.

    ``data``, when given, is filled with what was generated: the object's size and bytes a row
    (``--item-bytes`` is a target the generator cannot go below: its other cells come first).

    ``s3ddb_source="local"`` gives the s3ddb case the generated file's local path instead of the
    S3 object (the other cases still read S3): no S3 stand-in serves its reads. ``wire_validate``
    is the wire endpoint's ``--validate`` mode."""
    results: list[dict[str, Any]] = []
    need_s3 = s3ddb_source != "local" or any(c != "s3ddb" for c in cases)
    with (
        services(targets, need_s3=need_s3) as env,
        tempfile.TemporaryDirectory(prefix="s3ddb-bench-") as workdir,
    ):
        name = f"bench-{rows}.csv" + (".gz" if gzip_output else "")
        path = os.path.join(workdir, name)
        g = generate(
            path,
            rows=rows,
            columns=columns,
            keys=keys,
            item_bytes=item_bytes,
            seed=seed,
            gzip_output=gzip_output,
            rows_per_key=rows_per_key,
        )
        print(
            f"benchmarks: generated {rows:,} rows ({g.bytes:,} bytes) in {g.seconds:.1f} s", file=sys.stderr
        )
        if data is not None:
            data.update(
                rows=rows,
                object_bytes=g.bytes,
                bytes_per_row=round(g.bytes / max(rows, 1), 1),
                columns=[f"{name}:{typ}" for name, typ in columns],
                item_bytes=item_bytes,
                keys=keys,
                rows_per_key=rows_per_key,
                gzip=gzip_output,
                seed=seed,
            )
        source = path
        if need_s3:
            assert env.s3 is not None
            s3 = _boto("s3", env.s3, env.base)
            bucket = f"s3ddb-bench-{uuid.uuid4().hex[:10]}"
            s3.create_bucket(Bucket=bucket)
            s3.upload_file(path, bucket, name)
            source = f"s3://{bucket}/{name}"
        for target in targets:
            lats = latencies if target == "wire" else [0.0]
            for lat in lats:
                wire = None
                if target == "wire":
                    wire = start_wire("--latency-ms", str(lat), "--validate", wire_validate)
                    if wire_capacity:
                        wire.post(f"/config?{wire_capacity}")
                    endpoint = wire.url
                else:
                    assert env.dynamodb_local is not None
                    endpoint = env.dynamodb_local
                ddb = _boto("dynamodb", endpoint, env.base)
                try:
                    for run in range(repeat):
                        for case, n, window in _runs(cases, workers, shuffle_windows):
                            ours = case == "s3ddb"
                            res = run_case(
                                case=case, target=target, latency_ms=lat, endpoint=endpoint, ddb=ddb,
                                wire=wire, source=path if ours and s3ddb_source == "local" else source,
                                schema=g.schema_path, key=g.key, rows=rows, env=env, workdir=workdir,
                                sender=sender, timeout_s=timeout_s, workers=n,
                                max_wcu=max_wcu if ours else None, shuffle_window=window,
                                settle_s=settle_s,
                            )  # fmt: skip
                            if repeat > 1:
                                res["run"] = run + 1
                            results.append(res)
                finally:
                    if wire is not None:
                        wire.stop()
    return results


def _runs(
    cases: Sequence[str], workers: Sequence[int | None], windows: Sequence[int | None]
) -> list[tuple[str, int | None, int | None]]:
    """One round of runs, in order: every case, and the s3ddb case once per ``--workers`` value
    and ``--shuffle-window`` value (its variants alternate within the round)."""
    out: list[tuple[str, int | None, int | None]] = []
    for case in cases:
        if case == "s3ddb":
            out += [(case, n, w) for w in windows for n in workers]
        else:
            out.append((case, None, None))
    return out


def _label(c: dict[str, Any]) -> str:
    label = str(c["name"])
    if c.get("workers") is not None:
        label += f" --workers {c['workers']}"
    if c.get("max_wcu") is not None:
        label += f" --max-wcu {c['max_wcu']:g}"
    if c.get("shuffle_window") is not None:
        label += f" --shuffle-window {c['shuffle_window']}"
    if c.get("source"):
        label += f" ({c['source']})"
    if c.get("keys"):
        label += f", keys {c['keys']}"
    return label


#: a run whose machine spent at most this much CPU per item beyond the processes it names (the
#: kernel's share of loopback traffic is ~1-1.5 µs/item) had the machine to itself
QUIET_OTHER_US = 3.0


def _other_us(c: dict[str, Any]) -> float | None:
    split = c.get("cpu_us_per_item") or {}
    other = split.get("other")
    return float(other) if other is not None else None


def _median_table(cases: list[dict[str, Any]], title: str) -> list[str]:
    """Median (min-max) items/s and client CPU of each repeated case, in first-seen order."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for c in cases:
        if "run" in c:
            groups.setdefault((_label(c), c["target"], c["latency_ms"]), []).append(c)
    if not groups:
        return []
    lines = [
        "",
        title,
        "",
        "| case | target | latency ms | runs | items/s | client CPU µs/item |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, target, lat_ms), runs in groups.items():
        ips = [float(r["items_per_second"] or 0) for r in runs]
        cpu = [float(r["client_cpu_us_per_item"] or 0) for r in runs]
        lat = f"{lat_ms:g}" if target == "wire" else "n/a (0)"
        lines.append(
            f"| {name} | {target} | {lat} | {len(runs)} | {statistics.median(ips):,.0f} "
            f"({min(ips):,.0f}-{max(ips):,.0f}) | {statistics.median(cpu):.1f} "
            f"({min(cpu):.1f}-{max(cpu):.1f}) |"
        )
    return lines


def _data_line(d: dict[str, Any]) -> str:
    return (
        f"Data: {d['rows']:,} rows, {d['object_bytes']:,} bytes ({d['bytes_per_row']:g} a row"
        f"{', gzip' if d.get('gzip') else ''}), columns pk, sk, {', '.join(d['columns'])}, payload; "
        f"keys {d['keys']}"
        + (f" ({d['rows_per_key']} rows a key)" if d.get("rows_per_key", 1) > 1 else "")
        + f", --item-bytes {d['item_bytes']}"
    )


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_mb']} MB RAM, "
        f"Python {m['python']}, {m['os']}",
        f"Date: {m['date']}; load average at start {m.get('loadavg_at_start')}; command: `{m['command']}`",
    ]
    datasets = report.get("datasets") or ([report["data"]] if report.get("data") else [])
    lines.extend(map(_data_line, datasets))
    lines += [
        "",
        "| case | target | latency ms | rows | items/s | client CPU µs/item | machine CPU µs/item "
        "| peak RSS MB | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in report["cases"]:
        lat = f"{c['latency_ms']:g}" if c["target"] == "wire" else "n/a (0)"
        lines.append(
            f"| {_label(c)} | {c['target']} | {lat} | {c['rows']:,} | {c['items_per_second'] or 0:,.0f} | "
            f"{c['client_cpu_us_per_item'] if c['client_cpu_us_per_item'] is not None else '-'} | "
            f"{c.get('machine_cpu_us_per_item') or '-'} | "
            f"{c['peak_rss_mb']} | {'yes' if c['ok'] else 'NO: ' + c.get('error', '')} |"
        )
    lines += _median_table(report["cases"], "Median of the runs (min-max):")
    others = [(c, _other_us(c)) for c in report["cases"]]
    quiet = [c for c, other in others if other is not None and other <= QUIET_OTHER_US]
    if any("run" in c for c in report["cases"]) and any(other is not None for _, other in others):
        lines += _median_table(
            quiet,
            f"The same, over the runs the machine ran nothing else of note (`other` ≤ {QUIET_OTHER_US:g} "
            f"µs/item in the table of where the CPU went; {len(quiet)} of {len(report['cases'])} runs):",
        )
    capped = [c for c in report["cases"] if c.get("capacity")]
    if capped:
        lines += [
            "",
            "Against the capacity-enforcing endpoint (`benchmarks/wire.py` capacity mode):",
            "",
            "| case | budget WCU/s | partitions | sustained WCU/s | of budget | calls | throttled calls "
            "| items handed back |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in capped:
            k = c["capacity"]
            sustained = k["sustained_wcu"] or 0.0
            share = sustained / k["budget_wcu"] if k["budget_wcu"] else 0.0
            lines.append(
                f"| {_label(c)} | {k['budget_wcu']:,.0f} | {k['partitions']} | {sustained:,.0f} "
                f"| {share:.1%} "
                f"| {k['calls']:,} | {k['throttled_calls']:,} ({k['throttled_call_share']:.2%}) "
                f"| {k['unprocessed_items']:,} |"
            )
    split = [c for c in report["cases"] if c.get("cpu_us_per_item")]
    if split:
        names = list(dict.fromkeys(n for c in split for n in c["cpu_us_per_item"]))
        lines += [
            "",
            "Where the machine's CPU went, µs per item written (`other`: the machine's busy time beyond "
            "the processes named here):",
            "",
            "| case | run | " + " | ".join(names) + " | machine |",
            "|---|---:|" + "---:|" * (len(names) + 1),
        ]
        for c in split:
            b = c["cpu_us_per_item"]
            cells = [f"{b[n]:.2f}" if n in b else "-" for n in names]
            lines.append(
                f"| {_label(c)} | {c.get('run', 1)} | "
                + " | ".join(cells)
                + f" | {c.get('machine_cpu_us_per_item') or '-'} |"
            )
    lines += [
        "",
        "Client CPU is the loader process's own user+sys time (interpreter start and imports included) "
        "divided by items written (with --workers, its workers' time too; peak RSS is the parent's only); "
        "machine CPU is every process of the machine over the case (the loader, the stand-ins it talks to, "
        "and whatever else ran); items/s is the loader's own timing of the load. DynamoDB Local cannot "
        "add latency, so it is measured at 0 ms only. The wire endpoint runs in its own process: its CPU "
        "is not in the client's, and is shown apart in the table of where the machine's CPU went.",
    ]
    return "\n".join(lines) + "\n"


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--out", required=True, help="JSON file; the Markdown table goes beside it (.md)")
    p.add_argument("--targets", type=_csv_list, default=["wire", "dynamodb-local"])
    p.add_argument("--latency", type=_csv_list, default=["0", "10"], help="ms per call, wire target only")
    p.add_argument("--cases", type=_csv_list, default=list(CASES))
    p.add_argument(
        "--keys",
        type=_csv_list,
        default=["random"],
        help="random, sorted or hot; a list (e.g. random,sorted) runs the whole set on each, in turn",
    )
    p.add_argument(
        "--rows-per-key",
        type=int,
        default=1,
        help="with --keys sorted: rows sharing each partition key (table key pk + sk when > 1)",
    )
    p.add_argument(
        "--columns", type=parse_columns, default=DEFAULT_COLUMNS, help="e.g. name:S,score:N,tags:SS"
    )
    p.add_argument("--item-bytes", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--sender", default="lean", choices=("lean", "botocore"), help="s3ddb's write path")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per case")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (each one is recorded)")
    p.add_argument(
        "--workers",
        type=_csv_list,
        default=[],
        help="s3ddb's --workers, one run per value (e.g. 1,2); default: s3ddb's own default",
    )
    p.add_argument("--max-wcu", type=float, help="s3ddb's --max-wcu (the load's write budget)")
    p.add_argument(
        "--wire-capacity",
        metavar="QUERY",
        help="turn the wire endpoint's capacity mode on, e.g. table_wcu=20000&partitions=8&burst_s=1",
    )
    p.add_argument(
        "--shuffle-window",
        type=_csv_list,
        default=[],
        help="s3ddb's --shuffle-window ROWS, one run per value (e.g. 0,50000); default: not passed",
    )
    p.add_argument(
        "--s3ddb-source",
        choices=("s3", "local"),
        default="s3",
        help="what the s3ddb case reads: the S3 object (default) or the generated file's local path",
    )
    p.add_argument(
        "--wire-validate",
        choices=("full", "count"),
        default="full",
        help="the wire endpoint's --validate: full (parse and check every call) or count (count items)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each case, wait up to SECONDS for the machine to be idle (a shared machine)",
    )
    a = p.parse_args(argv)
    for t in a.targets:
        if t not in TARGETS:
            p.error(f"--targets: {t!r} is not one of {', '.join(TARGETS)}")
    for c in a.cases:
        if c not in CASES:
            p.error(f"--cases: {c!r} is not one of {', '.join(CASES)}")
    for k in a.keys:
        if k not in KEY_DISTRIBUTIONS:
            p.error(f"--keys: {k!r} is not one of {', '.join(KEY_DISTRIBUTIONS)}")
    if a.rows_per_key > 1 and "sorted" not in a.keys:
        p.error("--rows-per-key needs --keys sorted")
    machine = machine_info(["run", *argv])
    compile_sources()
    datasets: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    for keys in a.keys:
        data: dict[str, Any] = {}
        got = _run_keys(a, keys, data)
        if len(a.keys) > 1:
            for c in got:
                c["keys"] = keys + (
                    f" ({a.rows_per_key} a key)" if keys == "sorted" and a.rows_per_key > 1 else ""
                )
        cases += got
        datasets.append(data)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {"machine": machine, "data": datasets[0], "cases": cases}
    if len(datasets) > 1:
        report["datasets"] = datasets
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if all(c["ok"] for c in cases) else 1


def _run_keys(a: argparse.Namespace, keys: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """``run_matrix`` with the parsed arguments, on one key distribution."""
    return run_matrix(
        rows=a.rows,
        targets=a.targets,
        latencies=[float(x) for x in a.latency],
        cases=a.cases,
        keys=keys,
        columns=a.columns,
        item_bytes=a.item_bytes,
        seed=a.seed,
        gzip_output=a.gzip,
        sender=a.sender,
        timeout_s=a.timeout,
        repeat=max(1, a.repeat),
        data=data,
        workers=[int(w) for w in a.workers] or [None],
        max_wcu=a.max_wcu,
        wire_capacity=a.wire_capacity,
        rows_per_key=a.rows_per_key if keys == "sorted" else 1,
        shuffle_windows=[int(w) for w in a.shuffle_window] or [None],
        s3ddb_source=a.s3ddb_source,
        wire_validate=a.wire_validate,
        settle_s=a.settle,
    )


def report_main(argv: list[str]) -> int:
    """``python -m benchmarks report FILE.json``: write FILE.md again from a results file (after the
    report's format changed; the measurements are the file's own)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks report", description=report_main.__doc__)
    p.add_argument("results", type=Path)
    a = p.parse_args(argv)
    report = json.loads(a.results.read_text(encoding="utf-8"))
    a.results.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    return 0


# ----------------------------------------------------------------------------- rss


def rss_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks rss", description="s3ddb peak RSS by object size")
    p.add_argument("--rows", type=_csv_list, default=["200000", "2000000"])
    p.add_argument("--out", default=str(RESULTS / "rss.json"))
    p.add_argument("--sender", default="lean", choices=("lean", "botocore"))
    a = p.parse_args(argv)
    machine = machine_info(["rss", *argv])
    compile_sources()
    runs = []
    for n in a.rows:
        runs += run_matrix(rows=int(n), targets=["wire"], latencies=[0.0], cases=["s3ddb"], sender=a.sender)
    by_rows = {r["rows"]: r["peak_rss_mb"] for r in runs if r["ok"]}
    small, big = min(by_rows, default=None), max(by_rows, default=None)
    verdict: dict[str, Any] = {}
    if small is not None and big is not None and big != small:
        verdict = {
            "largest_rows": big,
            "largest_peak_rss_mb": by_rows[big],
            "le_150_mb": by_rows[big] <= 150.0,
            "growth_vs_smallest": round(by_rows[big] / by_rows[small] - 1.0, 3),
            "within_20_percent": by_rows[big] <= by_rows[small] * 1.2,
        }
    report = {"machine": machine, "runs": runs, "verdict": verdict}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"peak_rss_mb_by_rows": by_rows, **verdict}, indent=1))
    return 0 if all(r["ok"] for r in runs) else 1


# ----------------------------------------------------------------------------- import time

_IMPORT_PROBE = "import time, sys\nt = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)\n"


def import_time_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks import-time", description="fresh-interpreter import"
    )
    p.add_argument("--module", default="lambda_src.handler")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", default=str(RESULTS / "import_time.json"))
    p.add_argument("--limit-ms", type=float, default=300.0)
    a = p.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = _IMPORT_PROBE.format(module=a.module)
    samples: list[float] = []
    walls: list[float] = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT)
        )
        walls.append(time.perf_counter() - t0)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            print(f"benchmarks: `import {a.module}` fails in a fresh interpreter: {last}", file=sys.stderr)
            print("benchmarks: nothing recorded", file=sys.stderr)
            return 1
        samples.append(float(r.stdout.strip().splitlines()[-1]))
    # the slowest modules, once, for the report
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {a.module}"],
        capture_output=True, text=True, env=env, cwd=str(ROOT),
    )  # fmt: skip
    top: list[tuple[int, str]] = []
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            top.append((int(parts[1].strip()), parts[2].rstrip()))
    top.sort(reverse=True)
    median_ms = statistics.median(samples) * 1000
    report = {
        "machine": machine_info(["import-time", *argv]),
        "module": a.module,
        "import_ms_median": round(median_ms, 1),
        "import_ms_samples": [round(s * 1000, 1) for s in samples],
        "process_wall_ms_median": round(statistics.median(walls) * 1000, 1),
        "limit_ms": a.limit_ms,
        "within_limit": median_ms <= a.limit_ms,
        "slowest_cumulative_us": [
            {"us": us, "module": m.strip(), "depth": len(m) - len(m.lstrip())} for us, m in top[:15]
        ],
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("module", "import_ms_median", "within_limit")}))
    return 0 if report["within_limit"] else 1
