"""What Slurm allocated to a job, read through `scontrol show job -d` (one call, ~10 ms).

Not `squeue --json`: Slurm 22.05 ignores `--jobs` there and serialises every job the
controller remembers, which grows with the queue (0.15 s at 1,000 jobs) on the very path
where Slurm waits for the prolog.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import PermanentError
from bridge.settings import SlurmSettings
from bridge.slurm import arraytask
from bridge.slurm.commands import run_slurm
from bridge.slurm.identity import IdentityError, JobOwner
from bridge.slurm.vocabulary import duration_minutes, timestamp_s

_GRES_DETAIL = re.compile(r"^gpu(?::(?P<type>[^:(]+))?:(?P<count>\d+)\(IDX:(?P<idx>[^)]*)\)")


def parse_index_list(text: str) -> list[int]:
    """`0-1,3` -> [0, 1, 3]; Slurm's compact index notation."""
    indices: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part or part == "N/A":
            continue
        low, _, high = part.partition("-")
        indices.extend(range(int(low), int(high or low) + 1))
    return indices


@dataclass(frozen=True)
class NodeAllocation:
    node: str
    cpus: int
    memory_mib: int
    gpus: int = 0
    gpu_type: str | None = None
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class JobAllocation:
    job_id: str
    name: str
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    partition: str
    restart_count: int
    time_limit_minutes: int | None
    state: str
    submit_time: int
    start_time: int
    nodes: tuple[NodeAllocation, ...] = field(default_factory=tuple)
    comment: str = ""
    admin_comment: str = ""
    standard_output: str = ""
    work_dir: str = ""
    exit_code: str = ""  # `code:signal` once the batch step ended (the epilog's view), else 0:0
    # An array task: its array's job id and its own index (both "" for a plain job), and
    # slurmctld's SLURM_ARRAY_TASK_COUNT/MIN/MAX/STEP for the container (from the hook's env).
    array_job_id: str = ""
    array_task_id: str = ""
    array_env: tuple[tuple[str, str], ...] = ()

    @property
    def node(self) -> NodeAllocation:
        return self.nodes[0]

    @property
    def results_name(self) -> str:
        """The job's name in results/<user>/: `<arrayjob>_<task>` for an array task (as squeue
        and sacct show it), the job id otherwise."""
        return array_task_name(self.array_job_id, self.array_task_id) or self.job_id


