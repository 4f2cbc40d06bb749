"""PrologSlurmctld: turn Slurm's allocation into a Ready Pod on the allocated node.

Exit codes are chosen on purpose (slurmctld acts on them):
  0  the Pod is Ready, the job is not a bridge job, or the job is rejected for good
     (the batch step's `attach` then prints the reason and fails the job);
  1  a temporary failure (no room in Kubernetes, API down): everything this attempt made
     is removed and slurmctld requeues the job, leaving the node up.
"""

from __future__ import annotations

import pwd
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from bridge import metrics
from bridge.collect.records import JobRecords
from bridge.collect.results import ensure_results_dir, record_status
from bridge.errors import BridgeError, ConfigError, PermanentError, TemporaryError
from bridge.hooks import jobhistory
from bridge.hooks.fastpath import is_bridge_script, process_age_s
from bridge.hooks.turns import hook_queued_s, place_given_up
from bridge.jobfile.launcher import has_launcher, strip_launcher
from bridge.jobfile.spec import parse_job_text
from bridge.kubernetes.access import attach_identity, issue_attach_token
from bridge.kubernetes.client import Kube, KubeRejected, api_unavailable, shared_client
from bridge.kubernetes.nodemap import NodeMappingError, kube_node_for
from bridge.kubernetes.objects import (
    Made,
    attempt_selector,
    create_objects,
    delete_objects,
    list_job_objects,
    wait_gone,
    wait_pod_ready,
)
from bridge.kubernetes.render import LABEL_RESTART, ObjectNames, render_job_ranks
from bridge.kubernetes.rendezvous import Rank, check_addresses, open_all_gates
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.commands import run_slurm
from bridge.slurm.identity import IdentityError, JobOwner, hook_environment, owner_from_hook_env
from bridge.slurm.jobinfo import (
    AmbiguousJobRecord,
    JobAllocation,
    array_of_env,
    complete_hook_env,
    read_allocation,
    read_batch_script,
)

log = get_logger(component="prolog")

EXIT_OK = 0
EXIT_REQUEUE = 1


# Set by the hook server: how long the hook's own process ran before it handed the job over.
client_startup_s: ContextVar[float | None] = ContextVar("skbridge_client_startup_s", default=None)
# Set by the hook server: True while slurmctld's hook process still waits for the answer. A
# prolog whose process slurmctld has killed (PrologEpilogTimeout) counts as failed there, so
# the served prolog must not let the script start.
client_waiting: ContextVar[Callable[[], bool] | None] = ContextVar("skbridge_client_waiting", default=None)


@dataclass
class PrologTimings:
    """Where the hook's time goes (reported in the log, the metrics and by the benchmark), and how it ended."""

    marks: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)
    _started: float = field(default_factory=time.perf_counter)
    # For the metrics: a closed set each (bridge.metrics.PROLOG_OUTCOME_VALUES, REQUEUE_CAUSES).
    outcome: str = "skipped"
    requeue_cause: str | None = None
    _queued_before_s: float = 0.0
    _queued_seen_s: float = 0.0

    def __post_init__(self) -> None:
        # Interpreter start-up and imports happen before this object exists: count them too.
        # Served by the watcher, that is the thin client's start-up and its handing over, and
        # then the wait for a place there (bridge.hooks.turns).
        handed_over = client_startup_s.get()
        self.marks["python_startup"] = round(process_age_s() if handed_over is None else handed_over, 4)
        self._queued_before_s = self._queued_seen_s = hook_queued_s.get() or 0.0
        if hook_queued_s.get() is not None:
            self.marks["hook_queue"] = round(self._queued_before_s, 4)

    def total_s(self) -> float:
        """Start-up (or handing over) and the first wait for a place in the watcher included."""
        return time.perf_counter() - self._started + self.marks["python_startup"] + self._queued_before_s

    def mark(self, name: str) -> None:
        """Close stage `name`; a wait for a place in the watcher within it counts as `hook_queue`."""
        now = time.perf_counter()
        queued_s = hook_queued_s.get() or 0.0
        waited_s, self._queued_seen_s = queued_s - self._queued_seen_s, queued_s
        if waited_s > 0:
            self.marks["hook_queue"] = round(self.marks.get("hook_queue", 0.0) + waited_s, 4)
        self.marks[name] = round(self.marks.get(name, 0.0) + now - self._last - waited_s, 4)
        self._last = now


