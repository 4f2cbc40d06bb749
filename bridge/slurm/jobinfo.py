"""What Slurm allocated to a job, read through `squeue --json` (one call, ~10 ms)."""

from __future__ import annotations

import json
import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import PermanentError, TemporaryError
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


def _gpu_detail(details: list[str], index: int) -> tuple[int, str | None, tuple[int, ...]]:
    if index >= len(details):
        return 0, None, ()
    match = _GRES_DETAIL.match(details[index])
    if not match:
        return 0, None, ()
    return int(match.group("count")), match.group("type"), tuple(parse_index_list(match.group("idx")))


def _groups(user: str, gid: int) -> tuple[int, ...]:
    try:
        return tuple(sorted(set(os.getgrouplist(user, gid))))
    except (KeyError, OSError):
        return (gid,)


def parse_squeue_job(job: dict[str, Any]) -> JobAllocation:
    details = [str(d) for d in job.get("gres_detail") or []]
    resources = job.get("job_resources") or {}
    allocated = resources.get("allocated_nodes") or []
    nodes: list[NodeAllocation] = []
    total_cpus = _int(job.get("cpus"))
    for index, item in enumerate(allocated):
        cores = sum(len(sock.get("cores", {})) for sock in (item.get("sockets") or {}).values())
        gpus, gpu_type, gpu_idx = _gpu_detail(details, index)
        cpus = total_cpus if len(allocated) == 1 else cores
        nodes.append(NodeAllocation(node=str(item.get("nodename")), cpus=cpus,
                                    memory_mib=_int(item.get("memory_allocated")),
                                    gpus=gpus, gpu_type=gpu_type, gpu_indices=gpu_idx))
    user = str(job.get("user_name") or "")
    uid = _int(job.get("user_id"))
    gid = _int(job.get("group_id"))
    if not user:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
    limit = job.get("time_limit")
    return JobAllocation(
        job_id=str(_int(job.get("job_id"))), name=str(job.get("name") or ""), user=user, uid=uid, gid=gid,
        groups=_groups(user, gid), partition=str(job.get("partition") or ""),
        restart_count=_int(job.get("restart_cnt")),
        time_limit_minutes=_int(limit) if limit not in (None, "", 0) and _int(limit) < 2**31 - 1 else None,
        state=str(job.get("job_state") or ""), submit_time=_int(job.get("submit_time")),
        start_time=_int(job.get("start_time")), nodes=tuple(nodes), comment=str(job.get("comment") or ""),
        admin_comment=str(job.get("admin_comment") or ""), standard_output=str(job.get("standard_output") or ""),
        work_dir=str(job.get("current_working_directory") or ""),
    )


def read_allocation(settings: SlurmSettings, job_id: str) -> JobAllocation:
    result = run_slurm(settings, ["squeue", "--json", "--jobs", job_id])
    try:
        jobs = json.loads(result.stdout).get("jobs") or []
    except json.JSONDecodeError as exc:
        raise TemporaryError(f"squeue --json printed invalid JSON: {exc}") from exc
    for job in jobs:
        if str(_int(job.get("job_id"))) == str(job_id):
            return parse_squeue_job(job)
    raise PermanentError(f"Slurm does not know job {job_id}")


def read_batch_script(settings: SlurmSettings, job_id: str) -> str:
    """The script as the user submitted it (with the launcher line, if any)."""
    return run_slurm(settings, ["scontrol", "write", "batch_script", job_id, "-"]).stdout
