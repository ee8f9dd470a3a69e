"""The lean BatchWriteItem path: orjson body, SigV4, pooled keep-alive connections.

Items are already DynamoDB wire JSON (binary as base64 text), which is exactly DynamoDB's JSON
protocol, so one ``orjson.dumps`` makes the request body. The request is signed with SigV4 and
sent over ``concurrency`` keep-alive connections: by default through ``loader.httpraw`` (a
minimal HTTP/1.1 client on asyncio's Protocol, measured at well under half aiohttp's CPU per
request), or through one ``aiohttp.ClientSession`` (``http="aiohttp"``, the reference). The raw
client speaks no proxy protocol: when botocore would send through a proxy, ``open_lean_sender``
uses aiohttp whatever ``http``.
Errors are read from the ``__type`` field and classified by ``loader.sender.classify_client_error``,
so the lean path and the aiobotocore reference (``AioBotocoreSender``) raise the same errors.

Where and how to connect is never worked out here: region, endpoint (partitions, FIPS,
dual-stack, ``AWS_ENDPOINT_URL_*``, the config file), credentials and their refresh, CA bundle
and ``verify``, client certificate, proxy all come from a botocore DynamoDB client built the
normal way (``Connection.from_client``): the lean path replaces only the per-call cost.

Why not botocore's ``SigV4Auth.add_auth`` on every call: measured here it costs ~300 µs per
25-item call (~12 µs per item, more than the whole send budget), nearly all of it canonicalising
headers through ``email.message``. ``FastSigV4`` builds the same canonical request for the fixed
header set this sender uses, hashes with ``hashlib`` and caches the derived signing key per
(secret, day); a unit test checks it produces byte-for-byte botocore's ``Authorization`` header.
``signer="botocore"`` signs with ``SigV4Auth`` itself (the reference, and a fallback).

Response CRC32 (``x-amz-crc32``) is checked when the header is present: responses are small
(``{"UnprocessedItems":{}}``) so it costs well under a microsecond per call; a mismatch is a
``TransientSendError`` (botocore retries those too).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import botocore.exceptions
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import URLLib3Session

from loader.errors import ConfigError, TransientSendError
from loader.httpraw import HttpRawError, RawHttpClient, authority, ssl_context
from loader.models import Item
from loader.sender import BatchSender, classify_client_error

if TYPE_CHECKING:
    import aiohttp
    import yarl

# aiohttp (and yarl) are imported only where the aiohttp client is used: the default raw client
# never needs them, and importing aiohttp cost ~0.25 s of start-up CPU per `s3ddb load` (cProfile on
# a 10-row object; half of it two SSL contexts aiohttp.connector builds at import).

__all__ = ["Connection", "FastSigV4", "HttpImpl", "LeanSender", "open_lean_sender"]

_CONTENT_TYPE = "application/x-amz-json-1.0"
_TARGET = "DynamoDB_20120810.BatchWriteItem"
_SERVICE = "dynamodb"

Signer = Literal["fast", "botocore"]
HttpImpl = Literal["raw", "aiohttp"]


class FastSigV4:
    """SigV4 for ``POST /`` with the headers content-type, host, x-amz-date, [x-amz-security-token,]
    x-amz-target: the canonical request botocore's ``SigV4Auth`` builds for the same request.

    ``headers(...)`` returns every header to send, ``Authorization`` included. The signing key
    (four HMACs) is derived once per (secret key, UTC day).
    """

    def __init__(self, *, host: str, region: str, service: str = _SERVICE) -> None:
        self.host = host
        self.region = region
        self.service = service
        self._key_for: tuple[str, str] | None = None
        self._key = b""

    def signing_key(self, secret: str, day: str) -> bytes:
        if self._key_for != (secret, day):
            k = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
            k = hmac.digest(k, self.region.encode(), "sha256")
            k = hmac.digest(k, self.service.encode(), "sha256")
            self._key = hmac.digest(k, b"aws4_request", "sha256")
            self._key_for = (secret, day)
        return self._key

    def headers(
        self,
        *,
        access_key: str,
        secret_key: str,
        token: str | None,
        amz_date: str,
        target: str,
        body: bytes,
    ) -> dict[str, str]:
        day = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        if token:
            canonical_headers = (
                f"content-type:{_CONTENT_TYPE}\nhost:{self.host}\nx-amz-date:{amz_date}\n"
                f"x-amz-security-token:{token}\nx-amz-target:{target}\n"
            )
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        else:
            canonical_headers = (
                f"content-type:{_CONTENT_TYPE}\nhost:{self.host}\nx-amz-date:{amz_date}\n"
                f"x-amz-target:{target}\n"
            )
            signed = "content-type;host;x-amz-date;x-amz-target"
        canonical = f"POST\n/\n\n{canonical_headers}\n{signed}\n{payload_hash}"
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        # the constructor, not the name "sha256": OpenSSL looks a name up on every call (4.4 vs 2.5 us)
        key = self.signing_key(secret_key, day)
        signature = hmac.digest(key, string_to_sign.encode(), hashlib.sha256).hex()
        out = {
            "Content-Type": _CONTENT_TYPE,
            "Host": self.host,
            "X-Amz-Date": amz_date,
            "X-Amz-Target": target,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                f"Signature={signature}"
            ),
        }
        if token:
            out["X-Amz-Security-Token"] = token
        return out


class _AmzDate:
    """``YYYYMMDDTHHMMSSZ`` for the clock's current second, formatted once per second."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(self._clock())
        if second != self._second:
            self._text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._second = second
        return self._text


