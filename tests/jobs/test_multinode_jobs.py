"""Issue 17: a job on two nodes runs one Pod per node, in real containers on both, with the
rendezvous a distributed trainer expects; the batch step follows rank 0 and fails with any rank."""

from __future__ import annotations

import json
import time

from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, job_script

EXCHANGE = r'''
echo "rank $NODE_RANK of $WORLD_SIZE nodeid=$SLURM_NODEID master=$MASTER_ADDR:$MASTER_PORT"
echo "hostfile:"; cat "$SKB_HOSTFILE"
python3 - <<'EOF'
import os, socket, time
rank, port = int(os.environ["NODE_RANK"]), int(os.environ["MASTER_PORT"])
if rank == 0:
    server = socket.create_server(("0.0.0.0", port))
    server.settimeout(60)
    conn, peer = server.accept()
    print("rank 0 got:", conn.recv(200).decode(), flush=True)
    conn.sendall(b"ack from rank 0")
    conn.close()
else:
    for _ in range(300):
        try:
            conn = socket.create_connection((os.environ["MASTER_ADDR"], port), timeout=5)
            break
        except OSError:
            time.sleep(0.2)
    conn.sendall(f"hello from rank {rank}".encode())
    print(f"rank {rank} got:", conn.recv(200).decode(), flush=True)
EOF
'''


def _nodes_of(sandbox: Sandbox, job_id: str) -> str:
    return sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "NodeList").stdout.strip()


def test_a_two_node_job_runs_a_pod_on_each_node_and_its_ranks_talk_over_tcp(jobs: Jobs, sandbox: Sandbox) -> None:
    assert len(sandbox.layout.nodes) >= 2, "needs the two-node sandbox (skbridge sandbox up --nodes 2)"
    job_id = jobs.sbatch("skbalice", job_script("--nodes=2", "--ntasks-per-node=1", body=EXCHANGE))
    pods_seen: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(pods_seen) < 2:
        for name in (f"skb-{job_id}-r0", f"skb-{job_id}-r0-rank1"):
            pod = jobs.kube.get_or_none(f"/api/v1/namespaces/{jobs.namespace}/pods/{name}")
            if pod and (pod.get("spec") or {}).get("nodeName"):
                pods_seen[name] = pod["spec"]["nodeName"]
        time.sleep(0.3)
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    # One Pod on each node: rank 0 on the batch host (where Slurm runs the batch step).
    assert set(pods_seen.values()) == {node.name for node in sandbox.layout.nodes[:2]}, pods_seen
    detail = sandbox.slurm("scontrol", "show", "job", job_id).stdout
    batch_host = detail.split("BatchHost=")[1].split()[0]
    assert pods_seen[f"skb-{job_id}-r0"] == batch_host
    assert set(_nodes_of(sandbox, job_id).split(",")) == set(pods_seen.values())
    rank0_subnet = next(node.pod_subnet for node in sandbox.layout.nodes if node.name == batch_host)
    output = jobs.output_path("skbalice", job_id).read_text()
    assert f"rank 0 of 2 nodeid=0 master={rank0_subnet.rsplit('.', 1)[0]}." in output, output
    assert "rank 0 got: hello from rank 1" in output, output
    folder = jobs.results("skbalice", job_id)
    rank1 = (folder / "rank1-pod.log").read_text()
    assert "rank 1 of 2 nodeid=1" in rank1 and "rank 1 got: ack from rank 0" in rank1, rank1
    hostfile = [line for line in output.split("hostfile:")[1].splitlines() if "slots=" in line]
    assert len(hostfile) == 2 and hostfile[0].startswith(rank0_subnet.rsplit(".", 1)[0] + "."), output
    summary = json.loads((folder / "summary.json").read_text())
    assert [(rank["rank"], rank["exit_code"]) for rank in summary["ranks"]] == [(0, 0), (1, 0)]
    assert summary["state"] == "completed"
    jobs.wait_no_objects(job_id)


def test_a_rank_that_fails_fails_the_job_at_once_and_every_pod_goes(jobs: Jobs, sandbox: Sandbox) -> None:
    body = 'if [ "$NODE_RANK" = 1 ]; then echo "rank 1 gives up"; exit 3; fi\necho "rank 0 waits"; sleep 300'
    job_id = jobs.sbatch("skbbob", job_script("--nodes=2", "--ntasks-per-node=1", body=body))
    started = time.monotonic()
    assert jobs.wait_done(job_id, timeout_s=120) == ("FAILED", "3:0")
    assert time.monotonic() - started < 100, "rank 0's sleep 300 was stopped, not waited out"
    output = jobs.output_path("skbbob", job_id).read_text()
    assert "rank 0 waits" in output
    assert "rank 1 (Pod skb-" in output and "exit code 3" in output, output
    summary = json.loads((jobs.results("skbbob", job_id) / "summary.json").read_text())
    assert summary["exit_code"] == 3 and summary["state"] == "failed", summary
    assert "rank 1 gives up" in (jobs.results("skbbob", job_id) / "rank1-pod.log").read_text()
    jobs.wait_no_objects(job_id)
