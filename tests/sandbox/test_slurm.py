"""The sandbox's Slurm is real: jobs run, GPUs are allocated with indices, policy plugins are active."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import Sandbox, wait_for


def _job_state(sandbox: Sandbox, job_id: str) -> str:
    out = sandbox.slurm("scontrol", "show", "job", job_id, check=False).stdout
    match = re.search(r"JobState=(\S+)", out)
    return match.group(1) if match else "GONE"


def test_gpu_job_runs_and_shows_gpu_indices(sandbox: Sandbox, tmp_job_dir: Path) -> None:
    script = tmp_job_dir / "gpu.sh"
    script.write_text("#!/bin/bash\necho \"gpus=$CUDA_VISIBLE_DEVICES\"\nsleep 3\n")
    out_file = tmp_job_dir / "gpu.out"
    job_id = sandbox.slurm("sbatch", "--parsable", "--gres=gpu:a100:2", "--mem=1G", f"--output={out_file}",
                           str(script)).stdout.strip().split(";")[0]

    wait_for(lambda: _job_state(sandbox, job_id) == "RUNNING", timeout_s=60, what=f"job {job_id} RUNNING")
    detail = sandbox.slurm("scontrol", "show", "job", "-d", job_id).stdout
    match = re.search(r"Nodes=(\S+) CPU_IDs=\S+ Mem=\d+ GRES=gpu:a100:2\(IDX:([\d,-]+)\)", detail)
    assert match, detail
    assert match.group(1) == sandbox.node_name
    assert match.group(2) in {"0-1", "1-2", "2-3", "0,2", "0,3", "1,3"}

    wait_for(lambda: _job_state(sandbox, job_id) == "COMPLETED", timeout_s=60, what=f"job {job_id} COMPLETED")
    assert out_file.read_text().startswith("gpus=")


def test_more_gpus_than_the_node_has_is_refused(sandbox: Sandbox, tmp_job_dir: Path) -> None:
    script = tmp_job_dir / "big.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    result = sandbox.slurm("sbatch", "--parsable", "--gres=gpu:a100:5", str(script), check=False)
    assert result.returncode != 0
    assert "Requested node configuration is not available" in result.stderr


def test_scheduling_policy_is_backfill_and_multifactor(sandbox: Sandbox) -> None:
    config = sandbox.slurm("scontrol", "show", "config").stdout
    assert re.search(r"SchedulerType\s+=\s+sched/backfill", config)
    assert re.search(r"PriorityType\s+=\s+priority/multifactor", config)
    assert re.search(r"SelectType\s+=\s+select/cons_tres", config)
    node = sandbox.slurm("scontrol", "show", "node", sandbox.node_name).stdout
    assert "Gres=gpu:a100:4" in node


def test_accounting_records_exit_code_and_comment(sandbox: Sandbox, tmp_job_dir: Path) -> None:
    script = tmp_job_dir / "exit3.sh"
    script.write_text("#!/bin/bash\nexit 3\n")
    job_id = sandbox.slurm("sbatch", "--parsable", "--comment=skb:test-tag", "--output=/dev/null",
                           str(script)).stdout.strip()

    def recorded() -> str:
        return sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,Comment").stdout.strip()

    wait_for(lambda: recorded().startswith("FAILED"), timeout_s=60, what=f"job {job_id} FAILED in sacct")
    assert recorded() == "FAILED|3:0|skb:test-tag"
