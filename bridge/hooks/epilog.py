"""EpilogSlurmctld: collect the job's results onto the NAS, then remove its objects and verify.

slurmctld only logs an epilog's failure, so this hook must not give up quietly: what it
cannot remove within its deadline is logged and left to the watcher's reaper.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import structlog

from bridge import metrics
from bridge.collect.collector import (
    RESULTS_SUBDIR,
    Collected,
    collect_pod,
    collect_ranks,
    copy_results,
    host_path_of,
    write_checksums,
    write_documents,
)
from bridge.collect.records import JobRecords
from bridge.collect.results import ensure_results_dir, run_as_user, write_atomic
from bridge.collect.summary import SUMMARY_FILE, build_summary, summary_bytes
from bridge.errors import BridgeError, ConfigError, TemporaryError
from bridge.hooks import jobhistory
from bridge.hooks.fastpath import is_bridge_script
from bridge.hooks.turns import place_given_up
from bridge.jobfile.launcher import has_launcher, strip_launcher
from bridge.jobfile.spec import parse_job_text
from bridge.kubernetes.access import ATTACH_KUBECONFIG
from bridge.kubernetes.client import Kube, shared_client
from bridge.kubernetes.objects import ObjectRef, attempt_selector, delete_objects, list_job_objects, wait_gone
from bridge.kubernetes.render import LABEL_JOB_ID, LABEL_USER, ObjectNames
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.identity import hook_environment, owner_from_hook_env
from bridge.slurm.jobinfo import JobAllocation, complete_hook_env, read_allocation, read_batch_script

log = get_logger(component="epilog")


def run_epilog(settings: Settings, job_id: str, hook_env: Mapping[str, str] | None = None) -> int:
    """Collect, then tear down: teardown runs whatever collecting did (item: nothing leaks
    because a user made their results folder unwritable or the NAS is full)."""
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        try:
            script = read_batch_script(settings.slurm, job_id)
        except BridgeError as exc:
            log.warning("job script unavailable; tearing down by label only", error=str(exc))
            script = ""
        if script and not (is_bridge_script(script) and has_launcher(script)):
            return 0
        allocation = _allocation(settings, job_id, hook_env)
        if allocation is not None:
            jobhistory.ended(settings, allocation)
        try:
            kube = shared_client(settings.kubernetes.kubeconfig, timeout_s=settings.kubernetes.api_timeout_s)
        except BridgeError as exc:
            log.error("Kubernetes unavailable; the reaper will collect and clean up", error=str(exc))
            _epilog_done("kube_unavailable", started)
            return 1
        if allocation is not None:
            try:
                collect_job(settings, kube, allocation, strip_launcher(script))
                jobhistory.collected(settings, allocation)
            except Exception as exc:
                # The user's folder unwritable, the NAS full, a bug: tell the user, then tear down anyway.
                log.exception("collecting failed; tearing down anyway")
                _record_collect_failure(settings, allocation, f"{type(exc).__name__}: {exc}")
                jobhistory.collected(settings, allocation, failure=f"{type(exc).__name__}: {exc}")
        left = teardown(settings, kube, job_id)
        _epilog_done("objects_left" if left else "clean", started)
        return 1 if left else 0


def _epilog_done(outcome: str, started: float) -> None:
    metrics.EPILOG_OUTCOMES.labels(outcome).inc()
    metrics.EPILOG_SECONDS.observe(time.perf_counter() - started)


def _allocation(settings: Settings, job_id: str, hook_env: Mapping[str, str] | None) -> JobAllocation | None:
    """The job's allocation with its owner from slurmctld's word; None: collect nothing."""
    try:
        env = complete_hook_env(settings.slurm, job_id, hook_environment(hook_env))
        owner = owner_from_hook_env(env, settings.policy)
        return read_allocation(settings.slurm, job_id, owner, env)
    except BridgeError as exc:
        log.warning("owner or allocation unavailable; tearing down without collecting", error=str(exc))
        return None


def _record_collect_failure(settings: Settings, allocation: JobAllocation, reason: str) -> None:
    """Root's record says it for admins (and `skbridge status`); the job's output file, appended
    as the user, says it to the user (Slurm takes no AdminComment once a job has finished)."""
    text = f"results not collected: {reason}"
    JobRecords(settings.job_records_dir).append(allocation.job_id, attempt=allocation.restart_count,
                                                state="collect-failed", reason=text)
    output = allocation.standard_output
    if not output.startswith("/"):
        return

    def append() -> None:
        fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)  # never creates a file
        try:
            os.write(fd, f"skbridge epilog: {text}\n".encode())
        finally:
            os.close(fd)

    try:
        run_as_user(allocation.uid, allocation.gid, append)
    except BridgeError as exc:
        log.warning("cannot tell the user in the job's output", output=output, error=str(exc))


def collect_job(settings: Settings, kube: Kube, allocation: JobAllocation, script: str) -> None:
    structlog.contextvars.bind_contextvars(user=allocation.user)
    if allocation.results_name != allocation.job_id:  # an array task: `12345_3`, as users know it
        structlog.contextvars.bind_contextvars(array_task=allocation.results_name)
    uid, gid = allocation.uid, allocation.gid
    records = JobRecords(settings.job_records_dir)
    # results/<user>/<jobid>/, or <arrayjob>_<task>/ for an array task (the prolog's folder).
    job_dir = ensure_results_dir(settings.nas, allocation.user, uid, gid, allocation.results_name)
    # The Pod of the attempt that ran (a requeued job's restart count has moved on already),
    # from root's record; its labels must name this job and this user.
    ran = records.last_run(allocation.job_id)
    pod_name = str(ran.get("pod") or ObjectNames.for_attempt(allocation.job_id, allocation.restart_count).pod)
    structlog.contextvars.bind_contextvars(pod=pod_name)
    expect = {LABEL_JOB_ID: allocation.job_id, LABEL_USER: allocation.user}
    try:
        collected = collect_pod(kube, settings.kubernetes.namespace, pod_name, expect_labels=expect)
        rank_pods = [str(rank["pod"]) for rank in ran.get("ranks") or []][1:]
        collect_ranks(kube, settings.kubernetes.namespace, rank_pods, collected, expect_labels=expect)
    except BridgeError as exc:
        collected = Collected(notes=[f"Kubernetes unavailable while collecting: {exc}"])
    spec, _problems = parse_job_text(script, settings.policy, settings.nas, owner=allocation.user) if script else (None, [])
    host = None
    if spec is not None and spec.results:
        host = host_path_of(settings, allocation.user, spec.results)
        if host is None:
            collected.notes.append(f"#K8S_RESULTS={spec.results} is not under the NAS mount; nothing copied")
    summary = build_summary(job_id=allocation.job_id, user=allocation.user, collected=collected, records=records,
                            allocation=allocation, image=getattr(spec, "image", None),
                            kube_node_of=settings.kubernetes.node_map, collected_by="epilog")

    def finish_as_user() -> dict[str, Any]:
        # One switch to the user for everything written: each switch is a fork of this process.
        write_documents(job_dir, collected.documents)
        if host is not None:
            files, notes = copy_results(host, job_dir / RESULTS_SUBDIR)
            collected.files += [f"{RESULTS_SUBDIR}/{name}" for name in files]
            summary["notes"] = collected.notes + notes
        write_atomic(job_dir / SUMMARY_FILE, summary_bytes(summary))
        (job_dir / ATTACH_KUBECONFIG).unlink(missing_ok=True)  # the Pod is going: so is the credential
        return {"files": len(write_checksums(job_dir)), "notes": summary["notes"]}

    done = run_as_user(uid, gid, finish_as_user)
    log.info("collected", results_dir=str(job_dir), files=done["files"], exit_code=collected.exit_code,
             notes=done["notes"])


def teardown(settings: Settings, kube: Kube, job_id: str) -> list[ObjectRef]:
    """Delete every object of every attempt of the job, then check they are gone."""
    with metrics.TEARDOWN_SECONDS.time():
        return _teardown(settings, kube, job_id)


def _teardown(settings: Settings, kube: Kube, job_id: str) -> list[ObjectRef]:
    namespace = settings.kubernetes.namespace
    deadline = time.monotonic() + settings.kubernetes.teardown_timeout_s
    refs: list[ObjectRef] = []
    while True:
        try:
            # Every object of the job carries its job ID, the attach credential's too.
            refs = list_job_objects(kube, namespace, attempt_selector(job_id))
            if not refs:
                return []
            deleted = delete_objects(kube, refs, grace_period_s=settings.kubernetes.termination_grace_period_s)
            log.info("deleting", objects=[str(r) for r in deleted])
            with place_given_up():  # the Pod's grace period runs: others' epilogs go on
                left = wait_gone(kube, refs, timeout_s=max(1.0, deadline - time.monotonic()))
            if not left:
                log.info("removed", objects=[str(r) for r in refs])
                return []
            refs = left
        except ConfigError as exc:
            log.error("teardown impossible with the bridge's credential; the reaper will retry", error=str(exc))
            return refs
        except BridgeError as exc:
            log.warning("teardown step failed; retrying", error=str(exc))
            pause_s = exc.retry_after_s if isinstance(exc, TemporaryError) and exc.retry_after_s else 1.0
            time.sleep(max(0.0, min(pause_s, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            log.error("objects still present at the epilog's deadline; the reaper will remove them",
                      objects=[str(r) for r in refs])
            return refs
