"""One BatchWriteItem call: the interface the writer drives, and the aiobotocore reference sender.

A sender knows nothing about retries, batching or rate: it makes one call and classifies the
outcome. Items are DynamoDB wire JSON with binary values as base64 text.
"""

from __future__ import annotations

import asyncio
import zlib
from base64 import b64decode, b64encode
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import botocore.exceptions

from loader.errors import (
    BatchValidationError,
    ConfigError,
    SendError,
    ThrottledError,
    TransientSendError,
)
from loader.models import Item

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["AioBotocoreSender", "BatchSender", "classify_client_error"]


class BatchSender(Protocol):
    """Writes one batch per call."""

    @property
    def encode(self) -> Callable[[Item], bytes] | None:
        """The sender's item encoder (an item to its JSON bytes), or None if it takes items only.

        When there is one, the pipeline calls it as each entry is made and hands the bytes back
        to ``send`` as ``wire`` (an entry then keeps only its bytes).
        """
        ...

    async def send(self, table: str, items: list[Item], wire: list[bytes] | None = None) -> list[Item]:
        """Put ``items`` (at most 25, distinct keys) in one BatchWriteItem call.

        ``wire``, when given, holds ``encode(item)`` of each item in the same order: the request
        body is made of those bytes, and ``items`` may be empty (entries keep only the bytes).

        Returns the items the service handed back in ``UnprocessedItems`` (wire JSON, binary as
        base64 text), or ``[]``. Raises ``ThrottledError`` (whole call throttled),
        ``BatchValidationError`` (the batch was refused as invalid), ``TransientSendError``
        (network, 5xx, internal errors), or ``ConfigError`` (table missing, access denied).
        """
        ...

    async def aclose(self) -> None: ...


#: Error codes that mean "slow down": the whole call was throttled.
THROTTLE_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
#: Error codes of server-side faults worth a retry.
TRANSIENT_CODES = frozenset({"InternalServerError", "ServiceUnavailable", "InternalFailure"})
_CONFIG_HINTS = {
    "ResourceNotFoundException": "the table {table!r} does not exist or is not ACTIVE in this "
    "region/endpoint: create it, or fix --table / AWS_REGION / AWS_ENDPOINT_URL_DYNAMODB",
    "AccessDeniedException": "these credentials may not call dynamodb:BatchWriteItem on table {table!r}: "
    "grant it in the role's policy",
    "UnrecognizedClientException": "DynamoDB does not recognise these credentials: check AWS_ACCESS_KEY_ID / "
    "AWS_PROFILE and the region",
    "InvalidSignatureException": "the request signature was refused: check AWS_SECRET_ACCESS_KEY "
    "and the clock",
    "MissingAuthenticationTokenException": "no credentials were sent: configure AWS credentials",
    "ExpiredTokenException": "the session credentials have expired: refresh them and resume from "
    "the checkpoint",
}


def _network_errors() -> tuple[type[BaseException], ...]:
    """Network-level failures: the request may or may not have been applied; a put is idempotent.

    Built when an ``AioBotocoreSender`` is made, not at import: this module is on the default (lean)
    path too, which never needs aiohttp, and importing aiohttp costs ~0.25 s of start-up CPU
    (cProfile of ``s3ddb load`` on a 10-row object). aiobotocore has imported it by then anyway.
    """
    import aiohttp

    return (
        # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
        botocore.exceptions.HTTPClientError,
        botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError
        aiohttp.ClientError,
        asyncio.TimeoutError,
        ConnectionError,
    )


