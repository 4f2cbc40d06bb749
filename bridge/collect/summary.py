"""summary.json: one builder for the epilog and the reaper, so a job's summary has the same
keys whoever collected it. Everything in it comes from Slurm, Kubernetes and root's own
record of the job (bridge.collect.records), never from the user's folder."""

from __future__ import annotations

import json
import time
from typing import Any

from bridge.collect.collector import Collected
from bridge.collect.records import JobRecords
from bridge.slurm.jobinfo import JobAllocation

SUMMARY_FILE = "summary.json"


def build_summary(
    *, job_id: str, user: str, collected: Collected, records: JobRecords, allocation: JobAllocation | None,
    image: str | None, kube_node_of: dict[str, str], collected_by: str, reason: str | None = None,
) -> dict[str, Any]:
    """`allocation` is Slurm's view (None when Slurm no longer knows the job: the reaper);
    `kube_node_of` maps Slurm node names to Kubernetes ones (the settings' node_map)."""
    node = allocation.nodes[0] if allocation and allocation.nodes else None
    pod_status = (collected.pod or {}).get("status") or {}
    # What the prolog saw at allocation time (Slurm drops GPU indices once the job ends).
    ran = records.last_run(job_id)
    last = records.last(job_id)
    state = last.get("state")
    if state in ("running", None) and collected.pod is not None:
        state = "completed" if collected.exit_code == 0 else "failed" if collected.exit_code is not None else "lost"
    slurm_node = str(ran.get("node") or (node.node if node else "")) or None
    exit_code = collected.exit_code
    if collected.rank_exit_codes:
        # A multi-node job ends with the rank that failed first (attach stops the others, whose
        # codes then say only that): Slurm's word when it has one, else the first failing rank.
        failed_ranks = {rank: code for rank, code in collected.rank_exit_codes.items() if code}
        slurm_code, _, _ = (allocation.exit_code if allocation else "").partition(":")
        if slurm_code.isdigit():
            exit_code = int(slurm_code)
        elif exit_code == 0 and failed_ranks:
            exit_code = failed_ranks[min(failed_ranks)]
        if exit_code is not None and state in ("running", "completed", "lost", None):
            state = "completed" if exit_code == 0 else "failed"
    ranks = [dict(rank, exit_code=collected.exit_code if rank.get("rank") == 0
                  else collected.rank_exit_codes.get(int(rank.get("rank") or 0)))
             for rank in ran.get("ranks") or []]
    return {
        "job_id": job_id,
        "job_name": allocation.name if allocation else None,
        "user": user,
        "image": image,
        "pod": ran.get("pod") or ((collected.pod or {}).get("metadata") or {}).get("name"),
        "node": slurm_node,
        # The node the prolog pinned the Pod to (bridge.kubernetes.nodemap), else the node map's word.
        "kubernetes_node": ran.get("kube_node") or (kube_node_of.get(slurm_node, slurm_node) if slurm_node else None),
        "array_job_id": ran.get("array_job_id") or (allocation.array_job_id if allocation and allocation.array_task_id
                                                    else None),
        "array_task_id": ran.get("array_task_id") or (allocation.array_task_id if allocation and
                                                      allocation.array_task_id else None),
        "cpus": ran.get("cpus", node.cpus if node else None),
        "memory_mib": ran.get("memory_mib", node.memory_mib if node else None),
        "gpus": {"count": ran.get("gpus", node.gpus if node else 0), "type": ran.get("gpu_type"),
                 "indices": ran.get("gpu_indices", [])},
        "submit_time": _iso(allocation.submit_time) if allocation else None,
        "start_time": _iso(allocation.start_time) if allocation else None,
        "end_time": _iso(int(time.time())),
        "pod_phase": collected.pod_phase,
        "pod_start_time": pod_status.get("startTime"),
        "exit_code": exit_code,
        "ranks": ranks,
        "state": state,
        "reason": reason or last.get("reason") or None,
        "attempts": records.attempts(job_id),
        "restart_count": allocation.restart_count if allocation else last.get("attempt"),
        "collected_by": collected_by,
        "notes": collected.notes,
    }


def summary_bytes(summary: dict[str, Any]) -> bytes:
    return json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n"


def _iso(epoch: int) -> str | None:
    if not epoch:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
