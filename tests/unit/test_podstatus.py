"""The one exit-code rule (bridge.kubernetes.podstatus): attach and the collector both use it."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.kubernetes.podstatus import EXIT_LOST, Termination, job_termination


def pod(phase: str, *containers: tuple[str, dict[str, Any]], reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase,
                              "containerStatuses": [{"name": name, "state": state} for name, state in containers]}
    if reason:
        status["reason"] = reason
    return {"status": status}


def ended(code: int | None, reason: str = "") -> dict[str, Any]:
    terminated: dict[str, Any] = {"reason": reason}
    if code is not None:
        terminated["exitCode"] = code
    return {"terminated": terminated}


@pytest.mark.parametrize(("case", "expected"), [
    (pod("Running", ("job", {"running": {}})), None),
    (pod("Pending"), None),
    (pod("Succeeded", ("job", ended(0, "Completed"))), Termination(0, "Completed")),
    (pod("Failed", ("job", ended(5, "Error"))), Termination(5, "Error")),
    (pod("Failed", ("job", ended(137, "OOMKilled"))), Termination(137, "OOMKilled")),
    (pod("Failed", ("job", ended(None, "Error"))), Termination(EXIT_LOST, "Error")),
    # A sidecar's end says nothing about the job.
    (pod("Failed", ("sidecar", ended(0, "Completed")), ("job", ended(3, "Error"))), Termination(3, "Error")),
    (pod("Running", ("sidecar", ended(0, "Completed")), ("job", {"running": {}})), None),
    # Ended without a container status: the phase decides.
    (pod("Succeeded"), Termination(0, "Succeeded")),
    (pod("Failed", reason="DeadlineExceeded"), Termination(EXIT_LOST, "DeadlineExceeded")),
    (pod("Failed", reason="Evicted"), Termination(EXIT_LOST, "Evicted")),
    ({}, None),
])
def test_one_rule_for_how_the_job_ended(case: dict[str, Any], expected: Termination | None) -> None:
    assert job_termination(case) == expected
