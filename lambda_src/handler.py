"""The Lambda entry point: ``lambda_src.handler.handler``.

Cheap to import outside Lambda (no AWS SDK at import time). In a Lambda execution environment
(``AWS_LAMBDA_FUNCTION_NAME`` set) the import builds the settings, the clients, the telemetry and
a long-lived event loop: that is the init phase, which does not count against the first
invocation's timeout; later invocations reuse them (the DynamoDB sender is opened on first use).
Events, chains and the ledger are in ``events``, ``chain`` and ``ledger``; this module only wires
them to the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambda_src.chain import ChainRunner, HopRequest, InvocationContext, LambdaContext
from lambda_src.deadline import InvokeEstimate
from lambda_src.events import EventError
from lambda_src.outcome import Refused
from lambda_src.settings import Settings

if TYPE_CHECKING:
    import asyncio
    import contextlib

    from lambda_src.observability import Telemetry
    from lambda_src.outcome import HopOutcome
    from loader.models import KeySchema, RunResult
    from loader.sender import BatchSender

__all__ = ["handler", "lambda_client_config"]

#: The self-invoke is bounded so the deadline's margin can hold it: one HTTP attempt per call (the
#: chain retries the call itself, ``ChainRunner.invoke_retry``), short connect/read timeouts (an
#: async invoke answers 202 at once). botocore's default retries made one failing invoke take 15 s.
INVOKE_CONNECT_TIMEOUT_S = 2
INVOKE_READ_TIMEOUT_S = 5


class _Container:
    """What one Lambda container keeps between invocations."""

    def __init__(self) -> None:
        import asyncio
        import contextlib

        from lambda_src.ledger import Ledger
        from lambda_src.observability import Telemetry
        from loader import clients

        self.settings = Settings.from_env()
        self.telemetry: Telemetry = Telemetry()
        session = clients.session()  # one for every client (see clients.session)
        self.s3 = clients.s3_client(session)
        self.ddb = clients.dynamodb_client(session)
        self.lambda_client = _lambda_client(session)
        self.ledger = Ledger(self.ddb, self.settings.ledger_table)
        self.invoke_estimate = InvokeEstimate()
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency
            self.loop = asyncio.new_event_loop()
        self._stack: contextlib.AsyncExitStack = contextlib.AsyncExitStack()
        self._senders: dict[frozenset[str], BatchSender] = {}
        self._keys: dict[str, KeySchema] = {}
        self._closed = False
        import atexit

        atexit.register(self.close)

    def close(self) -> None:
        """Close the senders' HTTP sessions and the loop (at process exit: no unclosed sessions)."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.loop.is_closed():
                self.loop.run_until_complete(self._stack.aclose())
        finally:
            self._senders.clear()
            if not self.loop.is_closed():
                self.loop.close()

    # -- per-container caches ------------------------------------------------------------------

    def keys(self, table: str) -> KeySchema:
        if table not in self._keys:
            from loader.clients import describe_key_schema

            self._keys[table] = describe_key_schema(self.ddb, table)
        return self._keys[table]

    async def sender(self, binary_attrs: frozenset[str]) -> BatchSender:
        """The container's sender: the lean one (it sends binary as the base64 text it has, so one
        serves every schema), or aiobotocore (one per set of binary attributes) with S3DDB_SENDER."""
        key = binary_attrs if self.settings.sender == "botocore" else frozenset()
        if key not in self._senders:
            from loader.clients import open_sender

            opened = open_sender(
                self.settings.sender, concurrency=self.settings.concurrency, ddb=self.ddb, binary_attrs=key
            )
            self._senders[key] = await self._stack.enter_async_context(opened)
            self.telemetry.log.info(f"writing with the {self.settings.sender} sender")
        return self._senders[key]

    # -- the engine ----------------------------------------------------------------------------

    def run_engine(self, req: HopRequest) -> RunResult:
        return self.loop.run_until_complete(self._run(req))

    async def _run(self, req: HopRequest) -> RunResult:
        import asyncio

        from loader import spec as load_spec
        from loader.schema import binary_attributes

        keys = self.keys(req.spec.table)
        sender = await self.sender(binary_attributes(req.spec.schema, keys))

        async def on_checkpoint(cp: Any) -> None:
            await asyncio.to_thread(req.on_checkpoint, cp)

        return await load_spec.run(
            req.spec,
            keys=keys,
            sender=sender,
            run_id=req.run_id,
            s3_client=self.s3,
            knobs=load_spec.RunKnobs(
                checkpoint_interval_s=self.settings.checkpoint_interval_s,
                chunk_bytes=self.settings.chunk_bytes,
                max_rejects=req.max_rejects,
                write_budget=req.write_budget,
            ),
            should_stop=req.should_stop,
            resume=req.resume,
            on_checkpoint=on_checkpoint,
            on_progress=req.on_progress,
            pin_into_checkpoints=False,  # the ledger item holds the pinned spec
        )


def lambda_client_config() -> Any:
    """The botocore config of the self-invoke client (see ``INVOKE_*``)."""
    import botocore.config

    return botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=INVOKE_CONNECT_TIMEOUT_S,
        read_timeout=INVOKE_READ_TIMEOUT_S,
    )


def _lambda_client(session: Any | None = None) -> Any:
    import boto3

    return (session or boto3.session.Session()).client("lambda", config=lambda_client_config())


_CONTAINER: _Container | None = None


def _container() -> _Container:
    global _CONTAINER
    if _CONTAINER is None:
        _CONTAINER = _Container()
    return _CONTAINER


def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Events in (S3 / EventBridge / backfill / lane / continue), hops run, a result dict out.

    The answer is the invocation's ``lambda_src.outcome.HopOutcome`` as JSON (``to_dict``).
    Answers ``{"status": "refused", "reason": ...}`` for an event it does not accept (logged, counted
    as InvalidEvents), raises StalledError when a continuation could not
    be sent (the ledger says STALLED; Lambda's retry resumes), and lets transient failures raise so
    Lambda retries the same request (which resumes from the ledger's last committed checkpoint).
    """
    c = _container()
    ctx = InvocationContext.from_lambda(context)
    c.telemetry.start(request_id=ctx.request_id)
    runner = ChainRunner(
        settings=c.settings,
        ledger=c.ledger,
        s3=c.s3,
        lambda_client=c.lambda_client,
        engine=c.run_engine,
        telemetry=c.telemetry,
        invoke_estimate=c.invoke_estimate,
    )
    answer: HopOutcome
    try:
        answer = runner.outcome(event, ctx)
    except EventError as exc:
        # answered, not raised: no retry can change an event, and a backfill's sender reads why
        c.telemetry.log.error(f"invalid event: {exc}")
        c.telemetry.count("InvalidEvents")
        answer = Refused(reason=f"invalid event: {exc}")
    except Exception:
        c.telemetry.log.exception("invocation failed")
        raise
    finally:
        c.telemetry.flush()
    return answer.to_dict()


def _init_in_lambda() -> None:
    """In a Lambda execution environment, build the container at import: that is the init phase,
    which has its own time limit and does not count against the first invocation's timeout. A
    failure here (bad settings) is left for the first invocation to raise with its event."""
    import os

    global _CONTAINER
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get("S3DDB_EAGER_INIT", "1") != "0":
        try:
            _container()
        except Exception:
            _CONTAINER = None


_init_in_lambda()
