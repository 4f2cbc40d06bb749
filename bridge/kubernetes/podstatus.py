"""What a job's Pod says about how the job ended: one rule for `attach` (the exit code Slurm
and sacct record) and for the collector (summary.json), so the two can never disagree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JOB_CONTAINER = "job"
TERMINAL_PHASES = ("Succeeded", "Failed")
EXIT_LOST = 1  # the Pod ended (or vanished) without its container saying how


@dataclass(frozen=True)
class Termination:
    exit_code: int
    reason: str  # the runtime's word: Completed, Error, OOMKilled, DeadlineExceeded, ...


def job_termination(pod: dict[str, Any]) -> Termination | None:
    """How the job's container ended, or None while the Pod has not ended.

    The container named `job` counts (a template may add sidecars); a Pod that ended without
    a terminated container status (evicted, deadline, deleted node) has the phase's code:
    0 for Succeeded, EXIT_LOST otherwise.
    """
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    for container in containers:
        if container.get("name") == JOB_CONTAINER or len(containers) == 1:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated is not None:
                code = terminated.get("exitCode")
                return Termination(int(code) if code is not None else EXIT_LOST, str(terminated.get("reason") or ""))
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        return Termination(0 if phase == "Succeeded" else EXIT_LOST, str(status.get("reason") or phase))
    return None
