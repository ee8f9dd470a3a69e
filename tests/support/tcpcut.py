"""A tiny threaded TCP proxy that records HTTP requests and can cut one response short.

``TcpCut(("127.0.0.1", 8701))`` listens on a free port of 127.0.0.1 and forwards every connection
to the upstream server. It records each request head it forwards (method, target, headers). When
armed with ``arm(after_bytes=N)``, the next response to a matching request is forwarded for N bytes
(head included) and then the client connection is closed, once; ``cut_body_offset`` says how many
body bytes the client got.

Only plain HTTP/1.1 with ``Content-Length`` request bodies is parsed (enough for boto3's GET/HEAD).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


class TcpCut:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[Request] = []
        self.cut_body_offset: int | None = None
        self._lock = threading.Lock()
        self._armed: tuple[int, str] | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopping = False

    # -- control ------------------------------------------------------------------------------

    def start(self) -> TcpCut:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()
        with self._lock:
            socks = list(self._sockets)
        for sock in socks:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpCut:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def arm(self, after_bytes: int, method: str = "GET") -> None:
        """Cut the response to the next ``method`` request after ``after_bytes`` bytes, once."""
        with self._lock:
            self._armed = (after_bytes, method)
            self.cut_body_offset = None

    # -- plumbing -----------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            conn = _Conn(client=client, upstream=upstream)
            self._spawn(self._client_to_upstream, conn)
            self._spawn(self._upstream_to_client, conn)

    def _client_to_upstream(self, conn: _Conn) -> None:
        buf = b""
        body_left = 0
        try:
            while data := conn.client.recv(65536):
                buf += data
                while True:
                    if body_left:
                        take = min(body_left, len(buf))
                        buf, body_left = buf[take:], body_left - take
                        if body_left:
                            break
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buf = buf[:end].decode("latin-1"), buf[end + 4 :]
                    request = _parse_head(head)
                    body_left = int(request.headers.get("content-length", "0") or 0)
                    with self._lock:
                        self.requests.append(request)
                        if self._armed is not None and self._armed[1] == request.method:
                            conn.cut_after = self._armed[0]
                            self._armed = None
                # mark the cut before the request can reach the server and be answered
                conn.upstream.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown_write(conn.upstream)

    def _upstream_to_client(self, conn: _Conn) -> None:
        try:
            while data := conn.upstream.recv(65536):
                if conn.cut_after is None:
                    conn.client.sendall(data)
                    continue
                if len(conn.response_head) < 65536:
                    conn.response_head += data
                room = conn.cut_after - conn.forwarded
                conn.client.sendall(data[:room])
                conn.forwarded += min(room, len(data))
                if conn.forwarded >= conn.cut_after:
                    head_end = conn.response_head.find(b"\r\n\r\n")
                    assert head_end >= 0, "cut inside the response head: arm with more bytes"
                    with self._lock:
                        self.cut_body_offset = conn.cut_after - (head_end + 4)
                    break
        except OSError:
            pass
        finally:
            _close(conn.client)
            _close(conn.upstream)


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    cut_after: int | None = None
    forwarded: int = 0
    response_head: bytes = b""


def _parse_head(head: str) -> Request:
    first, *lines = head.split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method=method, target=target, headers=headers)


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
