"""Who may run a hop (a pure decision over the ledger item), backfill lanes and backfill ids, the
self-invoke's retry, and the ledger's statuses as they are read.

The hop's deadline is tested in tests/unit/test_deadline.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from lambda_src import ledger as L
from lambda_src.chain import (
    INVOKE_ATTEMPTS,
    INVOKE_BACKOFF_BASE_S,
    INVOKE_BACKOFF_CAP_S,
    INVOKE_PERMANENT_CODES,
    InvokeFailedError,
    backfill_id,
    decide,
    invoke_with_retry,
    lane_of,
)
from lambda_src.events import LoadOptions
from lambda_src.ledger import LedgerItem
from loader.models import Counters
from loader.retry import Backoff, RetryPolicy

NOW = 1_000_000.0
#: the secret the ledger holds for the chain's current hop (hop 2)
TOKEN = "a3f1" * 8


def _item(**kw: Any) -> LedgerItem:
    base: dict[str, Any] = dict(
        object="s3://b/k",
        target="t#v",
        version="v",
        status=L.RUNNING,
        chain_id="c",
        hop=2,
        hops=3,
        claim="r1",
        handed_by="",
        lease_until=NOW + 100,
        rev=5,
        checkpoint=None,
        table="t",
        spec={"source": "s3://b/k", "table": "t"},
        token=TOKEN,
        lane=None,
        object_size=10,
        offset=0,
        counters=Counters(),
    )
    base.update(kw)
    return LedgerItem(**base)


PENDING = _item(claim=L.PENDING, handed_by="r0")


@pytest.mark.parametrize(
    ("item", "kind", "rid", "hop", "token", "action", "reclaim"),
    [
        (None, "start", "r", 0, "", "create", False),
        (None, "continue", "r", 1, TOKEN, "skip", False),
        (_item(status=L.COMPLETED), "start", "r", 0, "", "skip", False),
        (_item(status=L.COMPLETED), "continue", "r", 2, TOKEN, "skip", False),
        (_item(status=L.FAILED), "continue", "r", 2, TOKEN, "skip", False),
        (_item(status=L.STALLED, claim=L.PENDING), "start", "r", 0, "", "claim", False),
        (_item(status=L.STALLED, claim=L.PENDING), "continue", "r", 2, TOKEN, "claim", False),
        # the same S3 event again while hop 2 runs elsewhere: a duplicate
        (_item(), "start", "r2", 0, "", "skip", False),
        # Lambda retried the request that holds the claim (crash or timeout): resume
        (_item(), "continue", "r1", 2, TOKEN, "claim", True),
        # a duplicate continuation while hop 2 runs
        (_item(), "continue", "r2", 2, TOKEN, "skip", False),
        # the right token with a stale hop number (behind, or ahead of the ledger): nothing to run
        (_item(), "continue", "r2", 1, TOKEN, "skip", False),
        (_item(), "continue", "r1", 3, TOKEN, "skip", False),
        (PENDING, "continue", "r9", 1, TOKEN, "skip", False),
        (PENDING, "continue", "r9", 3, TOKEN, "skip", False),
        # handed over: the continuation with the token takes it
        (PENDING, "continue", "r9", 2, TOKEN, "claim", False),
        (PENDING, "start", "r9", 0, "", "skip", False),
        (_item(claim=L.PENDING, handed_by="r0", lease_until=NOW - 1), "start", "r9", 0, "", "claim", True),
        # a claim whose lease ran out may be taken over
        (_item(lease_until=NOW - 1), "start", "r9", 0, "", "claim", True),
    ],
)
def test_decide(
    item: LedgerItem | None, kind: Any, rid: str, hop: int, token: str, action: str, reclaim: bool
) -> None:
    d = decide(item, kind=kind, request_id=rid, now=NOW, event_hop=hop, event_token=token)
    assert (d.action, d.reclaim) == (action, reclaim), d.reason
    assert d.reason or action == "create"


WRONG = "b4e2" * 8


@pytest.mark.parametrize(
    ("item", "rid", "hop", "token"),
    [
        # a forged continuation for exactly the hop the chain waits for: refused, not claimed
        (PENDING, "r9", 2, WRONG),
        (PENDING, "r9", 2, ""),
        (PENDING, "r9", 2, TOKEN[:-1]),
        (PENDING, "r9", 2, TOKEN + "0"),
        (PENDING, "r9", 2, TOKEN.upper()),
        # whatever state the chain is in: a STALLED or expired chain is not up for grabs either
        (_item(status=L.STALLED, claim=L.PENDING), "r9", 2, WRONG),
        (_item(lease_until=NOW - 1), "r9", 2, WRONG),
        (_item(claim=L.PENDING, handed_by="r0", lease_until=NOW - 1), "r9", 2, ""),
        (_item(status=L.COMPLETED), "r9", 2, WRONG),
        (_item(status=L.FAILED, reason=f"{L.MAX_HOPS_REASON}3 reached"), "r9", 2, WRONG),
        # a chain with no token (hop 0 has not handed over yet) takes no continuation at all
        (_item(hop=0, hops=1, token=""), "r9", 0, ""),
        (_item(hop=0, hops=1, token="", claim=L.PENDING), "r9", 0, ""),
        (_item(hop=0, hops=1, token=""), "r9", 0, WRONG),
    ],
)
def test_a_continuation_without_the_ledgers_token_is_refused(
    item: LedgerItem, rid: str, hop: int, token: str
) -> None:
    d = decide(item, kind="continue", request_id=rid, now=NOW, event_hop=hop, event_token=token)
    assert d.action == "refuse", d
    assert not d.reclaim
    assert "token" in d.reason and item.chain_id in d.reason
    # the reason is logged: it must never carry either secret
    assert TOKEN not in d.reason and (not token or token not in d.reason)


OLD_TOKEN = "c5d3" * 8  # the token of hop 1, which started the request r0


@pytest.mark.parametrize("status", [L.RUNNING, L.STALLED])
def test_lambdas_retry_of_the_request_that_handed_over_takes_the_hop(status: str) -> None:
    # r0 ran hop 1 (from a continuation carrying OLD_TOKEN), handed over to hop 2 (TOKEN), then died
    # before its invoke landed (RUNNING, pending), or its invoke failed (STALLED, StalledError
    # raised): Lambda retries r0 with the very same event. The request id cannot be forged.
    item = _item(status=status, claim=L.PENDING, handed_by="r0")
    d = decide(item, kind="continue", request_id="r0", now=NOW, event_hop=1, event_token=OLD_TOKEN)
    assert d.action == "claim", d.reason
    # anyone else with that old token is still refused
    d = decide(item, kind="continue", request_id="r9", now=NOW, event_hop=1, event_token=OLD_TOKEN)
    assert d.action == "refuse"


def test_the_token_is_checked_only_for_continuations() -> None:
    # a start event (notification, lane) carries no token and needs none
    for item in (_item(), PENDING, _item(status=L.STALLED), _item(status=L.COMPLETED)):
        assert decide(item, kind="start", request_id="r9", now=NOW).action != "refuse"


def test_lanes_partition_keys_stably() -> None:
    keys = [f"p/obj-{i}.csv" for i in range(50)]
    lanes = [lane_of(k, 4) for k in keys]
    assert set(lanes) == {0, 1, 2, 3}
    assert lanes == [lane_of(k, 4) for k in keys]


def test_a_chain_failed_by_max_hops_resumes_only_for_a_start_event_with_room() -> None:
    failed = _item(status=L.FAILED, hop=1, reason=f"{L.MAX_HOPS_REASON}2 reached at offset 5 of 10")
    other = _item(status=L.FAILED, hop=1, reason="SourceError: gone")

    def action(item: LedgerItem, kind: Any, max_hops: int | None) -> str:
        return decide(
            item, kind=kind, request_id="r", now=NOW, event_hop=1, event_token=TOKEN, max_hops=max_hops
        ).action

    assert action(failed, "start", 5) == "resume"
    assert action(failed, "start", 2) == "skip"  # the same limit: it would fail again at once
    assert action(failed, "start", None) == "skip"
    assert action(failed, "continue", 5) == "skip"  # only a new event resumes, not an old continuation
    assert action(other, "start", 5) == "skip"


def test_a_backfill_id_is_derived_from_what_it_loads() -> None:
    opts = LoadOptions()
    base = backfill_id("b", "p/", "t", 4, opts)
    assert base == backfill_id("b", "p/", "t", 4, LoadOptions())
    variants = {
        backfill_id("b2", "p/", "t", 4, opts),
        backfill_id("b", "q/", "t", 4, opts),
        backfill_id("b", "p/", "t2", 4, opts),
        backfill_id("b", "p/", "t", 3, opts),
        backfill_id("b", "p/", "t", 4, LoadOptions(schema={"columns": {"n": "N"}})),
        backfill_id("b", "p/", "t", 4, LoadOptions(csv={"delimiter": ";"})),
        backfill_id("b", "p/", "t", 4, LoadOptions(on_duplicate="first")),
        # a reload is another backfill: its lanes must not stop at the first load's lanes
        backfill_id("b", "p/", "t", 4, opts, "reload-r1"),
    }
    assert base not in variants and len(variants) == 8


# -- the self-invoke's retry ---------------------------------------------------------------------


class Calls:
    """A self-invoke that fails with ``errors`` in turn, then succeeds; records each call."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)


