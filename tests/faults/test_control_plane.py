"""Issue 14: the control plane goes away while jobs run, and comes back. No job is lost or run
twice, every object goes, and the user's output is whole."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.conftest import Sandbox
from tests.faults.conftest import restart
from tests.jobs.conftest import Jobs, job_script

COUNTING = "for i in $(seq 1 25); do echo line-$i; sleep 1; done"


def _lines(jobs: Jobs, user: str, job_id: str) -> list[str]:
    return [line for line in jobs.output_path(user, job_id).read_text().splitlines() if line.startswith("line-")]


def test_api_server_down_during_the_run_loses_no_output(jobs: Jobs, sandbox: Sandbox,
                                                        stop_daemon: Callable[[str], None]) -> None:
    job_id = jobs.sbatch("skbalice", job_script(body=COUNTING))
    jobs.wait_running(job_id, timeout_s=120)
    time.sleep(4)
    stop_daemon("kube-apiserver")  # the container runs on; attach's stream and watch break
    time.sleep(8)
    restart(sandbox, fresh_informers=True)
    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    assert _lines(jobs, "skbalice", job_id) == [f"line-{i}" for i in range(1, 26)], "every line once, in order"
    jobs.wait_no_objects(job_id, timeout_s=120)


def test_slurmctld_restarted_while_a_job_runs_keeps_the_job(jobs: Jobs, sandbox: Sandbox,
                                                            stop_daemon: Callable[[str], None]) -> None:
    job_id = jobs.sbatch("skbalice", job_script(body=COUNTING))
    jobs.wait_running(job_id, timeout_s=120)
    stop_daemon("slurmctld")
    time.sleep(3)
    restart(sandbox)
    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    assert _lines(jobs, "skbalice", job_id) == [f"line-{i}" for i in range(1, 26)]
    jobs.wait_no_objects(job_id, timeout_s=120)
    assert jobs.pod(job_id, restart=1) is None, "the job ran once"


def test_scheduler_down_requeues_with_the_reason_then_runs(jobs: Jobs, sandbox: Sandbox,
                                                           stop_daemon: Callable[[str], None]) -> None:
    stop_daemon("kube-scheduler")  # Pods stay Pending: the prolog gives up at pod_ready_timeout_s
    job_id = jobs.sbatch("skbalice", job_script(body="echo ran"))

    def requeued() -> bool:
        status = jobs.results("skbalice", job_id) / "bridge-status.json"
        return status.exists() and "requeued" in status.read_text()

    from tests.conftest import wait_for

    wait_for(requeued, timeout_s=150, what="the prolog's requeue while no scheduler runs")
    restart(sandbox)
    assert jobs.wait_done(job_id, timeout_s=400) == ("COMPLETED", "0:0")
    assert "ran" in jobs.output_path("skbalice", job_id).read_text()
    jobs.wait_no_objects(job_id, timeout_s=120)


def test_api_server_down_when_the_prolog_starts_requeues_then_runs_once(jobs: Jobs, sandbox: Sandbox,
                                                                        stop_daemon: Callable[[str], None]) -> None:
    stop_daemon("kube-apiserver")  # the prolog cannot reach Kubernetes: exit 1, slurmctld requeues
    job_id = jobs.sbatch("skbalice", job_script(body="echo ran-once"))

    from tests.conftest import wait_for

    def requeued() -> bool:
        status = jobs.results("skbalice", job_id) / "bridge-status.json"
        return status.exists() and "Kubernetes API unavailable" in status.read_text()

    try:
        wait_for(requeued, timeout_s=120, what="the prolog's requeue while the API server is down")
    finally:
        restart(sandbox, fresh_informers=True)
    assert jobs.wait_done(job_id, timeout_s=400) == ("COMPLETED", "0:0")
    assert jobs.output_path("skbalice", job_id).read_text().count("ran-once") == 1
    jobs.wait_no_objects(job_id, timeout_s=120)


def test_api_server_down_during_the_epilog_the_reaper_finishes(jobs: Jobs, sandbox: Sandbox,
                                                               stop_daemon: Callable[[str], None]) -> None:
    """Cancelled while Kubernetes is away: attach cannot delete the Pod, the epilog cannot tear
    down or collect in time; once the API server is back the reaper removes everything and
    collects what the epilog could not."""
    job_id = jobs.sbatch("skbalice", job_script(body=COUNTING))
    jobs.wait_running(job_id, timeout_s=120)
    stop_daemon("kube-apiserver")
    try:
        sandbox.slurm("scancel", job_id)
        assert jobs.wait_done(job_id, timeout_s=240)[0] == "CANCELLED"
    finally:
        restart(sandbox, fresh_informers=True)
    jobs.wait_no_objects(job_id, timeout_s=240)
    from tests.conftest import wait_for

    summary = jobs.results("skbalice", job_id) / "summary.json"
    wait_for(summary.is_file, timeout_s=120, what="the job's summary, collected by the reaper")
    assert "ended by SIGTERM" in jobs.output_path("skbalice", job_id).read_text()
