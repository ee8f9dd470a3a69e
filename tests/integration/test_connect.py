"""One way to connect: the lean sender goes where, as whom and how botocore's client goes.

Each test sets the connection up the way a user would (a variable, the AWS config file, a CA
bundle) and checks what reached DynamoDB Local, or a SigV4-verifying proxy in front of it. The
command line runs in-process (``s3ddb.cli.main``) and builds its own clients, as it does for a user.

DynamoDB Local keeps one namespace per (access key, region): a table made in eu-west-1 cannot be
seen or written from us-east-1, so where rows land shows which region the requests were signed for.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
import orjson
import pytest
from botocore.credentials import CredentialProvider, RefreshableCredentials

from loader import clients
from loader.errors import TransientSendError
from loader.fastsend import HttpImpl, LeanSender, open_lean_sender
from s3ddb.cli import main
from tests.support.aws import scan_all
from tests.support.faultproxy import FaultProxy, SigV4Check
from tests.support.tlsproxy import PrivateCA, TlsProxy, make_private_ca

ITEMS = [{"pk": {"S": f"k{i:02d}"}, "v": {"N": str(i)}} for i in range(25)]


@pytest.fixture(params=["raw", "aiohttp"])
def http(request: pytest.FixtureRequest) -> HttpImpl:
    value: HttpImpl = request.param
    return value


@pytest.fixture
def creds(aws_env: dict[str, str]) -> dict[str, str]:
    return {aws_env["AWS_ACCESS_KEY_ID"]: aws_env["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture
def quiet_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty AWS config file of the test's own (returned, to write in) and no CA variables."""
    config = tmp_path / "aws-config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return config


def _client(**kwargs: Any) -> Any:
    """A DynamoDB client from a session of its own (boto3's default session would keep whatever
    the environment was when it was first used, for every later test)."""
    return boto3.session.Session().client("dynamodb", **kwargs)


def _make_table(region: str, name: str | None = None) -> tuple[Any, str]:
    ddb = _client(region_name=region)
    name = name or f"t-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name)
    return ddb, name


@pytest.fixture
def regional_table(aws_env: dict[str, str]) -> Iterator[Callable[[str], tuple[Any, str]]]:
    made: list[tuple[Any, str]] = []

    def make(region: str) -> tuple[Any, str]:
        made.append(_make_table(region))
        return made[-1]

    yield make
    for ddb, name in made:
        ddb.delete_table(TableName=name)


def _csv(tmp_path: Path, n: int = 300) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("pk,v\n" + "".join(f"k{i:04d},{i}\n" for i in range(n)))
    return path


