"""Waiting for a condition that has no event to watch: poll it until it holds or time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(probe: Callable[[], T], *, timeout_s: float, interval_s: float) -> T | None:
    """Call `probe` every `interval_s` until it returns something truthy, and return that;
    None when `timeout_s` passed first. The probe runs at least once."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)