def run_prolog(settings: Settings, job_id: str, hook_env: Mapping[str, str] | None = None) -> int:
    """`hook_env`: slurmctld's variables for the job (the process's own when None)."""
    timings = PrologTimings()
    try:
        code = _run_prolog(settings, job_id, hook_env, timings)
    except BaseException:
        timings.outcome = "crashed"
        raise
    finally:
        metrics.prolog_done(timings.outcome, timings.requeue_cause, timings.marks, timings.total_s())
    return code


def _run_prolog(settings: Settings, job_id: str, hook_env: Mapping[str, str] | None, timings: PrologTimings) -> int:
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        try:
            script = read_batch_script(settings.slurm, job_id)
        except TemporaryError as exc:
            log.error("cannot read the job script; requeue", error=str(exc))
            timings.outcome = "requeued"
            return EXIT_REQUEUE
        except PermanentError as exc:
            log.error("cannot read the job script; leaving the job alone", error=str(exc))
            return EXIT_OK
        if not is_bridge_script(script):
            return EXIT_OK
        if not has_launcher(script):
            # Neither path put the launcher in: the script runs on the host (a host account's
            # job, or job_submit.lua not in effect). A Pod would run it a second time.
            log.warning("no launcher line in its place: leaving the job to the host (is job_submit.lua in effect?)")
            return EXIT_OK
        timings.mark("slurm_script")
        # Who the job belongs to comes first, from slurmctld's own variables: root makes no
        # folder and no object for anyone before that is beyond doubt.
        try:
            given = hook_environment(hook_env)
            env = complete_hook_env(settings.slurm, job_id, given)
            owner = owner_from_hook_env(env, settings.policy)
            structlog.contextvars.bind_contextvars(owner_from="slurmctld" if "SLURM_JOB_UID" in given else "squeue")
        except IdentityError as exc:
            log.error("job refused: its owner is not established", error=str(exc))
            _admin_comment(settings, job_id, f"skbridge rejected: {exc}")
            timings.outcome = "rejected"
            return EXIT_OK
        except BridgeError as exc:
            log.error("cannot ask Slurm who owns the job; requeue", error=str(exc))
            timings.outcome = "requeued"
            return EXIT_REQUEUE
        try:
            allocation = read_allocation(settings.slurm, job_id, owner, env)
        except AmbiguousJobRecord as exc:
            timings.outcome = "rejected"
            array = array_of_env(env)
            return _refuse_unreadable(settings, job_id, owner, str(exc), "_".join(array) if array else job_id)
        except BridgeError as exc:
            log.error("cannot read the allocation; requeue", error=str(exc))
            timings.outcome = "requeued"
            return EXIT_REQUEUE
        timings.mark("slurm_allocation")
        code = _prolog_for(settings, allocation, strip_launcher(script), timings)
        log.info("prolog done", exit_code=code, timings_s=timings.marks)
        return code


def _refuse_unreadable(settings: Settings, job_id: str, owner: JobOwner, reason: str, results_name: str) -> int:
    """Slurm's record of the job reads two ways: refuse it, and tell its (verified) owner why
    (in results/<user>/<results_name>/: `<arrayjob>_<task>` for an array task)."""
    text = f"{reason}. Remove line breaks from the job's name, comment, paths and mail user, then submit again"
    log.error("job refused: ambiguous Slurm record", reason=reason, user=owner.user)
    history = JobRecords(settings.job_records_dir).append(job_id, attempt=0, state="rejected", reason=text)
    job_dir = ensure_results_dir(settings.nas, owner.user, owner.uid, owner.gid, results_name)
    record_status(job_dir, owner.uid, owner.gid, history)
    _admin_comment(settings, job_id, f"skbridge rejected: {reason}")
    return EXIT_OK


