"""A fault-injecting HTTP proxy in front of DynamoDB (Local), for tests and benchmarks.

No local DynamoDB ever throttles or returns ``UnprocessedItems``; this proxy makes it do so, on
the wire, exactly as the service does, so the code under test talks HTTP through its real client::

    with FaultProxy("http://127.0.0.1:8700") as proxy:
        client = boto3.client("dynamodb", endpoint_url=proxy.url)
        proxy.throttle_next(3)                 # next 3 BatchWriteItem calls: HTTP 400 throttle
        proxy.unprocessed_fraction(0.3)        # then ~30% of each batch comes back unprocessed
        ...
        assert proxy.throttled == 3

Every request is forwarded unchanged (body and headers, minus hop-by-hop headers and
``Accept-Encoding``, so responses stay uncompressed and their ``x-amz-crc32`` stays valid).
DynamoDB Local does not check signatures strictly, so a BatchWriteItem body the proxy trims
(``unprocessed_fraction``) is still accepted. Faults apply only to BatchWriteItem calls
(``X-Amz-Target: DynamoDB_20120810.BatchWriteItem``); every other call passes through untouched.

Faults (each takes ``when``, an optional predicate on the parsed request body, to aim a fault
at particular batches; ``n``/``times`` count the calls a fault applies to, None = until reset):

* ``throttle_next(n, code=...)``: answer HTTP 400 with ``__type`` ``...#<code>``, not forwarded;
* ``fail_next(n, status=500)``: answer ``InternalServerError`` (503: ``ServiceUnavailable``), not forwarded;
* ``reset_next(n)``: close the connection without any response, not forwarded;
* ``delay_next(n, seconds)``: hold the call that long, then go on (latency, not a failure);
* ``unprocessed_fraction(p, times=None, seed=0)``: forward only part of each batch's put
  requests and return the rest in ``UnprocessedItems`` of a 200 response, like the service;
* ``corrupt_next(n)``: not forwarded; the service's answer would hand every put request back in
  ``UnprocessedItems``, and it arrives damaged: the body reads ``{"UnprocessedItems":{}}`` while
  ``x-amz-crc32`` is still the true body's. A client that skips the check loses the batch.

For one call, a delay applies first; then the first pending throttle/fail/reset/corrupt fault (in
the order they were added); otherwise an unprocessed fault, if any, shapes the forwarded call.

``FaultProxy(upstream, sigv4=SigV4Check(secrets={key id: secret}, region="eu-west-1"))`` also
checks every request as the service would before anything else: the ``Host`` header must be the
proxy's own authority (``127.0.0.1:PORT``, or ``[::1]:PORT`` with ``host="::1"``), the
``Authorization`` header a SigV4 signature (recomputed here with botocore's own canonicalisation,
for the received method, path, signed headers and body) by a known key, scoped to ``region``.
A request that fails gets HTTP 400 ``InvalidSignatureException`` and is not forwarded;
``signature_failures`` counts them, ``signature_errors`` says why; ``hosts`` and ``regions`` hold
every ``Host`` and credential-scope region seen.

Counters (read them any time; ``reset()`` clears them and every fault): ``requests`` (all
requests), ``calls`` (BatchWriteItem calls), ``items_forwarded`` (put requests sent upstream),
``throttled``, ``failed``, ``resets``, ``delayed``, ``corrupted``, ``unprocessed_returned`` (items
handed back), ``in_flight`` / ``max_in_flight`` (BatchWriteItem calls being handled at once, now /
at most).

The server runs on 127.0.0.1 (or ``host="::1"``) on a free port, in a background thread with its
own event loop, so it serves sync (boto3) and async (aiobotocore) clients alike.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BATCH_WRITE_TARGET = "DynamoDB_20120810.BatchWriteItem"
_TYPE_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_JSON_CT = "application/x-amz-json-1.0"
_HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "accept-encoding",
        "proxy-connection",
        "te",
        "upgrade",
    }
)
_DROP_FROM_RESPONSE = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "server", "date"}
)
_MESSAGES = {
    "ProvisionedThroughputExceededException": "The level of configured provisioned throughput for the table "
    "was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
    "ThrottlingException": "Throughput exceeds the current capacity of your table or index. DynamoDB is "
    "automatically scaling your table or index so please try again shortly.",
    "RequestLimitExceeded": "Throughput exceeds the current throughput limit for your account.",
    "InternalServerError": "Internal server error",
    "ServiceUnavailable": "Service unavailable",
}
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/"
    r"aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<signature>[0-9a-f]{64})"
)

Predicate = Callable[[dict[str, Any]], bool]
ThrottleCode = Literal[
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"
]


@dataclass(frozen=True)
class SigV4Check:
    """What a verifying proxy accepts: signatures by these keys (key id -> secret), for ``region``."""

    secrets: Mapping[str, str]
    region: str
    service: str = "dynamodb"
    #: headers every signature must cover (lower case)
    required: frozenset[str] = field(default=frozenset({"host", "x-amz-date"}))


@dataclass
class _Fault:
    kind: Literal["throttle", "fail", "reset", "delay", "unprocessed", "corrupt"]
    remaining: int | None
    when: Predicate | None
    code: str = ""
    status: int = 0
    seconds: float = 0.0
    fraction: float = 0.0
    rng: random.Random | None = None


class FaultProxy:
    """``with FaultProxy(upstream) as proxy:`` ... ``proxy.url`` is where clients connect."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", sigv4: SigV4Check | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.sigv4 = sigv4
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self._zero()

    def _zero(self) -> None:
        self.requests = 0
        self.calls = 0
        self.items_forwarded = 0
        self.throttled = 0
        self.failed = 0
        self.resets = 0
        self.delayed = 0
        self.unprocessed_returned = 0
        self.corrupted = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.signature_failures = 0
        self.signature_errors: list[str] = []
        self.hosts: set[str] = set()
        self.regions: set[str] = set()

    @property
    def authority(self) -> str:
        """``host:port`` as a client writes it in ``Host`` (an IPv6 literal in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.authority}"

    # -- programming faults (thread-safe) -----------------------------------------------

    def _add(self, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining < 0:
            raise ValueError("a fault count must be >= 0")
        with self._lock:
            self._faults.append(fault)

    def throttle_next(self, n: int, code: ThrottleCode = "ProvisionedThroughputExceededException", *,
                      when: Predicate | None = None) -> None:  # fmt: skip
        """Answer the next ``n`` BatchWriteItem calls with HTTP 400 ``code``, without forwarding."""
        self._add(_Fault("throttle", n, when, code=code, status=400))

    def fail_next(self, n: int, status: int = 500, *, when: Predicate | None = None) -> None:
        """Answer the next ``n`` calls with 500 InternalServerError (503: ServiceUnavailable)."""
        code = "ServiceUnavailable" if status == 503 else "InternalServerError"
        self._add(_Fault("fail", n, when, code=code, status=status))

    def reset_next(self, n: int, *, when: Predicate | None = None) -> None:
        """Drop the connection of the next ``n`` calls without a response (nothing is forwarded)."""
        self._add(_Fault("reset", n, when))

    def delay_next(self, n: int | None, seconds: float, *, when: Predicate | None = None) -> None:
        """Hold the next ``n`` calls (None: all) ``seconds`` before handling them."""
        self._add(_Fault("delay", n, when, seconds=seconds))

    def unprocessed_fraction(
        self, p: float, *, times: int | None = None, seed: int = 0, when: Predicate | None = None
    ) -> None:
        """Hand back each put request of the next ``times`` calls (None: all) with probability ``p``."""
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be within 0..1")
        self._add(_Fault("unprocessed", times, when, fraction=p, rng=random.Random(seed)))

    def corrupt_next(self, n: int, *, when: Predicate | None = None) -> None:
        """Answer the next ``n`` calls ``200 {"UnprocessedItems":{}}`` with the CRC32 of the true
        answer (every put request handed back), without forwarding: a body damaged in transit."""
        self._add(_Fault("corrupt", n, when))

    def reset(self) -> None:
        """Forget every fault and zero the counters."""
        with self._lock:
            self._faults.clear()
            self._zero()

    def _take(self, kinds: tuple[str, ...], doc: dict[str, Any]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or fault.remaining == 0:
                    continue
                if fault.when is not None and not fault.when(doc):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=30)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._loop = self._thread = None

    async def _astart(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- the proxy ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._count(requests=1)
        if self.sigv4 is not None:
            refused = self._check_signature(self.sigv4, request, body)
            if refused is not None:
                with self._lock:
                    self.signature_failures += 1
                    self.signature_errors.append(refused)
                return _json(400, {"__type": "com.amazon.coral.service#InvalidSignatureException",
                                   "message": refused})  # fmt: skip
        if request.headers.get("X-Amz-Target") != BATCH_WRITE_TARGET:
            return await self._forward(request, body)
        self._count(calls=1)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._batch_write(request, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _batch_write(self, request: web.Request, body: bytes) -> web.StreamResponse:
        try:
            doc: dict[str, Any] = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await self._forward(request, body)
        delay = self._take(("delay",), doc)
        if delay is not None:
            self._count(delayed=1)
            await asyncio.sleep(delay.seconds)
        fault = self._take(("throttle", "fail", "reset", "corrupt"), doc)
        if fault is not None:
            if fault.kind == "corrupt":
                self._count(corrupted=1)
                true_answer = orjson.dumps({"UnprocessedItems": doc.get("RequestItems") or {}})
                damaged = _json(200, {"UnprocessedItems": {}})
                damaged.headers["x-amz-crc32"] = str(zlib.crc32(true_answer))
                return damaged
            if fault.kind == "reset":
                self._count(resets=1)
                assert request.transport is not None
                request.transport.abort()  # the client sees the connection closed, no response
                return web.Response(status=500)  # never reaches the client
            self._count(**{"throttled" if fault.kind == "throttle" else "failed": 1})
            return _error(fault.status, fault.code)
        requests_by_table: dict[str, list[Any]] = doc.get("RequestItems") or {}
        unprocessed_fault = self._take(("unprocessed",), doc)
        held: dict[str, list[Any]] = {}
        if unprocessed_fault is not None:
            rng = unprocessed_fault.rng
            assert rng is not None
            with self._lock:  # one Random shared by concurrent calls
                for table, reqs in requests_by_table.items():
                    keep: list[Any] = []
                    for req in reqs:
                        (
                            held.setdefault(table, []) if rng.random() < unprocessed_fault.fraction else keep
                        ).append(req)
                    requests_by_table[table] = keep
            requests_by_table = {t: r for t, r in requests_by_table.items() if r}
        n_forward = sum(len(r) for r in requests_by_table.values())
        n_held = sum(len(r) for r in held.values())
        if not held:
            self._count(items_forwarded=n_forward)
            return await self._forward(request, body)
        self._count(unprocessed_returned=n_held)
        if not requests_by_table:  # everything held back: the service answers 200 without writing
            return _json(200, {"UnprocessedItems": held})
        doc["RequestItems"] = requests_by_table
        self._count(items_forwarded=n_forward)
        resp = await self._forward(request, orjson.dumps(doc))
        assert isinstance(resp, web.Response)
        if resp.status != 200 or resp.body is None:
            return resp
        answer = orjson.loads(resp.body)  # type: ignore[arg-type]
        merged = answer.get("UnprocessedItems") or {}
        for table, reqs in held.items():
            merged.setdefault(table, []).extend(reqs)
        answer["UnprocessedItems"] = merged
        return _json(200, answer, base=resp.headers)

    def _check_signature(self, check: SigV4Check, request: web.Request, body: bytes) -> str | None:
        """Why the service would refuse this request's signature, or None if it would not."""
        host = request.headers.get("Host", "")
        with self._lock:
            self.hosts.add(host)
        if host != self.authority:
            return f"Host {host!r} is not this endpoint's {self.authority!r}"
        m = _AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
        if m is None:
            return "no SigV4 Authorization header"
        with self._lock:
            self.regions.add(m["region"])
        secret = check.secrets.get(m["key"])
        if secret is None:
            return f"unknown access key {m['key']!r}"
        if (m["region"], m["service"]) != (check.region, check.service):
            return f"Credential should be scoped to a valid region: {m['region']}/{m['service']}"
        amz_date = request.headers.get("X-Amz-Date", "")
        if amz_date[:8] != m["day"]:
            return "X-Amz-Date does not match the credential scope's date"
        signed = m["signed"].split(";")
        if missing := check.required - set(signed):
            return f"signature does not cover {sorted(missing)}"
        if any(name not in request.headers for name in signed):
            return "a signed header is missing"
        creds = Credentials(m["key"], secret, request.headers.get("X-Amz-Security-Token"))
        auth = SigV4Auth(creds, m["service"], m["region"])
        signed_request = AWSRequest(
            method=request.method,
            url=f"http://{host}{request.path_qs}",
            data=body,
            headers={name: ",".join(request.headers.getall(name)) for name in signed},
        )
        signed_request.context["timestamp"] = amz_date
        canonical = auth.canonical_request(signed_request)
        expected = auth.signature(auth.string_to_sign(signed_request, canonical), signed_request)
        if expected != m["signature"]:
            return "The request signature we calculated does not match the signature you provided."
        return None

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as up:
            payload = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _DROP_FROM_RESPONSE}
            return web.Response(status=up.status, body=payload, headers=out_headers)


def _json(status: int, payload: dict[str, Any], *, base: Any = None) -> web.Response:
    body = orjson.dumps(payload)
    headers = {k: v for k, v in (base or {}).items() if k.lower() not in _DROP_FROM_RESPONSE}
    headers["Content-Type"] = _JSON_CT
    headers["x-amz-crc32"] = str(zlib.crc32(body))
    headers.setdefault("x-amzn-RequestId", uuid.uuid4().hex.upper())
    return web.Response(status=status, body=body, headers=headers)


def _error(status: int, code: str) -> web.Response:
    return _json(status, {"__type": _TYPE_PREFIX + code, "message": _MESSAGES.get(code, code)})
