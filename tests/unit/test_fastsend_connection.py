"""The lean sender connects where, as whom and how botocore would: ``Connection.from_client``.

Every expected value is what a botocore client built the normal way does: the URL and the
credential scope are captured from the request botocore itself prepares (stopped before it is
sent), the Host header is botocore's own. No network is used.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import botocore.config
import pytest

from loader import clients
from loader.errors import ConfigError
from loader.fastsend import Connection, LeanSender
from loader.httpraw import RawHttpClient


class _Stop(Exception):
    """Raised from ``before-send``: the request is prepared and signed, and never sent."""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Nothing from the machine: no AWS_* or proxy variables, an empty config file (returned)."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("AWS_") or name.lower().endswith("_proxy") or "CA_BUNDLE" in name:
            monkeypatch.delenv(name)
    config = tmp_path / "config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    yield config


def _botocore_request(client: Any) -> tuple[str, str, str]:
    """(URL, credential-scope region, Host) of the BatchWriteItem request botocore would send."""
    seen: dict[str, Any] = {}

    def stop(request: Any, **_: Any) -> None:
        seen["url"] = request.url
        seen["auth"] = request.headers["Authorization"].decode()
        raise _Stop

    client.meta.events.register("before-send.dynamodb.BatchWriteItem", stop)
    with pytest.raises(_Stop):
        client.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": {"pk": {"S": "a"}}}}]})
    scope_region = seen["auth"].split("Credential=")[1].split("/")[2]
    return seen["url"], scope_region, botocore.auth._host_from_url(seen["url"])


@pytest.mark.parametrize(
    ("variables", "config", "url", "region"),
    [
        ({"AWS_DEFAULT_REGION": "us-east-1"}, "", "https://dynamodb.us-east-1.amazonaws.com", "us-east-1"),
        # Lambda sets AWS_REGION; the loader's clients read it before AWS_DEFAULT_REGION
        (
            {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"},
            "",
            "https://dynamodb.eu-west-1.amazonaws.com",
            "eu-west-1",
        ),
        ({"AWS_REGION": "cn-north-1"}, "", "https://dynamodb.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        (
            {"AWS_REGION": "us-gov-west-1"},
            "",
            "https://dynamodb.us-gov-west-1.amazonaws.com",
            "us-gov-west-1",
        ),
        (
            {"AWS_REGION": "us-east-1", "AWS_USE_FIPS_ENDPOINT": "true"},
            "",
            "https://dynamodb-fips.us-east-1.amazonaws.com",
            "us-east-1",
        ),
        (
            {"AWS_REGION": "eu-west-1", "AWS_USE_DUALSTACK_ENDPOINT": "true"},
            "",
            "https://dynamodb.eu-west-1.api.aws",
            "eu-west-1",
        ),
        (
            {"AWS_REGION": "us-east-1"},
            "[default]\nuse_fips_endpoint = true\n",
            "https://dynamodb-fips.us-east-1.amazonaws.com",
            "us-east-1",
        ),
        (
            {"AWS_REGION": "us-east-1"},
            "[default]\nendpoint_url = http://127.0.0.1:9999\n",
            "http://127.0.0.1:9999",
            "us-east-1",
        ),
        (
            {"AWS_REGION": "us-east-1"},
            "[default]\nservices = local\n[services local]\ndynamodb =\n  endpoint_url = http://[::1]:9998\n",
            "http://[::1]:9998",
            "us-east-1",
        ),
        (
            {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_DYNAMODB": "http://localhost:8000"},
            "",
            "http://localhost:8000",
            "us-east-1",
        ),
        (
            {"AWS_DEFAULT_REGION": "ap-southeast-2", "AWS_ENDPOINT_URL": "https://ddb.example.test:8443"},
            "",
            "https://ddb.example.test:8443",
            "ap-southeast-2",
        ),
    ],
    ids=[
        "default-region",
        "aws-region-first",
        "china",
        "govcloud",
        "fips",
        "dual-stack",
        "fips-in-config-file",
        "endpoint-in-config-file",
        "service-endpoint-in-config-file",
        "endpoint-variable",
        "global-endpoint-variable",
    ],
)
def test_endpoint_and_region_are_the_ones_botocore_uses(
    env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], config: str, url: str, region: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    env.write_text(config)
    client = clients.dynamodb_client()
    conn = Connection.from_client(client)
    assert (conn.endpoint_url, conn.region, conn.signing_name) == (url, region, "dynamodb")
    sent_url, scope_region, host = _botocore_request(client)
    assert sent_url.rstrip("/") == conn.endpoint_url
    assert scope_region == conn.region
    sender = LeanSender(http=RawHttpClient(max_connections=1), connection=conn)
    assert sender._fast.host == host  # what is signed and sent as Host
    assert sender._fast.region == scope_region


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8000",
        "http://[::1]",
        "https://[::1]:443",
        "https://[2001:DB8::1]:8443",
        "http://127.0.0.1:8000",
        "https://DynamoDB.EU-West-1.AmazonAWS.com",
        "https://dynamodb.eu-west-1.amazonaws.com:443",
        "http://localhost:80",
    ],
)
@pytest.mark.parametrize("signer", ["fast", "botocore"])
def test_host_header_is_botocores(env: Path, url: str, signer: Any) -> None:
    """An IPv6 literal in brackets, lower case, no default port: botocore's Host, signed and sent."""
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", endpoint_url=url)
    sender = LeanSender(
        http=RawHttpClient(max_connections=1), connection=Connection.from_client(client), signer=signer
    )
    headers = {k.lower(): v for k, v in sender._sign(b"{}").items()}
    assert headers["host"] == botocore.auth._host_from_url(url)
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "host" in signed