def _prolog_for(settings: Settings, allocation: JobAllocation, script: str, timings: PrologTimings) -> int:
    kube_settings = settings.kubernetes
    structlog.contextvars.bind_contextvars(user=allocation.user, attempt=allocation.restart_count)
    if allocation.results_name != allocation.job_id:  # an array task: `12345_3`, as users know it
        structlog.contextvars.bind_contextvars(array_task=allocation.results_name)
    job_dir = ensure_results_dir(settings.nas, allocation.user, allocation.uid, allocation.gid,
                                 allocation.results_name)
    records = JobRecords(settings.job_records_dir)
    jobhistory.allocated(settings, allocation)

    def note(state: str, reason: str, *, also_write: dict[str, bytes] | None = None, **details: Any) -> None:
        """Root's record first (what the epilog trusts), then the user's copy, then the job history."""
        history = records.append(allocation.job_id, attempt=allocation.restart_count, state=state, reason=reason,
                                 **details)
        record_status(job_dir, allocation.uid, allocation.gid, history, also_write=also_write)
        jobhistory.prolog_noted(settings, allocation, state, reason, details.get("pod"))

    def reject(reason: str) -> int:
        """For good: the job runs its launcher, which prints the reason and fails."""
        log.warning("job rejected", reason=reason)
        timings.outcome = "rejected"
        note("rejected", reason)
        _admin_comment(settings, allocation.job_id, f"skbridge rejected: {reason}")
        return EXIT_OK

    def requeue(reason: str, *, cause: str, admin_problem: bool = False) -> int:
        """Try again later. A problem of the site's (broken template, refused credential, an API
        server that does not answer) hits every job alike: those jobs stay queued until it is
        fixed instead of using up their attempts."""
        if not admin_problem and allocation.restart_count + 1 >= kube_settings.max_prolog_attempts:
            return reject(f"{reason} (gave up after {allocation.restart_count + 1} attempts)")
        log.warning("requeue", reason=reason)
        timings.outcome, timings.requeue_cause = "requeued", cause
        note("requeued", reason)
        _admin_comment(settings, allocation.job_id, f"skbridge requeued: {reason}")
        return EXIT_REQUEUE

    def kube_trouble(exc: BridgeError) -> int:
        """An API server that does not answer (or is overloaded) is every job's trouble, not this
        job's: it requeues without using up an attempt. Anything else is counted."""
        if api_unavailable(exc):
            return requeue(f"Kubernetes API unavailable: {exc}", cause="kube_unavailable", admin_problem=True)
        return requeue(str(exc), cause="kube_error")

    spec, problems = parse_job_text(script, settings.policy, settings.nas, owner=allocation.user,
                                    owner_home=_home_of(allocation.uid))
    errors = [p for p in problems if p.severity == "error"]
    if errors or spec is None:
        return reject("; ".join(f"line {p.line}: {p.message}" if p.line else p.message for p in errors))
    timings.mark("validate")
    structlog.contextvars.bind_contextvars(node=allocation.node.node)
    try:
        kube = shared_client(kube_settings.kubeconfig, timeout_s=kube_settings.api_timeout_s)
        # Which Kubernetes node is each allocated Slurm node (a label lookup is one GET); a
        # multi-node job gets one Pod per node, rank k on the k-th.
        kube_nodes = [kube_node_for(kube_settings, item.node, kube) for item in allocation.nodes]
        kube_node = kube_nodes[0]
        _remove_previous_attempts(kube, settings, allocation)
        timings.mark("kube_connect_cleanup")
    except NodeMappingError as exc:
        # The node map or label names no single node: every job on that node would fail alike.
        return requeue(f"the Slurm node has no Kubernetes node: {exc}", cause="kube_error", admin_problem=True)
    except ConfigError as exc:
        return requeue(f"the bridge's Kubernetes credential does not work: {exc}", cause="kube_credential",
                       admin_problem=True)
    except BridgeError as exc:
        return kube_trouble(exc)
    structlog.contextvars.bind_contextvars(kube_node=kube_node)
    try:
        rendered = render_job_ranks(settings, allocation, spec, script, kube_nodes)
    except ConfigError as exc:
        # An admin's template mistake hits every job: keep jobs queued until it is fixed.
        log.error("Pod template broken", error=str(exc))
        return requeue(f"the bridge's Pod template is broken: {exc}", cause="pod_template", admin_problem=True)
    structlog.contextvars.bind_contextvars(pod=rendered.names.pod)
    timings.mark("render")
    made: list[Made] = []
    try:
        other_pods = rendered.pod_names[1:]
        create_objects(kube, rendered, kube_settings.namespace, made,
                       extra=attach_identity(kube_settings.namespace, allocation, rendered.names.pod, other_pods))
        log.debug("objects ready", created=[str(m.ref) for m in made if m.created],
                  reused=[str(m.ref) for m in made if not m.created])
        timings.mark("kube_create")
        pod = next(m.obj for m in made if m.ref.kind == "Pod" and m.ref.name == rendered.names.pod)
        issue_attach_token(kube, kube_settings.namespace, allocation, pod, job_dir,
                           termination_grace_period_s=kube_settings.termination_grace_period_s,
                           api_timeout_s=kube_settings.api_timeout_s, other_pods=other_pods)
        timings.mark("kube_access")
        # All ranks or none: the ranks' Pods come up side by side, so waiting for each in turn
        # costs the slowest one's time.
        ranks: list[Rank] = []
        for pod_name, item in zip(rendered.pod_names, allocation.nodes, strict=True):
            with place_given_up():  # an image pull may take minutes: others' prologs go on
                verdict = wait_pod_ready(kube, kube_settings.namespace, pod_name,
                                         timeout_s=kube_settings.pod_ready_timeout_s,
                                         unschedulable_grace_s=kube_settings.unschedulable_grace_s)
            if not verdict.ready:
                if other_pods:
                    verdict = replace(verdict, reason=f"rank {len(ranks)} ({item.node}): {verdict.reason}")
                break
            ranks.append(Rank(pod_name, verdict.address, item.cpus))
        if verdict.ready:
            check_addresses(ranks)
        timings.mark("kube_wait_ready")
    except KubeRejected as exc:
        _cleanup(kube, settings, allocation, made)
        return reject(f"Kubernetes refused the job's objects: {exc}")
    except ConfigError as exc:
        _cleanup(kube, settings, allocation, made)
        return requeue(f"the bridge's Kubernetes credential does not work: {exc}", cause="kube_credential",
                       admin_problem=True)
    except BridgeError as exc:
        _cleanup(kube, settings, allocation, made)
        return kube_trouble(exc)
    except BaseException:
        # A bug must never leave a half-made set of objects behind.
        _cleanup(kube, settings, allocation, made)
        raise
    if not verdict.ready:
        _cleanup(kube, settings, allocation, made)
        return reject(verdict.reason) if verdict.permanent else requeue(verdict.reason, cause="pod_not_ready")
    node = allocation.node
    array = {"array_job_id": allocation.array_job_id, "array_task_id": allocation.array_task_id,
             "results": allocation.results_name} if allocation.results_name != allocation.job_id else {}
    multi = {"ranks": [{"rank": k, "pod": rank.pod, "address": rank.address, "node": item.node,
                        "kube_node": kube_nodes[k], "cpus": item.cpus, "gpus": item.gpus,
                        "gpu_indices": list(item.gpu_indices)}
                       for k, (rank, item) in enumerate(zip(ranks, allocation.nodes, strict=True))]} if other_pods else {}
    note("running", "", pod=rendered.names.pod, node=node.node, kube_node=kube_node, cpus=node.cpus,
         memory_mib=node.memory_mib, gpus=node.gpus, gpu_type=node.gpu_type, gpu_indices=list(node.gpu_indices),
         **array, **multi,
         # The epilog collects it; writing it now keeps the exact objects of the attempt that ran.
         also_write={"manifest.yaml": rendered.manifest_yaml.encode("utf-8")})
    # The last act: the script starts only now, so an attempt that fails or is given up on
    # before this line never ran any of it.
    waiting = client_waiting.get()
    if waiting is not None and not waiting():
        # The objects stay, the gate shut: whatever slurmctld does next finishes them. A prolog
        # run again (slurmctld restarted) takes them over, a requeued attempt's prolog removes
        # them, and the epilog or the reaper of a cancelled job collects and removes them.
        timings.outcome, timings.requeue_cause = "requeued", "hook_timeout"
        log.error("slurmctld stopped waiting for this prolog (its PrologEpilogTimeout, a restart, or scancel); "
                  "the script was not started")
        return EXIT_REQUEUE
    try:
        open_all_gates(kube, kube_settings.namespace, ranks)
    except BridgeError as exc:
        _cleanup(kube, settings, allocation, made)
        return requeue(f"cannot start the job's script in its Pod: {exc}", cause="kube_error")
    timings.mark("start_gate")
    timings.outcome = "ready"
    return EXIT_OK


