"""Places in the watcher for hooks at work (`slurm.hooks_at_once`), set by the hook server.

A place is for work: requests to the API server and Slurm, writing results. A hook that only
waits (for its Pod to be Ready, which may take an image pull; for objects to be gone, which
may take a container's grace period) gives its place up meanwhile and queues again after,
so a burst of jobs of an image no node holds yet does not stop every other job's prolog.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

# The place this hook holds (None: run as its own process, or a hook server without places).
hook_place: ContextVar[threading.Semaphore | None] = ContextVar("skbridge_hook_place", default=None)
# How long the hook waited for places so far, in seconds (the prolog's `hook_queue` stage).
hook_queued_s: ContextVar[float | None] = ContextVar("skbridge_hook_queued_s", default=None)


@contextlib.contextmanager
def holding_place(places: threading.Semaphore) -> Iterator[None]:
    """Wait for one of `places`, hold it for the block (the hook server's part)."""
    started = time.perf_counter()
    with places:
        hook_queued_s.set(time.perf_counter() - started)
        token = hook_place.set(places)
        try:
            yield
        finally:
            hook_place.reset(token)


@contextlib.contextmanager
def place_given_up() -> Iterator[None]:
    """Give the place up while the block only waits; queue for one again after it."""
    places = hook_place.get()
    if places is None:
        yield
        return
    places.release()
    try:
        yield
    finally:
        started = time.perf_counter()
        places.acquire()
        hook_queued_s.set((hook_queued_s.get() or 0.0) + time.perf_counter() - started)