@dataclass(frozen=True, kw_only=True)
class Connection:
    """Where and how the lean sender connects: every value as a botocore client decided it.

    Build it with ``Connection.from_client(client)``; nothing here reads the environment.
    """

    #: botocore's resolved endpoint (``client.meta.endpoint_url``)
    endpoint_url: str
    #: the region requests are signed for (botocore's request signer's)
    region: str
    #: the service name requests are signed for
    signing_name: str = _SERVICE
    #: a botocore ``Credentials``; refreshable ones refresh inside ``get_frozen_credentials()``
    credentials: Any
    #: botocore's ``verify``: True (certifi's bundle), False (no checks), or a CA bundle path
    #: (``verify=``, ``AWS_CA_BUNDLE``, ``ca_bundle`` in the config file, ``REQUESTS_CA_BUNDLE``)
    verify: bool | str = True
    #: a client certificate (``client_cert`` in the client's config): a file, or (cert, key)
    client_cert: str | tuple[str, str] | None = None
    #: the proxy botocore would send through for ``endpoint_url`` (its config's ``proxies``, else
    #: HTTPS_PROXY / HTTP_PROXY minus NO_PROXY as they were when the client was built), or None
    proxy: str | None = None

    @classmethod
    def from_client(cls, client: Any) -> Connection:
        """The connection of a sync botocore DynamoDB client (``loader.clients.dynamodb_client``).

        The CA bundle, client certificate and proxy are read from the client's HTTP session, the
        region and credentials from its request signer: botocore keeps them nowhere public, so
        this is the one place that looks inside a client (pinned botocore; a unit test checks each).
        """
        session = client._endpoint.http_session
        if not isinstance(session, URLLib3Session):
            raise TypeError(
                f"the lean sender takes its connection from a sync botocore client, not {type(client)!r}"
            )
        http: Any = session  # the attributes read below are private to URLLib3Session
        url = str(client.meta.endpoint_url)
        proxy_config = http._proxy_config
        proxy = proxy_config.proxy_url_for(url)
        if proxy is not None:
            unsupported = sorted(k for k, v in (proxy_config.settings or {}).items() if v is not None)
            if unsupported:
                raise ConfigError(
                    f"the lean sender cannot apply the proxy settings {', '.join(unsupported)} "
                    "(proxies_config): use --sender botocore (S3DDB_SENDER=botocore), or remove them"
                )
        credentials = client._get_credentials()
        if credentials is None:
            raise ConfigError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
            )
        if asyncio.iscoroutinefunction(getattr(credentials, "get_frozen_credentials", None)):
            raise TypeError("the lean sender needs a sync botocore client's credentials, not aiobotocore's")
        client_cert: str | tuple[str, str] | None = http._cert_file
        if http._cert_file is not None and http._key_file is not None:
            client_cert = (http._cert_file, http._key_file)
        signer = client._request_signer
        return cls(
            endpoint_url=url,
            region=str(signer.region_name),
            signing_name=str(signer.signing_name),
            credentials=credentials,
            verify=http._verify,
            client_cert=client_cert,
            proxy=proxy,
        )

    @property
    def tls(self) -> bool:
        return urlsplit(self.endpoint_url).scheme == "https"

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that checks certificates exactly as the client's ``verify`` says."""
        verify = self.verify
        cert = self.client_cert
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        try:
            return ssl_context(
                cafile=verify if isinstance(verify, str) else None,
                verify=bool(verify),
                certfile=certfile,
                keyfile=keyfile,
            )
        except (OSError, ssl.SSLError) as exc:
            what = f"CA bundle {verify!r} (AWS_CA_BUNDLE / ca_bundle)" if isinstance(verify, str) else ""
            if cert:
                what = f"{what} or client certificate {cert!r}".strip()
            raise ConfigError(f"cannot use the {what or 'TLS settings'}: {exc}") from exc


