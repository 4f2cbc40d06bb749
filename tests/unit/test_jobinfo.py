"""Reading `scontrol show job -d` (Slurm 22.05's layout) into an allocation."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from bridge.slurm.jobinfo import parse_index_list, parse_scontrol_job

SHOW_JOB = """\
JobId=11201 JobName=my job name
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=13703 Nice=0 Account=root QOS=normal
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=2 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:03 TimeLimit=1-02:05:00 TimeMin=N/A
   SubmitTime=2026-11-23T02:33:01 EligibleTime=2026-11-23T02:33:01
   StartTime=2026-11-23T02:33:04 EndTime=2026-11-23T02:38:01 Deadline=N/A
   Partition=gpu AllocNode:Sid=localhost:24470
   NodeList=vm
   NumNodes=1 NumCPUs=4 NumTasks=1 CPUs/Task=4 ReqB:S:C:T=0:0:*:*
   TRES=cpu=4,mem=8G,node=1,billing=4,gres/gpu=2
   JOB_GRES=gpu:a100:2
     Nodes=vm CPU_IDs=0-3 Mem=8192 GRES=gpu:a100:2(IDX:1,3)
   MinCPUsNode=4 MinMemoryNode=8G MinTmpDiskNode=0
   Command=/nas/home/alice/my job.sh
   WorkDir=/nas/home/alice/with space
   Comment=hello world  x<SP>
   AdminComment=(null)
   StdErr=/nas/home/alice/slurm-11201.out
   StdIn=/dev/null
   StdOut=/nas/home/alice/slurm-11201.out
   Power=
""".replace("<SP>", " ")  # scontrol ends that line with a space


def test_show_job_gives_the_exact_allocation() -> None:
    job = parse_scontrol_job(SHOW_JOB)
    assert (job.job_id, job.name, job.user, job.uid, job.gid) == ("11201", "my job name", "root", 0, 0)
    assert (job.partition, job.state, job.restart_count) == ("gpu", "RUNNING", 2)
    assert job.time_limit_minutes == 26 * 60 + 5
    assert job.submit_time == int(datetime(2026, 11, 23, 2, 33, 1).timestamp())  # local time, as Slurm prints it
    assert job.start_time - job.submit_time == 3
    node = job.node
    assert (node.node, node.cpus, node.memory_mib, node.gpus, node.gpu_type, node.gpu_indices) == \
        ("vm", 4, 8192, 2, "a100", (1, 3))
    assert job.work_dir == "/nas/home/alice/with space"
    assert job.comment == "hello world  x"
    assert job.admin_comment == ""
    assert job.standard_output == "/nas/home/alice/slurm-11201.out"


def test_a_job_without_gpus_or_time_limit() -> None:
    text = SHOW_JOB.replace("TimeLimit=1-02:05:00", "TimeLimit=UNLIMITED").replace(
        " GRES=gpu:a100:2(IDX:1,3)", "")
    job = parse_scontrol_job(text)
    assert job.time_limit_minutes is None
    assert (job.node.gpus, job.node.gpu_type, job.node.gpu_indices) == (0, None, ())


def test_a_pending_job_has_no_nodes() -> None:
    text = "\n".join(line for line in SHOW_JOB.splitlines() if "Nodes=vm" not in line)
    assert parse_scontrol_job(text).nodes == ()


@given(st.sets(st.integers(min_value=0, max_value=64), min_size=1))
def test_index_lists_round_trip(indices: set[int]) -> None:
    # Slurm's compact form: runs of consecutive indices as `a-b`, the rest single.
    ordered = sorted(indices)
    runs: list[list[int]] = []
    for index in ordered:
        if runs and runs[-1][-1] + 1 == index:
            runs[-1].append(index)
        else:
            runs.append([index])
    text = ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
    assert parse_index_list(text) == ordered