def _remove_previous_attempts(kube: Kube, settings: Settings, allocation: JobAllocation) -> None:
    """A requeued job starts clean: objects of earlier attempts go first.

    A first attempt (restart count 0) has no earlier one, and every name it makes starts with
    its own attempt's, so the listing is skipped on the common path (7 LISTs per job). A
    leftover of another kind (a job ID Slurm handed out again after losing its state) is
    still met: a name it shares answers the create with 409 and a different spec hash (the
    job is requeued, and this listing runs then), and the epilog removes every attempt's."""
    if allocation.restart_count == 0:
        return
    namespace = settings.kubernetes.namespace
    current = ObjectNames.for_attempt(allocation.job_id, allocation.restart_count).pod
    old = [ref for ref in list_job_objects(kube, namespace, attempt_selector(allocation.job_id))
           if ref.name != current and not ref.name.startswith(f"{current}-")]
    if old:
        log.info("removing objects of an earlier attempt", objects=[str(r) for r in old], label=LABEL_RESTART)
        delete_objects(kube, old, grace_period_s=0)
        left = wait_gone(kube, old, timeout_s=settings.kubernetes.teardown_timeout_s / 2)
        if left:
            raise TemporaryError(f"objects of an earlier attempt are still terminating: {', '.join(map(str, left))}")


