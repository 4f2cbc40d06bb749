"""The reaper: removes bridge objects whose Slurm job has ended, after collecting what is left.

The epilog normally leaves nothing behind. When it could not (killed, deadline hit,
Kubernetes unreachable at the time), the watcher's reaper finishes the job: it lists every
bridge-labelled object, asks Slurm which jobs are still alive, and for the others collects
the Pod's log and status into the results folder (when the epilog did not) and deletes the
objects. It never acts when Slurm cannot answer, and it leaves a just-ended job to its
epilog for `grace_s` first.
"""

from __future__ import annotations

import calendar
import pwd
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge import metrics
from bridge.collect.collector import collect_pod, collect_ranks, rank_pods_of, write_checksums, write_documents
from bridge.collect.records import JobRecords
from bridge.collect.results import ensure_results_dir, run_as_user
from bridge.collect.summary import SUMMARY_FILE, build_summary, summary_bytes
from bridge.errors import BridgeError
from bridge.kubernetes.client import Kube
from bridge.kubernetes.objects import KIND_ORDER, ObjectRef, collection_path, delete_objects, wait_gone
from bridge.kubernetes.render import (
    LABEL_ARRAY_JOB_ID,
    LABEL_ARRAY_TASK_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED_BY,
    LABEL_USER,
    MANAGED_BY,
    ObjectNames,
)
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.commands import run_slurm
from bridge.slurm.identity import IdentityError, verify_owner
from bridge.slurm.jobinfo import array_task_name
from bridge.slurm.vocabulary import LIVE_STATES, base_state, timestamp_s

log = get_logger(component="reaper")



@dataclass
class JobObjects:
    job_id: str
    user: str | None = None
    refs: list[ObjectRef] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    newest_created: float = 0.0
    results_name: str = ""  # `<arrayjob>_<task>` for an array task's objects, else the job id


@dataclass(frozen=True)
class SlurmView:
    """Slurm's jobs as squeue lists them: state, and when a finished one ended."""

    states: dict[str, tuple[str, int]]

    def verdict(self, job_id: str, newest_created: float, now: float, grace_s: float) -> str | None:
        """Why the job's objects may go, or None to keep them."""
        state, end_time = self.states.get(job_id, ("", 0))
        if state in LIVE_STATES:
            return None
        # The epilog may still be at work: give it `grace_s` after the job's end (or, when
        # Slurm has no end time, after the newest object appeared).
        since = end_time or newest_created
        if now - since < grace_s:
            return None
        if state:
            return f"job ended {state} {int(now - since)}s ago"
        return "Slurm no longer knows the job"


def slurm_view(settings: Settings) -> SlurmView:
    """Every job slurmctld still holds (finished ones until MinJobAge), one line each.

    Not `squeue --json`: with slurmctld unreachable it exits 0 with an empty list, which would
    read as "no job is alive" and reap every running job's Pod. The formatted listing exits
    non-zero then, which `run_slurm` turns into a TemporaryError (no pass this time).
    `%A` is each array task's own job id, the one the objects are labelled with.
    """
    result = run_slurm(settings.slurm, ["squeue", "--noheader", "--all", "--states=all", "--format=%A|%T|%e"])
    states: dict[str, tuple[str, int]] = {}
    for line in result.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state_text, _, end_text = rest.partition("|")
        if not job_id.isdigit():
            continue
        state = base_state(state_text)
        ended = timestamp_s(end_text) if state not in LIVE_STATES else None
        states[job_id] = (state, int(ended or 0))
    return SlurmView(states)


def _created(item: dict[str, Any]) -> float:
    stamp = item["metadata"].get("creationTimestamp")
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))) if stamp else 0.0


def bridge_objects(kube: Kube, namespace: str) -> dict[str, JobObjects]:
    jobs: dict[str, JobObjects] = defaultdict(lambda: JobObjects(job_id=""))
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    for kind in KIND_ORDER:
        namespaced = kind != "PersistentVolume"
        listing = kube.request("GET", collection_path(kind, namespace if namespaced else None),
                               query={"labelSelector": selector})
        for item in listing.get("items") or []:
            labels = item["metadata"].get("labels") or {}
            job_id = labels.get(LABEL_JOB_ID)
            if not job_id:
                continue
            group = jobs[job_id]
            group.job_id = job_id
            group.user = group.user or labels.get(LABEL_USER)
            group.results_name = group.results_name or array_task_name(
                labels.get(LABEL_ARRAY_JOB_ID, ""), labels.get(LABEL_ARRAY_TASK_ID, "")) or job_id
            group.refs.append(ObjectRef(kind, item["metadata"]["name"], item["metadata"].get("namespace")))
            group.newest_created = max(group.newest_created, _created(item))
            if kind == "Pod":
                group.pods.append(item["metadata"]["name"])
    return dict(jobs)


