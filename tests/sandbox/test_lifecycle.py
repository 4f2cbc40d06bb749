"""`skbridge sandbox up/down/status`: idempotent start, exact stop, honest status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.sandbox import kube_node, node_net, slurm_cluster
from bridge.sandbox.images import JOB_IMAGE
from bridge.sandbox.procs import Daemons, stray_processes
from tests.conftest import Sandbox, wait_for

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
CONTROLLERS = ("slurmctld", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def _daemons(sandbox: Sandbox) -> list[str]:
    layout = sandbox.layout
    per_node = [name for node in layout.nodes for name in (
        slurm_cluster.slurmd_daemon(node), *(kube_node.daemon_name(c, node) for c in kube_node.COMPONENTS))]
    return [*CONTROLLERS, *per_node, node_net.RELAY]


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SKBRIDGE, "sandbox", *argv], capture_output=True, text=True, timeout=600, check=False)


def _shims() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "exe").endswith("/containerd-shim-runc-v2"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _node_leftovers(sandbox: Sandbox) -> dict[str, object]:
    """What a real node can leave behind: mounts, network namespaces, interfaces, cgroups, shims."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    extra = sandbox.layout.extra_nodes
    return {
        "mounts": kube_node.mounts_below(sandbox.layout.root),
        "netns": kube_node.sandbox_netns() + [ns for node in extra for ns in kube_node.sandbox_netns(node)],
        "bridge": kube_node.BRIDGE_IF in links,
        "veths on the bridge": f"master {kube_node.BRIDGE_IF}" in links,
        "node namespaces": [node.netns for node in extra if node.netns and node.netns in namespaces],
        "node bridge": node_net.HOST_BRIDGE in links,
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{kube_node.KUBEPODS}"))
        + sorted(str(p) for node in extra for p in Path("/sys/fs/cgroup").glob(f"*/{kube_node.cgroup_parent(node)}")),
        "shims": _shims(),
        "cni results": sorted(p.name for p in kube_node.CNI_CACHE.glob(f"{kube_node.CNI_NETWORK}-*")),
        "shim sockets": sorted(p.name for p in kube_node.SHIM_SOCKETS.glob("*")),
    }


def test_up_twice_is_harmless_and_down_stops_exactly_what_up_started(
    sandbox: Sandbox, tmp_job_dir: Path, test_namespace: str,
) -> None:
    daemons = Daemons(sandbox.layout)
    names = _daemons(sandbox)
    assert sandbox.layout.extra_nodes, "the default sandbox has more than one node"
    before = {name: daemons.running(name) for name in names}
    assert all(before.values()), before

    again = _cli("up", "--no-show")
    assert again.returncode == 0, again.stderr
    assert {name: daemons.running(name) for name in names} == before, "a second `up` must not restart anything"

    status = _cli("status")
    assert status.returncode == 0, status.stdout
    for name in names:
        assert name in status.stdout

    # A running job leaves slurmstepd processes that `down` must not leave behind.
    script = tmp_job_dir / "long.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    job_id = sandbox.slurm("sbatch", "--parsable", "--output=/dev/null", str(script)).stdout.strip()
    # A running container leaves mounts, a network namespace, a veth and a shim behind if
    # `down` is careless; one that ignores SIGTERM makes it wait.
    # One on every node.
    for node in sandbox.layout.nodes:
        sandbox.core.create_namespaced_pod(test_namespace, {"metadata": {"name": f"stubborn-{node.name}"}, "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 30, "nodeName": node.name,
            "containers": [{"name": "main", "image": JOB_IMAGE,
                            "command": ["/bin/bash", "-c", "trap '' TERM; sleep 600 & wait; sleep 600"]}]}})
    for node in sandbox.layout.nodes:
        wait_for(lambda node=node: sandbox.core.read_namespaced_pod(  # type: ignore[misc]
            f"stubborn-{node.name}", test_namespace).status.phase == "Running",
            timeout_s=60, what=f"a container running on {node.name}")
    running = _node_leftovers(sandbox)
    assert running["mounts"] and running["bridge"] and running["shims"], running
    assert all(kube_node.sandbox_netns(node) for node in sandbox.layout.nodes), running
    assert running["node namespaces"] and running["node bridge"], running
    pod_netns = running["netns"]
    assert isinstance(pod_netns, list)

    down = _cli("down")
    assert down.returncode == 0, down.stderr
    for name, rec in before.items():
        assert rec is not None and not rec.alive(), f"{name} (pid {rec.pid if rec else '?'}) still alive"
    assert stray_processes(sandbox.layout) == []
    assert _node_leftovers(sandbox) == {"mounts": [], "netns": [], "bridge": False, "veths on the bridge": False,
                                        "node namespaces": [], "node bridge": False,
                                        "cgroups": [], "shims": [], "cni results": [],
                                        "shim sockets": []}
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(name in netns for name in pod_netns), netns
    stopped = _cli("status")
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout

    back = _cli("up", "--no-show")
    assert back.returncode == 0, back.stderr
    assert _cli("status").returncode == 0
    sandbox.slurm("scancel", job_id, check=False)
