"""Runs ONE invocation of a handler in a fresh process (started by ``lambda_emulator``).

``python -m infra.local.lambda_runner HANDLER RESULT_PATH [READY_FD]`` reads ``{"event": ...,
"context": {..., "timeout_ms": N}}`` from stdin and imports the handler's module (the init phase:
in Lambda it does not count against the function timeout). Then it starts the invocation's clock
(deadline = now + ``timeout_ms`` [+ ``extra_ms``, a fault injection]), writes ``ready`` to
READY_FD so the emulator starts its kill timer no earlier, calls the handler with a context whose
``get_remaining_time_in_millis()`` counts down to that deadline, and writes ``{"ok": true, "result": ...}`` or
``{"ok": false, "errorType": ..., "errorMessage": ..., "stackTrace": [...]}`` to RESULT_PATH.
The function's own output goes to stdout/stderr, as it does in Lambda.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any


@dataclass
class Context:
    aws_request_id: str
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    deadline_epoch_ms: int
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_epoch_ms - time.time() * 1000))


def _ready(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    handler_path, result_path = argv[0], argv[1]
    ready_fd = int(argv[2]) if len(argv) > 2 else None
    request = json.loads(sys.stdin.buffer.read())
    raw_ctx = dict(request["context"])
    timeout_ms = int(raw_ctx.pop("timeout_ms", 0))
    extra_ms = int(raw_ctx.pop("extra_ms", 0))
    module_name, _, func_name = handler_path.rpartition(".")
    out: dict[str, Any]
    try:
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        finally:
            # the invocation starts now, whether the init worked or not (an import error is its result)
            if timeout_ms:
                raw_ctx["deadline_epoch_ms"] = int(time.time() * 1000) + timeout_ms + extra_ms
            _ready(ready_fd)
        ctx = Context(**raw_ctx)
        out = {"ok": True, "result": func(request["event"], ctx)}
    except Exception as exc:
        out = {
            "ok": False,
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc),
        }
        traceback.print_exc()
    try:
        data = json.dumps(out, default=str)
    except (TypeError, ValueError) as exc:
        data = json.dumps({"ok": False, "errorType": "Runtime.MarshalError", "errorMessage": str(exc)})
    with open(result_path, "w", encoding="utf-8") as f:
        f.write(data)
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
