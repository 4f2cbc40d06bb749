"""Issue 17: the sandbox is a cluster. Node 1 is this host (a100 GPUs); skbnode2 is a second
Slurm node with its own slurmd, containerd and kubelet in network and UTS namespaces of its
own, with h100 GPUs. Jobs land where Slurm puts them and run in real containers there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.sandbox.images import JOB_IMAGE
from bridge.sandbox.layout import SandboxNode
from bridge.slurm.jobinfo import parse_index_list
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
GPU_LINE = 'echo "gpus NVIDIA=[$NVIDIA_VISIBLE_DEVICES] CUDA=[$CUDA_VISIBLE_DEVICES] host=$(hostname)"'


@pytest.fixture
def h100_node(sandbox: Sandbox) -> SandboxNode:
    found = [node for node in sandbox.layout.extra_nodes if node.gpu_type == "h100"]
    assert found, f"the sandbox has no h100 node: {sandbox.layout.nodes} (skbridge sandbox up --nodes 2)"
    return found[0]


def _allocated_gpu_indices(sandbox: Sandbox, job_id: str) -> list[int]:
    detail = sandbox.slurm("scontrol", "show", "job", "-d", job_id).stdout
    return parse_index_list(detail.split("IDX:")[1].split(")")[0])


def test_both_sides_see_the_same_nodes_with_their_own_gpus(sandbox: Sandbox) -> None:
    sinfo = sandbox.slurm("sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %c %m %G").stdout.split("\n")
    slurm_side = {line.split()[0]: line.split()[1:] for line in sinfo if line.strip()}
    for node in sandbox.layout.nodes:
        assert slurm_side[node.name] == [str(node.cpus), str(node.memory_mib), f"gpu:{node.gpu_type}:{node.gpus}"]
        kube = sandbox.core.read_node(node.name)
        assert kube.status.capacity["nvidia.com/gpu"] == str(node.gpus)
        assert kube.status.capacity["cpu"] == str(node.cpus)
        assert kube.metadata.labels["nvidia.com/gpu.product"] == node.gpu_type
        assert {(a.type, a.address) for a in kube.status.addresses} >= {("InternalIP", node.address)}
        assert any(c.type == "Ready" and c.status == "True" for c in kube.status.conditions)
    # The user's view lists every node with its GPU type, and no node is flagged one-sided.
    listing = subprocess.run([SKBRIDGE, "nodes", "--json"], env=sandbox.env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert listing.returncode == 0, listing.stderr
    view = json.loads(listing.stdout)
    nodes = {entry["name"]: entry for entry in view["nodes"]}
    for node in sandbox.layout.nodes:
        assert nodes[node.name]["kubernetes"] == "Ready", nodes[node.name]
        assert nodes[node.name]["disagreements"] == [], nodes[node.name]
        assert nodes[node.name]["gpus"][node.gpu_type]["total"] == node.gpus
        assert node.name not in view["kubernetes_only"]


def test_a_batch_step_runs_on_its_node_under_that_nodes_hostname(jobs: Jobs, sandbox: Sandbox,
                                                                h100_node: SandboxNode, tmp_path: Path) -> None:
    """Root's plain jobs stay on the host road; this one shows the slurmd is a host of its own."""
    out = tmp_path / "where.out"
    job_id = sandbox.slurm("sbatch", "--parsable", f"--nodelist={h100_node.name}", f"--output={out}",
                           "--wrap", "hostname; ip -o -4 addr show scope global | awk '{print $4}'").stdout.strip()
    jobs.submitted.append(job_id)
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    lines = out.read_text().split()
    assert lines[0] == h100_node.name
    assert f"{h100_node.address}/16" in lines


def test_an_h100_job_runs_in_a_container_on_the_h100_node_with_its_gpus(jobs: Jobs, sandbox: Sandbox,
                                                                       h100_node: SandboxNode) -> None:
    job_id = jobs.sbatch("skbalice", job_script("--gres=gpu:h100:2", body=GPU_LINE))
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    state = sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "NodeList").stdout.strip()
    assert state == h100_node.name
    text = jobs.output_path("skbalice", job_id).read_text()
    line = next(line for line in text.splitlines() if line.startswith("gpus "))
    # Both of the node's two GPUs, numbered 0..1 in the container; the Pod's hostname is its own.
    assert "NVIDIA=[0,1]" in line and "CUDA=[0,1]" in line, line
    summary = json.loads((jobs.results("skbalice", job_id) / "summary.json").read_text())
    assert summary["attempts"][-1]["kube_node"] == h100_node.name
    assert summary["exit_code"] == 0
    jobs.wait_no_objects(job_id)


