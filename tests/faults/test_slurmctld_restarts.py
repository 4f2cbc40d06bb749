"""Issue 14: slurmctld restarted while a job's prolog runs and while its epilog runs.

slurmctld runs both hooks; a restart loses the hook process (served by the watcher, the hook
itself goes on there). Either way the job runs its script once, ends in the right state, has
its results collected and leaves no object behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.conftest import Sandbox, wait_for
from tests.faults.conftest import restart
from tests.jobs.conftest import Jobs, job_script


def _squeue_state(jobs: Jobs, job_id: str) -> str:
    out = jobs.sandbox.slurm("squeue", "--noheader", "--states=all", "--jobs", job_id, "--format=%T", check=False)
    return out.stdout.strip()


def test_slurmctld_restarted_while_the_prolog_runs_runs_the_script_once(
        jobs: Jobs, sandbox: Sandbox, stop_daemon: Callable[[str], None]) -> None:
    runs = jobs.home("skbalice") / f"runs-{time.time_ns()}"
    stop_daemon("kube-scheduler")  # the Pod stays Pending: the prolog waits for it to be Ready
    job_id = jobs.sbatch("skbalice", job_script(body=f"echo once >> /workspace/{runs.name}; echo ran-once"))
    try:
        wait_for(lambda: jobs.pod(job_id) is not None, timeout_s=90, what="the prolog making the Pod")
        assert _squeue_state(jobs, job_id) == "CONFIGURING", "the prolog is still at work"
        stop_daemon("slurmctld")
        time.sleep(3)
    finally:
        restart(sandbox)
    assert jobs.wait_done(job_id, timeout_s=600) == ("COMPLETED", "0:0")
    assert runs.read_text() == "once\n", "the script ran exactly once"
    assert jobs.output_path("skbalice", job_id).read_text().count("ran-once") == 1
    jobs.wait_no_objects(job_id, timeout_s=120)
    runs.unlink()


def test_slurmctld_restarted_while_the_epilog_runs_collects_and_removes_everything(
        jobs: Jobs, sandbox: Sandbox, stop_daemon: Callable[[str], None]) -> None:
    # A script that ignores SIGTERM keeps its Pod terminating for the grace period after
    # scancel, and the epilog waits for it to be gone: a window of many seconds.
    body = "trap 'echo ignoring SIGTERM' TERM; echo started; for i in $(seq 1 600); do sleep 1; done"
    job_id = jobs.sbatch("skbalice", job_script(body=body))
    jobs.wait_running(job_id, timeout_s=120)
    output = jobs.output_path("skbalice", job_id)
    wait_for(lambda: output.exists() and "started" in output.read_text(), timeout_s=60, what="the script started")
    sandbox.slurm("scancel", job_id)
    try:
        wait_for(lambda: _squeue_state(jobs, job_id) == "COMPLETING", timeout_s=60, what="the epilog at work",
                 interval_s=0.1)
        stop_daemon("slurmctld")
        time.sleep(3)
    finally:
        restart(sandbox)
    assert jobs.wait_done(job_id, timeout_s=300)[0] == "CANCELLED"
    jobs.wait_no_objects(job_id, timeout_s=180)
    summary = jobs.results("skbalice", job_id) / "summary.json"
    wait_for(summary.is_file, timeout_s=120, what="the job's summary (the epilog's or the reaper's)")
    assert (jobs.results("skbalice", job_id) / "pod.log").read_text().count("started") == 1