def _collect_leftovers(settings: Settings, kube: Kube, job: JobObjects, reason: str) -> None:
    """What the epilog would have gathered, if it did not get to it."""
    if job.user is None or not job.pods:
        return
    try:
        account = pwd.getpwnam(job.user)
        owner = verify_owner(job.user, account.pw_uid, account.pw_gid, settings.policy)
    except (KeyError, IdentityError) as exc:
        log.warning("owner not a lab account on this host; nothing collected", user=job.user, error=str(exc))
        return
    uid, gid = owner.uid, owner.gid
    job_dir = ensure_results_dir(settings.nas, job.user, uid, gid, job.results_name or job.job_id)
    if (job_dir / SUMMARY_FILE).exists():
        return  # the epilog collected; only its teardown was missing
    # The last attempt's rank 0 (a multi-node job's other ranks are `<rank 0>-rank<k>`).
    pod = (sorted(name for name in job.pods if ObjectNames.split_rank(name)[1] == 0) or sorted(job.pods))[-1]
    expect = {LABEL_JOB_ID: job.job_id, LABEL_USER: job.user}
    collected = collect_pod(kube, settings.kubernetes.namespace, pod, expect_labels=expect)
    collect_ranks(kube, settings.kubernetes.namespace, rank_pods_of(sorted(job.pods), pod), collected,
                  expect_labels=expect)
    summary = build_summary(job_id=job.job_id, user=job.user, collected=collected,
                            records=JobRecords(settings.job_records_dir), allocation=None, image=None,
                            kube_node_of=settings.kubernetes.node_map, collected_by="reaper", reason=reason)
    collected.documents[SUMMARY_FILE] = summary_bytes(summary)

    def finish_as_user() -> None:
        write_documents(job_dir, collected.documents)
        write_checksums(job_dir)

    run_as_user(uid, gid, finish_as_user)
    log.info("collected what the epilog left", results_dir=str(job_dir))


def reap_once(settings: Settings, kube: Kube, *, grace_s: float, now: float | None = None,
              hook_running: Callable[[str], bool] | None = None) -> list[str]:
    """One pass; returns the job ids whose objects were removed.

    `hook_running(job_id)`: True while the watcher runs a hook of that job. Slurm may count a
    job as ended while its EpilogSlurmctld still collects and tears down (a job cancelled
    during its prolog): that epilog is left to finish, not raced for the same objects."""
    found = bridge_objects(kube, settings.kubernetes.namespace)
    if not found:
        return []
    view = slurm_view(settings)  # raises when Slurm cannot answer: then nothing is touched
    now = time.time() if now is None else now
    reaped = []
    for job_id, job in sorted(found.items()):
        reason = view.verdict(job_id, job.newest_created, now, grace_s)
        if reason is None or (hook_running is not None and hook_running(job_id)):
            continue
        with structlog.contextvars.bound_contextvars(job_id=job_id, user=job.user):
            try:
                _collect_leftovers(settings, kube, job, reason)
            except BridgeError as exc:
                log.warning("collecting failed; removing anyway", error=str(exc))
            except OSError as exc:
                log.warning("results folder unwritable; removing anyway", error=str(exc))
            deleted = delete_objects(kube, job.refs, grace_period_s=0)
            if not deleted:  # their epilog got there first: nothing to wait for, nothing reaped
                log.info("gone before the reaper removed anything", reason=reason)
                continue
            for ref in deleted:
                metrics.REAPED_OBJECTS.labels(ref.kind).inc()
            left = wait_gone(kube, job.refs, timeout_s=10)
            log.info("reaped", reason=reason, objects=[str(r) for r in deleted],
                     still_present=[str(r) for r in left] or None)
            reaped.append(job_id)
    return reaped
