"""Settings come from the environment in one place, and check themselves."""

from __future__ import annotations

import pytest

from lambda_src.settings import Settings
from loader.errors import ConfigError


def test_defaults_need_only_the_ledger() -> None:
    s = Settings.from_env({"S3DDB_LEDGER_TABLE": "ledger"})
    assert (s.ledger_table, s.table, s.concurrency, s.max_hops, s.max_chains) == ("ledger", None, 40, 50, 4)
    assert s.bucket_allowed("any") and s.table_allowed("any")


def test_every_variable_is_read() -> None:
    s = Settings.from_env(
        {
            "S3DDB_LEDGER_TABLE": "l",
            "S3DDB_TABLE": "t",
            "S3DDB_SCHEMA": '{"columns": {"n": "N"}}',
            "S3DDB_CONCURRENCY": "8",
            "S3DDB_MAX_WCU": "500",
            "S3DDB_REJECTS": "s3://r/p/",
            "S3DDB_MAX_HOPS": "3",
            "S3DDB_SAFETY_MARGIN_MS": "2500",
            "S3DDB_ALLOWED_BUCKETS": "a, b ,",
            "S3DDB_ALLOWED_TABLES": "t",
            "S3DDB_MAX_CHAINS": "2",
            "S3DDB_CHECKPOINT_INTERVAL": "1.5",
            "S3DDB_CHUNK_BYTES": "8192",
            "S3DDB_SENDER": "Botocore",
        }
    )
    assert s.sender == "botocore"
    assert Settings.from_env({"S3DDB_LEDGER_TABLE": "l"}).sender == "lean"
    assert s.table == "t" and s.schema == '{"columns": {"n": "N"}}' and s.rejects == "s3://r/p/"
    assert (s.concurrency, s.max_wcu, s.max_hops, s.safety_margin_ms, s.max_chains) == (8, 500.0, 3, 2500, 2)
    assert (s.checkpoint_interval_s, s.chunk_bytes) == (1.5, 8192)
    assert s.allowed_buckets == frozenset({"a", "b"})
    assert s.bucket_allowed("a") and not s.bucket_allowed("c")
    assert s.table_allowed("t") and not s.table_allowed("u")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "S3DDB_LEDGER_TABLE"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_CONCURRENCY": "many"}, "not an integer"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_CONCURRENCY": "0"}, "S3DDB_CONCURRENCY"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_MAX_HOPS": "0"}, "S3DDB_MAX_HOPS"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_MAX_WCU": "-1"}, "S3DDB_MAX_WCU"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_MAX_WCU": "nan"}, "S3DDB_MAX_WCU='nan' must be a finite number"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_MAX_WCU": "inf"}, "S3DDB_MAX_WCU='inf' must be a finite number"),
        (
            {"S3DDB_LEDGER_TABLE": "l", "S3DDB_MAX_WCU": "-Infinity"},
            "S3DDB_MAX_WCU='-Infinity' must be a finite",
        ),
        (
            {"S3DDB_LEDGER_TABLE": "l", "S3DDB_CHECKPOINT_INTERVAL": "NaN"},
            "S3DDB_CHECKPOINT_INTERVAL='NaN' must be",
        ),
        (
            {"S3DDB_LEDGER_TABLE": "l", "S3DDB_CHECKPOINT_INTERVAL": "inf"},
            "S3DDB_CHECKPOINT_INTERVAL='inf' must be",
        ),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_SAFETY_MARGIN_MS": "-5"}, "S3DDB_SAFETY_MARGIN_MS"),
        ({"S3DDB_LEDGER_TABLE": "l", "S3DDB_SENDER": "boto"}, "S3DDB_SENDER must be lean or botocore"),
    ],
)
def test_bad_values_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen_and_keyword_only() -> None:
    s = Settings(ledger_table="l")
    with pytest.raises(AttributeError):
        s.max_hops = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Settings("l")  # type: ignore[misc]
