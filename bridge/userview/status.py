"""One job's whole story for its user: Slurm's state, the Pod, a timeline, where output and results are."""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import PermanentError
from bridge.settings import Settings
from bridge.userview.fields import iso, parse_time
from bridge.userview.pod import read_pod
from bridge.userview.queue import SlurmJob, find_job, queue_position
from bridge.userview.reasons import plain_reason
from bridge.userview.results import STATUS_FILE, SUMMARY_FILE, job_results_dir, read_json


class NotYourJob(PermanentError):
    """The job exists but belongs to someone else: nothing about it is shown."""


class NoSuchJob(PermanentError):
    """Slurm knows no job of that id (neither queued nor in accounting)."""


def caller() -> tuple[int, str]:
    uid = os.getuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError as exc:
        raise PermanentError(f"uid {uid} has no account name on this host") from exc


def own_job(settings: Settings, job_id: str) -> SlurmJob:
    """The job, if it is the caller's (root may look at any); NotYourJob / NoSuchJob otherwise."""
    job = find_job(settings.slurm, job_id)
    if job is None:
        raise NoSuchJob(f"job {job_id} is not known to Slurm (never submitted, or too old for accounting)")
    uid, _name = caller()
    if uid not in (0, job.uid):
        raise NotYourJob(f"job {job_id} is not one of your jobs: you can only see and act on your own")
    return job


def pod_name_of(status_file: dict[str, Any] | None, job: SlurmJob) -> str:
    attempts = (status_file or {}).get("attempts") or []
    for attempt in reversed(attempts):
        if isinstance(attempt, dict) and attempt.get("pod"):
            return str(attempt["pod"])
    return f"skb-{job.job_id}-r{job.restart_count}"  # bridge.kubernetes.render.ObjectNames.for_attempt


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def job_status(settings: Settings, job_id: str, *, job: SlurmJob | None = None) -> dict[str, Any]:
    """Everything `skbridge status` shows, JSON-ready. A bounded number of calls: squeue (or
    sacct), one squeue for the queue place of a pending job, one Pod GET with the job's token.

    Without `job`, the job is looked up and must be the calling process's (`own_job`); a caller
    that has found and authorised it already (the web service, for its client) passes it in.
    """
    if job is None:
        job = own_job(settings, job_id)
    job_dir = job_results_dir(settings.nas, job.user, job.job_id)
    bridge_status = read_json(job_dir / STATUS_FILE)
    summary = read_json(job_dir / SUMMARY_FILE)
    pod_name = pod_name_of(bridge_status, job)
    attempts = [a for a in (bridge_status or {}).get("attempts") or [] if isinstance(a, dict)]
    running = next((a for a in reversed(attempts) if a.get("state") == "running"), {})

    pod: dict[str, Any] = {"name": pod_name, "phase": None, "ready_at": None, "source": None}
    if not job.ended and not job.pending:
        view = read_pod(job_dir, settings.kubernetes.namespace, pod_name)
        if view is not None:
            pod.update(phase=view.phase if view.exists else "Gone", ready_at=view.ready_at, source="kubernetes")
            if view.error:
                pod["note"] = view.error
    if pod["source"] is None and summary is not None:
        pod.update(phase=summary.get("pod_phase"), ready_at=summary.get("pod_start_time"), source="summary.json")
    if pod["source"] is None and bridge_status is not None:
        pod.update(phase={"running": "Running", "rejected": "never created"}.get(str(bridge_status.get("state")),
                                                                                 bridge_status.get("state")),
                   source=STATUS_FILE)
    # The live Pod's Ready condition, else the moment the prolog saw it Ready (bridge-status.json),
    # else the collected Pod's start time.
    live_ready = parse_time(str(pod["ready_at"] or "")) if pod["source"] == "kubernetes" else None
    ready = live_ready or _epoch(running.get("time")) or parse_time(str(pod["ready_at"] or ""))

    gpus = (summary or {}).get("gpus") or {}
    position = queue_position(settings.slurm, job.job_id, job.partition) if job.pending else None
    collected = None
    if summary is not None:
        try:
            collected = datetime.fromtimestamp((job_dir / SUMMARY_FILE).stat().st_mtime, UTC)
        except OSError:
            collected = None
    events = [("submitted", job.submit), ("allocated", None if job.pending else job.start), ("pod ready", ready),
              ("ended", job.end if job.ended else None), ("collected", collected)]
    timeline: list[dict[str, Any]] = []
    previous: datetime | None = None
    for event, moment in events:
        if moment is None:
            continue
        timeline.append({"event": event, "time": iso(moment),
                         "after_s": round((moment - previous).total_seconds(), 1) if previous else None})
        previous = moment
    output = job.output
    return {
        "job_id": job.job_id,
        "name": job.name,
        "user": job.user,
        "state": job.state,
        "reason": job.reason if (job.pending or job.reason not in (None, "None")) else None,
        "reason_text": plain_reason(job.reason) if job.pending else None,
        "queue_position": {"place": position[0], "of": position[1]} if position else None,
        "estimated_start": iso(job.start) if job.pending else None,
        "partition": job.partition,
        "node": job.nodes or (summary or {}).get("node") or running.get("node"),
        "cpus": job.cpus or running.get("cpus"),
        "memory_mib": job.memory_mib or running.get("memory_mib"),
        "gpus": {"count": job.gpus or int(running.get("gpus") or gpus.get("count") or 0),
                 "type": running.get("gpu_type") or gpus.get("type") or (next(iter(job.gpu_types), None)),
                 "indices": running.get("gpu_indices") or gpus.get("indices") or []},
        "elapsed_s": job.elapsed_s,
        "time_limit_s": job.time_limit_s,
        "exit_code": job.exit_code if job.ended else None,
        "signal": job.signal if job.ended else None,
        "pod": pod,
        "bridge": {"state": (bridge_status or {}).get("state"), "reason": (bridge_status or {}).get("reason") or None}
        if bridge_status else None,
        "timeline": timeline,
        "output": output,
        "output_exists": bool(output) and Path(output or "").is_file(),
        "results_dir": str(job_dir),
        "results_ready": summary is not None,
        "source": job.source,
    }
