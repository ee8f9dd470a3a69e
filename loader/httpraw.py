"""A minimal HTTP/1.1 keep-alive client on asyncio's Protocol/transport, for the lean sender.

Exactly what ``loader.fastsend`` needs: a request with a body already in hand, a small response
read whole. Measured on the development machine, aiohttp's per-request machinery (request and
response objects, stream readers, timers, tracing hooks) was most of the lean sender's CPU; a
bare ``asyncio.Protocol`` does the same exchange in well under half of it.

What it does:

* a pool per origin ``(host, port, tls)`` of at most ``max_connections`` persistent connections,
  idle ones reused last-in first-out and dropped after ``keepalive_timeout_s`` idle;
* responses framed by ``Content-Length``, ``Transfer-Encoding: chunked``, or (HTTP/1.0 style)
  the server closing the connection; ``Connection: close`` is honoured; 1xx is not supported;
* TLS through asyncio's ``ssl`` with the context it is given (``ssl_context(...)`` builds one the
  way botocore's ``verify`` asks: a CA bundle, certifi's default, or no checks at all; the lean
  sender passes the one its botocore client was configured with); SNI and certificate name = the
  host;
* an IPv6-literal host (``"::1"``) is written in brackets in ``Host`` (``[::1]:8000``), as RFC 3986
  and botocore write it;
* a connect timeout per new connection and a read timeout per request (from the last byte sent
  to the whole response);
* a request whose *reused* connection dies before any response byte (the server closed an idle
  keep-alive connection as we wrote) is sent once more on a fresh connection; any other failure
  raises, and nothing is ever resent after part of a response was read.

What it does not do: proxies (``loader.fastsend`` uses aiohttp when a proxy is configured),
redirects, compression, cookies, request streaming.

Errors are ``HttpRawError`` subclasses: ``ConnectError``, ``ReadTimeoutError``,
``ConnectionClosedError`` and ``ProtocolError``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Final, cast

__all__ = [
    "ConnectError",
    "ConnectionClosedError",
    "HttpRawError",
    "Origin",
    "ProtocolError",
    "RawHttpClient",
    "RawResponse",
    "ReadTimeoutError",
    "authority",
    "default_ssl_context",
    "ssl_context",
]

Origin = tuple[str, int, bool]
"""``(host, port, tls)``: where a connection goes."""

_MAX_HEAD: Final = 64 * 1024


class HttpRawError(Exception):
    """Any failure of a raw HTTP exchange (the lean sender maps them all to TransientSendError)."""


class ConnectError(HttpRawError):
    """A new connection (TCP or TLS handshake) failed or timed out."""


class ReadTimeoutError(HttpRawError):
    """The whole response did not arrive within the read timeout."""


class ConnectionClosedError(HttpRawError):
    """The connection closed or was reset before the response was complete.

    ``response_started`` says whether any response byte had arrived.
    """

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class ProtocolError(HttpRawError):
    """The server's bytes are not an HTTP/1.x response."""