def _cleanup(kube: Kube, settings: Settings, allocation: JobAllocation, made: list[Made]) -> None:
    """Remove what this attempt made, and what an earlier run of this prolog made for it."""
    refs = [m.ref for m in made]
    try:
        selector = attempt_selector(allocation.job_id, allocation.restart_count)
        refs += [r for r in list_job_objects(kube, settings.kubernetes.namespace, selector) if r not in refs]
        delete_objects(kube, refs, grace_period_s=0)
        left = wait_gone(kube, refs, timeout_s=settings.kubernetes.teardown_timeout_s)
    except BridgeError as exc:
        log.error("cleanup failed; the reaper will finish it", error=str(exc), objects=[str(r) for r in refs])
        return
    if left:
        log.error("objects still present after cleanup; the reaper will finish it", objects=[str(r) for r in left])
    else:
        log.info("removed this attempt's objects", objects=[str(r) for r in refs])


def _admin_comment(settings: Settings, job_id: str, text: str) -> None:
    try:
        run_slurm(settings.slurm, ["scontrol", "update", f"JobId={job_id}", f"AdminComment={text[:900]}"])
    except BridgeError as exc:
        log.warning("cannot set the job's AdminComment", error=str(exc))


def _home_of(uid: int) -> Path | None:
    try:
        return Path(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return None
