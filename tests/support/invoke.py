"""A local stand-in for Lambda's Invoke API that records what a function sends itself (the
continuations and lanes a ChainRunner invokes), or fails on demand; for runner tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class InvokeEndpoint:
    """``POST /2015-03-31/functions/{name}/invocations``: 202 and the payload recorded, or 500."""

    failing: bool = False
    payloads: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    #: runs with each request's payload before the answer (what else happens while an invoke is sent)
    on_post: Callable[[dict[str, Any]], None] | None = None


@contextmanager
def running_endpoint() -> Iterator[InvokeEndpoint]:
    """An ``InvokeEndpoint`` serving on a free local port while the block runs."""
    ep = InvokeEndpoint()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if ep.on_post is not None:
                ep.on_post(json.loads(body))
            if ep.failing:
                status, out = 500, b'{"Type": "Service", "message": "injected"}'
            else:
                ep.payloads.append(json.loads(body))
                status, out = 202, b""
            self.send_response(status)
            if status != 202:
                self.send_header("x-amzn-ErrorType", "ServiceException")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ep.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield ep
    finally:
        server.shutdown()
        server.server_close()
