"""A local stand-in for the Lambda Invoke API, hosting ``lambda_src.handler.handler``.

``POST /2015-03-31/functions/{name}/invocations`` (the path boto3 uses, so the handler's own
``invoke`` reaches it through ``AWS_ENDPOINT_URL_LAMBDA`` unchanged):

* ``X-Amz-Invocation-Type: Event``: 202 at once; the invocation runs in the background, and on
  an error or a timeout is retried twice with the same request id after ``retry_delays`` (Lambda
  waits about 1 and 2 minutes; locally a second or two);
* ``RequestResponse`` (the default): the handler's result, or ``X-Amz-Function-Error: Unhandled``
  with ``{"errorType", "errorMessage", "stackTrace"}``;
* ``DryRun``: 204.

Each attempt runs in its own process (``python -m infra.local.lambda_runner``) with the function's
environment, a context whose ``get_remaining_time_in_millis()`` counts down to the deadline, and
is killed (its whole process group) when the timeout passes. As in Lambda, the init phase (the
process start and the import of the handler's module) does not count against the timeout: the
clock starts when the runner says it is ready to call the handler; an init that takes longer than
``init_timeout_s`` (10 s, Lambda's limit) is killed and reported as ``Runtime.InitTimeout``
(the Event retries apply). ``GET /_emulator/invocations`` lists
every attempt (request id, attempt, type, outcome, seconds) for tests and debugging.

Fault injection for tests: the first ``fault_first_attempts`` Event invocations get, on their first
attempt only, a context that overstates the time left by ``fault_extra_ms``: the handler plans
past its real deadline and is killed before it checkpoints, the way a hop dies when it misjudges
its remaining work.

Run it with ``python -m infra.local.lambda_emulator --port N --timeout S``; it prints
``lambda emulator listening on URL`` when ready.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = ["DEFAULT_FUNCTION", "EmulatorConfig", "FunctionSpec", "LambdaEmulator", "main"]

DEFAULT_FUNCTION = "s3ddb-loader"
DEFAULT_HANDLER = "lambda_src.handler.handler"
ACCOUNT = "000000000000"
#: Lambda's payload limits: 1 MB for an async (Event) invoke, 6 MB for a synchronous one.
MAX_EVENT_PAYLOAD = 1024 * 1024
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_REPO_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True, kw_only=True)
class FunctionSpec:
    name: str = DEFAULT_FUNCTION
    handler: str = DEFAULT_HANDLER
    timeout_s: float = 900.0
    memory_mb: int = 1769
    #: added to the emulator's own environment for every invocation
    env: dict[str, str] = field(default_factory=dict)

    #: how long the runner may take to start and import the handler (Lambda: 10 s)
    init_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.init_timeout_s <= 0:
            raise ValueError(f"init timeout must be positive, got {self.init_timeout_s}")
        if not 0 < self.timeout_s <= 900:
            raise ValueError(f"timeout must be in (0, 900] seconds, got {self.timeout_s}")


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    function: FunctionSpec = field(default_factory=FunctionSpec)
    retry_delays: tuple[float, ...] = (1.0, 2.0)
    max_concurrency: int = 32
    fault_first_attempts: int = 0
    fault_extra_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Outcome:
    ok: bool
    body: bytes
    error_type: str | None = None
    timed_out: bool = False


class LambdaEmulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.server = ThreadingHTTPServer((config.host, config.port), _make_handler(self))
        self.server.daemon_threads = True
        self.url = f"http://{config.host}:{self.server.server_address[1]}"
        self.arn = f"arn:aws:lambda:{config.region}:{ACCOUNT}:function:{config.function.name}"
        self.pool = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="event")
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.attempts: list[dict[str, Any]] = []
        self.children: set[subprocess.Popen[bytes]] = set()
        self._faults_left = config.fault_first_attempts
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            children = list(self.children)
        for proc in children:
            _kill_group(proc)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- invocations -----------------------------------------------------------------------------

    def resolve(self, name: str) -> bool:
        """Is ``name`` (a name, ``name:qualifier`` or an ARN) our function?"""
        name = unquote(name)
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) > 6 else ""
        else:
            name = name.split(":", 1)[0]
        return name == self.config.function.name

    def submit_event(self, payload: bytes, request_id: str) -> None:
        with self.lock:
            fault = self._faults_left > 0
            if fault:
                self._faults_left -= 1
        self.pool.submit(self._run_event, payload, request_id, fault)

    def _run_event(self, payload: bytes, request_id: str, fault: bool) -> None:
        delays = self.config.retry_delays
        for attempt in range(1, len(delays) + 2):
            if self.stopping.is_set():
                return
            out = self.run_attempt(
                payload,
                request_id=request_id,
                attempt=attempt,
                kind="Event",
                extra_ms=self.config.fault_extra_ms if fault and attempt == 1 else 0,
            )
            if out.ok or attempt > len(delays):
                return
            if self.stopping.wait(delays[attempt - 1]):
                return

    def run_attempt(
        self,
        payload: bytes,
        *,
        request_id: str,
        attempt: int = 1,
        kind: str = "RequestResponse",
        extra_ms: int = 0,
    ) -> Outcome:
        fn = self.config.function
        started = time.time()
        timeout_ms = int(fn.timeout_s * 1000)
        request = {
            "event": json.loads(payload) if payload.strip() else {},
            "context": {
                "aws_request_id": request_id,
                "function_name": fn.name,
                "invoked_function_arn": self.arn,
                "memory_limit_in_mb": fn.memory_mb,
                # the runner sets deadline_epoch_ms = (when its init is done) + timeout_ms + extra_ms
                "deadline_epoch_ms": 0,
                "timeout_ms": timeout_ms,
                "extra_ms": extra_ms,
            },
        }
        fd, result_path = tempfile.mkstemp(prefix="lambda-result-", suffix=".json")
        os.close(fd)
        env = {**os.environ, **fn.env, **self._runtime_env()}
        ready_r, ready_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "infra.local.lambda_runner", fn.handler, result_path, str(ready_w)],
                stdin=subprocess.PIPE,
                env=env,
                start_new_session=True,
                pass_fds=(ready_w,),
            )
        finally:
            os.close(ready_w)
        with self.lock:
            self.children.add(proc)
        timed_out = init_timed_out = False
        init_s = 0.0
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(request).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            ready = _wait_ready(ready_r, fn.init_timeout_s)
            init_s = time.time() - started
            if ready is None:
                init_timed_out = True
                _kill_group(proc)
                proc.wait()
            else:
                # the runner started its own clock just before it said ready: ours starts no earlier
                kill_at = ready + fn.timeout_s
                try:
                    proc.wait(timeout=max(0.0, kill_at - time.time()))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
                    proc.wait()
            with open(result_path, "rb") as f:
                raw = f.read()
        finally:
            os.close(ready_r)
            with self.lock:
                self.children.discard(proc)
            os.unlink(result_path)
        seconds = time.time() - started
        if init_timed_out:
            out = Outcome(
                ok=False,
                body=_error_body(
                    "Runtime.InitTimeout", f"Init did not finish in {fn.init_timeout_s:.1f} seconds"
                ),
                error_type="Runtime.InitTimeout",
                timed_out=True,
            )
        elif timed_out:
            out = Outcome(
                ok=False,
                body=_error_body("Sandbox.Timedout", f"Task timed out after {seconds:.2f} seconds"),
                error_type="Sandbox.Timedout",
                timed_out=True,
            )
        elif not raw:
            out = Outcome(
                ok=False,
                body=_error_body("Runtime.ExitError", f"the runtime exited with code {proc.returncode}"),
                error_type="Runtime.ExitError",
            )
        else:
            res = json.loads(raw)
            if res.get("ok"):
                out = Outcome(ok=True, body=json.dumps(res.get("result")).encode())
            else:
                res.pop("ok", None)
                out = Outcome(ok=False, body=json.dumps(res).encode(), error_type=str(res.get("errorType")))
        outcome = "ok" if out.ok else ("timeout" if out.timed_out else "error")
        with self.lock:
            self.attempts.append(
                {
                    "request_id": request_id,
                    "attempt": attempt,
                    "type": kind,
                    "outcome": outcome,
                    "error_type": out.error_type,
                    "seconds": round(seconds, 3),
                    "init_seconds": round(init_s, 3),
                    "fault_extra_ms": extra_ms,
                }
            )
        print(
            f"lambda emulator: {kind} {request_id} attempt {attempt}: {outcome} in {seconds:.2f}s",
            file=sys.stderr,
            flush=True,
        )
        return out

    def _runtime_env(self) -> dict[str, str]:
        fn = self.config.function
        path = os.environ.get("PYTHONPATH", "")
        return {
            "AWS_ENDPOINT_URL_LAMBDA": self.url,
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(fn.timeout_s)),
            "AWS_REGION": os.environ.get("AWS_REGION") or self.config.region,
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION") or self.config.region,
            "PYTHONPATH": f"{_REPO_ROOT}{os.pathsep}{path}" if path else _REPO_ROOT,
        }


def _wait_ready(fd: int, timeout_s: float) -> float | None:
    """When the runner said ``ready`` (or exited: EOF), by our clock; None if neither in time."""
    deadline = time.monotonic() + timeout_s
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return None
        chunk = os.read(fd, 64)
        if not chunk or b"\n" in buf + chunk:
            return time.time()
        buf += chunk


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def _make_handler(emu: LambdaEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: attempts are logged
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"Type": "User", "message": message}).encode()
            self._send(status, body, {"x-amzn-ErrorType": code})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/_emulator/invocations":
                with emu.lock:
                    body = json.dumps(emu.attempts).encode()
                self._send(200, body)
            else:
                self._send(200, json.dumps({"functions": [emu.config.function.name]}).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = self.rfile.read(length) if length else b""
            m = _PATH.match(self.path.split("?", 1)[0])
            if not m:
                self._error(404, "UnknownOperationException", f"unknown path {self.path}")
                return
            if not emu.resolve(m["name"]):
                self._error(404, "ResourceNotFoundException", f"Function not found: {unquote(m['name'])}")
                return
            kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
            request_id = str(uuid.uuid4())
            base = {"X-Amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
            if kind == "DryRun":
                self._send(204, b"", base)
                return
            if kind not in ("Event", "RequestResponse"):
                self._error(400, "InvalidParameterValueException", f"invalid invocation type {kind!r}")
                return
            limit = MAX_EVENT_PAYLOAD if kind == "Event" else MAX_SYNC_PAYLOAD
            if len(payload) > limit:
                self._error(413, "RequestTooLargeException", f"payload {len(payload)} bytes > {limit}")
                return
            try:
                if payload.strip():
                    json.loads(payload)
            except ValueError:
                self._error(400, "InvalidRequestContentException", "could not parse the request body as JSON")
                return
            if kind == "Event":
                emu.submit_event(payload, request_id)
                self._send(202, b"", base)
                return
            out = emu.run_attempt(payload, request_id=request_id)
            headers = dict(base)
            if not out.ok:
                headers["X-Amz-Function-Error"] = "Unhandled"
            self._send(200, out.body, headers)

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m infra.local.lambda_emulator", description=__doc__.split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    p.add_argument("--timeout", type=float, default=900.0, help="function timeout in seconds (default 900)")
    p.add_argument("--memory", type=int, default=1769, help="memory_limit_in_mb in the context")
    p.add_argument(
        "--init-timeout", type=float, default=10.0, help="seconds the runner may take to import the handler"
    )
    p.add_argument("--function-name", default=DEFAULT_FUNCTION)
    p.add_argument("--handler", default=DEFAULT_HANDLER)
    p.add_argument("--retry-delays", default="1,2", help="seconds before the Event retries (default 1,2)")
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="function environment (repeatable)"
    )
    p.add_argument("--fault-first-attempts", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fault-extra-ms", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    delays = tuple(float(x) for x in args.retry_delays.split(",") if x.strip())
    fn_env = dict(item.split("=", 1) for item in args.env if "=" in item)
    emu = LambdaEmulator(
        EmulatorConfig(
            host=args.host,
            port=args.port,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            function=FunctionSpec(
                name=args.function_name,
                handler=args.handler,
                timeout_s=args.timeout,
                memory_mb=args.memory,
                env=fn_env,
                init_timeout_s=args.init_timeout,
            ),
            retry_delays=delays,
            max_concurrency=args.max_concurrency,
            fault_first_attempts=args.fault_first_attempts,
            fault_extra_ms=args.fault_extra_ms,
        )
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    url = emu.start()
    print(f"lambda emulator listening on {url}", flush=True)
    done.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
