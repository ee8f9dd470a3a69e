"""Handlers the Lambda emulator's own tests host (tests/integration/test_lambda_emulator.py).

Importing this module sleeps ``S3DDB_TEST_INIT_SLEEP_S`` seconds: a stand-in for a slow init phase
(the emulator must not count it against the function timeout, and must kill an absurdly slow one).
"""

from __future__ import annotations

import os
import time
from typing import Any

time.sleep(float(os.environ.get("S3DDB_TEST_INIT_SLEEP_S", "0") or 0))


def context_fields(event: Any, context: Any) -> dict[str, Any]:
    return {
        "event": event,
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def fail(event: Any, context: Any) -> None:
    raise ValueError(f"boom in {context.aws_request_id}")
