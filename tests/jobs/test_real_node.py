"""Issue 12: jobs run for real on the sandbox's kubelet node. Each test submits with `sbatch`
as a lab user and looks only at what the user would see: the --output file, sacct, files on
the NAS and in results/."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
import uuid

import pytest

from bridge.sandbox.kube_node import NODE_KIND_LABEL
from bridge.slurm.jobinfo import parse_index_list
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script

LAB_GROUP = ("skblab", 2650)


def _release(jobs: Jobs, user: str, job_id: str) -> None:
    """The scripts below wait for this file in the user's NAS home (mounted at /workspace)."""
    gate = jobs.home(user) / f"go-{job_id}"
    gate.touch()
    account = pwd.getpwnam(user)
    os.chown(gate, account.pw_uid, account.pw_gid)


WAIT_FOR_GATE = 'while [ ! -e "/workspace/go-$SLURM_JOB_ID" ]; do sleep 0.2; done'


def _output(jobs: Jobs, user: str, job_id: str) -> str:
    path = jobs.output_path(user, job_id)
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_output(jobs: Jobs, user: str, job_id: str, text: str, timeout_s: float = 90) -> str:
    wait_for(lambda: text in _output(jobs, user, job_id), timeout_s=timeout_s,
             what=f"{text!r} in job {job_id}'s output")
    return _output(jobs, user, job_id)


