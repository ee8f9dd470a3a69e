"""One BatchWriteItem call: the interface the writer drives, and the aiobotocore reference sender.

A sender knows nothing about retries, batching or rate: it makes one call and classifies the
outcome. Items are DynamoDB wire JSON with binary values as base64 text.
"""

from __future__ import annotations

from typing import Protocol

from loader.models import Item


class BatchSender(Protocol):
    async def send(self, table: str, items: list[Item]) -> list[Item]:
        """Put ``items`` (at most 25, distinct keys) in one BatchWriteItem call.

        Returns the items the service handed back in ``UnprocessedItems`` (wire JSON, binary as
        base64 text), or ``[]``. Raises ``ThrottledError`` (whole call throttled),
        ``BatchValidationError`` (the batch was refused as invalid), ``TransientSendError``
        (network, 5xx, internal errors), or ``ConfigError`` (table missing, access denied).
        """
        ...

    async def aclose(self) -> None: ...
