"""What the ``s3ddb`` CLI asks of the function and its ledger: status, backfill, notify.

Plain functions over clients the caller builds (the CLI passes boto3 clients).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import orjson

from lambda_src.events import EVENT_VERSION, split_s3_uri
from lambda_src.ledger import Ledger
from loader.errors import ConfigError, S3ddbError

__all__ = ["STALE_ADVICE", "build_notification", "notify", "send_backfill", "status"]


#: what ``status`` says about a chain whose lease ran out with no hop alive to finish it
STALE_ADVICE = (
    "the lease ran out with no hop running (a hop was killed or its continuation was lost): "
    "re-send the notification (s3ddb local notify, or the S3 event) or run s3ddb invoke to resume "
    "from the last committed checkpoint"
)


def status(
    uri: str,
    *,
    ledger_table: str,
    ddb_client: Any,
    table: str | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The ledger item of ``uri`` (``s3://bucket/key``): its most recently started load (of any
    version; into ``table`` when it is given).

    Keys: status, chain_id, hops, hop, rows_read, items_written, rows_rejected,
    duplicates_collapsed, retries, throttle_events, write_units, offset, object_size, table,
    rejects, reclaims, started_at, updated_at, finished_at, lease_until, stale, last_error,
    reason, object, version, versions (how many loads of the object the ledger holds: versions
    and tables) and chains (each of them: version, table, status, chain_id, started_at).
    ``status`` is ``NOT_FOUND`` when the ledger has no chain for the object. A RUNNING chain
    whose lease ran out is marked STALLED in the ledger (a conditional write) and reported with
    ``"stale": true`` and the advice in ``last_error``.
    """
    split_s3_uri(uri)
    ledger = Ledger(ddb_client, ledger_table, clock=clock)
    items = ledger.chains(uri)
    if table is not None:
        items = [i for i in items if i.table == table]
    if not items:
        return {"object": uri, "status": "NOT_FOUND", "versions": 0}
    item = items[-1]
    now = clock()
    chains = [
        {k: i.to_status(now)[k] for k in ("version", "table", "status", "chain_id", "started_at")}
        for i in items
    ]
    if item.stale(now):
        ledger.mark_stalled(item, error=STALE_ADVICE)
        item = ledger.get(item.object, item.target) or item
        return {**item.to_status(now), "stale": True, "versions": len(items), "chains": chains}
    return {**item.to_status(now), "versions": len(items), "chains": chains}


def _invoke(lambda_client: Any, function: str, payload: dict[str, Any], kind: str) -> dict[str, Any]:
    resp = lambda_client.invoke(FunctionName=function, InvocationType=kind, Payload=orjson.dumps(payload))
    body = resp["Payload"].read() if "Payload" in resp else b""
    if resp.get("FunctionError"):
        try:
            err = orjson.loads(body)
            message = f"{err.get('errorType')}: {err.get('errorMessage')}"
        except orjson.JSONDecodeError:
            message = body.decode(errors="replace")
        raise S3ddbError(f"function {function} failed: {message}")
    if kind != "RequestResponse":
        return {"status_code": int(resp.get("StatusCode", 0))}
    out = orjson.loads(body) if body else None
    return out if isinstance(out, dict) else {"result": out}


def send_backfill(
    source: str,
    *,
    table: str,
    function: str,
    lambda_client: Any,
    schema: dict[str, Any] | None = None,
    csv: dict[str, Any] | None = None,
    on_duplicate: str | None = None,
    version_id: str | None = None,
    reload: bool = False,
) -> dict[str, Any]:
    """Ask the function to backfill ``source`` (an object, or a prefix ending in ``/``; the key is
    literal) into ``table``. ``schema``, ``csv`` and ``on_duplicate`` left as None are the
    function's settings (S3DDB_SCHEMA, S3DDB_CSV, S3DDB_ON_DUPLICATE); each chain pins them.

    A synchronous invoke: the function checks its allow-lists, the options and the source, starts
    the chains (one per object, bounded by S3DDB_MAX_CHAINS) asynchronously and answers at once
    with ``{"status": "accepted", "lanes": N, ...}``, ``{"status": "already loaded", ...}`` (the
    object version was loaded into the table: ``reload`` loads it again),
    ``{"status": "refused", "reason": ...}`` or ``{"status": "empty", ...}``. Follow the chains
    with :func:`status`.
    """
    split_s3_uri(source)
    if not table:
        raise ConfigError("--table is required")
    payload: dict[str, Any] = {"kind": "backfill", "version": EVENT_VERSION, "source": source, "table": table}
    options = {"schema": schema, "csv": csv, "on_duplicate": on_duplicate}
    payload.update({name: value for name, value in options.items() if value is not None})
    if version_id is not None:
        payload["version_id"] = version_id
    if reload:
        payload["reload"] = True
    return _invoke(lambda_client, function, payload, "RequestResponse")


def build_notification(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str | None,
    version_id: str | None,
    region: str = "us-east-1",
    event_name: str = "ObjectCreated:Put",
    now: float | None = None,
) -> dict[str, Any]:
    """The S3 event notification S3 itself sends for a PUT (the key URL-encoded as S3 does)."""
    ts = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": (etag or "").strip('"'),
        "sequencer": f"{int(ts.timestamp() * 1e6):016X}",
    }
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "s3ddb-local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "S3DDBLOCAL", "x-amz-id-2": "s3ddb-local"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "s3ddb-local-notify",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "s3ddb-local"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


def notify(uri: str, *, function: str, lambda_client: Any, s3_client: Any) -> dict[str, Any]:
    """Send the S3 ``ObjectCreated:Put`` notification of an existing object as an Event invoke.

    Returns ``{"status_code": 202, "event": <the notification>}``.
    """
    bucket, key = split_s3_uri(uri)
    if not key or key.endswith("/"):
        raise ConfigError(f"{uri} names no object")
    try:
        head = s3_client.head_object(Bucket=bucket, Key=key)
    except s3_client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ConfigError(f"cannot read {uri}: {code or exc}") from exc
    event = build_notification(
        bucket,
        key,
        size=int(head.get("ContentLength", 0)),
        etag=head.get("ETag"),
        version_id=head.get("VersionId"),
        region=s3_client.meta.region_name or "us-east-1",
    )
    out = _invoke(lambda_client, function, event, "Event")
    return {**out, "event": event}