_PUT_JOIN = b'}},{"PutRequest":{"Item":'


class LeanSender:
    """A ``BatchSender`` that makes one signed ``BatchWriteItem`` POST per ``send``.

    ``connection`` says where and as whom (see ``Connection``); its credentials are frozen once
    per request (``get_frozen_credentials()``: refreshable ones refresh themselves there).
    ``http`` is a ``RawHttpClient`` or an ``aiohttp.ClientSession``, made with the connection's
    TLS context; it belongs to the caller unless ``owns_http`` is set; ``open_lean_sender`` builds
    and closes one. The connection's proxy, if any, is used for every request (aiohttp only).
    """

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession | RawHttpClient,
        connection: Connection,
        signer: Signer = "fast",
        clock: Callable[[], float] = time.time,
        owns_http: bool = False,
    ) -> None:
        endpoint_url = connection.endpoint_url
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"DynamoDB endpoint {endpoint_url!r} is not an http(s) URL")
        if parts.path not in ("", "/") or parts.query:
            # the lean path posts and signs "/": botocore would keep the path; do not guess
            raise ConfigError(
                f"DynamoDB endpoint {endpoint_url!r} has a path, which the lean sender does not send: "
                "use --sender botocore (S3DDB_SENDER=botocore)"
            )
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        # botocore's Host: lower-case, an IPv6 literal in brackets, no default port, no userinfo
        host = authority(parts.hostname, port, tls)
        self._url = f"{parts.scheme}://{host}/"
        self._http = http
        self._raw = http if isinstance(http, RawHttpClient) else None
        self._origin = (parts.hostname, port, tls)
        proxy = connection.proxy
        if proxy and self._raw is not None:
            raise ConfigError("the raw HTTP client does not support proxies: use http='aiohttp'")
        self._aio: aiohttp.ClientSession | None = None
        self._aio_errors: tuple[type[BaseException], ...] = ()
        self._yurl: yarl.URL | None = None
        self._proxy: yarl.URL | None = None
        if not isinstance(http, RawHttpClient):
            import aiohttp
            import yarl

            self._aio = http
            self._aio_errors = (TimeoutError, aiohttp.ClientError, OSError)
            self._yurl = yarl.URL(self._url)  # parsed once, not per request
            self._proxy = yarl.URL(proxy) if proxy else None
        self._owns_http = owns_http
        self._connection = connection
        self._region = connection.region
        self._service = connection.signing_name
        self._credentials = connection.credentials
        self._signer = signer
        self._fast = FastSigV4(host=host, region=connection.region, service=connection.signing_name)
        self._amz_date = _AmzDate(clock)

    @property
    def connection(self) -> Connection:
        """Where and how this sender connects."""
        return self._connection

    @property
    def http_impl(self) -> HttpImpl:
        """Which HTTP client sends: ``"raw"`` or ``"aiohttp"``."""
        return "raw" if self._raw is not None else "aiohttp"

    def _sign(self, body: bytes) -> dict[str, str]:
        creds = self._credentials.get_frozen_credentials()
        if self._signer == "fast":
            return self._fast.headers(
                access_key=creds.access_key,
                secret_key=creds.secret_key,
                token=creds.token,
                amz_date=self._amz_date(),
                target=_TARGET,
                body=body,
            )
        auth = SigV4Auth(creds, self._service, self._region)
        req = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET},
        )
        auth.add_auth(req)
        headers = dict(req.headers.items())
        headers["Host"] = self._fast.host  # what botocore signed (from the URL), sent as is
        return headers

    @staticmethod
    def encode(item: Item) -> bytes:
        """An item as JSON bytes, for ``send(..., wire=...)`` (which puts each in a PutRequest).

        The pipeline calls this as each entry is made. Measured on the benchmark's default rows:
        orjson on a fresh item is ~2-3 us, while the same bytes made from the whole batch at send
        time cost ~8 us/item (the items have gone cold by then; re-encoding the same batch right
        after costs ~1.6): the request body is then a join of ready bytes (~1.5 us/item).
        """
        return orjson.dumps(item)

    async def send(self, table: str, items: list[Item], wire: list[bytes] | None = None) -> list[Item]:
        if wire:
            body = b"".join(
                (
                    b'{"RequestItems":{',
                    orjson.dumps(table),
                    b':[{"PutRequest":{"Item":',
                    _PUT_JOIN.join(wire),
                    b"}}]}}",
                )
            )
        else:
            body = orjson.dumps({"RequestItems": {table: [{"PutRequest": {"Item": it}} for it in items]}})
        headers = self._sign(body)
        if self._raw is not None:
            try:
                r = await self._raw.request(self._origin, "POST", "/", headers, body)
            except HttpRawError as exc:
                raise TransientSendError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__) from exc
            return self._result(table, r.status, r.headers.get("x-amz-crc32"), r.body)
        assert self._aio is not None and self._yurl is not None
        try:
            resp = await self._aio.post(self._yurl, data=body, headers=headers, proxy=self._proxy)
            try:
                raw = await resp.read()
            finally:
                resp.release()
            status = resp.status
            crc = resp.headers.get("x-amz-crc32")
        except self._aio_errors as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__) from exc
        return self._result(table, status, crc, raw)

    @staticmethod
    def _result(table: str, status: int, crc: str | None, raw: bytes) -> list[Item]:
        if crc is not None and int(crc) != zlib.crc32(raw):
            raise TransientSendError(f"response CRC32 mismatch (status {status})", code="CRC32Mismatch")
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = None
        if status == 200 and isinstance(parsed, dict):
            unprocessed = parsed.get("UnprocessedItems")
            if not unprocessed:
                return []
            return [r["PutRequest"]["Item"] for r in unprocessed.get(table, ()) if "PutRequest" in r]
        raise _classify(status, parsed, raw, table)

    async def aclose(self) -> None:
        if not self._owns_http:
            return
        if isinstance(self._http, RawHttpClient):
            await self._http.aclose()
        elif not self._http.closed:
            await self._http.close()