def test_jobs_go_where_their_gpu_type_is_and_a_type_no_node_has_is_refused(jobs: Jobs, sandbox: Sandbox,
                                                                          h100_node: SandboxNode) -> None:
    a100 = jobs.sbatch("skbbob", job_script("--gres=gpu:a100:1", body=GPU_LINE))
    h100 = jobs.sbatch("skbbob", job_script("--gres=gpu:h100:1", body=GPU_LINE))
    for job_id in (a100, h100):
        assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    where = {job_id: sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "NodeList").stdout.strip()
             for job_id in (a100, h100)}
    assert where == {a100: sandbox.node_name, h100: h100_node.name}
    # More h100s than any node has: Slurm refuses the job at submission, nothing is queued.
    script = jobs.write_script("skbbob", "too-many.sh", job_script(f"--gres=gpu:h100:{h100_node.gpus + 1}"))
    refused = sandbox.slurm("sbatch", "--parsable", f"--chdir={jobs.home('skbbob')}", str(script), user="skbbob",
                            check=False)
    assert refused.returncode != 0
    assert "node configuration is not available" in refused.stderr.lower(), refused.stderr


def test_two_jobs_on_two_nodes_get_the_gpu_indices_slurm_gave_each(jobs: Jobs, sandbox: Sandbox,
                                                                  h100_node: SandboxNode) -> None:
    """The same GPU index on two nodes is two different GPUs: each Pod gets its own node's."""
    hold = 'while [ ! -e "/workspace/go-$SLURM_JOB_ID" ]; do sleep 0.2; done'
    first = jobs.sbatch("skbalice", job_script("--gres=gpu:a100:1", body="\n".join([GPU_LINE, hold])))
    second = jobs.sbatch("skbalice", job_script("--gres=gpu:h100:1", body="\n".join([GPU_LINE, hold])))
    for job_id in (first, second):
        jobs.wait_running(job_id)
    pods = {job_id: jobs.pod(job_id) for job_id in (first, second)}
    assert pods[first]["spec"]["nodeName"] == sandbox.node_name  # type: ignore[index]
    assert pods[second]["spec"]["nodeName"] == h100_node.name  # type: ignore[index]
    indices = {job_id: _allocated_gpu_indices(sandbox, job_id) for job_id in (first, second)}
    for job_id in (first, second):
        (jobs.home("skbalice") / f"go-{job_id}").touch()
    for job_id in (first, second):
        assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
        line = next(line for line in jobs.output_path("skbalice", job_id).read_text().splitlines()
                    if line.startswith("gpus "))
        assert f"NVIDIA=[{indices[job_id][0]}]" in line, (indices, line)


SERVER = """
import socket
server = socket.create_server(("0.0.0.0", 7000))
conn, peer = server.accept()
conn.sendall(f"hello {peer[0]} from {socket.gethostname()}".encode())
conn.close()
"""
CLIENT = """
import socket, sys
defaults = [line for line in open("/proc/net/route").read().splitlines()[1:] if line.split()[1] == "00000000"]
with socket.create_connection((sys.argv[1], 7000), timeout=20) as conn:
    print(conn.recv(200).decode(), "| default routes:", len(defaults), flush=True)
"""


def test_pods_on_two_nodes_reach_each_other_over_tcp_and_have_no_default_route(
        sandbox: Sandbox, test_namespace: str, h100_node: SandboxNode) -> None:
    """What a multi-node job's ranks need: Pod to Pod across nodes, and nothing beyond the Pods."""
    def pod(name: str, node: str, code: str, *args: str) -> dict[str, object]:
        return {"metadata": {"name": name}, "spec": {
            "restartPolicy": "Never", "nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": JOB_IMAGE, "command": ["python3", "-c", code, *args]}]}}

    core = sandbox.core
    core.create_namespaced_pod(test_namespace, pod("server", sandbox.node_name, SERVER))
    wait_for(lambda: core.read_namespaced_pod("server", test_namespace).status.phase == "Running", timeout_s=60,
             what="the server Pod running")
    server_ip = core.read_namespaced_pod("server", test_namespace).status.pod_ip
    core.create_namespaced_pod(test_namespace, pod("client", h100_node.name, CLIENT, server_ip))
    wait_for(lambda: core.read_namespaced_pod("client", test_namespace).status.phase in {"Succeeded", "Failed"},
             timeout_s=60, what="the client Pod done")
    client = core.read_namespaced_pod("client", test_namespace)
    log = core.read_namespaced_pod_log("client", test_namespace)
    assert client.status.phase == "Succeeded", log
    assert f"hello {client.status.pod_ip} from server" in log, log
    assert "default routes: 0" in log, log
    assert server_ip.startswith("10.88.0.") and client.status.pod_ip.startswith(
        h100_node.pod_subnet.rsplit(".", 2)[0]), (server_ip, client.status.pod_ip)
