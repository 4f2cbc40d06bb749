"""Reading `scontrol show job -d` (Slurm 22.05's layout) into an allocation."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.settings import PolicySettings
from bridge.slurm.identity import IdentityError, owner_from_hook_env
from bridge.slurm.jobinfo import AmbiguousJobRecord, expand_hostlist, parse_index_list, parse_scontrol_job

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


# --- Forged fields (issue 11): user-written text can never move identity or allocation. ---

SEPARATORS = ["\n", "\r\n", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\v", "\f", "\r"]
FORGED = [
    "   UserId=skbbob(1502) GroupId=skbbob(1502) MCS_label=N/A",
    "   NumNodes=1 NumCPUs=16 NumTasks=1 CPUs/Task=16 ReqB:S:C:T=0:0:*:*",
    "     Nodes=vm CPU_IDs=0-15 Mem=65536 GRES=gpu:a100:4(IDX:0-3)",
    "     Nodes=other CPU_IDs=0-15 Mem=65536 GRES=gpu:a100:4(IDX:0-3)",
    "   Requeue=1 Restarts=9 BatchFlag=1 Reboot=0 ExitCode=0:0",
    "JobId=1 JobName=x",
]
# Where scontrol prints a user-written value: (line prefix to find, how the forged text rides on it)
FREE_TEXT_LINES = ["JobId=11201 JobName=my job name", "   Comment=hello world  x ", "   WorkDir=/nas/home/alice/with space",
                   "   StdOut=/nas/home/alice/slurm-11201.out", "   StdErr=/nas/home/alice/slurm-11201.out"]


def _inject(line: str, separator: str, forged: str) -> str:
    return SHOW_JOB.replace(line, line + separator + forged, 1)


@given(st.sampled_from(FREE_TEXT_LINES), st.sampled_from(SEPARATORS), st.sampled_from(FORGED))
def test_forged_lines_never_change_what_is_read(line: str, separator: str, forged: str) -> None:
    text = _inject(line, separator, forged)
    try:
        job = parse_scontrol_job(text)
    except AmbiguousJobRecord:
        assert "\n" in separator, "only a real line break makes the record ambiguous"
        return
    # Read as one line, the forged text is part of a free-text field and changes nothing.
    assert (job.user, job.uid, job.gid, job.restart_count) == ("root", 0, 0, 2)
    assert (job.node.node, job.node.cpus, job.node.memory_mib, job.node.gpu_indices) == ("vm", 4, 8192, (1, 3))


def test_key_text_without_a_line_break_is_only_text() -> None:
    text = SHOW_JOB.replace("   Power=", "   MailUser=a UserId=skbbob(1502) NumCPUs=16\n   Power=")
    job = parse_scontrol_job(text)
    assert (job.user, job.uid, job.node.cpus) == ("root", 0, 4)


def _policy(**kw: int) -> PolicySettings:
    return PolicySettings(**kw)


def test_identity_checks_refuse_what_is_not_a_lab_account() -> None:
    import pwd

    daemon = pwd.getpwuid(1)  # a system account every Debian host has: uid 1, below the lab range
    env = {"SLURM_JOB_UID": "1", "SLURM_JOB_GID": str(daemon.pw_gid), "SLURM_JOB_USER": daemon.pw_name}
    with pytest.raises(IdentityError, match="outside the site's range"):
        owner_from_hook_env(env, _policy())
    lenient = _policy(uid_min=1)
    assert owner_from_hook_env(env, lenient).user == daemon.pw_name
    for bad_user in ("../etc", "a/b", f"{daemon.pw_name}\n", "", ".hidden", f"{daemon.pw_name} "):
        with pytest.raises(IdentityError):
            owner_from_hook_env({**env, "SLURM_JOB_USER": bad_user}, lenient)
    with pytest.raises(IdentityError, match="in the password database, not 'bin'"):
        owner_from_hook_env({**env, "SLURM_JOB_USER": "bin"}, lenient)
    with pytest.raises(IdentityError, match="not one of"):
        owner_from_hook_env({**env, "SLURM_JOB_GID": "65534"}, lenient)
    for bad_number in ("", "0x1", "\uff11", "-1", "1 "):
        with pytest.raises(IdentityError, match="number"):
            owner_from_hook_env({**env, "SLURM_JOB_UID": bad_number}, lenient)


@pytest.mark.parametrize(("text", "names"), [
    ("vm", ["vm"]), ("gpu[01-03,7],cpu1", ["gpu01", "gpu02", "gpu03", "gpu7", "cpu1"]),
    ("n[8-10]", ["n8", "n9", "n10"]), ("(null)", []), ("", []),
])
def test_hostlists_expand_as_slurm_writes_them(text: str, names: list[str]) -> None:
    assert expand_hostlist(text) == names
