"""Issue 14: the watcher killed while it serves a hook, its socket removed, the node's kubelet
killed, etcd restarted, all while a job is in flight. Each job still runs exactly once, its
output is whole, and none of its objects is left behind."""

from __future__ import annotations

import os
import signal
import time

from bridge.hooks.server import ping
from bridge.sandbox.procs import Daemons
from tests.conftest import Sandbox, wait_for
from tests.faults.conftest import log_events, restart
from tests.jobs.conftest import Jobs, job_script

COUNTING = "for i in $(seq 1 20); do echo line-{n}-$i; sleep 1; done"


def _kill9(sandbox: Sandbox, name: str) -> None:
    record = Daemons(sandbox.layout).running(name)
    assert record is not None, f"{name} is not running"
    os.kill(record.pid, signal.SIGKILL)
    wait_for(lambda: not record.alive(), timeout_s=10, what=f"{name} gone")


def _counted(jobs: Jobs, job_id: str, tag: str) -> list[str]:
    text = jobs.output_path("skbalice", job_id).read_text()
    return [line for line in text.splitlines() if line.startswith(f"line-{tag}-")]


def _ran_once_and_whole(jobs: Jobs, job_id: str, tag: str, lines: int = 20) -> None:
    assert jobs.wait_done(job_id, timeout_s=300) == ("COMPLETED", "0:0")
    assert _counted(jobs, job_id, tag) == [f"line-{tag}-{i}" for i in range(1, lines + 1)], "every line once, in order"
    assert jobs.pod(job_id, restart=1) is None, "the job ran once"
    jobs.wait_no_objects(job_id, timeout_s=120)


def test_watcher_killed_while_serving_the_prolog(jobs: Jobs, sandbox: Sandbox) -> None:
    """The hook client loses its connection mid-prolog and runs the prolog itself; the prolog,
    idempotent, takes over the objects the killed one created."""
    before = jobs.hook_log()
    job_id = jobs.sbatch("skbalice", job_script(body=COUNTING.format(n="p")))
    try:
        # The prolog is in progress once it has created objects and the job is not yet running.
        wait_for(lambda: bool(jobs.objects(job_id)), timeout_s=120, what="the prolog creating objects", interval_s=0.05)
        _kill9(sandbox, "watcher")
        _ran_once_and_whole(jobs, job_id, "p")
    finally:
        restart(sandbox)
    assert _hook_runs(jobs.hook_log()[len(before):], job_id, "prolog") == ["process"], \
        "the prolog cut off in the watcher ran to its end once, as a process"


def _hook_runs(log_text: str, job_id: str, component: str) -> list[str]:
    """Who ran each completed `component` hook of `job_id` ("watcher" or "process")."""
    return [str(entry.get("served_by")) for entry in log_events(log_text, component, f"{component} done")
            if entry.get("job_id") == job_id]

def test_hook_socket_removed_hooks_run_as_processes(jobs: Jobs, sandbox: Sandbox) -> None:
    socket_path = jobs.settings.slurm.hook_socket_path
    assert socket_path is not None
    # After an earlier test's restart the file may still be the killed watcher's, which the new
    # one replaces once it serves: remove the one that serves.
    wait_for(lambda: ping(socket_path), timeout_s=60, what="the watcher serving hooks")
    socket_path.unlink()
    try:
        before = jobs.hook_log()
        job_id = jobs.sbatch("skbalice", job_script(body=COUNTING.format(n="s")))
        _ran_once_and_whole(jobs, job_id, "s")
        assert _hook_runs(jobs.hook_log()[len(before):], job_id, "prolog") == ["process"]
    finally:
        Daemons(sandbox.layout).stop("watcher")  # a fresh start binds the socket again
        restart(sandbox)
    wait_for(socket_path.exists, timeout_s=30, what="the restarted watcher serving hooks again")


def test_kubelet_killed_while_a_job_runs(jobs: Jobs, sandbox: Sandbox) -> None:
    """The container runs on under containerd while the kubelet is away; a kubelet back within
    the node's grace period reports it again, and the job ends as it would have."""
    job_id = jobs.sbatch("skbalice", job_script(body=COUNTING.format(n="k")))
    jobs.wait_running(job_id, timeout_s=120)
    time.sleep(3)
    _kill9(sandbox, "kubelet")
    try:
        time.sleep(8)
    finally:
        restart(sandbox)
    _ran_once_and_whole(jobs, job_id, "k")


def _node_ready(jobs: Jobs, node: str) -> str:
    found = jobs.kube.request("GET", f"/api/v1/nodes/{node}")
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((str(c.get("status")) for c in conditions if c.get("type") == "Ready"), "")


def test_kubelet_away_past_the_node_grace_period(jobs: Jobs, sandbox: Sandbox) -> None:
    """Away longer than the node monitor's grace period: the node controller declares the node
    not ready (its Pods not Ready, the unreachable taint set). The container runs on under
    containerd, attach keeps waiting rather than failing the job, and once the kubelet is back
    it reports the container again and the job ends as it would have.

    Nor is it evicted later: the API server gives every Pod that does not say otherwise 300 s
    of toleration for a not-ready or unreachable node, after which the taint manager deletes
    it. The bridge's Pod tolerates both taints without a limit (Slurm decides that a node has
    failed), and the API server admitted it so."""
    job_id = jobs.sbatch("skbalice", job_script(body="for i in $(seq 1 120); do echo line-g-$i; sleep 1; done"))
    pod = jobs.wait_running(job_id, timeout_s=120)
    tolerated = {t.get("key"): t for t in pod["spec"].get("tolerations") or [] if t.get("effect") == "NoExecute"}
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        assert taint in tolerated and "tolerationSeconds" not in tolerated[taint], pod["spec"].get("tolerations")
    _kill9(sandbox, "kubelet")
    try:
        wait_for(lambda: _node_ready(jobs, sandbox.node_name) != "True", timeout_s=120,
                 what="the node declared not ready", interval_s=1)
        assert jobs.sacct(job_id)[0] == "RUNNING"
        assert "deletionTimestamp" not in (jobs.pod(job_id) or {}).get("metadata", {})
    finally:
        restart(sandbox)
    _ran_once_and_whole(jobs, job_id, "g", lines=120)


def test_etcd_restarted_while_a_job_runs(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script(body=COUNTING.format(n="e")))
    jobs.wait_running(job_id, timeout_s=120)
    time.sleep(3)
    assert Daemons(sandbox.layout).stop("etcd")
    try:
        time.sleep(6)
    finally:
        restart(sandbox, fresh_informers=True)
    _ran_once_and_whole(jobs, job_id, "e")