class AioBotocoreSender:
    """The reference ``BatchSender``: one aiobotocore ``batch_write_item`` per ``send``.

    botocore's JSON serializer base64-encodes blob values itself, so binary values (base64 text in
    our items) are decoded to bytes for the top-level attributes named in ``binary_attrs`` (B and
    BS) before the call, and B/BS values in returned ``UnprocessedItems`` (bytes, as botocore
    parses them) are turned back into base64 text. Items are copied, never changed in place: the
    writer may resend them.

    The client belongs to the caller (``loader.clients.open_dynamodb_sender`` opens and closes
    it); ``aclose`` does not close it. Build the client with ``total_max_attempts=1`` so the
    writer sees, and retries, every failure.

    The response's ``x-amz-crc32`` is checked here, by a ``before-parse`` handler this sender
    registers on the client: botocore checks it only to decide on a retry, so with one attempt a
    corrupted ``200 {"UnprocessedItems":{}}`` would be taken as written and its batch lost. A
    mismatch is a ``TransientSendError`` (code ``CRC32Mismatch``), as on the lean path.
    """

    #: botocore's serializer takes items, not bytes: no block-typing path (see ``BatchSender``)
    encode: Callable[[Item], bytes] | None = None

    def __init__(self, client: DynamoDBClient, *, binary_attrs: frozenset[str] = frozenset()) -> None:
        self._client = client
        self._binary = binary_attrs
        self._network_errors = _network_errors()
        client.meta.events.register(
            "before-parse.dynamodb.BatchWriteItem", _check_crc32, unique_id=_CRC32_HANDLER_ID
        )

    async def send(self, table: str, items: list[Item], wire: list[bytes] | None = None) -> list[Item]:
        if self._binary:
            items = [_to_bytes(item, self._binary) for item in items]
        try:
            resp = await self._client.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": item}} for item in items]}
            )
        except botocore.exceptions.ClientError as exc:
            raise classify_client_error(exc, table) from exc
        except botocore.exceptions.ParamValidationError as exc:  # only with parameter_validation=True
            raise BatchValidationError(str(exc), code="ParamValidationError") from exc
        except _CRC32Mismatch as exc:
            raise TransientSendError(f"response CRC32 mismatch: {exc}", code="CRC32Mismatch") from exc
        except self._network_errors as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__) from exc
        unprocessed = resp.get("UnprocessedItems")
        if not unprocessed:
            return []
        out: list[Item] = [
            req["PutRequest"]["Item"] for req in unprocessed.get(table, ()) if "PutRequest" in req
        ]
        return [_to_base64(item) for item in out]

    async def aclose(self) -> None:
        """Nothing to release: the client's owner closes it."""


_CRC32_HANDLER_ID = "s3ddb-check-crc32"


class _CRC32Mismatch(botocore.exceptions.ChecksumError):
    """The response body does not match its ``x-amz-crc32`` header."""


def _check_crc32(response_dict: dict[str, Any], **_: Any) -> None:
    """botocore ``before-parse`` handler: the body must match ``x-amz-crc32`` when it is sent."""
    expected = response_dict["headers"].get("x-amz-crc32")
    if expected is None:
        return
    actual = zlib.crc32(response_dict["body"])
    if not expected.isdigit() or int(expected) != actual:
        raise _CRC32Mismatch(checksum_type="CRC32", expected_checksum=expected, actual_checksum=str(actual))


def classify_client_error(exc: botocore.exceptions.ClientError, table: str) -> Exception:
    """The loader's error for a service error response (see ``loader.errors``)."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = str(err.get("Message", "")) or str(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in THROTTLE_CODES:
        reason = exc.response.get("ThrottlingReasons") or exc.response.get("ThrottlingReason")
        extra = f" ({reason})" if reason else ""
        return ThrottledError(f"{code}: {message}{extra}", code=code)
    if code == "ValidationException":
        return BatchValidationError(message, code=code)
    if status == 413 or code == "RequestEntityTooLarge":
        # the request body is over the service's limit: splitting the batch is the cure
        return BatchValidationError(f"request too large (HTTP 413): {message}", code=code or "413")
    if code in _CONFIG_HINTS:
        return ConfigError(f"{code}: {_CONFIG_HINTS[code].format(table=table)} ({message})")
    if code in TRANSIENT_CODES or status >= 500:
        return TransientSendError(f"{code or status}: {message}", code=code)
    return SendError(f"{code or status}: {message}", code=code)


def _to_bytes(item: Item, names: frozenset[str]) -> Item:
    out: Item | None = None
    for name in names:
        value = item.get(name)
        if value is None:
            continue
        if "B" in value and isinstance(value["B"], str):
            new: dict[str, Any] = {"B": b64decode(value["B"])}
        elif "BS" in value:
            new = {"BS": [b64decode(v) if isinstance(v, str) else v for v in value["BS"]]}
        else:
            continue
        if out is None:
            out = dict(item)
        out[name] = new
    return item if out is None else out


def _to_base64(item: Item) -> Item:
    out: Item | None = None
    for name, value in item.items():
        if "B" in value and isinstance(value["B"], bytes | bytearray):
            new: dict[str, Any] = {"B": b64encode(value["B"]).decode("ascii")}
        elif "BS" in value:
            new = {
                "BS": [
                    b64encode(v).decode("ascii") if isinstance(v, bytes | bytearray) else v
                    for v in value["BS"]
                ]
            }
        else:
            continue
        if out is None:
            out = dict(item)
        out[name] = new
    return item if out is None else out
