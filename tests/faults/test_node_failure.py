"""Issue 14: a compute node dies under a running job (slurm-bridge #49: Pods stuck Terminating
on a dead node). The sandbox's second node, `skbnode2`, is powered off the hard way: every
process of its network namespace (slurmd, the job's slurmstepd and `attach`, containerd, the
kubelet, the shims) and every container process in its cgroups is SIGKILLed at once, and
Slurm is told the node is down, as slurmctld itself says after `SlurmdTimeout` (120 s).

Slurm requeues the job (JobRequeue=1). The failed attempt's epilog cannot reach a kubelet, so
its Pod stays Terminating past the epilog's deadline (`kubernetes.teardown_timeout_s`); once
the node is back, the next attempt's prolog removes what is left of the failed one, the next
attempt runs to its end on the node it asked for, and nothing of either attempt is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

from bridge.sandbox.kube_node import daemon_name, kill_containers
from bridge.sandbox.layout import SandboxNode
from bridge.sandbox.procs import Daemons
from tests.conftest import Sandbox, wait_for
from tests.faults.conftest import log_events, restart
from tests.jobs.conftest import Jobs, job_script

LINES = 20


def _second_node(sandbox: Sandbox) -> SandboxNode:
    found = [node for node in sandbox.layout.extra_nodes if node.netns]
    assert found, f"the sandbox has one real node: {sandbox.layout.nodes} (skbridge sandbox up --nodes 2)"
    return found[0]


def _power_off(sandbox: Sandbox, node: SandboxNode) -> None:
    """Everything of the node dies at once, without a chance to clean up."""
    netns = node.netns
    assert netns is not None

    def processes() -> set[int]:
        out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True)
        return {int(pid) for pid in out.stdout.split()}

    Daemons(sandbox.layout).stop(daemon_name("node-keeper", node))  # the host-side helper, not the node
    for pid in processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    kill_containers(node)
    wait_for(lambda: not processes(), timeout_s=10, what=f"every process of {node.name} gone")


def _pod_log_lines(jobs: Jobs, job_id: str) -> list[str]:
    path = jobs.output_path("skbalice", job_id)
    text = path.read_text() if path.exists() else ""
    return [line for line in text.splitlines() if line.startswith("line-n-")]


STUCK = "objects still present at the epilog's deadline; the reaper will remove them"


def _epilog_ends(jobs: Jobs, since: int, job_id: str) -> list[str]:
    """How the job's epilogs ended so far: "removed", or STUCK."""
    return [str(entry["event"]) for event in ("removed", STUCK)
            for entry in log_events(jobs.hook_log()[since:], "epilog", event) if entry.get("job_id") == job_id]


def test_a_node_dying_under_a_job_requeues_it_and_leaves_nothing(jobs: Jobs, sandbox: Sandbox) -> None:
    node = _second_node(sandbox)
    body = f"for i in $(seq 1 {LINES}); do echo line-n-$i; sleep 1; done"
    before = len(jobs.hook_log())
    job_id = jobs.sbatch("skbalice", job_script(body=body), f"--nodelist={node.name}")
    first = jobs.wait_running(job_id, timeout_s=120)
    assert first["spec"]["nodeName"] == node.name
    wait_for(lambda: len(_pod_log_lines(jobs, job_id)) >= 3, timeout_s=60, what="the job's first lines")
    try:
        _power_off(sandbox, node)
        sandbox.slurm("scontrol", "update", f"NodeName={node.name}", "State=DOWN", "Reason=skbridge-test:powered-off")
        # Slurm ends the attempt (NODE_FAIL) and requeues the job; it waits for its node.
        wait_for(lambda: jobs.squeue_job(job_id).get("restart_cnt", 0) >= 1
                 or "PENDING" in str(jobs.squeue_job(job_id).get("job_state")),
                 timeout_s=180, what=f"job {job_id} requeued after its node failed")
        # The failed attempt's epilog collects what the API server still knows and deletes its
        # objects; with no kubelet to confirm, the Pod stays Terminating past its deadline.
        wait_for(lambda: bool(_epilog_ends(jobs, before, job_id)), timeout_s=240, what="the failed attempt's epilog")
        assert _epilog_ends(jobs, before, job_id) == [STUCK], "the epilog cannot finish the Pod of a dead node"
        stuck = jobs.pod(job_id, restart=0)
        assert stuck is not None and stuck["metadata"].get("deletionTimestamp"), "Terminating, as on a dead node"
        assert jobs.pod(job_id, restart=1) is None, "the next attempt waits for a node"
    finally:
        restart(sandbox)  # the node boots: its daemons start, slurmd registers (ReturnToService=2)
    # sacct shows the failed attempt (NODE_FAIL) until the next one starts.
    jobs.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"}, timeout_s=420)
    assert jobs.wait_done(job_id, timeout_s=300) == ("COMPLETED", "0:0")
    assert _pod_log_lines(jobs, job_id) == [f"line-n-{i}" for i in range(1, LINES + 1)], \
        "the requeued attempt's output is whole, once"
    history = sandbox.slurm("sacct", "-n", "-P", "-X", "--duplicates", "-j", job_id, "-o", "State").stdout.split()
    assert history[0] == "NODE_FAIL", history
    summary = json.loads((jobs.results("skbalice", job_id) / "summary.json").read_text())
    assert {a["attempt"] for a in summary["attempts"]} == {0, 1}, summary["attempts"]
    assert summary["attempts"][-1]["kube_node"] == node.name
    assert summary["restart_count"] == 1 and summary["state"] == "completed"
    jobs.wait_no_objects(job_id, timeout_s=180)
