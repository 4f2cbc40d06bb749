"""Issue 18: every job takes one road. In the sandbox the site's policy sets a default image, so
a plain script or `sbatch --wrap` runs in a Pod; other policies are tried by rendering the
plugin with them (slurmctld reloads job_submit.lua when it changes)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.ingest.layout import ensure_user_folder, user_submit_dir
from bridge.jobfile.launcher import render_job_submit_lua
from bridge.resources import resource_path
from bridge.settings import PolicySettings
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs

WRAP = 'echo host=$(hostname); echo uid=$(id -u); echo pwd=$(pwd); echo shell=$(readlink /proc/$$/exe)'


def _wrap(jobs: Jobs, user: str, command: str, *args: str, check: bool = True) -> tuple[str, str]:
    home = jobs.home(user)
    out = jobs.sandbox.slurm("sbatch", "--parsable", f"--output={home}/out/%j.out", *args, "--wrap", command,
                             user=user, check=check)
    job_id = out.stdout.strip().split(";")[0]
    if job_id:
        jobs.submitted.append(job_id)
    return job_id, out.stderr


def _output(jobs: Jobs, user: str, job_id: str) -> dict[str, str]:
    lines = jobs.output_path(user, job_id).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("skbridge"))


def test_a_wrap_job_runs_in_the_pod_as_sbatch_would_run_it(jobs: Jobs) -> None:
    work = jobs.home("skbalice") / "proj"
    work.mkdir(exist_ok=True)
    os.chown(work, 1501, 1501)
    job_id, _ = _wrap(jobs, "skbalice", WRAP, f"--chdir={work}")
    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    seen = _output(jobs, "skbalice", job_id)
    assert seen["host"] == f"skb-{job_id}-r0", "the command ran in the job's Pod, not on the host"
    assert seen["uid"] == "1501"
    assert seen["pwd"] == "/workspace/proj", "the job's working directory, as mounted in the Pod"
    assert seen["shell"] in ("/usr/bin/dash", "/bin/dash"), "sbatch --wrap scripts run with /bin/sh"


def test_a_plain_script_without_an_image_runs_in_the_default_image(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbalice", "#!/bin/bash\n#SBATCH --mem=1G\necho host=$(hostname)\n")
    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    assert _output(jobs, "skbalice", job_id)["host"] == f"skb-{job_id}-r0"
    pod_json = jobs.results("skbalice", job_id) / "pod.json"
    wait_for(pod_json.exists, timeout_s=60, what="the collected pod.json")
    assert jobs.settings.policy.default_image in pod_json.read_text()


def test_a_dropped_file_without_an_image_runs_in_the_default_image(jobs: Jobs,
                                                                   users: dict[str, object]) -> None:
    import pwd

    alice = pwd.getpwnam("skbalice")
    ensure_user_folder(jobs.settings.nas, alice)
    name = f"plain-{os.getpid()}.sh"
    staged = jobs.write_script("skbalice", name, "#!/bin/bash\n#SBATCH --mem=1G\necho host=$(hostname)\n")
    os.rename(staged, user_submit_dir(jobs.settings.nas, "skbalice") / name)
    accepted = jobs.settings.nas.accepted_dir

    def job_id() -> str | None:
        return next((p.name.split("-", 1)[0] for p in accepted.iterdir() if p.name.endswith(f"-{name}")), None)

    wait_for(lambda: job_id() is not None, timeout_s=60, what="the dropped file accepted")
    found = job_id()
    assert found is not None
    jobs.submitted.append(found)
    assert jobs.wait_done(found, timeout_s=180) == ("COMPLETED", "0:0")
    assert (jobs.results("skbalice", found) / "pod.log").read_text().strip() == f"host=skb-{found}-r0"


@pytest.fixture
def site_policy(sandbox: Sandbox) -> Iterator[object]:
    """Render the sandbox's job_submit.lua with another policy; the original comes back after."""
    target = sandbox.layout.slurm_dir / "job_submit.lua"
    original = target.read_text()
    config = sandbox.layout.bridge_config
    template = resource_path("deploy/slurm/job_submit.lua").read_text()
    skbridge = Path(original.split('local SKBRIDGE = "', 1)[1].split('"', 1)[0])

    stamp = [time.time()]

    def write(text: str) -> None:
        # slurmctld reloads the plugin when its mtime (whole seconds) changes: make sure it does.
        stamp[0] = max(stamp[0], target.stat().st_mtime) + 2
        target.write_text(text)
        os.utime(target, (stamp[0], stamp[0]))

    def use(policy: PolicySettings) -> None:
        write(render_job_submit_lua(template, skbridge, config, policy))

    yield use
    write(original)


def test_without_a_default_image_a_plain_job_is_refused_with_the_reason(jobs: Jobs, site_policy: object) -> None:
    site_policy(PolicySettings(allowed_registries=["registry.lab:5000"]))  # type: ignore[operator]
    job_id, stderr = _wrap(jobs, "skbalice", "hostname", check=False)
    assert not job_id and "no #K8S_IMAGE= line" in stderr and "skbridge init" in stderr, stderr
    refused = jobs.sandbox.slurm("salloc", "--no-shell", "-N1", user="skbalice", check=False)
    assert refused.returncode != 0 and "interactive allocations" in refused.stderr, refused.stderr
    ran = jobs.sandbox.slurm("srun", "-N1", "hostname", user="skbalice", check=False)
    assert ran.returncode != 0 and "interactive allocations" in ran.stderr, ran.stderr


def test_a_host_partition_lets_a_plain_job_run_on_the_host(jobs: Jobs, site_policy: object) -> None:
    site_policy(PolicySettings(host_partitions=["gpu"]))  # type: ignore[operator]
    # The job names the partition (Slurm fills in a default one only after the plugin ran).
    job_id, _ = _wrap(jobs, "skbalice", WRAP, "--partition=gpu")
    assert jobs.wait_done(job_id, timeout_s=120) == ("COMPLETED", "0:0")
    assert _output(jobs, "skbalice", job_id)["host"] == socket.gethostname().split(".")[0]
    assert jobs.pod(job_id) is None and not jobs.results("skbalice", job_id).exists(), "the bridge left it alone"


def test_the_test_suite_reports_the_policy_and_a_stale_plugin(jobs: Jobs, site_policy: object) -> None:
    from tests.admin.test_admin import run_test_suite

    name = "one road: the plugin enforces the policy in force"
    _, results = run_test_suite(jobs.sandbox, "--only", "slurm")
    assert results[name]["outcome"] == "PASS", results[name]
    assert "run in a Pod with registry.lab:5000/skbridge-job:bookworm" in str(results[name]["detail"])
    site_policy(PolicySettings(host_partitions=["gpu"]))  # type: ignore[operator]
    code, results = run_test_suite(jobs.sandbox, "--only", "slurm")
    assert code == 1 and results[name]["outcome"] == "FAIL"
    assert "skbridge install job-submit-lua" in str(results[name]["hint"])
