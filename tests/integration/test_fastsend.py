"""The lean sender writes exactly what aiobotocore writes, and classifies errors the reference way.

The reference is a plain aiobotocore ``batch_write_item`` made here in the test (botocore's JSON
serializer wants bytes for B/BS, so binary values are decoded for it); the code under test is
``loader.fastsend``. Both write to DynamoDB Local; the tables are scanned and compared. Every
test runs with both HTTP clients of the lean sender (``http="raw"`` and ``http="aiohttp"``).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from benchmarks.wire import WireProcess, running_wire
from loader.errors import (
    BatchValidationError,
    ConfigError,
    SendError,
    ThrottledError,
    TransientSendError,
)
from loader.fastsend import HttpImpl, LeanSender, open_lean_sender
from tests.support.aws import scan_all
from tests.support.faultproxy import FaultProxy


@pytest.fixture(params=["raw", "aiohttp"])
def http(request: pytest.FixtureRequest) -> HttpImpl:
    value: HttpImpl = request.param
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rows() -> list[dict[str, Any]]:
    """Wire-JSON items covering every attribute type, unicode, extreme numbers, nesting."""
    return [
        {
            "pk": {"S": "scalars"},
            "s": {"S": "plain text"},
            "n_int": {"N": "42"},
            "n_neg": {"N": "-0.000123"},
            "n_big": {"N": "99999999999999999999999999999999999999"},
            "n_tiny": {"N": "1E-130"},
            "n_huge": {"N": "9.9999999999999999999999999999999999999E+125"},
            "t": {"BOOL": True},
            "f": {"BOOL": False},
            "nothing": {"NULL": True},
            "b": {"B": _b64(b"\x00\x01\xfe\xff binary")},
        },
        {
            "pk": {"S": "unicode ✓ 東京 café \U0001f600"},
            "s": {"S": 'quotes " and \\ backslash, tab\t, newline\n, nul-free'},
            "emoji": {"S": "\U0001f680\U0001f30d"},
        },
        {
            "pk": {"S": "sets"},
            "ss": {"SS": ["a", "b", "ü", "\U0001f600"]},
            "ns": {"NS": ["1", "2.5", "-3", "12345678901234567890123456789012345678"]},
            "bs": {"BS": [_b64(b"\x00"), _b64(b"\x01\x02"), _b64(bytes(range(256)))]},
        },
        {
            "pk": {"S": "nested"},
            "m": {
                "M": {
                    "inner": {
                        "M": {"deep": {"L": [{"N": "1"}, {"S": "x"}, {"NULL": True}, {"BOOL": False}]}}
                    },
                    "bin": {"B": _b64(b"nested-bytes")},
                    "set": {"SS": ["p", "q"]},
                    "empty_map": {"M": {}},
                    "empty_list": {"L": []},
                }
            },
            "l": {"L": [{"M": {"k": {"S": "v"}}}, {"L": [{"N": "0"}]}, {"BS": [_b64(b"zz")]}, {"S": ""}]},
        },
        *(
            {"pk": {"S": f"row-{i:03d}"}, "v": {"N": str(i)}, "blob": {"B": _b64(bytes([i]))}}
            for i in range(21)
        ),
    ]


def _to_botocore(value: Any) -> Any:
    """Wire JSON with base64 text -> what botocore's serializer expects (bytes for B / BS)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "B" and isinstance(v, str):
                out[k] = base64.b64decode(v)
            elif k == "BS" and isinstance(v, list):
                out[k] = [base64.b64decode(x) for x in v]
            else:
                out[k] = _to_botocore(v)
        return out
    if isinstance(value, list):
        return [_to_botocore(v) for v in value]
    return value


