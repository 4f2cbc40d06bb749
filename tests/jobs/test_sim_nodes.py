"""`skbridge sandbox up --sim-nodes M`: simulated nodes for scale work. Each is a real slurmd in
namespaces of its own (its own hostname and address) mirrored by a kwok node of the same name;
jobs there are placed, allocated and followed by the bridge like any other, their Pods played
by kwok. `--sim-nodes 0` removes them again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from bridge.sandbox.layout import SandboxLayout, sim_node
from bridge.sandbox.procs import Daemons
from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, job_script

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
COUNT = 3


def _up(*argv: str) -> None:
    done = subprocess.run([SKBRIDGE, "sandbox", "up", "--no-show", *argv], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def sim_nodes(sandbox: Sandbox) -> Iterator[list[str]]:
    _up("--sim-nodes", str(COUNT))
    try:
        yield [sim_node(index).name for index in range(1, COUNT + 1)]
    finally:
        _up("--sim-nodes", "0")


def test_simulated_nodes_come_and_go_and_jobs_are_placed_there(sim_nodes: list[str], jobs: Jobs,
                                                               sandbox: Sandbox, tmp_path: Path) -> None:
    sinfo = sandbox.slurm("sinfo", "-h", "-N", "-p", "sim", "-o", "%N %T").stdout.split("\n")
    states = dict(line.split() for line in sinfo if line.strip())
    assert sorted(states) == sim_nodes and all(state == "idle" for state in states.values()), states
    for name in sim_nodes:
        node = sandbox.core.read_node(name)
        assert "kwok.x-k8s.io/node" in (node.metadata.annotations or {})
    # A plain (root) job on a simulated node runs on its slurmd, under its hostname.
    out = tmp_path / "where.out"
    root_job = sandbox.slurm("sbatch", "--parsable", "--partition=sim", f"--nodelist={sim_nodes[1]}",
                             f"--output={out}", "--wrap", "hostname").stdout.strip()
    jobs.submitted.append(root_job)
    assert jobs.wait_done(root_job) == ("COMPLETED", "0:0")
    assert out.read_text().strip() == sim_nodes[1]
    # A bridge job there: its Pod on the kwok node of that name, its exit code kwok's.
    job_id = jobs.sbatch("skbalice", job_script("--partition=sim", env=("SANDBOX_RUN_DURATION=1s",
                                                                          "SANDBOX_EXIT_CODE=4")))
    assert jobs.wait_done(job_id) == ("FAILED", "4:0")
    node = sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "NodeList").stdout.strip()
    assert node in sim_nodes
    jobs.wait_no_objects(job_id)


def test_removing_simulated_nodes_leaves_nothing(sandbox: Sandbox) -> None:
    _up("--sim-nodes", "2")
    _up("--sim-nodes", "0")
    layout = SandboxLayout.default()
    assert layout.sim_nodes == ()
    assert "sim" not in sandbox.slurm("sinfo", "-h", "-o", "%P").stdout
    daemons = Daemons(layout)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for index in (1, 2):
        gone = sim_node(index)
        assert daemons.running(f"slurmd-{gone.name}") is None
        assert gone.netns not in namespaces
        with pytest.raises(ApiException) as missing:
            sandbox.core.read_node(gone.name)
        assert missing.value.status == 404
