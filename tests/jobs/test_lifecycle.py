"""Issue 5: a job runs in its Pod from submission to results, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from bridge.ingest.layout import ensure_user_folder
from bridge.jobfile.launcher import insert_launcher
from bridge.kubernetes.access import attach_identity
from bridge.kubernetes.client import KubeUnauthorized, load_client
from bridge.kubernetes.objects import create_objects
from bridge.kubernetes.render import render_job
from bridge.sandbox.images import JOB_IMAGE
from bridge.slurm.jobinfo import JobAllocation, NodeAllocation
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script

LONG = "SANDBOX_RUN_DURATION=10m"
SCRIPT = job_script("--cpus-per-task=2", "--gres=gpu:a100:1", env=("SANDBOX_RUN_DURATION=1s",),
                    results="/workspace/outputs")


def check_results(jobs: Jobs, user: str, job_id: str, exit_code: int) -> dict[str, object]:
    folder = jobs.results(user, job_id)
    assert folder.stat().st_uid == pwd.getpwnam(user).pw_uid
    for name in ("pod.log", "pod.json", "events.json", "manifest.yaml", "summary.json", "SHA256SUMS"):
        assert (folder / name).is_file(), name
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (folder / ".attach.kubeconfig").exists(), "the credential goes with the Pod"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["exit_code"] == exit_code and summary["job_id"] == job_id and summary["user"] == user
    return summary


def test_plain_sbatch_and_dropped_file_end_the_same_way(jobs: Jobs, sandbox: Sandbox) -> None:
    home = jobs.home("skbalice")
    outputs = home / "outputs"
    outputs.mkdir(exist_ok=True)
    (outputs / "model.txt").write_text("weights\n")
    os.chown(outputs, pwd.getpwnam("skbalice").pw_uid, -1)
    os.chown(outputs / "model.txt", pwd.getpwnam("skbalice").pw_uid, -1)

    plain = jobs.sbatch("skbalice", SCRIPT)
    # job_submit.lua inserted exactly the launcher line the watcher inserts.
    stored = sandbox.slurm("scontrol", "write", "batch_script", plain, "-").stdout
    settings = jobs.settings
    assert stored == insert_launcher(SCRIPT, settings.slurm.skbridge_path, settings.slurm.attach_config_path)

    text = SCRIPT.replace("#SBATCH --mem=1G", f"#SBATCH --mem=1G\n#SBATCH --output={home}/out/%j.out")
    ensure_user_folder(settings.nas, pwd.getpwnam("skbalice"))
    dropped_path = settings.nas.submit_dir / "skbalice" / "dropped.sh"  # each user's own submit/<user>/
    tmp = settings.nas.submit_dir / "skbalice" / ".dropped.sh.part"
    tmp.write_text(text)
    os.chown(tmp, pwd.getpwnam("skbalice").pw_uid, pwd.getpwnam("skbalice").pw_gid)
    tmp.rename(dropped_path)
    accepted = settings.nas.accepted_dir

    def accepted_job() -> str | None:
        names = [p.name for p in accepted.iterdir() if p.name.endswith("-dropped.sh")]
        fresh = [n for n in names if n.split("-")[0] not in jobs.submitted and int(n.split("-")[0]) > int(plain)]
        return fresh[0].split("-")[0] if fresh else None

    wait_for(lambda: accepted_job() is not None, timeout_s=60, what="the dropped file accepted")
    dropped = accepted_job()
    assert dropped is not None
    jobs.submitted.append(dropped)

    for job_id in (plain, dropped):
        assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
        jobs.wait_no_objects(job_id)
        summary = check_results(jobs, "skbalice", job_id, 0)
        assert summary["gpus"]["count"] == 1 and len(summary["gpus"]["indices"]) == 1
        pod_log = (jobs.results("skbalice", job_id) / "pod.log").read_text()
        assert pod_log and pod_log in jobs.output_path("skbalice", job_id).read_text()
        assert (jobs.results("skbalice", job_id) / "results" / "model.txt").read_text() == "weights\n"


def test_a_failing_pod_fails_the_job_with_its_exit_code(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbbob", job_script(env=("SANDBOX_RUN_DURATION=1s", "SANDBOX_EXIT_CODE=3")))
    assert jobs.wait_done(job_id) == ("FAILED", "3:0")
    jobs.wait_no_objects(job_id)
    check_results(jobs, "skbbob", job_id, 3)
    assert "exit code 3" in jobs.output_path("skbbob", job_id).read_text()


def test_scancel_ends_attach_and_removes_everything(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script(env=(LONG,)))
    jobs.wait_running(job_id)
    sandbox.slurm("scancel", job_id)
    assert jobs.wait_done(job_id)[0] == "CANCELLED"
    jobs.wait_no_objects(job_id, timeout_s=30)


def test_time_limit_ends_the_job_and_removes_everything(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbalice", job_script("--time=1", env=(LONG,)).replace("#SBATCH --time=10\n", ""))
    jobs.wait_running(job_id)
    assert jobs.wait_done(job_id, timeout_s=240)[0] == "TIMEOUT"
    jobs.wait_no_objects(job_id, timeout_s=30)


def test_a_rejected_job_explains_itself_in_its_output(jobs: Jobs) -> None:
    text = job_script(env=(LONG,)).replace(JOB_IMAGE, "evil.example.com/miner:1")
    job_id = jobs.sbatch("skbbob", text)
    state, _code = jobs.wait_done(job_id)
    assert state == "FAILED"
    assert "registry" in jobs.output_path("skbbob", job_id).read_text()
    assert not jobs.objects(job_id)


def test_the_attach_token_reaches_only_its_own_pod(jobs: Jobs) -> None:
    mine = jobs.sbatch("skbalice", job_script(env=(LONG,)))
    other = jobs.sbatch("skbbob", job_script(env=(LONG,)))
    jobs.wait_running(mine)
    jobs.wait_running(other)
    credential = jobs.results("skbalice", mine) / ".attach.kubeconfig"
    assert credential.stat().st_mode & 0o777 == 0o600
    assert credential.stat().st_uid == pwd.getpwnam("skbalice").pw_uid
    token = load_client(credential, timeout_s=10)
    ns = jobs.namespace
    assert token.request("GET", f"/api/v1/namespaces/{ns}/pods/skb-{mine}-r0")["metadata"]["name"] == f"skb-{mine}-r0"
    for path in (f"/api/v1/namespaces/{ns}/pods/skb-{other}-r0", f"/api/v1/namespaces/{ns}/pods",
                 f"/api/v1/namespaces/{ns}/secrets", f"/api/v1/namespaces/{ns}/pods/skb-{other}-r0/log"):
        with pytest.raises(KubeUnauthorized) as denied:  # RBAC: the token lacks the right
            token.request("GET", path)
        assert denied.value.status == 403, path


def test_the_reaper_removes_what_a_killed_epilog_left(jobs: Jobs, sandbox: Sandbox) -> None:
    # Objects made by the bridge's own code for a job (held in the parked partition, so alive),
    # then the job ends without its epilog running: only the reaper can clean up.
    job_id = jobs.sbatch("skbbob", job_script(env=("SANDBOX_RUN_DURATION=1s",)), "--partition=parked")
    bob = pwd.getpwnam("skbbob")
    allocation = JobAllocation(
        job_id=job_id, name="left", user="skbbob", uid=bob.pw_uid, gid=bob.pw_gid, groups=(bob.pw_gid,),
        partition="gpu", restart_count=0, time_limit_minutes=10, state="RUNNING", submit_time=0, start_time=0,
        nodes=(NodeAllocation(node=sandbox.node_name, cpus=1, memory_mib=1024),))
    from bridge.jobfile.spec import parse_job_text

    spec, problems = parse_job_text(job_script(), jobs.settings.policy, jobs.settings.nas, owner="skbbob")
    assert spec is not None, problems
    jobs.home("skbbob")
    rendered = render_job(jobs.settings, allocation, spec, job_script())
    create_objects(jobs.kube, rendered, jobs.namespace, [],
                   extra=attach_identity(jobs.namespace, allocation, rendered.names.pod))
    assert len(jobs.objects(job_id)) >= 4
    time.sleep(3 * jobs.settings.ingest.reaper_interval_s)
    assert len(jobs.objects(job_id)) >= 4, "the reaper leaves a live job's objects alone"
    sandbox.slurm("scancel", job_id)
    jobs.wait_done(job_id)
    started = time.monotonic()
    wait_for(lambda: not jobs.objects(job_id), timeout_s=60, what="the reaper removing the leftovers")
    assert time.monotonic() - started < 60

    def logged() -> bool:  # the reaper logs once it has checked the objects are gone
        log = Path(sandbox.layout.log_dir / "watcher.log").read_text(errors="replace")
        return any('"event": "reaped"' in line and f'"job_id": "{job_id}"' in line for line in log.splitlines())

    wait_for(logged, timeout_s=30, what="the reaper's log line with the reason")
    summary = json.loads((jobs.results("skbbob", job_id) / "summary.json").read_text())
    assert summary["collected_by"] == "reaper"