def _client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "injected"}}, "Invoke")


def _policy(*, draws: list[float], attempts: int = INVOKE_ATTEMPTS) -> RetryPolicy:
    it = iter(draws)
    backoff = Backoff(base_s=INVOKE_BACKOFF_BASE_S, cap_s=INVOKE_BACKOFF_CAP_S, rng=lambda: next(it))
    return RetryPolicy(max_attempts=attempts, backoff=backoff, logger=logging.getLogger("test.invoke"))


def test_a_self_invoke_is_retried_with_full_jitter_and_a_line_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slept: list[float] = []
    call = Calls(_client_error("TooManyRequestsException"), RuntimeError("invoke returned status 500"))
    with caplog.at_level(logging.INFO, logger="test.invoke"):
        invoke_with_retry(
            call, policy=_policy(draws=[0.5, 0.25]), sleep=slept.append, what="self-invoke of f"
        )
    assert call.count == 3
    # each wait is a draw of [0, base * 2**n): half of 0.5 s, then a quarter of 1 s
    assert slept == pytest.approx([0.25, 0.25])
    lines = [r.getMessage() for r in caplog.records if r.name == "test.invoke"]
    assert len(lines) == 2
    assert lines[0].startswith("self-invoke of f: attempt 1/3 failed (ClientError: ")
    assert "TooManyRequestsException" in lines[0]
    assert lines[1].startswith(
        "self-invoke of f: attempt 2/3 failed (RuntimeError: invoke returned status 500)"
    )