def _load(
    capsys: pytest.CaptureFixture[str], source: Path, table: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main(
        ["load", str(source), "--table", table, "--type", "v=N", "--json", "--quiet",
         "--backoff-base", "0.001", "--backoff-cap", "0.02", "--max-attempts", "3", *extra]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert out.strip(), err
    return code, orjson.loads(out)


def _pks(ddb: Any, table: str) -> set[str]:
    return {item["pk"]["S"] for item in scan_all(ddb, table)}


# -- region -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_load_writes_in_the_region_aws_region_names(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    regional_table: Callable[[str], tuple[Any, str]],
    sender: str,
) -> None:
    """Lambda sets AWS_REGION; AWS_DEFAULT_REGION (or a profile) may name another region."""
    ddb_eu, table = regional_table("eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, s = _load(capsys, _csv(tmp_path), table, "--sender", sender)
    assert code == 0, s
    assert s["items_written"] == 300
    assert _pks(ddb_eu, table) == {f"k{i:04d}" for i in range(300)}
    us = _client(region_name="us-east-1")
    assert table not in us.list_tables()["TableNames"]  # nothing was made or written elsewhere


@pytest.mark.parametrize("sender", ["lean", "botocore"])
def test_every_request_is_signed_for_aws_region(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    aws_env: dict[str, str],
    creds: dict[str, str],
    regional_table: Callable[[str], tuple[Any, str]],
    sender: str,
) -> None:
    ddb_eu, table = regional_table("eu-west-1")
    with FaultProxy(
        aws_env["AWS_ENDPOINT_URL_DYNAMODB"], sigv4=SigV4Check(creds, region="eu-west-1")
    ) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        monkeypatch.setenv("AWS_REGION", "eu-west-1")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        code, s = _load(capsys, _csv(tmp_path), table, "--sender", sender)
    assert proxy.signature_errors == []
    assert code == 0, s
    assert proxy.regions == {"eu-west-1"} and proxy.hosts == {proxy.authority}
    assert proxy.calls >= 12 and proxy.items_forwarded == 300
    assert len(_pks(ddb_eu, table)) == 300


def test_the_verifying_proxy_refuses_what_the_service_would(
    aws_env: dict[str, str], creds: dict[str, str], table: str
) -> None:
    """The check above can fail: a wrong secret, another region and another Host are refused."""
    upstream = aws_env["AWS_ENDPOINT_URL_DYNAMODB"]
    no_retry = botocore.config.Config(retries={"total_max_attempts": 1})
    put = {"TableName": table, "Item": {"pk": {"S": "x"}}}
    with FaultProxy(upstream, sigv4=SigV4Check(creds, region="us-east-1")) as proxy:
        good = _client(region_name="us-east-1", endpoint_url=proxy.url, config=no_retry)
        good.put_item(**put)
        key = next(iter(creds))
        cases = [
            _client(
                region_name="us-east-1", endpoint_url=proxy.url, config=no_retry,
                aws_access_key_id=key, aws_secret_access_key="not-the-secret",
            ),
            _client(region_name="eu-west-1", endpoint_url=proxy.url, config=no_retry),
            _client(
                region_name="us-east-1", endpoint_url=proxy.url.replace("127.0.0.1", "localhost"),
                config=no_retry,
            ),
        ]  # fmt: skip
        for client in cases:
            with pytest.raises(client.exceptions.ClientError, match="InvalidSignatureException"):
                client.put_item(**put)
    assert proxy.signature_failures == 3
    assert "does not match" in proxy.signature_errors[0]
    assert "region" in proxy.signature_errors[1] and "Host" in proxy.signature_errors[2]


async def test_refreshable_credentials_are_refreshed_for_each_request(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, http: HttpImpl
) -> None:
    """The lean sender freezes the client's credentials per request: a refresh takes effect at once."""
    keys = {"AKIDROTATE1": "secret-one", "AKIDROTATE2": "secret-two"}
    name = f"rotate-{uuid.uuid4().hex[:8]}"
    per_key = {
        key: _client(region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret)
        for key, secret in keys.items()
    }
    for key_client in per_key.values():  # the same table in each key's namespace
        key_client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    handed_out: list[str] = []

    def refresh() -> dict[str, str]:
        import datetime

        key = list(keys)[len(handed_out) % 2]
        handed_out.append(key)
        # within botocore's mandatory refresh window: every use refreshes
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        return {"access_key": key, "secret_key": keys[key], "token": "", "expiry_time": expiry.isoformat()}

    class Rotating(CredentialProvider):  # type: ignore[misc]
        METHOD = "rotating"

        def load(self) -> RefreshableCredentials:
            return RefreshableCredentials.create_from_metadata(refresh(), refresh, "rotating")

    session = boto3.session.Session()
    session._session.get_component("credential_provider").insert_before("env", Rotating())
    with FaultProxy(
        aws_env["AWS_ENDPOINT_URL_DYNAMODB"], sigv4=SigV4Check(keys, region="us-east-1")
    ) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        client = clients.dynamodb_client(session)
        async with open_lean_sender(concurrency=1, client=client, http=http) as sender:
            for i in range(4):
                assert await sender.send(name, [{"pk": {"S": f"r{i}"}}]) == []
    assert proxy.signature_errors == []
    assert proxy.requests == 4 and len(handed_out) >= 5  # one at load, then one per request at least
    for key_client in per_key.values():  # each key's namespace got every other request
        assert len(scan_all(key_client, name)) == 2
        key_client.delete_table(TableName=name)


# -- CA bundle and verification ---------------------------------------------------------------


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return make_private_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls(aws_env: dict[str, str], private_ca: PrivateCA) -> Iterator[TlsProxy]:
    with TlsProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"], private_ca) as proxy:
        yield proxy


def test_load_over_tls_with_a_private_ca_in_aws_ca_bundle(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    quiet_config: Path,
    tls: TlsProxy,
    private_ca: PrivateCA,
    ddb: Any,
    table: str,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", tls.url)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(private_ca.ca_cert))
    code, s = _load(capsys, _csv(tmp_path), table)
    assert code == 0, s
    assert len(_pks(ddb, table)) == 300
    assert tls.connections >= 2  # DescribeTable's, and the lean sender's own


@pytest.fixture(params=["AWS_CA_BUNDLE", "config-file", "verify-argument", "verify-false"])
def trust(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, quiet_config: Path, private_ca: PrivateCA
) -> dict[str, Any]:
    """One way a user tells botocore what to trust; the client arguments it needs."""
    if request.param == "AWS_CA_BUNDLE":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(private_ca.ca_cert))
    elif request.param == "config-file":
        quiet_config.write_text(f"[default]\nca_bundle = {private_ca.ca_cert}\n")
    elif request.param == "verify-argument":
        return {"verify": str(private_ca.ca_cert)}
    else:
        return {"verify": False}
    return {}


async def test_the_lean_sender_trusts_what_the_client_trusts(
    trust: dict[str, Any], tls: TlsProxy, ddb: Any, table: str, http: HttpImpl
) -> None:
    kwargs = trust
    client = _client(region_name="us-east-1", endpoint_url=tls.url, **kwargs)
    async with open_lean_sender(concurrency=1, client=client, http=http) as sender:
        assert await sender.send(table, ITEMS) == []
    assert len(_pks(ddb, table)) == 25


async def test_without_the_bundle_the_private_ca_is_not_trusted(
    quiet_config: Path, tls: TlsProxy, table: str, http: HttpImpl
) -> None:
    client = clients.dynamodb_client(endpoint_url=tls.url)
    async with open_lean_sender(concurrency=1, client=client, http=http) as sender:
        with pytest.raises(TransientSendError, match="CERTIFICATE_VERIFY_FAILED"):
            await sender.send(table, ITEMS)


async def test_a_client_certificate_from_the_clients_config_is_presented(
    aws_env: dict[str, str], quiet_config: Path, private_ca: PrivateCA, ddb: Any, table: str, http: HttpImpl
) -> None:
    with TlsProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"], private_ca, require_client_cert=True) as mtls:
        config = botocore.config.Config(client_cert=(str(private_ca.client_cert), str(private_ca.client_key)))
        client = _client(
            region_name="us-east-1",
            endpoint_url=mtls.url,
            verify=str(private_ca.ca_cert),
            config=config,
        )
        async with open_lean_sender(concurrency=1, client=client, http=http) as sender:
            assert await sender.send(table, ITEMS) == []
        bare = _client(region_name="us-east-1", endpoint_url=mtls.url, verify=str(private_ca.ca_cert))
        async with open_lean_sender(concurrency=1, client=bare, http=http) as sender:
            with pytest.raises(TransientSendError):
                await sender.send(table, ITEMS)
    assert len(_pks(ddb, table)) == 25


# -- IPv6 -------------------------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")


def _v6(url: str) -> str:
    """The same local service through its IPv6 loopback (DynamoDB Local listens on every interface)."""
    return f"http://[::1]:{urlsplit(url).port}"


@needs_ipv6
async def test_an_ipv6_endpoint_is_sent_and_signed_with_a_bracketed_host(
    aws_env: dict[str, str], creds: dict[str, str], ddb: Any, table: str, http: HttpImpl
) -> None:
    with FaultProxy(
        aws_env["AWS_ENDPOINT_URL_DYNAMODB"], host="::1", sigv4=SigV4Check(creds, "us-east-1")
    ) as proxy:
        assert proxy.url == f"http://[::1]:{proxy.port}"
        async with open_lean_sender(concurrency=1, endpoint_url=proxy.url, http=http) as sender:
            assert await sender.send(table, ITEMS) == []
    assert proxy.signature_errors == []
    assert proxy.hosts == {f"[::1]:{proxy.port}"}
    assert len(_pks(ddb, table)) == 25


@needs_ipv6
def test_load_through_an_ipv6_endpoint(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    aws_env: dict[str, str],
    ddb: Any,
    table: str,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", _v6(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]))
    code, s = _load(capsys, _csv(tmp_path), table)
    assert code == 0, s
    assert len(_pks(ddb, table)) == 300


# -- the AWS config file ----------------------------------------------------------------------


@pytest.mark.parametrize("section", ["default", "services"])
def test_load_honours_endpoint_url_in_the_aws_config_file(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    quiet_config: Path,
    aws_env: dict[str, str],
    ddb: Any,
    table: str,
    section: str,
) -> None:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as proxy:
        if section == "default":
            quiet_config.write_text(f"[default]\nendpoint_url = {proxy.url}\n")
        else:
            quiet_config.write_text(
                f"[default]\nservices = here\n[services here]\ndynamodb =\n  endpoint_url = {proxy.url}\n"
            )
        monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB")
        code, s = _load(capsys, _csv(tmp_path), table)
    assert code == 0, s
    assert proxy.calls >= 12 and proxy.items_forwarded == 300
    assert len(_pks(ddb, table)) == 300


# -- proxies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["HTTP_PROXY", "client-config"])
async def test_requests_go_through_the_proxy_botocore_would_use(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, ddb: Any, table: str, where: str
) -> None:
    """The fault proxy forwards whatever reaches it to DynamoDB Local, so it serves as a forward
    HTTP proxy here: what it counts went through it."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as proxy:
        if where == "HTTP_PROXY":
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            client = clients.dynamodb_client()
        else:
            config = botocore.config.Config(proxies={"http": proxy.url})
            client = _client(region_name="us-east-1", config=config)
        async with open_lean_sender(concurrency=1, client=client, http="raw") as sender:
            assert isinstance(sender, LeanSender) and sender.http_impl == "aiohttp"
            assert await sender.send(table, ITEMS) == []
    assert (proxy.calls, proxy.items_forwarded) == (1, 25)
    assert len(_pks(ddb, table)) == 25


# -- what open_lean_sender takes ----------------------------------------------------------------


async def test_the_sender_takes_everything_from_the_client_it_is_given(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variables changed after the client was built change nothing: the client decided."""
    client = clients.dynamodb_client()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    async with open_lean_sender(concurrency=1, client=client) as sender:
        assert isinstance(sender, LeanSender)
        assert sender.connection.endpoint_url == aws_env["AWS_ENDPOINT_URL_DYNAMODB"]
        assert sender.connection.region == client.meta.region_name == "us-east-1"
        assert sender.connection.credentials is client._get_credentials()
    with pytest.raises(ValueError, match="not both"):
        async with open_lean_sender(concurrency=1, client=client, endpoint_url="http://127.0.0.1:9"):
            pass


async def test_an_aiobotocore_client_is_refused(aws_env: dict[str, str]) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("dynamodb") as aio_client:
        with pytest.raises(TypeError, match="sync botocore client"):
            async with open_lean_sender(concurrency=1, client=aio_client):
                pass
