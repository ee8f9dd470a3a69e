"""FastSigV4 signs exactly as botocore's SigV4Auth does for the same request and timestamp."""

from __future__ import annotations

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from loader.fastsend import FastSigV4, _AmzDate

TARGET = "DynamoDB_20120810.BatchWriteItem"


def _botocore_headers(
    url: str, creds: Credentials, region: str, amz_date: str, body: bytes
) -> dict[str, str]:
    """SigV4Auth.add_auth's steps with a fixed timestamp (add_auth itself reads the wall clock)."""
    auth = SigV4Auth(creds, "dynamodb", region)
    req = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": TARGET},
    )
    req.context["timestamp"] = amz_date
    auth._modify_request_before_signing(req)
    canonical = auth.canonical_request(req)
    signature = auth.signature(auth.string_to_sign(req, canonical), req)
    auth._inject_signature_to_request(req, signature)
    return dict(req.headers.items())


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com/", "dynamodb.eu-west-1.amazonaws.com"),
        ("http://127.0.0.1:8700/", "127.0.0.1:8700"),
        ("http://[::1]:8700/", "[::1]:8700"),
    ],
)
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEJr//////////session+token/=="])
def test_authorization_matches_botocore(url: str, host: str, token: str | None) -> None:
    region = "eu-west-1"
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = b'{"RequestItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"\xc3\xa9"}}}}]}}'
    amz_date = "20260102T030405Z"
    ref = _botocore_headers(url, creds, region, amz_date, body)
    signer = FastSigV4(host=host, region=region)
    got = signer.headers(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        token=token,
        amz_date=amz_date,
        target=TARGET,
        body=body,
    )
    assert got["Authorization"] == ref["Authorization"]
    assert got["X-Amz-Date"] == ref["X-Amz-Date"] == amz_date
    assert got.get("X-Amz-Security-Token") == ref.get("X-Amz-Security-Token")
    assert got["Host"] == host


def test_signing_key_is_rederived_when_the_day_or_secret_changes() -> None:
    signer = FastSigV4(host="h", region="us-east-1")
    k1 = signer.signing_key("secret", "20260101")
    assert signer.signing_key("secret", "20260101") == k1
    assert signer.signing_key("secret", "20260102") != k1
    assert signer.signing_key("other", "20260102") != signer.signing_key("secret", "20260102")


def test_amz_date_follows_the_injected_clock() -> None:
    now = [1767323045.9]  # 2026-01-02T03:04:05.9Z
    stamp = _AmzDate(lambda: now[0])
    assert stamp() == "20260102T030405Z"
    now[0] += 1.0
    assert stamp() == "20260102T030406Z"
