"""What Slurm allocated to a job, read through `scontrol show job -d` (one call, ~10 ms).

Not `squeue --json`: Slurm 22.05 ignores `--jobs` there and serialises every job the
controller remembers, which grows with the queue (0.15 s at 1,000 jobs) on the very path
where Slurm waits for the prolog.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.errors import PermanentError
from bridge.settings import SlurmSettings
from bridge.slurm.commands import run_slurm

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

    @property
    def node(self) -> NodeAllocation:
        return self.nodes[0]


def _int(value: Any, default: int = 0) -> int:
    # Slurm 23+ wraps numbers as {"set": true, "number": N}; 22.05 prints them plainly.
    if isinstance(value, dict):
        return int(value.get("number", default)) if value.get("set", True) else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _groups(user: str, gid: int) -> tuple[int, ...]:
    try:
        return tuple(sorted(set(os.getgrouplist(user, gid))))
    except (KeyError, OSError):
        return (gid,)


def read_allocation(settings: SlurmSettings, job_id: str) -> JobAllocation:
    result = run_slurm(settings, ["scontrol", "show", "job", "-d", job_id])
    allocation = parse_scontrol_job(result.stdout)
    if allocation.job_id != str(job_id):
        raise PermanentError(f"Slurm does not know job {job_id}")
    return allocation


# Fields whose value runs to the end of its line (it may hold spaces); scontrol prints each
# of these first on its line, except JobName, which ends the first line.
_WHOLE_LINE_FIELDS = ("Comment", "AdminComment", "Command", "WorkDir", "StdOut", "StdErr", "StdIn", "Reason")
_ID_WITH_NAME = re.compile(r"^(?P<name>.*)\((?P<id>\d+)\)$")


def _scontrol_fields(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    fields: dict[str, str] = {}
    node_lines: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("JobId="):
            head, _, name = line.partition(" JobName=")
            fields["JobId"], fields["JobName"] = head.removeprefix("JobId="), name
            continue
        key, _, rest = line.partition("=")
        if key in _WHOLE_LINE_FIELDS:
            fields[key] = rest.rstrip()
            continue
        pairs = dict(token.partition("=")[::2] for token in line.split() if "=" in token)
        if line.startswith("Nodes="):
            node_lines.append(pairs)
        else:
            fields.update(pairs)
    return fields, node_lines


def _time_limit_minutes(text: str) -> int | None:
    """`5`, `00:05:00`, `1-02:00:00`, `UNLIMITED`/`NONE` -> minutes (None: no limit)."""
    if not text or not text[0].isdigit():
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def _epoch(text: str) -> int:
    try:
        # Slurm prints the controller's local time without a zone; so does this parse.
        return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return 0


def _cpu_count(cpu_ids: str) -> int:
    return len(parse_index_list(cpu_ids))


def parse_scontrol_job(text: str) -> JobAllocation:
    """Parse `scontrol show job -d <id>` (one job) into a JobAllocation."""
    fields, node_lines = _scontrol_fields(text)
    user_match = _ID_WITH_NAME.match(fields.get("UserId", ""))
    group_match = _ID_WITH_NAME.match(fields.get("GroupId", ""))
    user = user_match.group("name") if user_match else ""
    uid = int(user_match.group("id")) if user_match else -1
    gid = int(group_match.group("id")) if group_match else -1
    nodes: list[NodeAllocation] = []
    for item in node_lines:
        detail = _GRES_DETAIL.match(item.get("GRES", ""))
        cpus = _int(fields.get("NumCPUs")) if len(node_lines) == 1 else _cpu_count(item.get("CPU_IDs", ""))
        nodes.append(NodeAllocation(
            node=item.get("Nodes", ""), cpus=cpus, memory_mib=_int(item.get("Mem")),
            gpus=int(detail.group("count")) if detail else 0, gpu_type=detail.group("type") if detail else None,
            gpu_indices=tuple(parse_index_list(detail.group("idx"))) if detail else ()))
    return JobAllocation(
        job_id=fields.get("JobId", ""), name=fields.get("JobName", ""), user=user, uid=uid, gid=gid,
        groups=_groups(user, gid), partition=fields.get("Partition", ""), restart_count=_int(fields.get("Restarts")),
        time_limit_minutes=_time_limit_minutes(fields.get("TimeLimit", "")), state=fields.get("JobState", ""),
        submit_time=_epoch(fields.get("SubmitTime", "")), start_time=_epoch(fields.get("StartTime", "")),
        nodes=tuple(nodes), comment=_unset(fields.get("Comment", "")), admin_comment=_unset(fields.get("AdminComment", "")),
        standard_output=_unset(fields.get("StdOut", "")), work_dir=_unset(fields.get("WorkDir", "")),
    )


def _unset(value: str) -> str:
    return "" if value == "(null)" else value


def read_batch_script(settings: SlurmSettings, job_id: str) -> str:
    """The script as the user submitted it (with the launcher line, if any)."""
    return run_slurm(settings, ["scontrol", "write", "batch_script", job_id, "-"]).stdout