def test_the_invoke_waits_stay_under_their_ceilings() -> None:
    slept: list[float] = []
    attempts = 6
    call = Calls(*[RuntimeError("x") for _ in range(attempts - 1)])
    invoke_with_retry(
        call, policy=_policy(draws=[1.0] * attempts, attempts=attempts), sleep=slept.append, what="w"
    )
    assert slept == pytest.approx([0.5, 1.0, 2.0, 2.0, 2.0])  # doubling from the base, to the cap


def test_a_self_invoke_gives_up_at_the_cap_with_the_last_error_attached() -> None:
    slept: list[float] = []
    last = _client_error("ServiceException")
    call = Calls(RuntimeError("first"), RuntimeError("second"), last, RuntimeError("never"))
    with pytest.raises(InvokeFailedError) as info:
        invoke_with_retry(call, policy=_policy(draws=[0.1, 0.1]), sleep=slept.append, what="self-invoke of f")
    assert call.count == 3 and len(slept) == 2
    assert info.value.__cause__ is last
    message = str(info.value)
    assert "gave up after 3/3 attempts" in message
    assert "last error: ClientError" in message and "ServiceException" in message


@pytest.mark.parametrize("code", sorted(INVOKE_PERMANENT_CODES))
def test_an_invoke_error_no_retry_changes_gives_up_at_once(code: str) -> None:
    slept: list[float] = []
    error = _client_error(code)
    call = Calls(error)
    with pytest.raises(InvokeFailedError, match=f"attempt 1/3 failed with {code}") as info:
        invoke_with_retry(call, policy=_policy(draws=[]), sleep=slept.append, what="w")
    assert (call.count, slept, info.value.__cause__) == (1, [], error)


def test_the_runner_builds_its_invoke_policy_from_what_it_is_given() -> None:
    from lambda_src.chain import ChainRunner
    from lambda_src.observability import SERVICE, Telemetry
    from lambda_src.settings import Settings

    runner = ChainRunner(
        settings=Settings(ledger_table="l"),
        ledger=None,  # type: ignore[arg-type]
        s3=None,
        lambda_client=None,
        engine=lambda _req: None,  # type: ignore[arg-type,return-value]
        telemetry=Telemetry(),
        sleep=lambda _s: None,
        rng=lambda: 0.5,
        invoke_attempts=5,
    )
    assert runner.invoke_attempts == runner.invoke_retry.max_attempts == 5
    assert runner.invoke_retry.backoff.delay(1) == pytest.approx(0.5 * 2 * INVOKE_BACKOFF_BASE_S)
    # its attempt lines go to the function's log, with the keys bound to it (chain, hop)
    assert runner.t.logger.name == SERVICE


# -- statuses are checked when a ledger item is read -----------------------------------------------


def _wire(status: str | None) -> dict[str, Any]:
    raw: dict[str, Any] = {"object": {"S": "s3://b/k"}, "target": {"S": "t#v"}, "hop": {"N": "0"}}
    if status is not None:
        raw["status"] = {"S": status}
    return raw


@pytest.mark.parametrize("status", ["RUNNING", "COMPLETED", "FAILED", "STALLED"])
def test_a_known_status_is_read_as_the_enum(status: str) -> None:
    item = LedgerItem.from_wire(_wire(status))
    assert item.status is L.ChainStatus(status)
    assert item.status == status and item.to_status(0)["status"] == status
    assert type(item.to_status(0)["status"]) is str


@pytest.mark.parametrize("status", ["PAUSED", "running", "", None])
def test_an_unknown_status_in_the_ledger_is_an_error_that_says_so(status: str | None) -> None:
    with pytest.raises(L.LedgerError, match="unknown status") as info:
        LedgerItem.from_wire(_wire(status))
    message = str(info.value)
    assert repr(status) in message and "s3://b/k" in message and "t#v" in message
    assert "RUNNING, COMPLETED, FAILED, STALLED" in message


def test_the_statuses_keep_their_wire_strings() -> None:
    assert [s.value for s in L.ChainStatus] == ["RUNNING", "COMPLETED", "FAILED", "STALLED"]
    assert (L.RUNNING, L.COMPLETED, L.FAILED, L.STALLED) == ("RUNNING", "COMPLETED", "FAILED", "STALLED")
    assert f"chain {L.COMPLETED}" == "chain COMPLETED"
    assert [s for s in L.ChainStatus if s.finished] == [L.COMPLETED, L.FAILED]
