"""What the hooks tell the job history: allocated, Pod ready, requeued, rejected, ended, collected.

Every call goes through bridge.history.record, which never raises: the hooks' own work and
exit codes do not depend on the history.
"""

from __future__ import annotations

import time
from typing import Any

from bridge.collect.results import results_dir
from bridge.history.record import record_job
from bridge.history.store import FINAL_STATES
from bridge.settings import Settings
from bridge.slurm.jobinfo import JobAllocation


def _key(allocation: JobAllocation) -> str:
    """The job as squeue, sacct and its results folder name it: `12345_3` for an array task."""
    return allocation.results_name


def _facts(settings: Settings, allocation: JobAllocation) -> dict[str, Any]:
    node = allocation.nodes[0] if allocation.nodes else None
    return {"uid": allocation.uid, "user": allocation.user, "name": allocation.name or None,
            "partition": allocation.partition or None, "submit_time": allocation.submit_time or None,
            "gpus": node.gpus if node else None, "node": node.node if node else None,
            "results_dir": str(results_dir(settings.nas, allocation.user, allocation.results_name))}


def allocated(settings: Settings, allocation: JobAllocation) -> None:
    """The prolog took the job: Slurm shows it running from here on (the Pod is being made)."""
    record_job(settings, _key(allocation), state="RUNNING", event="allocated",
               detail=f"attempt {allocation.restart_count}", start_time=allocation.start_time or time.time(),
               **_facts(settings, allocation))


def prolog_noted(settings: Settings, allocation: JobAllocation, state: str, reason: str, pod: str | None) -> None:
    """The prolog's verdict on this attempt, as root's job record has it."""
    if state == "running":
        record_job(settings, _key(allocation), state="RUNNING", event="pod ready", detail=pod)
    elif state == "requeued":
        # Back in the queue: the only step backwards a job takes.
        record_job(settings, _key(allocation), state="PENDING", force_state=True, event="requeued", detail=reason)
    elif state == "rejected":
        record_job(settings, _key(allocation), event="rejected", detail=reason)


def _exit_pair(text: str) -> tuple[int | None, int | None]:
    code, _, signal = text.partition(":")
    return (int(code) if code.isdigit() else None, int(signal) if signal.isdigit() else None)


def ended(settings: Settings, allocation: JobAllocation) -> None:
    """The epilog runs: the job ended. While its epilog runs Slurm shows it COMPLETING; the
    service settles the final state from Slurm's word on its next listing."""
    code, signal = _exit_pair(allocation.exit_code)
    state = allocation.state if allocation.state in FINAL_STATES else "COMPLETING"
    record_job(settings, _key(allocation), state=state, event="ended",
               detail=f"exit code {allocation.exit_code}" if allocation.exit_code else None,
               end_time=time.time(), exit_code=code, signal=signal, **_facts(settings, allocation))


def collected(settings: Settings, allocation: JobAllocation, *, failure: str | None = None) -> None:
    if failure is None:
        record_job(settings, _key(allocation), event="collected",
                   detail=str(results_dir(settings.nas, allocation.user, allocation.results_name)))
    else:
        record_job(settings, _key(allocation), event="collect failed", detail=failure)