@pytest.mark.parametrize(
    ("setting", "verify"),
    [
        (None, True),
        ("AWS_CA_BUNDLE", "/etc/private/ca.pem"),
        ("REQUESTS_CA_BUNDLE", "/etc/private/requests-ca.pem"),
        ("config", "/etc/private/config-ca.pem"),
        ("argument-false", False),
        ("argument-path", "/etc/private/arg-ca.pem"),
    ],
)
def test_verify_is_the_clients(
    env: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, verify: bool | str
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    kwargs: dict[str, Any] = {}
    if setting in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(setting, str(verify))
    elif setting == "config":
        env.write_text(f"[default]\nca_bundle = {verify}\n")
    elif setting is not None:
        kwargs["verify"] = verify
    client = boto3.session.Session().client("dynamodb", **kwargs)
    assert Connection.from_client(client).verify == verify


def test_verify_false_turns_every_check_off_and_a_bundle_is_the_only_trust(env: Path, tmp_path: Path) -> None:
    from tests.support.tlsproxy import make_private_ca

    ca = make_private_ca(tmp_path)
    off = Connection(endpoint_url="https://h", region="r", credentials=object(), verify=False).ssl_context()
    assert (off.verify_mode, off.check_hostname) == (ssl.CERT_NONE, False)
    on = Connection(endpoint_url="https://h", region="r", credentials=object(), verify=str(ca.ca_cert))
    ctx = on.ssl_context()
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "s3ddb test CA"),),)]


@pytest.mark.parametrize(
    ("variables", "endpoint", "proxy"),
    [
        (
            {"HTTPS_PROXY": "http://proxy.internal:3128"},
            "https://ddb.example.test",
            "http://proxy.internal:3128",
        ),
        (
            {"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "ddb.example.test"},
            "https://ddb.example.test",
            None,
        ),
        ({"HTTPS_PROXY": "http://proxy.internal:3128"}, "http://127.0.0.1:8700", None),
        (
            {"HTTP_PROXY": "proxy.internal:3128", "NO_PROXY": "localhost"},
            "http://10.1.2.3:8700",
            "http://proxy.internal:3128",
        ),
        ({}, "https://ddb.example.test", None),
    ],
    ids=["https-proxy", "no-proxy", "other-scheme", "http-proxy", "none"],
)
def test_proxy_is_the_one_botocore_would_use(
    env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], endpoint: str, proxy: str | None
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    client = clients.dynamodb_client(endpoint_url=endpoint)
    assert Connection.from_client(client).proxy == proxy


def test_proxy_and_client_certificate_from_the_clients_config(env: Path) -> None:
    config = botocore.config.Config(
        proxies={"https": "http://cfg-proxy:8080"}, client_cert=("c.pem", "k.pem")
    )
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", config=config)
    conn = Connection.from_client(client)
    assert (conn.proxy, conn.client_cert) == ("http://cfg-proxy:8080", ("c.pem", "k.pem"))
    single = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", config=botocore.config.Config(client_cert="both.pem")
    )
    assert Connection.from_client(single).client_cert == "both.pem"


def test_proxy_settings_it_cannot_apply_are_refused_by_name(env: Path) -> None:
    config = botocore.config.Config(
        proxies={"https": "https://cfg-proxy:8443"}, proxies_config={"proxy_ca_bundle": "/p/ca.pem"}
    )
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", config=config)
    with pytest.raises(ConfigError, match="proxy_ca_bundle"):
        Connection.from_client(client)


def test_credentials_are_the_clients_own_object(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same object, not a copy: a refreshable one keeps refreshing for the lean sender."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = clients.dynamodb_client()
    conn = Connection.from_client(client)
    assert conn.credentials is client._get_credentials()


def test_no_credentials_is_a_config_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = clients.dynamodb_client()
    with pytest.raises(ConfigError, match="no AWS credentials"):
        Connection.from_client(client)


@pytest.mark.parametrize("url", ["https://gw.example.com/ddb", "http://127.0.0.1:8000/x/", "http://h:1/?a=b"])
def test_an_endpoint_with_a_path_is_refused_not_sent_to_slash(env: Path, url: str) -> None:
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", endpoint_url=url)
    with pytest.raises(ConfigError, match=r"has a path.*--sender botocore"):
        LeanSender(http=RawHttpClient(max_connections=1), connection=Connection.from_client(client))


def test_an_unreadable_ca_bundle_is_a_config_error_that_names_it(
    env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.pem")
    monkeypatch.setenv("AWS_CA_BUNDLE", missing)
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1")
    with pytest.raises(ConfigError, match=f"CA bundle '{missing}'"):
        Connection.from_client(client).ssl_context()