def _state(jobs: Jobs, job_id: str) -> str:
    """slurmctld's word (sacct lags behind it by a few seconds)."""
    return jobs.sandbox.slurm("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()


@pytest.fixture(scope="module")
def lab_group(users: dict[str, pwd.struct_passwd]) -> int:
    """skbalice gets a supplementary group, so 'her groups' means more than her primary one."""
    name, gid = LAB_GROUP
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--gid", str(gid), name], check=True)
    if "skbalice" not in grp.getgrnam(name).gr_mem:
        subprocess.run(["usermod", "--append", "--groups", name, "skbalice"], check=True)
    return gid


def test_the_node_is_a_real_kubelet_shaped_like_the_slurm_node(sandbox: Sandbox) -> None:
    node = sandbox.core.read_node(sandbox.node_name)
    assert node.metadata.labels[NODE_KIND_LABEL] == "kubelet"
    assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    spec = sandbox.layout.node
    for resources in (node.status.capacity, node.status.allocatable):
        assert resources["nvidia.com/gpu"] == str(spec.gpus)
        assert resources["cpu"] == str(spec.cpus)
    assert {(a.type, a.address) for a in node.status.addresses} >= {("InternalIP", "127.0.0.1")}


def test_output_streams_while_the_job_runs_and_its_exit_code_reaches_sacct(jobs: Jobs) -> None:
    body = "\n".join(["echo 'line 1'", "echo 'line 2'", "python3 -c 'print(\"line 3 from python\", flush=True)'",
                      WAIT_FOR_GATE, "echo 'line 4 after the gate'", "exit 5"])
    job_id = jobs.sbatch("skbbob", job_script(body=body))
    early = _wait_output(jobs, "skbbob", job_id, "line 3 from python")
    # The job is still running (it waits for the gate), and its early lines are already there.
    assert _state(jobs, job_id) == "RUNNING"
    assert "line 4" not in early
    _release(jobs, "skbbob", job_id)
    assert jobs.wait_done(job_id) == ("FAILED", "5:0")
    text = _output(jobs, "skbbob", job_id)
    positions = [text.index(line) for line in ("line 1", "line 2", "line 3 from python", "line 4 after the gate")]
    assert positions == sorted(positions), text
    assert "exit code 5" in text


def test_the_script_runs_as_its_user_and_its_files_come_back(jobs: Jobs, lab_group: int) -> None:
    alice = pwd.getpwnam("skbalice")
    tag = uuid.uuid4().hex[:8]
    body = "\n".join([
        'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"',
        f"echo 'written in the pod' > /workspace/home-{tag}.txt",
        f"mkdir -p /workspace/out-{tag}",
        f"python3 -c 'print(sum(range(10)))' > /workspace/out-{tag}/result.txt",
        f"echo more > /workspace/out-{tag}/second.txt",
    ])
    job_id = jobs.sbatch("skbalice", job_script(body=body, results=f"/workspace/out-{tag}"))
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    text = _output(jobs, "skbalice", job_id)
    wanted_groups = sorted(set(os.getgrouplist("skbalice", alice.pw_gid)))
    assert lab_group in wanted_groups
    line = next(line for line in text.splitlines() if line.startswith("uid="))
    assert line.split()[0:2] == [f"uid={alice.pw_uid}", f"gid={alice.pw_gid}"], line
    assert sorted(int(g) for g in line.split("groups=")[1].split()) == wanted_groups, line
    written = jobs.home("skbalice") / f"home-{tag}.txt"
    assert written.read_text() == "written in the pod\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (alice.pw_uid, alice.pw_gid)

    folder = jobs.results("skbalice", job_id)
    wait_for((folder / "SHA256SUMS").is_file, timeout_s=60, what="the epilog's SHA256SUMS")
    results = folder / "results"
    assert (results / "result.txt").read_text() == "45\n"
    assert (results / "second.txt").read_text() == "more\n"
    for path in (folder, results, results / "result.txt"):
        assert path.stat().st_uid == alice.pw_uid, path
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "results/result.txt: OK" in check.stdout


GPU_LINE = 'echo "gpus CUDA=[$CUDA_VISIBLE_DEVICES] NVIDIA=[$NVIDIA_VISIBLE_DEVICES] SLURM=[$SLURM_JOB_GPUS]"'


def test_a_gpu_job_sees_exactly_its_slurm_gpus_and_a_cpu_job_none(jobs: Jobs, sandbox: Sandbox) -> None:
    gpu_job = jobs.sbatch("skbalice", job_script("--gres=gpu:a100:2", body="\n".join([GPU_LINE, WAIT_FOR_GATE])))
    cpu_job = jobs.sbatch("skbbob", job_script(body=GPU_LINE))
    _wait_output(jobs, "skbalice", gpu_job, "gpus ")
    detail = sandbox.slurm("scontrol", "show", "job", "-d", gpu_job).stdout
    indices = ",".join(map(str, parse_index_list(detail.split("IDX:")[1].split(")")[0])))
    _release(jobs, "skbalice", gpu_job)
    assert jobs.wait_done(gpu_job) == ("COMPLETED", "0:0")
    assert len(indices.split(",")) == 2
    # NVIDIA_VISIBLE_DEVICES picks Slurm's GPUs for the container; inside it, CUDA numbers
    # those (and only those) 0..N-1.
    assert f"gpus CUDA=[0,1] NVIDIA=[{indices}] SLURM=[{indices}]" in _output(jobs, "skbalice", gpu_job)
    assert jobs.wait_done(cpu_job) == ("COMPLETED", "0:0")
    assert "gpus CUDA=[] NVIDIA=[void] SLURM=[]" in _output(jobs, "skbbob", cpu_job)


def test_memory_above_mem_ends_the_job_out_of_memory(jobs: Jobs) -> None:
    body = "\n".join(["echo 'allocating'",
                      "python3 -c 'x = b\"m\" * (768 * 1024 * 1024); print(len(x))'",
                      "echo 'the script goes on after python was killed'"])
    job_id = jobs.sbatch("skbbob", job_script("--mem=256M", body=body).replace("#SBATCH --mem=1G\n", ""))
    state, code = jobs.wait_done(job_id)
    assert state in {"FAILED", "OUT_OF_MEMORY"}
    assert code.split(":")[0] != "0", code
    text = _output(jobs, "skbbob", job_id)
    assert "allocating" in text
    assert "OOMKilled" in text and "out of memory" in text, text
    # Even though the script itself went on and ended with 0, as Slurm's own cgroup OOM
    # handling would have it.
    assert "the script goes on" in text


def test_scancel_delivers_sigterm_to_the_script(jobs: Jobs, sandbox: Sandbox) -> None:
    body = "\n".join(["trap 'echo \"trap: got SIGTERM\"; exit 143' TERM", "echo 'started'", "sleep 600 & wait $!"])
    job_id = jobs.sbatch("skbalice", job_script(body=body))
    _wait_output(jobs, "skbalice", job_id, "started")
    sandbox.slurm("scancel", job_id)
    assert jobs.wait_done(job_id)[0] == "CANCELLED"
    text = _wait_output(jobs, "skbalice", job_id, "ended by SIGTERM", timeout_s=40)
    assert "trap: got SIGTERM" in text
    assert text.index("trap: got SIGTERM") < text.index("ended by SIGTERM")
    jobs.wait_no_objects(job_id, timeout_s=60)



def test_the_time_limit_delivers_sigterm_to_the_script(jobs: Jobs) -> None:
    body = "\n".join(["trap 'echo \"trap: got SIGTERM at the time limit\"; exit 143' TERM", "echo 'started'",
                      "sleep 600 & wait $!"])
    job_id = jobs.sbatch("skbbob", job_script("--time=1", body=body).replace("#SBATCH --time=10\n", ""))
    _wait_output(jobs, "skbbob", job_id, "started")
    assert jobs.wait_done(job_id, timeout_s=240)[0] == "TIMEOUT"
    text = _wait_output(jobs, "skbbob", job_id, "ended by SIGTERM", timeout_s=40)
    assert "trap: got SIGTERM at the time limit" in text
    jobs.wait_no_objects(job_id, timeout_s=60)


def test_no_job_gets_the_gpus_while_a_cancelled_container_still_runs(jobs: Jobs, sandbox: Sandbox) -> None:
    """Slinky slurm-bridge #16: Slurm freed the node while the Pod was terminating. Here the
    first job ignores SIGTERM for its whole grace period; the second, waiting for the same
    GPUs, must not start its container before the first one is dead."""
    tag = uuid.uuid4().hex[:8]
    home = jobs.home("skbalice")
    first_body = "\n".join(["trap '' TERM", "echo 'started'",
                            f"while true; do date +%s.%N > /workspace/alive-{tag}; sleep 0.1; done"])
    first = jobs.sbatch("skbalice", job_script("--gres=gpu:a100:4", body=first_body), name=f"first-{tag}.sh")
    _wait_output(jobs, "skbalice", first, "started")
    second = jobs.sbatch("skbalice", job_script("--gres=gpu:a100:4", body=f"date +%s.%N > /workspace/start-{tag}"),
                         name=f"second-{tag}.sh")
    cancelled_at = time.time()
    sandbox.slurm("scancel", first)
    assert jobs.wait_done(second, timeout_s=180) == ("COMPLETED", "0:0")
    last_alive = float((home / f"alive-{tag}").read_text())
    second_started = float((home / f"start-{tag}").read_text())
    grace = jobs.settings.kubernetes.termination_grace_period_s
    assert last_alive - cancelled_at > grace - 3, "the first container ignored SIGTERM and lived its grace period"
    assert second_started > last_alive, f"second container started {last_alive - second_started:.1f}s too early"
    assert jobs.sacct(first)[0] == "CANCELLED"