class RawResponse:
    """Status, headers (names lower-cased; repeated ones joined with ``", "``) and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"RawResponse(status={self.status}, body={len(self.body)} bytes)"


def ssl_context(
    *, cafile: str | None = None, verify: bool = True, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """A client TLS context, as botocore's ``verify`` / ``client_cert`` settings ask for.

    ``verify=True``: certificate and host name checks on, CAs from ``cafile`` when given, else
    certifi's bundle when it is installed, else the system's (botocore's own default is certifi's
    bundle too). ``verify=False``: no checks at all (botocore's ``verify=False``); ``cafile`` is
    then ignored. ``certfile`` / ``keyfile``: a client certificate to present.
    """
    if cafile is None and verify:
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with botocore's dependencies here
            pass
        else:
            cafile = certifi.where()
    ctx = ssl.create_default_context(cafile=cafile if verify else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def default_ssl_context() -> ssl.SSLContext:
    """Certificate and host name checks on; CAs from certifi when it is installed, else the system's."""
    return ssl_context()


def authority(host: str, port: int, tls: bool) -> str:
    """The ``Host`` header for an origin: the port only when it is not the scheme's default, an
    IPv6 literal in brackets (``[::1]:8000``)."""
    host = _bracketed(host)
    return host if port == (443 if tls else 80) else f"{host}:{port}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# parser states
_IDLE: Final = 0
_HEAD: Final = 1
_LENGTH: Final = 2
_CHUNK_SIZE: Final = 3
_CHUNK_DATA: Final = 4
_TRAILERS: Final = 5
_UNTIL_CLOSE: Final = 6


class _Connection(asyncio.Protocol):
    """One socket, one exchange at a time; the response is parsed as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._state = _IDLE
        self._waiter: asyncio.Future[RawResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = False
        self._want = 0
        self._chunks: list[bytes] = []
        #: done once the transport is gone (a TLS close ends only after its close_notify exchange)
        self.lost: asyncio.Future[None] = loop.create_future()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:  # bytes nobody asked for: the connection is no longer in step
            self.close()
            return
        self._started = True
        self._buf += data
        try:
            self._parse()
        except ProtocolError as exc:
            self._fail(exc)
            self.close()

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        if not self.lost.done():
            self.lost.set_result(None)

    # driving an exchange

    def exchange(self, data: bytes, read_timeout_s: float) -> asyncio.Future[RawResponse]:
        """Write one whole request; the future completes with its response or an HttpRawError."""
        waiter: asyncio.Future[RawResponse] = self._loop.create_future()
        self._waiter = waiter
        self._state = _HEAD
        self._started = False
        self.reusable = False
        if self.closed or self.transport is None or self.transport.is_closing():
            self._fail(ConnectionClosedError("connection closed before the request", response_started=False))
            return waiter
        self._timer = self._loop.call_later(read_timeout_s, self._timed_out)
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(ReadTimeoutError("no complete response within the read timeout"))
        self.abort()

    def _ended(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._state == _IDLE:
            return
        if self._state == _UNTIL_CLOSE:
            self._chunks.append(bytes(self._buf))
            self._buf.clear()
            self._done(False)
            return
        why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        if self._started:
            self._fail(ConnectionClosedError(f"connection closed mid-response{why}", response_started=True))
        else:
            self._fail(
                ConnectionClosedError(
                    f"connection closed before any response byte{why}", response_started=False
                )
            )

    def _fail(self, exc: HttpRawError) -> None:
        self._state = _IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _done(self, keep_alive: bool) -> None:
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        response = RawResponse(self._status, self._headers, body)
        self._chunks = []
        self._state = _IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buf:  # more than one response's worth: not safe to reuse
            keep_alive = False
        self.reusable = keep_alive and not self.closed
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # the parser

    def _parse(self) -> None:
        buf = self._buf
        if self._state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ProtocolError("response head too large")
                return
            self._head(bytes(buf[:end]).decode("latin-1"))
            del buf[: end + 4]
        if self._state == _LENGTH:
            if len(buf) < self._want:
                return
            self._chunks.append(bytes(buf[: self._want]))
            del buf[: self._want]
            self._done(self._keep_alive)
            return
        if self._state == _UNTIL_CLOSE:
            return  # the body ends when the connection does
        pos = 0
        try:
            while True:
                if self._state == _CHUNK_SIZE:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        return
                    line = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
                    try:
                        size = int(line, 16)
                    except ValueError:
                        raise ProtocolError(f"bad chunk size {line[:20]!r}") from None
                    pos = eol + 2
                    if size == 0:
                        self._state = _TRAILERS
                    else:
                        self._want = size
                        self._state = _CHUNK_DATA
                elif self._state == _CHUNK_DATA:
                    if len(buf) - pos < self._want + 2:
                        return
                    end = pos + self._want
                    if buf[end : end + 2] != b"\r\n":
                        raise ProtocolError("chunk not followed by CRLF")
                    self._chunks.append(bytes(buf[pos:end]))
                    pos = end + 2
                    self._state = _CHUNK_SIZE
                elif self._state == _TRAILERS:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        return
                    empty = eol == pos
                    pos = eol + 2
                    if empty:
                        del buf[:pos]
                        pos = 0
                        self._done(self._keep_alive)
                        return
                else:  # pragma: no cover - states above are exhaustive
                    return
        finally:
            if pos:
                del buf[:pos]

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self._status = status
        self._headers = headers
        conn = headers.get("connection", "").lower()
        if parts[0] == "HTTP/1.0":
            self._keep_alive = "keep-alive" in conn
        else:
            self._keep_alive = "close" not in conn
        te = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in (204, 304):
            self._want = 0
            self._state = _LENGTH
        elif te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_CLOSE
        elif length is not None:
            try:
                self._want = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length[:20]!r}") from None
            if self._want < 0:
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            self._state = _LENGTH
        else:
            self._state = _UNTIL_CLOSE


class _Pool:
    """Connections to one origin: at most ``limit`` at a time, idle ones kept for reuse."""

    def __init__(self, client: RawHttpClient, origin: Origin) -> None:
        self._client = client
        self.host, self.port, self.tls = origin
        self._idle: list[_Connection] = []
        #: every connection whose transport is not gone yet, idle, busy or closing
        self.live: set[_Connection] = set()
        self._slots = asyncio.Semaphore(client.max_connections)
        self.opened = 0  # connections ever made (tests and diagnostics)

    async def request(self, data: bytes) -> RawResponse:
        client = self._client
        await self._slots.acquire()
        try:
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                try:
                    response = await conn.exchange(data, client.read_timeout_s)
                except ConnectionClosedError as exc:
                    if not reused or exc.response_started:
                        raise
                    conn.abort()  # a stale keep-alive connection: one more try on a fresh one
                    conn = await self._connect()
                    response = await conn.exchange(data, client.read_timeout_s)
            except BaseException:
                conn.abort()
                raise
            if conn.reusable:
                conn.idle_since = client.clock()
                self._idle.append(conn)
            else:
                conn.close()
            return response
        finally:
            self._slots.release()

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if self._client.clock() - conn.idle_since > self._client.keepalive_timeout_s:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        client = self._client
        loop = asyncio.get_running_loop()
        conn = _Connection(loop)
        ssl_ctx = client.ssl_context() if self.tls else None
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=ssl_ctx,
                    server_hostname=self.host if self.tls else None,
                ),
                client.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise ConnectError(
                f"cannot connect to {_bracketed(self.host)}:{self.port}: {type(exc).__name__}: {exc}"
            ) from exc
        self.opened += 1
        self.live.add(conn)
        conn.lost.add_done_callback(lambda _f: self.live.discard(conn))
        return conn

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def closed(self, timeout_s: float) -> None:
        """Wait until every connection's transport is gone; abort what is still closing after
        ``timeout_s``. A loop closed while a TLS transport shuts down fails (uvloop: EBUSY) and
        leaves the socket unclosed."""
        live = [c for c in self.live if not c.lost.done()]
        if not live:
            return
        for conn in live:
            conn.close()
        _, pending = await asyncio.wait([c.lost for c in live], timeout=timeout_s)
        if pending:
            for conn in live:
                if not conn.lost.done():
                    conn.abort()
            await asyncio.wait([c.lost for c in live], timeout=timeout_s)


class RawHttpClient:
    """Pooled keep-alive HTTP/1.1 requests: ``await client.request(origin, "POST", "/", headers, body)``.

    ``max_connections`` bounds connections (and requests in flight) per origin. ``ssl_context``
    is used for every TLS origin (default: ``default_ssl_context()``, made on first use); an
    origin's host is a name or an IP literal, IPv6 without brackets (``("::1", 8000, False)``).
    ``clock`` (monotonic seconds) ages idle connections. ``aclose()`` closes the idle ones.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        keepalive_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "s3ddb-lean/0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.clock = clock
        self._ssl = ssl_context
        self._user_agent = user_agent
        self._pools: dict[Origin, _Pool] = {}
        self.closed = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    def pool(self, origin: Origin) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self, origin)
        return pool

    async def request(
        self, origin: Origin, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> RawResponse:
        """Send one request and read its whole response. ``Host`` defaults to the origin's."""
        if self.closed:
            raise HttpRawError("client is closed")
        host, port, tls = origin
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        if "Host" not in headers and "host" not in headers:
            lines.append(f"Host: {authority(host, port, tls)}\r\n")
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        lines.append(f"User-Agent: {self._user_agent}\r\nContent-Length: {len(body)}\r\n\r\n")
        return await self.pool(origin).request("".join(lines).encode("latin-1") + body)

    async def aclose(self) -> None:
        """Close every connection and wait for their transports to be gone (bounded)."""
        self.closed = True
        pools = list(self._pools.values())
        for pool in pools:
            pool.close()
        self._pools.clear()
        for pool in pools:
            await pool.closed(self.connect_timeout_s)
