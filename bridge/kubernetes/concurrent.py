"""Independent API calls side by side.

Every create is one round trip through the API server and etcd; on the allocation path the
prolog's objects mostly do not depend on each other, so they go out together instead of
one after another. The official client's connection pool serves the threads.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

MAX_IN_FLIGHT = 8


def run_concurrently(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call to its end, then raise the first failure (in call order) if any.

    Waiting for all of them, not just the first failure, matters: a caller that cleans up
    after an error must know everything that was made, including by the calls still running.
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(MAX_IN_FLIGHT, len(calls))) as pool:
        # Each call in a copy of the caller's context: log lines keep their bound job_id and pod.
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]
