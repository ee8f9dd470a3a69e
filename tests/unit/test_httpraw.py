"""loader.httpraw against tiny asyncio servers started here, each answering from a script.

Every server records what it received per connection, so the tests check reuse, reconnects and
retries by what reached the server, not by the client's own account.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loader.httpraw import (
    ConnectError,
    ConnectionClosedError,
    ProtocolError,
    RawHttpClient,
    ReadTimeoutError,
    authority,
    ssl_context,
)


@dataclass
class Reply:
    """What the server does for one request: write ``parts`` in order, then maybe close or hang."""

    parts: list[bytes] = field(default_factory=list)
    close: bool = False
    hang: bool = False


def ok(body: bytes = b'{"UnprocessedItems":{}}', *extra: str) -> Reply:
    head = "".join(f"{h}\r\n" for h in extra)
    return Reply([f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body])


# script(connection index, request index on that connection, request body) -> Reply
Script = Callable[[int, int, bytes], Reply]


class Server:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[list[tuple[bytes, bytes]]] = []  # per connection: (head, body)
        self._hold = asyncio.Event()
        self.received = asyncio.Event()  # set at every request
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        conn = len(self.requests)
        self.requests.append([])
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length)
                self.requests[conn].append((head, body))
                self.received.set()
                reply = self.script(conn, len(self.requests[conn]) - 1, body)
                for part in reply.parts:
                    writer.write(part)
                    await writer.drain()
                    if len(part) == 1:
                        await asyncio.sleep(0)  # let each byte go out in its own segment
                if reply.hang:
                    await self._hold.wait()
                if reply.close:
                    return
        finally:
            writer.close()

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.requests)

    async def stop(self) -> None:
        """Release hanging replies and close every connection; the handlers then end by themselves."""
        self._hold.set()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@asynccontextmanager
async def serving(
    script: Script, ssl_ctx: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[Server, tuple[str, int, bool]]]:
    server = Server(script)
    srv = await asyncio.start_server(server.handle, host, 0, ssl=ssl_ctx)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield server, (host, port, ssl_ctx is not None)
    finally:
        srv.close()
        await server.stop()
        await srv.wait_closed()


@asynccontextmanager
async def client(**kw: object) -> AsyncIterator[RawHttpClient]:
    c = RawHttpClient(max_connections=kw.pop("max_connections", 4), **kw)  # type: ignore[arg-type]
    try:
        yield c
    finally:
        await c.aclose()


async def post(c: RawHttpClient, origin: tuple[str, int, bool], body: bytes = b"{}") -> tuple[int, bytes]:
    r = await c.request(origin, "POST", "/", {"Content-Type": "application/x-amz-json-1.0"}, body)
    return r.status, r.body


async def test_keep_alive_connection_is_reused_and_request_is_well_formed() -> None:
    async with serving(lambda _c, i, body: ok(b"echo:" + body)) as (server, origin), client() as c:
        for i in range(3):
            assert await post(c, origin, f"body{i}".encode()) == (200, f"echo:body{i}".encode())
    assert len(server.requests) == 1  # one connection carried all three
    head, body = server.requests[0][0]
    assert head.startswith(b"POST / HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{origin[1]}\r\n".encode() in head
    assert b"\r\nContent-Length: 5\r\n" in head and body == b"body0"


async def test_chunked_body_with_extensions_and_trailers() -> None:
    chunked = Reply(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Amz-Crc32: 1\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n"
        ]
    )
    async with serving(lambda _c, _i, _b: chunked) as (server, origin), client() as c:
        r = await c.request(origin, "POST", "/", {}, b"x")
        assert (r.status, r.body, r.headers["x-amz-crc32"]) == (200, b"hello world", "1")
        assert await post(c, origin) == (200, b"hello world")
    assert len(server.requests) == 1  # the chunked response left the connection reusable


async def test_close_delimited_http10_body_and_a_new_connection_after() -> None:
    def script(_c: int, _i: int, _b: bytes) -> Reply:
        return Reply(
            [b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"until ", b"close"], close=True
        )

    async with serving(script) as (server, origin), client() as c:
        assert await post(c, origin) == (200, b"until close")
        assert await post(c, origin) == (200, b"until close")
    assert [len(r) for r in server.requests] == [1, 1]


async def test_connection_close_header_is_honoured() -> None:
    async with serving(lambda _c, _i, _b: ok(b"{}", "Connection: close")) as (server, origin), client() as c:
        assert await post(c, origin) == (200, b"{}")
        assert await post(c, origin) == (200, b"{}")
    assert [len(r) for r in server.requests] == [1, 1]


async def test_server_closing_an_idle_connection_then_next_request_succeeds() -> None:
    # the server answers once per connection, then closes it as an idle timeout would
    def script(_c: int, _i: int, _b: bytes) -> Reply:
        reply = ok(b"{}")
        reply.close = True
        return reply

    async with serving(script) as (server, origin), client() as c:
        for _ in range(3):
            assert await post(c, origin) == (200, b"{}")
    assert [len(r) for r in server.requests] == [1, 1, 1]


async def test_stale_reused_connection_is_retried_once_on_a_fresh_one() -> None:
    # connection 0 answers its first request, then drops the second unanswered (the race of an
    # idle close with our write); the request must then go out again on connection 1
    def script(conn: int, i: int, _b: bytes) -> Reply:
        return Reply(close=True) if (conn, i) == (0, 1) else ok(b"{}")

    async with serving(script) as (server, origin), client() as c:
        assert await post(c, origin, b"one") == (200, b"{}")
        assert await post(c, origin, b"two") == (200, b"{}")
    assert [[b for _h, b in r] for r in server.requests] == [[b"one", b"two"], [b"two"]]


async def test_a_fresh_connection_dying_before_a_response_is_not_retried() -> None:
    async with serving(lambda _c, _i, _b: Reply(close=True)) as (server, origin), client() as c:
        with pytest.raises(ConnectionClosedError) as info:
            await post(c, origin)
    assert info.value.response_started is False
    assert server.total == 1


async def test_stale_retry_happens_once_only() -> None:
    def script(conn: int, i: int, _b: bytes) -> Reply:
        return ok(b"{}") if (conn, i) == (0, 0) else Reply(close=True)

    async with serving(script) as (server, origin), client() as c:
        await post(c, origin)
        with pytest.raises(ConnectionClosedError):
            await post(c, origin)
    assert [len(r) for r in server.requests] == [2, 1]  # the retry, then no more


async def test_no_retry_after_part_of_a_response_arrived() -> None:
    def script(conn: int, i: int, _b: bytes) -> Reply:
        if (conn, i) == (0, 0):
            return ok(b"{}")
        return Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], close=True)

    async with serving(script) as (server, origin), client() as c:
        await post(c, origin)
        with pytest.raises(ConnectionClosedError) as info:
            await post(c, origin)  # on the reused connection, but a response had begun
    assert info.value.response_started is True
    assert server.total == 2


async def test_read_timeout_is_an_error_and_the_connection_is_dropped() -> None:
    def script(conn: int, _i: int, _b: bytes) -> Reply:
        return Reply([b"HTTP/1.1 200 OK\r\n"], hang=True) if conn == 0 else ok(b"{}")

    async with serving(script) as (server, origin), client(read_timeout_s=0.2) as c:
        with pytest.raises(ReadTimeoutError):
            await post(c, origin)
        assert await post(c, origin) == (200, b"{}")
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_response_written_one_byte_at_a_time(response: bytes) -> None:
    one_by_one = Reply([response[i : i + 1] for i in range(len(response))])
    async with serving(lambda _c, _i, _b: one_by_one) as (server, origin), client() as c:
        assert await post(c, origin) == (200, b"hello world")
        assert await post(c, origin) == (200, b"hello world")
    assert len(server.requests) == 1


async def test_error_statuses_come_back_as_responses() -> None:
    body = b'{"__type":"com.amazonaws#ThrottlingException"}'
    reply = Reply([b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)])
    async with serving(lambda _c, _i, _b: reply) as (_server, origin), client() as c:
        assert await post(c, origin) == (400, body)


async def test_garbage_is_a_protocol_error() -> None:
    async with serving(lambda _c, _i, _b: Reply([b"SSH-2.0-nope\r\n\r\n"])) as (_s, origin), client() as c:
        with pytest.raises(ProtocolError):
            await post(c, origin)


async def test_connections_are_capped_per_origin() -> None:
    async with serving(lambda _c, _i, _b: ok(b"{}")) as (server, origin), client(max_connections=2) as c:
        results = await asyncio.gather(*(post(c, origin) for _ in range(8)))
    assert results == [(200, b"{}")] * 8
    assert 1 <= len(server.requests) <= 2
    assert server.total == 8


async def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client() as c:
        with pytest.raises(ConnectError):
            await post(c, ("127.0.0.1", port, False))


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3ddb-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_tls_with_a_trusted_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))  # hostname check stays on
    async with serving(lambda _c, _i, body: ok(b"tls:" + body), server_ctx) as (server, origin):
        async with client(ssl_context=trusting) as c:
            assert await post(c, origin, b"a") == (200, b"tls:a")
            assert await post(c, origin, b"b") == (200, b"tls:b")
        assert len(server.requests) == 1
        async with client() as c:  # the default context does not trust a self-signed certificate
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await post(c, origin)


async def test_tls_trust_follows_the_context_it_is_given(tmp_path: Path) -> None:
    """A private CA trusted through ``cafile`` only; ``verify=False`` checks nothing (botocore's
    ``verify`` settings, as the lean sender passes them)."""
    from tests.support.tlsproxy import make_private_ca

    ca = make_private_ca(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(ca.server_cert, ca.server_key)
    async with serving(lambda _c, _i, body: ok(b"tls:" + body), server_ctx) as (_server, origin):
        async with client(ssl_context=ssl_context(cafile=str(ca.ca_cert))) as c:
            assert await post(c, origin, b"a") == (200, b"tls:a")
        async with client(ssl_context=ssl_context(verify=False)) as c:
            assert await post(c, origin, b"b") == (200, b"tls:b")
        for untrusting in (ssl_context(), ssl_context(cafile=str(_self_signed(tmp_path)[0]))):
            async with client(ssl_context=untrusting) as c:
                with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await post(c, origin)


async def test_a_client_certificate_is_presented(tmp_path: Path) -> None:
    from tests.support.tlsproxy import make_private_ca

    ca = make_private_ca(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(ca.server_cert, ca.server_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=str(ca.ca_cert))
    async with serving(lambda _c, _i, body: ok(b"mtls:" + body), server_ctx) as (_server, origin):
        with_cert = ssl_context(
            cafile=str(ca.ca_cert), certfile=str(ca.client_cert), keyfile=str(ca.client_key)
        )
        async with client(ssl_context=with_cert) as c:
            assert await post(c, origin, b"a") == (200, b"mtls:a")
        async with client(ssl_context=ssl_context(cafile=str(ca.ca_cert))) as c:
            with pytest.raises((ConnectError, ConnectionClosedError)):
                await post(c, origin)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_ipv6_origin_is_written_in_brackets() -> None:
    async with serving(lambda _c, _i, body: ok(body), host="::1") as (server, origin), client() as c:
        assert await post(c, origin, b"v6") == (200, b"v6")
    head = server.requests[0][0][0]
    assert f"\r\nHost: [::1]:{origin[1]}\r\n".encode() in head


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (("::1", 8000, False), "[::1]:8000"),
        (("::1", 80, False), "[::1]"),
        (("2001:db8::1", 443, True), "[2001:db8::1]"),
        (("127.0.0.1", 443, False), "127.0.0.1:443"),
        (("dynamodb.eu-west-1.amazonaws.com", 443, True), "dynamodb.eu-west-1.amazonaws.com"),
        (("localhost", 80, True), "localhost:80"),
    ],
)
def test_authority(origin: tuple[str, int, bool], host: str) -> None:
    assert authority(*origin) == host


async def test_idle_connections_older_than_the_keepalive_timeout_are_not_reused() -> None:
    now = [0.0]
    async with (
        serving(lambda _c, _i, _b: ok(b"{}")) as (server, origin),
        client(keepalive_timeout_s=30.0, clock=lambda: now[0]) as c,
    ):
        await post(c, origin)
        now[0] = 29.0
        await post(c, origin)  # idle 29 s: reused
        now[0] = 60.0
        await post(c, origin)  # idle 31 s: a new connection
    assert [len(r) for r in server.requests] == [2, 1]


async def test_a_cancelled_request_drops_its_connection() -> None:
    def script(conn: int, _i: int, _b: bytes) -> Reply:
        return Reply(hang=True) if conn == 0 else ok(b"{}")

    async with serving(script) as (server, origin), client(max_connections=1) as c:
        task = asyncio.ensure_future(post(c, origin))
        await server.received.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await post(c, origin) == (200, b"{}")  # the slot came back; a fresh connection
    assert [len(r) for r in server.requests] == [1, 1]


def test_public_names() -> None:
    import loader.httpraw

    assert sorted(loader.httpraw.__all__) == [
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