def _by_pk(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {it["pk"]["S"]: it for it in items}


async def test_lean_sender_writes_exactly_what_aiobotocore_writes(
    table_factory: Callable[..., str], ddb: Any, http: HttpImpl
) -> None:
    rows = _rows()
    assert len(rows) == 25
    lean_table, ref_table, wire_table = table_factory(), table_factory(), table_factory()

    async with get_session().create_client("dynamodb") as client:
        resp = await client.batch_write_item(
            RequestItems={ref_table: [{"PutRequest": {"Item": _to_botocore(it)}} for it in rows]}
        )
        assert not resp.get("UnprocessedItems")
    async with open_lean_sender(concurrency=2, http=http) as sender:
        assert isinstance(sender, LeanSender) and sender.http_impl == http
        assert await sender.send(lean_table, rows) == []
        # the pipeline's path: each item encoded as its entry is made, the body joined from those
        wire = [sender.encode(it) for it in rows]
        assert await sender.send(wire_table, rows, wire) == []

    lean, ref = _by_pk(scan_all(ddb, lean_table)), _by_pk(scan_all(ddb, ref_table))
    assert len(ref) == 25
    assert lean == ref
    assert _by_pk(scan_all(ddb, wire_table)) == ref
    # and what landed is what was meant (binary round-trips as bytes through boto3's parser)
    assert lean["scalars"]["b"]["B"] == b"\x00\x01\xfe\xff binary"
    assert lean["scalars"]["n_big"]["N"] == "99999999999999999999999999999999999999"


async def test_botocore_signer_path_writes_the_same(
    table_factory: Callable[..., str], ddb: Any, http: HttpImpl
) -> None:
    table = table_factory()
    rows = _rows()[:5]
    async with open_lean_sender(concurrency=1, signer="botocore", http=http) as sender:
        assert await sender.send(table, rows) == []
    got = _by_pk(scan_all(ddb, table))
    assert set(got) == {r["pk"]["S"] for r in rows}


async def test_missing_table_is_a_config_error(aws_env: dict[str, str], http: HttpImpl) -> None:
    async with open_lean_sender(concurrency=1, http=http) as sender:
        with pytest.raises(ConfigError, match="ResourceNotFoundException"):
            await sender.send("s3ddb-no-such-table-4f1c", [{"pk": {"S": "a"}}])


@pytest.mark.parametrize(
    "poison",
    [
        {"other": {"S": "no key attribute"}},
        {"pk": {"N": "1"}},  # wrong key type
        {"pk": {"S": "x"}, "n": {"N": "1" * 39}},  # 39 significant digits
    ],
    ids=["missing-key", "wrong-key-type", "too-many-digits"],
)
async def test_a_batch_with_an_invalid_item_is_a_validation_error(
    table: str, poison: dict[str, Any], http: HttpImpl
) -> None:
    items = [{"pk": {"S": f"ok-{i}"}} for i in range(3)] + [poison]
    async with open_lean_sender(concurrency=1, http=http) as sender:
        with pytest.raises(BatchValidationError) as info:
            await sender.send(table, items)
    assert info.value.code == "ValidationException"


@pytest.fixture(scope="module")
def wire() -> Iterator[WireProcess]:
    with running_wire("--default-key", "pk:S") as w:
        yield w


async def test_unprocessed_items_come_back_as_wire_json(wire: WireProcess, http: HttpImpl) -> None:
    wire.post("/config?unprocessed=1&throttle=0&errors=0")
    rows = _rows()
    try:
        async with open_lean_sender(concurrency=1, endpoint_url=wire.url, http=http) as sender:
            back = await sender.send("any", rows)
    finally:
        wire.post("/config?unprocessed=0")
    assert back == rows  # base64 text stays base64 text; nothing re-typed


async def test_throttles_and_server_errors_are_classified(wire: WireProcess, http: HttpImpl) -> None:
    async with open_lean_sender(concurrency=1, endpoint_url=wire.url, http=http) as sender:
        try:
            wire.post("/config?throttle=1&errors=0&unprocessed=0")
            with pytest.raises(ThrottledError) as t:
                await sender.send("any", [{"pk": {"S": "a"}}])
            assert t.value.code == "ProvisionedThroughputExceededException"
            wire.post("/config?throttle=0&errors=1")
            with pytest.raises(TransientSendError) as e:
                await sender.send("any", [{"pk": {"S": "a"}}])
            assert e.value.code == "InternalServerError"
        finally:
            wire.post("/config?throttle=0&errors=0")
        assert await sender.send("any", [{"pk": {"S": "a"}}]) == []


async def test_network_failure_is_transient(http: HttpImpl) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with open_lean_sender(concurrency=1, endpoint_url=f"http://127.0.0.1:{port}", http=http) as sender:
        with pytest.raises(TransientSendError):
            await sender.send("any", [{"pk": {"S": "a"}}])


@pytest.fixture
def proxy(aws_env: dict[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as p:
        yield p


async def test_faults_through_the_proxy_raise_the_same_errors(
    proxy: FaultProxy, table: str, http: HttpImpl
) -> None:
    """Throttle, 5xx and a reset on a fresh connection: one error each, the reference's kind."""
    item = [{"pk": {"S": "a"}}]
    got: list[tuple[type[Exception], str]] = []
    injections: list[Callable[[], None]] = [
        lambda: proxy.throttle_next(1, code="ThrottlingException"),
        lambda: proxy.fail_next(1, status=503),
        lambda: proxy.reset_next(1),
    ]
    for inject in injections:
        async with open_lean_sender(concurrency=1, endpoint_url=proxy.url, http=http) as sender:
            inject()
            with pytest.raises(SendError) as info:
                await sender.send(table, item)
            got.append((type(info.value), info.value.code))
            assert await sender.send(table, item) == []  # and the sender goes on afterwards
    assert [t for t, _ in got] == [ThrottledError, TransientSendError, TransientSendError]
    assert got[0][1] == "ThrottlingException" and got[1][1] == "ServiceUnavailable"
    assert (proxy.throttled, proxy.failed, proxy.resets) == (1, 1, 1)


async def test_raw_resends_once_when_a_reused_connection_is_reset(proxy: FaultProxy, table: str) -> None:
    item = [{"pk": {"S": "a"}}]
    async with open_lean_sender(concurrency=1, endpoint_url=proxy.url, http="raw") as sender:
        assert await sender.send(table, item) == []  # the connection is now warm
        proxy.reset_next(1)
        assert await sender.send(table, item) == []  # reset before any byte: sent again, once
        assert proxy.resets == 1
        proxy.reset_next(2)
        with pytest.raises(TransientSendError):
            await sender.send(table, item)  # the resend is reset too: no third try
        assert proxy.resets == 3
        assert await sender.send(table, item) == []


async def test_a_proxy_in_the_environment_selects_aiohttp(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with open_lean_sender(concurrency=1, endpoint_url="https://dynamodb.example.test", http="raw") as s:
        assert isinstance(s, LeanSender) and s.http_impl == "aiohttp"
    monkeypatch.setenv("NO_PROXY", "dynamodb.example.test")
    async with open_lean_sender(concurrency=1, endpoint_url="https://dynamodb.example.test", http="raw") as s:
        assert isinstance(s, LeanSender) and s.http_impl == "raw"