ARRAY_ENV_VARIABLES = ("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                       "SLURM_ARRAY_TASK_STEP")


array_task_name = arraytask.array_task_name


def array_of_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(array job id, task id) from slurmctld's hook variables, or None for a plain job."""
    name = array_task_name(env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", ""))
    return (env["SLURM_ARRAY_JOB_ID"], env["SLURM_ARRAY_TASK_ID"]) if name else None


def _int(value: Any, default: int = 0) -> int:
    # Slurm 23+ wraps numbers as {"set": true, "number": N}; 22.05 prints them plainly.
    if isinstance(value, dict):
        return int(value.get("number", default)) if value.get("set", True) else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def complete_hook_env(settings: SlurmSettings, job_id: str, hook_env: Mapping[str, str]) -> dict[str, str]:
    """slurmctld's variables for the job; asked of squeue when the hook runs without them
    (an admin's `skbridge hooks prolog JOBID`). squeue's `%U|%u|%G|%N` fields are numbers and
    names Slurm validated, never a user's free text."""
    env = dict(hook_env)
    if env.get("SLURM_JOB_ID", job_id) != job_id:
        raise IdentityError(f"the hook was asked about job {job_id} but slurmctld set SLURM_JOB_ID={env['SLURM_JOB_ID']}")
    if all(env.get(key) for key in ("SLURM_JOB_UID", "SLURM_JOB_GID", "SLURM_JOB_USER")):
        return env
    # %A is the job's own id (%i shows an array task as 12345_3); %F|%K its array job and task.
    out = run_slurm(settings, ["squeue", "--noheader", "--jobs", job_id, "--format", "%A|%U|%u|%G|%N|%F|%K"]).stdout
    rows = [line.split("|") for line in out.split("\n") if line.strip()]
    if len(rows) != 1 or len(rows[0]) != 7 or rows[0][0] != job_id:
        raise IdentityError(f"squeue does not show job {job_id} exactly once")
    _, uid, user, gid, nodes, array_job, array_task = rows[0]
    env.update({"SLURM_JOB_ID": job_id, "SLURM_JOB_UID": uid, "SLURM_JOB_USER": user, "SLURM_JOB_GID": gid})
    if nodes.strip() and "SLURM_JOB_NODELIST" not in env:
        env["SLURM_JOB_NODELIST"] = nodes.strip()
    if array_task_name(array_job, array_task) and "SLURM_ARRAY_JOB_ID" not in env:
        env.update({"SLURM_ARRAY_JOB_ID": array_job, "SLURM_ARRAY_TASK_ID": array_task})
    return env


def read_allocation(settings: SlurmSettings, job_id: str, owner: JobOwner,
                    hook_env: Mapping[str, str] | None = None) -> JobAllocation:
    """The job's allocation, owned by `owner` (established from slurmctld's own variables).

    The text's own UserId must agree with `owner`, and its node list with slurmctld's
    SLURM_JOB_NODELIST when given: a disagreement means the text was forged.

    An array task is asked for as `<arrayjob>_<task>`: `scontrol show job <arrayjob>` lists
    every task of the array when the task holds the array's own id (Slurm's last task does).
    """
    env = hook_env or {}
    array = array_of_env(env)
    result = run_slurm(settings, ["scontrol", "show", "job", "-d", "_".join(array) if array else job_id])
    allocation = parse_scontrol_job(result.stdout)
    if allocation.job_id != str(job_id):
        raise PermanentError(f"Slurm does not know job {job_id}")
    if array and (allocation.array_job_id, allocation.array_task_id) != array:
        raise AmbiguousJobRecord(f"scontrol names job {job_id} array task "
                                 f"{allocation.array_job_id}_{allocation.array_task_id}, slurmctld {'_'.join(array)}")
    if (allocation.user, allocation.uid) != (owner.user, owner.uid):
        raise AmbiguousJobRecord(f"scontrol names {allocation.user}({allocation.uid}) as the owner of job {job_id}, "
                                 f"slurmctld {owner.user}({owner.uid})")
    nodelist = expand_hostlist(env.get("SLURM_JOB_NODELIST", ""))
    described = sorted(name for item in allocation.nodes for name in expand_hostlist(item.node))
    if nodelist and described and described != sorted(nodelist):
        raise AmbiguousJobRecord(f"scontrol's nodes {described} are not slurmctld's {nodelist}")
    array_env = tuple((key, env[key]) for key in ARRAY_ENV_VARIABLES if array and env.get(key, "").isdigit())
    return dataclasses.replace(allocation, user=owner.user, uid=owner.uid, gid=owner.gid, groups=owner.groups,
                               array_env=array_env)


class AmbiguousJobRecord(PermanentError):
    """`scontrol show job` text that can be read two ways: a user-written field holds a line
    break or key text. The bridge refuses such a job rather than guess."""


# The lines the bridge reads values from, by their first key, and the keys it takes from each.
# Every other line holds (or may hold) text a user wrote, and is read as a whole at most.
_STRUCTURED_LINES: dict[str, tuple[str, ...]] = {
    "JobId": ("JobId",),
    "UserId": ("UserId", "GroupId"),
    "JobState": ("JobState",),
    "Requeue": ("Restarts", "ExitCode"),
    "RunTime": ("TimeLimit",),
    "SubmitTime": ("SubmitTime",),
    "StartTime": ("StartTime",),
    "Partition": ("Partition",),
    "NodeList": ("NodeList",),
    "BatchHost": ("BatchHost",),
    "NumNodes": ("NumNodes", "NumCPUs"),
}
# Informational, never trusted: the value runs to the end of the line.
_WHOLE_LINE_FIELDS = ("Comment", "AdminComment", "WorkDir", "StdOut")
_NODE_DETAIL_INDENT = "     "  # per-node lines: `     Nodes=... CPU_IDs=... Mem=... GRES=...`
_LINE_INDENT = "   "
_ID_WITH_NAME = re.compile(r"^(?P<name>[^()\s]*)\((?P<id>\d+)\)$")


def _pairs(line: str) -> dict[str, str]:
    return dict(token.partition("=")[::2] for token in line.split(" ") if "=" in token)


def _scontrol_fields(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Split `scontrol show job -d` into the fields of its structured lines and its node lines.

    Only "\n" ends a line (scontrol writes nothing else; str.splitlines would also split at
    \x1c-\x1e, \x85 and \u2028, which users can put in a comment). A line break inside a
    user's field shows as a second line with a structured first key: refused, never guessed.
    """
    fields: dict[str, str] = {}
    node_lines: list[dict[str, str]] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.split("\n")):
        if not raw.strip():
            continue
        if number == 0:
            if not raw.startswith("JobId="):
                raise AmbiguousJobRecord("scontrol show job output does not start with JobId=")
            # `JobId=13010 ArrayJobId=13009 ArrayTaskId=4 ArrayTaskThrottle=2 JobName=...`: the
            # name (a user's text) runs to the end of the line; the ids before it are Slurm's.
            head, _, name = raw.partition(" JobName=")
            job_id, *rest = head.removeprefix("JobId=").split(" ")
            fields["JobId"], fields["JobName"] = job_id, name
            fields.update({key: value for key, value in _pairs(" ".join(rest)).items()
                           if key in ("ArrayJobId", "ArrayTaskId")})
            seen.add("JobId")
            continue
        line = raw.strip(" ")
        key = line.partition("=")[0]
        if key == "JobId" or (key in _STRUCTURED_LINES and raw.startswith(_LINE_INDENT + key + "=")):
            if key in seen:
                raise AmbiguousJobRecord(f"scontrol shows a second {key}= line: a job field holds a line break")
            seen.add(key)
            pairs = _pairs(line)
            fields.update({name: pairs[name] for name in _STRUCTURED_LINES[key] if name in pairs})
        elif key == "Nodes" and raw.startswith(_NODE_DETAIL_INDENT + "Nodes="):
            node_lines.append(_pairs(line))
        elif key in _WHOLE_LINE_FIELDS and raw.startswith(_LINE_INDENT + key + "="):
            fields.setdefault(key, line.partition("=")[2].rstrip())
    missing = [key for key in ("UserId", "NumNodes", "Requeue") if key not in seen]
    if missing:
        raise AmbiguousJobRecord(f"scontrol show job output lacks {', '.join(missing)}")
    # Each allocated node is described by exactly one node line: a forged line names a node
    # twice or one outside the allocation.
    # (An ended job's NodeList may already read (null) while its node lines remain: then the
    # hook's SLURM_JOB_NODELIST is the reference, see read_allocation.)
    described = [name for item in node_lines for name in expand_hostlist(item.get("Nodes", ""))]
    allocated = expand_hostlist(fields.get("NodeList", ""))
    if len(set(described)) != len(described) or (described and allocated and sorted(described) != sorted(allocated)):
        raise AmbiguousJobRecord(f"scontrol's node lines {described} do not match its node list {allocated}")
    return fields, node_lines


_HOSTLIST_PART = re.compile(r"([^,\[]+)(?:\[([^\]]*)\])?([^,\[]*)")


def expand_hostlist(text: str) -> list[str]:
    """`gpu[01-03,7],cpu1` -> gpu01 gpu02 gpu03 gpu7 cpu1 (Slurm's one-range hostlist form)."""
    names: list[str] = []
    for prefix, ranges, suffix in _HOSTLIST_PART.findall(text if text != "(null)" else ""):
        if not ranges:
            names.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            width = len(low)
            names.extend(f"{prefix}{number:0{width}d}{suffix}" for number in range(int(low), int(high or low) + 1))
    return names


def _epoch(text: str) -> int:
    """Slurm's local time -> seconds since the epoch (0: unset)."""
    return int(timestamp_s(text) or 0)


def _cpu_count(cpu_ids: str) -> int:
    return len(parse_index_list(cpu_ids))


def parse_scontrol_job(text: str) -> JobAllocation:
    """Parse `scontrol show job -d <id>` (one job) into a JobAllocation.

    Its user, uid and gid are what the text says; `read_allocation` checks them against
    slurmctld's own word and fills in the groups.
    """
    fields, node_lines = _scontrol_fields(text)
    user_match = _ID_WITH_NAME.match(fields.get("UserId", ""))
    group_match = _ID_WITH_NAME.match(fields.get("GroupId", ""))
    user = user_match.group("name") if user_match else ""
    uid = int(user_match.group("id")) if user_match else -1
    gid = int(group_match.group("id")) if group_match else -1
    nodes: list[NodeAllocation] = []
    # One line may describe several nodes laid out alike (`Nodes=gpu[01-02] CPU_IDs=0-3 ...`):
    # each gets its own allocation. The batch host comes first: it is rank 0 of a multi-node job.
    named = [(name, item) for item in node_lines for name in expand_hostlist(item.get("Nodes", ""))]
    batch_host = fields.get("BatchHost", "")
    named.sort(key=lambda pair: pair[0] != batch_host)
    for name, item in named:
        detail = _GRES_DETAIL.match(item.get("GRES", ""))
        cpus = _int(fields.get("NumCPUs")) if len(named) == 1 else _cpu_count(item.get("CPU_IDs", ""))
        nodes.append(NodeAllocation(
            node=name, cpus=cpus, memory_mib=_int(item.get("Mem")),
            gpus=int(detail.group("count")) if detail else 0, gpu_type=detail.group("type") if detail else None,
            gpu_indices=tuple(parse_index_list(detail.group("idx"))) if detail else ()))
    return JobAllocation(
        job_id=fields.get("JobId", ""), name=fields.get("JobName", ""), user=user, uid=uid, gid=gid,
        groups=(), partition=fields.get("Partition", ""), restart_count=_int(fields.get("Restarts")),
        time_limit_minutes=duration_minutes(fields.get("TimeLimit", "")), state=fields.get("JobState", ""),
        submit_time=_epoch(fields.get("SubmitTime", "")), start_time=_epoch(fields.get("StartTime", "")),
        nodes=tuple(nodes), comment=_unset(fields.get("Comment", "")), admin_comment=_unset(fields.get("AdminComment", "")),
        standard_output=_unset(fields.get("StdOut", "")), work_dir=_unset(fields.get("WorkDir", "")),
        exit_code=fields.get("ExitCode", ""),
        array_job_id=fields.get("ArrayJobId", ""), array_task_id=fields.get("ArrayTaskId", ""),
    )


def _unset(value: str) -> str:
    return "" if value == "(null)" else value


def read_batch_script(settings: SlurmSettings, job_id: str) -> str:
    """The script as the user submitted it (with the launcher line, if any)."""
    return run_slurm(settings, ["scontrol", "write", "batch_script", job_id, "-"]).stdout
