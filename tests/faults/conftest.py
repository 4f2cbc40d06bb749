"""Faults injected into the real sandbox: a daemon stopped or killed mid-job, then brought back.
Every test restores the sandbox (`skbridge sandbox up` is idempotent) before it ends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.sandbox import manager
from bridge.sandbox.procs import Daemons
from tests.conftest import Sandbox
from tests.jobs.conftest import jobs  # noqa: F401


@pytest.fixture
def stop_daemon(sandbox: Sandbox) -> Iterator[Callable[[str], None]]:
    """Stop a sandbox daemon now; it (and anything else down) is started again afterwards."""

    def stop(name: str) -> None:
        assert Daemons(sandbox.layout).stop(name), f"{name} was not running"

    yield stop
    manager.up(sandbox.layout, lambda message: None)


def restart(sandbox: Sandbox, *, fresh_informers: bool = False) -> None:
    """Start whatever is down again. After the API server itself was down, the scheduler and
    the controller-manager may serve from stale caches for tens of seconds (their watches
    back off before they list again): `fresh_informers` restarts them too, so the next test
    meets a settled cluster rather than a requeue it did not cause."""
    manager.up(sandbox.layout, lambda message: None)
    if fresh_informers:
        daemons = Daemons(sandbox.layout)
        for name in ("kube-scheduler", "kube-controller-manager"):
            daemons.stop(name)
        manager.up(sandbox.layout, lambda message: None)


def log_events(log_text: str, component: str, event: str) -> list[dict[str, Any]]:
    """The JSON lines of a watcher or hooks log in which `component` logged `event`."""
    found = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("component") == component and entry.get("event") == event:
            found.append(entry)
    return found