def _classify(status: int, parsed: Any, raw: bytes, table: str) -> Exception:
    """Build the ClientError botocore would have raised and classify it the reference way."""
    body = parsed if isinstance(parsed, dict) else {}
    code = str(body.get("__type", "")).rpartition("#")[2]
    message = str(body.get("message") or body.get("Message") or raw[:200].decode("utf-8", "replace"))
    if not code:
        code = "InternalServerError" if status >= 500 else ""
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    for extra in ("ThrottlingReasons", "ThrottlingReason"):
        if extra in body:
            response[extra] = body[extra]
    error = botocore.exceptions.ClientError(response, "BatchWriteItem")  # type: ignore[arg-type]
    return classify_client_error(error, table)


@asynccontextmanager
async def open_lean_sender(
    *,
    concurrency: int,
    client: Any | None = None,
    endpoint_url: str | None = None,
    signer: Signer = "fast",
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 30.0,
    http: HttpImpl = "raw",
) -> AsyncIterator[BatchSender]:
    """A ``LeanSender`` over its own pool of ``concurrency`` + 4 keep-alive connections.

    ``client``: the sync botocore DynamoDB client the load already built
    (``loader.clients.dynamodb_client``, the one that ran DescribeTable): the sender connects
    where, as whom and how it would (``Connection.from_client``). Default: a client built the
    same way from the environment, for ``endpoint_url`` when given (tests and the benchmark
    point it at a proxy or a wire endpoint); give one or the other, not both.

    ``http``: ``"raw"`` (``loader.httpraw``) or ``"aiohttp"``. When the client would send through
    a proxy, aiohttp is used either way (the raw client does not speak to proxies).
    """
    if client is None:
        from loader.clients import dynamodb_client

        client = dynamodb_client(endpoint_url=endpoint_url)
    elif endpoint_url is not None:
        raise ValueError("open_lean_sender: give client or endpoint_url, not both")
    conn = Connection.from_client(client)
    tls_context = conn.ssl_context() if conn.tls else None
    if http == "raw" and conn.proxy is None:
        raw = RawHttpClient(
            max_connections=concurrency + 4,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            keepalive_timeout_s=30,
            ssl_context=tls_context,
        )
        sender = LeanSender(http=raw, connection=conn, signer=signer, owns_http=True)
        try:
            yield sender
        finally:
            await sender.aclose()
        return
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=concurrency + 4,
        limit_per_host=concurrency + 4,
        keepalive_timeout=30,
        ttl_dns_cache=300,
        ssl=tls_context if tls_context is not None else True,
    )
    aio_http = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        auto_decompress=False,
        headers={"User-Agent": "s3ddb-lean/0.1"},
        # no cookies to keep; trust_env stays off: it costs a netrc lookup in a thread per request,
        # and the proxy is the one botocore resolved for the client (Connection.proxy)
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    sender = LeanSender(http=aio_http, connection=conn, signer=signer, owns_http=True)
    try:
        yield sender
    finally:
        await sender.aclose()
