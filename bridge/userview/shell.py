"""`skbridge shell`: a batch job that only keeps its Pod alive, found again once it runs.

Interactive allocations (salloc, srun) are refused for lab users (bridge/jobfile/routing.py:
they would run on the bare host), so the shell takes the batch road: a job named
`INTERACTIVE_JOB_NAME` whose script waits until it is cancelled or reaches its time limit.
That name makes the prolog add `create` on `pods/exec` of the job's own Pod to the job's
credential (bridge/kubernetes/access.py), which `skbridge shell` then uses from the
results folder: the user holds no Kubernetes rights of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import PermanentError, TemporaryError
from bridge.settings import Settings
from bridge.userview.pod import credential, read_pod
from bridge.userview.queue import SlurmJob, find_job
from bridge.userview.results import STATUS_FILE, job_results_dir, read_json
from bridge.userview.status import pod_name_of

# bridge.kubernetes.access.INTERACTIVE_JOB_NAME (a test checks they agree); not imported, as
# that module loads the Kubernetes client before the job is even queued.
INTERACTIVE_JOB_NAME = "skbridge-shell"


@dataclass(frozen=True)
class ShellRequest:
    """What the user asked for; None leaves Slurm's (and the site's) default."""

    gpus: str | None = None
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None
    image: str | None = None
    partition: str | None = None


def shell_script(request: ShellRequest) -> str:
    """The job file. Its output goes to /dev/null: the session itself is the output.

    Bash waits on a background sleep rather than exec'ing it: as the container's first
    process, a sleep would ignore SIGTERM and hold the Pod for the whole grace period.
    """
    sbatch = [f"--job-name={INTERACTIVE_JOB_NAME}", "--output=/dev/null"]
    for option, value in (("gpus", request.gpus), ("cpus-per-task", request.cpus), ("mem", request.mem),
                          ("time", request.time), ("partition", request.partition)):
        if value is not None:
            sbatch.append(f"--{option}={value}")
    for value in sbatch:
        if any(ch.isspace() for ch in value):
            raise PermanentError(f"{value!r}: a value must not contain spaces")
    lines = ["#!/bin/bash", *(f"#SBATCH {item}" for item in sbatch)]
    if request.image:
        if any(ch.isspace() for ch in request.image):
            raise PermanentError(f"--image {request.image!r}: an image name has no spaces")
        lines.append(f"#K8S_IMAGE={request.image}")
    lines += ["# skbridge shell: keeps the Pod alive until the shell ends (scancel) or the time limit.",
              "trap 'exit 0' TERM INT", "sleep infinity &", "wait $!", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class ShellTarget:
    job: SlurmJob
    kubeconfig: Path
    namespace: str
    pod: str


class JobEndedEarly(PermanentError):
    """The job ended (refused by the prolog, cancelled, failed) before its Pod ran."""


def wait_shell_pod(settings: Settings, job_id: str, *, on_poll: Callable[[SlurmJob, str | None], None],
                   poll_s: float = 0.5, timeout_s: float | None = None) -> ShellTarget:
    """Until the job's Pod is Running (pending in Slurm may take any time: no limit unless given).

    `on_poll(job, pod_phase)` after each look, for the caller's spinner.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    namespace = settings.kubernetes.namespace
    while True:
        try:
            job = find_job(settings.slurm, job_id)
        except TemporaryError:
            job = None  # slurmctld busy: ask again
        phase: str | None = None
        if job is not None:
            if job.ended:
                raise JobEndedEarly(_ended_why(settings, job))
            if job.state == "RUNNING":
                job_dir = job_results_dir(settings.nas, job.user, job_id)
                path = credential(job_dir)
                if path is not None:
                    pod = pod_name_of(read_json(job_dir / STATUS_FILE), job)
                    view = read_pod(job_dir, namespace, pod)
                    phase = view.phase if view is not None else None
                    if phase == "Running":
                        return ShellTarget(job=job, kubeconfig=path, namespace=namespace, pod=pod)
            on_poll(job, phase)
        if deadline is not None and time.monotonic() >= deadline:
            raise TemporaryError(f"the shell's job {job_id} has no running Pod after {timeout_s:.0f}s")
        time.sleep(poll_s)


def _ended_why(settings: Settings, job: SlurmJob) -> str:
    """The state, and the bridge's reason from the results folder when it gave one."""
    status = read_json(job_results_dir(settings.nas, job.user, job.job_id) / STATUS_FILE) or {}
    attempts = [a for a in status.get("attempts") or [] if isinstance(a, dict)]
    reason = next((str(a["reason"]) for a in reversed(attempts) if a.get("reason")), "")
    return f"job {job.job_id} ended {job.state} before its shell started" + (f": {reason}" if reason else "")
