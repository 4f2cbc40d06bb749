"""Issue 14: the reaper's account agrees with the epilogs'. It leaves a job to a hook of it
that the watcher still runs (Slurm may count a job cancelled during its prolog as ended while
its epilog still tears down), and it counts a job as reaped only when it removed something."""

from __future__ import annotations

import itertools

from bridge.collect.reaper import reap_once
from bridge.kubernetes.objects import collection_path, object_path
from bridge.kubernetes.render import LABEL_JOB_ID, LABEL_MANAGED_BY, LABEL_USER, MANAGED_BY
from tests.jobs.conftest import Jobs

_ids = itertools.count(3_900_000_000)


def test_the_reaper_leaves_a_job_to_its_running_hook_and_counts_only_what_it_removed(jobs: Jobs) -> None:
    job_id = str(next(_ids))  # an id Slurm never gave: "Slurm no longer knows the job"
    name = f"skb-{job_id}-r0-attach"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
               "metadata": {"name": name, "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB_ID: job_id,
                                                     LABEL_USER: "skbalice"}}}
    path = object_path("ServiceAccount", name, jobs.namespace)
    jobs.kube.request("POST", collection_path("ServiceAccount", jobs.namespace), body=account)
    try:
        reaped = reap_once(jobs.settings, jobs.kube, grace_s=0, hook_running=lambda running: running == job_id)
        assert job_id not in reaped and jobs.kube.get_or_none(path) is not None, "left to the job's hook"

        assert job_id in reap_once(jobs.settings, jobs.kube, grace_s=0, hook_running=lambda _running: False)
        assert jobs.kube.get_or_none(path) is None
        assert job_id not in reap_once(jobs.settings, jobs.kube, grace_s=0), "nothing left, nothing reaped"
    finally:
        jobs.kube.delete(path)
