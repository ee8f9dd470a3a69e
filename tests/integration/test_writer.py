"""The writer against DynamoDB Local, through the fault proxy, over the real aiobotocore client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from loader.clients import describe_key_schema, dynamodb_client, dynamodb_client_config, open_dynamodb_sender
from loader.config import LoadConfig
from loader.errors import ConfigError, ThrottledError, TransientSendError, WriteFailedError
from loader.models import Batch, Entry, KeySchema
from loader.sender import BatchSender
from loader.writer import BatchOutcome, Writer
from tests.support.aws import scan_all
from tests.support.faultproxy import FaultProxy

KEYS = KeySchema(partition="pk", partition_type="S")


@pytest.fixture
def proxy(aws_env: dict[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"]) as p:
        yield p


@pytest.fixture
async def sender(proxy: FaultProxy) -> AsyncIterator[BatchSender]:
    async with open_dynamodb_sender(
        concurrency=8, binary_attrs=frozenset({"b", "bs"}), endpoint_url=proxy.url
    ) as s:
        yield s


def _entry(pk: str, n: int, *, value: str | None = None, **extra: Any) -> Entry:
    item: dict[str, Any] = {"pk": {"S": pk}, "v": {"S": value if value is not None else f"v{n}"}}
    item.update(extra)
    return Entry(item=item, key=(pk,), size=len(pk) + 40, number=n, offset=n * 16, raw=f"{pk},{n}")


def _batches(entries: list[Entry], size: int = 25, first_seq: int = 0) -> list[Batch]:
    return [
        Batch(seq=first_seq + i, entries=entries[j : j + size], nbytes=0)
        for i, j in enumerate(range(0, len(entries), size))
    ]


def _config(table: str, **kw: Any) -> LoadConfig:
    kw.setdefault("concurrency", 8)
    return LoadConfig(table=table, backoff_base_s=0.001, backoff_cap_s=0.01, **kw)


async def _run(
    sender: BatchSender, table: str, batches: list[Batch], *, key_schema: KeySchema | None = KEYS, **kw: Any
) -> tuple[Writer, list[BatchOutcome]]:
    outcomes: list[BatchOutcome] = []
    writer = Writer(
        sender=sender,
        table=table,
        config=_config(table, **kw),
        on_done=outcomes.append,
        key_schema=key_schema,
    )
    for batch in batches:
        await writer.submit(batch)
    await writer.drain()
    assert writer.inflight == 0
    outcomes.sort(key=lambda o: o.seq)
    return writer, outcomes  # on_done appends to it


def _holds(body: dict[str, Any], value: str) -> bool:
    """Whether a BatchWriteItem request body puts an item whose ``v`` is ``value``."""
    reqs = [r for rs in body["RequestItems"].values() for r in rs]
    return any(r["PutRequest"]["Item"]["v"] == {"S": value} for r in reqs)


def _landed(ddb: Any, table: str) -> dict[str, str]:
    return {item["pk"]["S"]: item["v"]["S"] for item in scan_all(ddb, table)}


async def test_2000_entries_in_80_batches_land_exactly(
    sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    entries = [_entry(f"k{i:05d}", i) for i in range(2000)]
    writer, outcomes = await _run(sender, table, _batches(entries))
    assert [o.seq for o in outcomes] == list(range(80))
    assert all(o.error is None and o.rejected == [] and o.written == 25 for o in outcomes)
    assert sum(o.write_units for o in outcomes) == 2000
    assert writer.failed is None
    assert _landed(ddb, table) == {e.key[0]: e.item["v"]["S"] for e in entries}
    assert proxy.calls == 80


@pytest.mark.parametrize("key_schema", [KEYS, None], ids=["match-by-key", "match-by-item"])
async def test_unprocessed_items_and_throttles_are_retried_exactly(
    sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy, key_schema: KeySchema | None
) -> None:
    # binary values go out as bytes and come back in UnprocessedItems as base64 text again
    blob = base64.b64encode(bytes(range(7))).decode()
    bs = [base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02\x03").decode()]
    entries = [_entry(f"k{i:04d}", i, b={"B": blob}, bs={"BS": bs}) for i in range(500)]
    proxy.unprocessed_fraction(0.3, seed=7)
    proxy.throttle_next(5)
    writer, outcomes = await _run(sender, table, _batches(entries), key_schema=key_schema)
    assert all(o.error is None and o.rejected == [] for o in outcomes)
    assert sum(o.written for o in outcomes) == 500
    assert sum(o.retries for o in outcomes) > 0
    assert sum(o.throttle_events for o in outcomes) >= 5 + 1
    assert proxy.throttled == 5 and proxy.unprocessed_returned > 0
    # every item was forwarded exactly once: nothing written twice, nothing lost
    assert proxy.items_forwarded == 500
    landed = scan_all(ddb, table)
    assert {i["pk"]["S"]: i["v"]["S"] for i in landed} == {e.key[0]: e.item["v"]["S"] for e in entries}
    assert {i["b"]["B"] for i in landed} == {bytes(range(7))}
    assert {frozenset(i["bs"]["BS"]) for i in landed} == {frozenset({b"\x01", b"\x02\x03"})}
    assert writer.rate.throttle_events >= 6


@pytest.mark.parametrize("key_schema", [KEYS, None], ids=["match-by-key", "match-by-item"])
async def test_entries_that_keep_only_their_wire_bytes_are_retried_exactly(
    ddb: Any, table: str, proxy: FaultProxy, key_schema: KeySchema | None
) -> None:
    """The pipeline's lean path: an entry holds the encoded item, not its dicts; UnprocessedItems
    are matched by parsing the bytes back."""
    from loader.fastsend import LeanSender, open_lean_sender

    entries = []
    for i in range(300):
        e = _entry(f"k{i:04d}", i)
        assert e.item is not None
        entries.append(Entry(None, e.key, e.size, e.number, e.offset, e.raw, LeanSender.encode(e.item)))
    proxy.unprocessed_fraction(0.3, seed=11)
    proxy.throttle_next(3)
    async with open_lean_sender(concurrency=8, endpoint_url=proxy.url) as lean:
        _, outcomes = await _run(lean, table, _batches(entries), key_schema=key_schema)
    assert all(o.error is None and o.rejected == [] for o in outcomes)
    assert sum(o.written for o in outcomes) == 300
    assert proxy.unprocessed_returned > 0 and proxy.throttled == 3
    assert proxy.items_forwarded == 300
    assert _landed(ddb, table) == {f"k{i:04d}": f"v{i}" for i in range(300)}


async def test_transient_errors_and_resets_are_retried(
    sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    entries = [_entry(f"k{i}", i) for i in range(100)]
    proxy.fail_next(2)
    proxy.reset_next(2)
    proxy.fail_next(1, status=503)
    _, outcomes = await _run(sender, table, _batches(entries))
    assert all(o.error is None for o in outcomes)
    assert sum(o.retries for o in outcomes) == 5
    assert len(_landed(ddb, table)) == 100


@pytest.fixture(params=["botocore", "lean"])
async def either_sender(request: pytest.FixtureRequest, proxy: FaultProxy) -> AsyncIterator[BatchSender]:
    """The reference sender and the lean one, both through the proxy."""
    from loader.fastsend import open_lean_sender

    if request.param == "botocore":
        opened = open_dynamodb_sender(concurrency=8, endpoint_url=proxy.url)
    else:
        opened = open_lean_sender(concurrency=8, endpoint_url=proxy.url)
    async with opened as s:
        yield s


async def test_a_response_that_fails_its_crc32_is_a_transient_error(
    either_sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    """A damaged ``200 {"UnprocessedItems":{}}`` must not be taken as "all written"."""
    items = [_entry(f"k{i}", i).item for i in range(5)]
    proxy.corrupt_next(1)
    with pytest.raises(TransientSendError) as info:
        await either_sender.send(table, [i for i in items if i is not None])
    assert info.value.code == "CRC32Mismatch"
    assert proxy.corrupted == 1 and _landed(ddb, table) == {}


async def test_batches_whose_responses_fail_their_crc32_are_retried_and_nothing_is_lost(
    either_sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    entries = [_entry(f"k{i:04d}", i) for i in range(250)]
    proxy.corrupt_next(4)
    _, outcomes = await _run(either_sender, table, _batches(entries))
    assert all(o.error is None and o.rejected == [] for o in outcomes)
    assert sum(o.written for o in outcomes) == 250
    assert sum(o.retries for o in outcomes) == 4
    assert proxy.corrupted == 4 and proxy.items_forwarded == 250  # each item sent on exactly once
    assert _landed(ddb, table) == {e.key[0]: e.item["v"]["S"] for e in entries if e.item is not None}


async def test_one_poison_item_is_isolated_and_its_neighbours_written(
    sender: BatchSender, ddb: Any, table: str
) -> None:
    entries = [_entry(f"k{i}", i) for i in range(25)]
    entries[13] = _entry("k13", 13, tags={"SS": []})  # DynamoDB refuses an empty set
    _, [outcome] = await _run(sender, table, _batches(entries))
    assert outcome.error is None
    assert outcome.written == 24
    [reject] = outcome.rejected
    assert (reject.row, reject.offset, reject.raw) == (13, 13 * 16, "k13,13")
    assert reject.reason.startswith("DynamoDB refused the item: ")
    assert "may not be empty" in reject.reason  # the service's own message
    assert set(_landed(ddb, table)) == {f"k{i}" for i in range(25)} - {"k13"}


async def test_two_poison_items_in_one_batch_are_both_isolated(
    sender: BatchSender, ddb: Any, table: str
) -> None:
    entries = [_entry(f"k{i}", i) for i in range(25)]
    entries[2] = Entry(
        item={"pk": {"N": "2"}}, key=("2",), size=8, number=2, offset=32, raw="2"
    )  # wrong key type
    entries[20] = _entry("k20", 20, tags={"NS": []})
    _, [outcome] = await _run(sender, table, _batches(entries))
    assert outcome.written == 23
    assert sorted(r.row for r in outcome.rejected) == [2, 20]
    assert all(r.reason.startswith("DynamoDB refused the item: ") for r in outcome.rejected)
    assert set(_landed(ddb, table)) == {f"k{i}" for i in range(25)} - {"k2", "k20"}


@pytest.mark.parametrize("round_", range(3))
async def test_a_key_is_written_in_batch_order(
    sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy, round_: int
) -> None:
    # The first batch holding "same" is throttled a few times; the second would overtake it
    # (and the table would end with the OLD value) unless the writer holds it back.
    first = [_entry("same", 0, value="old")] + [_entry(f"a{i}", i) for i in range(1, 25)]
    second = [_entry(f"b{i}", i) for i in range(24)] + [_entry("same", 99, value="new")]
    third = [_entry(f"c{i}", i) for i in range(25)]  # unrelated: must not wait
    proxy.throttle_next(3 + round_, when=lambda body: _holds(body, "old"))
    batches = [Batch(seq=0, entries=first, nbytes=0), Batch(seq=1, entries=second, nbytes=0)]
    batches.append(Batch(seq=2, entries=third, nbytes=0))
    _, outcomes = await _run(sender, table, batches)
    assert all(o.error is None for o in outcomes)
    assert outcomes[0].throttle_events == 3 + round_
    assert _landed(ddb, table)["same"] == "new"
    assert len(_landed(ddb, table)) == 74


async def test_keys_held_by_several_batches_are_released_when_they_finish(
    sender: BatchSender, ddb: Any, table: str, proxy: FaultProxy
) -> None:
    # four batches in a row hold "same"; the first is throttled, so each later one waits for the one
    # before. When all are done no key is held any more: a fifth batch with "same", submitted
    # after, is written (a key left held by a finished batch would make it wait on nothing).
    batches = [
        Batch(
            seq=s,
            entries=[_entry("same", s, value=f"v{s}")] + [_entry(f"u{s}-{i}", i) for i in range(5)],
            nbytes=0,
        )
        for s in range(4)
    ]
    proxy.throttle_next(2, when=lambda body: _holds(body, "v0"))
    outcomes: list[BatchOutcome] = []
    writer = Writer(
        sender=sender, table=table, config=_config(table), on_done=outcomes.append, key_schema=KEYS
    )
    for batch in batches:
        await writer.submit(batch)
    await writer.drain()
    assert _landed(ddb, table)["same"] == "v3"
    assert writer._owner == {}
    await writer.submit(Batch(seq=4, entries=[_entry("same", 4, value="v4")], nbytes=0))
    await writer.drain()
    assert [o.error for o in outcomes] == [None] * 5
    assert _landed(ddb, table)["same"] == "v4"
    assert writer._owner == {}


async def test_retry_cap_fails_the_batch_with_the_last_error(
    sender: BatchSender, table: str, proxy: FaultProxy
) -> None:
    proxy.throttle_next(100)
    writer, outcomes = await _run(sender, table, _batches([_entry("k", 1)]), max_attempts=3)
    outcome = outcomes[0]
    assert isinstance(outcome.error, WriteFailedError)
    assert isinstance(outcome.error.__cause__, ThrottledError)
    assert outcome.error.__cause__.code == "ProvisionedThroughputExceededException"
    assert "3/3" in str(outcome.error)
    assert outcome.written == 0 and outcome.retries == 2
    assert proxy.throttled == 3
    assert writer.failed is outcome.error
    # a stopped writer sends nothing more, but still hands every batch back
    await writer.submit(Batch(seq=5, entries=[_entry("x", 5)], nbytes=0))
    [_, refused] = outcomes
    assert isinstance(refused.error, WriteFailedError) and refused.error.__cause__ is writer.failed
    assert refused.written == 0 and proxy.calls == 3


async def test_a_missing_table_stops_the_load_at_once(sender: BatchSender, proxy: FaultProxy) -> None:
    table = "s3ddb-no-such-table"
    writer, outcomes = await _run(sender, table, _batches([_entry(f"k{i}", i) for i in range(50)]))
    assert all(o.written == 0 for o in outcomes)
    assert isinstance(writer.failed, ConfigError)
    assert "does not exist" in str(writer.failed)
    assert proxy.calls <= 2  # never retried


# -- the client factory -------------------------------------------------------------------


def test_describe_key_schema(table_factory: Any) -> None:
    name = table_factory(pk=("id", "S"), sk=("ts", "N"))
    keys = describe_key_schema(dynamodb_client(), name)
    assert keys == KeySchema(partition="id", partition_type="S", sort="ts", sort_type="N")


def test_describe_key_schema_names_a_missing_table(aws_env: dict[str, str]) -> None:
    with pytest.raises(
        ConfigError, match=r"table 's3ddb-no-such-table' does not exist in us-east-1 \(endpoint"
    ):
        describe_key_schema(dynamodb_client(), "s3ddb-no-such-table")


def test_hot_path_client_config() -> None:
    cfg = dynamodb_client_config(40)
    assert cfg.max_pool_connections >= 40
    assert cfg.parameter_validation is False
    assert cfg.retries == {"total_max_attempts": 1, "mode": "standard"}
