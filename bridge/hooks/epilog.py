"""EpilogSlurmctld: collect the job's results onto the NAS, then remove its objects and verify.

slurmctld only logs an epilog's failure, so this hook must not give up quietly: what it
cannot remove within its deadline is logged and left to the watcher's reaper.
"""

from __future__ import annotations

import json
import time
from typing import Any

import structlog

from bridge.collect.collector import (
    RESULTS_SUBDIR,
    Collected,
    attempts_of,
    collect_pod,
    copy_results,
    host_path_of,
    write_checksums,
    write_documents,
)
from bridge.collect.results import ensure_results_dir, read_status, run_as_user, write_atomic
from bridge.errors import BridgeError
from bridge.hooks.fastpath import is_bridge_script
from bridge.ingest.jobfile import parse_job_text
from bridge.ingest.launcher import strip_launcher
from bridge.kubernetes.access import ATTACH_KUBECONFIG, access_selector
from bridge.kubernetes.client import Kube, load_client
from bridge.kubernetes.objects import ObjectRef, attempt_selector, delete_objects, list_job_objects, wait_gone
from bridge.kubernetes.render import ObjectNames
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.jobinfo import JobAllocation, read_allocation, read_batch_script

log = get_logger(component="epilog")


def run_epilog(settings: Settings, job_id: str) -> int:
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        try:
            script = read_batch_script(settings.slurm, job_id)
        except BridgeError as exc:
            log.warning("job script unavailable; tearing down by label only", error=str(exc))
            script = ""
        if script and not is_bridge_script(script):
            return 0
        allocation = None
        try:
            allocation = read_allocation(settings.slurm, job_id)
        except BridgeError as exc:
            log.warning("allocation unavailable; collecting what Kubernetes still has", error=str(exc))
        try:
            kube = load_client(settings.kubernetes.kubeconfig, timeout_s=settings.kubernetes.api_timeout_s)
        except BridgeError as exc:
            log.error("Kubernetes unavailable; the reaper will collect and clean up", error=str(exc))
            return 1
        if allocation is not None:
            collect_job(settings, kube, allocation, strip_launcher(script))
        left = teardown(settings, kube, job_id)
        return 1 if left else 0


def collect_job(settings: Settings, kube: Kube, allocation: JobAllocation, script: str) -> None:
    structlog.contextvars.bind_contextvars(user=allocation.user)
    uid, gid = allocation.uid, allocation.gid
    job_dir = ensure_results_dir(settings.nas, allocation.user, uid, gid, allocation.job_id)
    # The Pod of the attempt that ran: a requeued job's restart count has moved on already.
    pod_name = last_run(read_status(job_dir) or {}).get("pod") or \
        ObjectNames.for_attempt(allocation.job_id, allocation.restart_count).pod
    structlog.contextvars.bind_contextvars(pod=pod_name)
    try:
        collected = collect_pod(kube, settings.kubernetes.namespace, str(pod_name))
    except BridgeError as exc:
        collected = Collected(notes=[f"Kubernetes unavailable while collecting: {exc}"])
    spec, _problems = parse_job_text(script, settings.policy, settings.nas, owner=allocation.user) if script else (None, [])
    host = None
    if spec is not None and spec.results:
        host = host_path_of(settings, allocation.user, spec.results)
        if host is None:
            collected.notes.append(f"#K8S_RESULTS={spec.results} is not under the NAS mount; nothing copied")

    def finish_as_user() -> dict[str, Any]:
        # One switch to the user for everything written: each switch is a fork of this process.
        write_documents(job_dir, collected.documents)
        if host is not None:
            files, notes = copy_results(host, job_dir / RESULTS_SUBDIR)
            collected.files += [f"{RESULTS_SUBDIR}/{name}" for name in files]
            collected.notes += notes
        summary = build_summary(settings, allocation, spec, collected, job_dir)
        write_atomic(job_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
        (job_dir / ATTACH_KUBECONFIG).unlink(missing_ok=True)  # the Pod is going: so is the credential
        return {"files": len(write_checksums(job_dir)), "notes": collected.notes}

    done = run_as_user(uid, gid, finish_as_user)
    log.info("collected", results_dir=str(job_dir), files=done["files"], exit_code=collected.exit_code,
             notes=done["notes"])


def build_summary(
    settings: Settings, allocation: JobAllocation, spec: Any, collected: Collected, job_dir: Any
) -> dict[str, Any]:
    node = allocation.nodes[0] if allocation.nodes else None
    status = read_status(job_dir) or {}
    pod_status = (collected.pod or {}).get("status") or {}
    # What the prolog saw at allocation time: Slurm drops GPU indices once the job ends.
    ran = last_run(status)
    state = status.get("state")
    if state == "running":
        state = "completed" if collected.exit_code == 0 else "failed" if collected.exit_code is not None else "lost"
    return {
        "job_id": allocation.job_id,
        "job_name": allocation.name,
        "user": allocation.user,
        "image": getattr(spec, "image", None),
        "node": ran.get("node") or (node.node if node else None),
        "kubernetes_node": settings.kubernetes.kube_node(str(ran.get("node") or (node.node if node else ""))) or None,
        "cpus": ran.get("cpus", node.cpus if node else None),
        "memory_mib": ran.get("memory_mib", node.memory_mib if node else None),
        "gpus": {"count": ran.get("gpus", node.gpus if node else 0), "type": ran.get("gpu_type"),
                 "indices": ran.get("gpu_indices", [])},
        "submit_time": _iso(allocation.submit_time),
        "start_time": _iso(allocation.start_time),
        "end_time": _iso(int(time.time())),
        "pod_phase": collected.pod_phase,
        "pod_start_time": pod_status.get("startTime"),
        "exit_code": collected.exit_code,
        "state": state,
        "reason": status.get("reason") or None,
        "attempts": attempts_of(job_dir),
        "restart_count": allocation.restart_count,
        "notes": collected.notes,
    }


def last_run(status: dict[str, Any]) -> dict[str, Any]:
    """The prolog's record of the last attempt that reached a Ready Pod, or {}."""
    for attempt in reversed(status.get("attempts") or []):
        if isinstance(attempt, dict) and attempt.get("state") == "running":
            return attempt
    return {}


def teardown(settings: Settings, kube: Kube, job_id: str) -> list[ObjectRef]:
    """Delete every object of every attempt of the job, then check they are gone."""
    namespace = settings.kubernetes.namespace
    deadline = time.monotonic() + settings.kubernetes.teardown_timeout_s
    refs: list[ObjectRef] = []
    while True:
        try:
            refs = list_job_objects(kube, namespace, attempt_selector(job_id))
            refs += [r for r in list_job_objects(kube, namespace, access_selector(job_id)) if r not in refs]
            if not refs:
                return []
            deleted = delete_objects(kube, refs, grace_period_s=settings.kubernetes.termination_grace_period_s)
            log.info("deleting", objects=[str(r) for r in deleted])
            left = wait_gone(kube, refs, timeout_s=max(1.0, deadline - time.monotonic()))
            if not left:
                log.info("removed", objects=[str(r) for r in refs])
                return []
            refs = left
        except BridgeError as exc:
            log.warning("teardown step failed; retrying", error=str(exc))
            time.sleep(1.0)
        if time.monotonic() >= deadline:
            log.error("objects still present at the epilog's deadline; the reaper will remove them",
                      objects=[str(r) for r in refs])
            return refs


def _iso(epoch: int) -> str | None:
    if not epoch:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
