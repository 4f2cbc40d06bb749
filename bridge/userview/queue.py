"""A job as Slurm sees it: one `squeue` call while Slurm remembers it, one `sacct` call after.

`squeue --json` is not used: Slurm 22.05 serialises every job the controller holds
whatever `--jobs` says. `squeue -j ID -O ...` asks for the one job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from bridge.errors import PermanentError
from bridge.settings import SlurmSettings
from bridge.slurm.commands import run_slurm
from bridge.slurm.jobinfo import array_task_name
from bridge.userview.fields import (
    SEP,
    duration_s,
    expand_output_path,
    job_records,
    memory_mib,
    none_if_unset,
    parse_gres,
    parse_time,
    tres_gpus,
    tres_value,
)

ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                          "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"})

# squeue's -O fields, in order; free-text ones last.
_SQUEUE_FIELDS = ("JobID", "UserID", "UserName", "State", "Reason", "NodeList", "NumCPUs", "MinMemory", "tres-alloc",
                  "tres-per-node", "SubmitTime", "StartTime", "EndTime", "TimeUsed", "TimeLimit", "Partition",
                  "exit_code", "RestartCnt", "ArrayJobID", "ArrayTaskID", "STDOUT", "WorkDir", "Name")
_SACCT_FIELDS = ("JobID", "UID", "User", "State", "ExitCode", "Submit", "Start", "End", "Elapsed", "NodeList",
                 "AllocTRES", "ReqTRES", "Timelimit", "Partition", "Reason", "JobName")


@dataclass
class SlurmJob:
    """The facts `skbridge status` shows; the same for a queued and an accounted job."""

    job_id: str
    uid: int
    user: str
    state: str
    reason: str | None
    nodes: str | None
    cpus: int | None
    memory_mib: int | None
    gpus: int
    gpu_types: dict[str, int] = field(default_factory=dict)
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    elapsed_s: int | None = None
    time_limit_s: int | None = None
    partition: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    restart_count: int = 0
    output: str | None = None
    work_dir: str | None = None
    name: str = ""
    source: str = "squeue"

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"


def job_owner_uid(settings: SlurmSettings, job_id: str) -> int | None:
    """The numeric owner of a job (squeue, then sacct), or None when Slurm knows no such job."""
    job = find_job(settings, job_id)
    return job.uid if job else None


def find_job(settings: SlurmSettings, job_id: str) -> SlurmJob | None:
    check_job_id(job_id)
    return queued_job(settings, job_id) or accounted_job(settings, job_id)


_JOB_ID = re.compile(r"[0-9]+(?:_[0-9]+)?")


def check_job_id(job_id: str) -> None:
    """A job id (`1234`) or one array task (`1234_5`, as squeue and sacct show it)."""
    if not _JOB_ID.fullmatch(job_id):
        raise PermanentError(f"not a Slurm job id: {job_id!r} (a number such as 1234, or 1234_5 for an array task)")


def queued_job(settings: SlurmSettings, job_id: str) -> SlurmJob | None:
    fmt = ",".join(f"{name}:{SEP}" for name in _SQUEUE_FIELDS)
    try:
        out = run_slurm(settings, ["squeue", "--noheader", "--states=all", f"--jobs={job_id}", f"--Format={fmt}"])
    except PermanentError as exc:
        if "Invalid job id" in str(exc):
            return None
        raise
    # One record per job; an array job has one per task (or pending group): the first stands for it.
    # squeue's JobID is a task's own id; the task is asked for as `<arrayjob>_<task>`.
    found = [dict(zip(_SQUEUE_FIELDS, record, strict=True)) for record in job_records(out.stdout, len(_SQUEUE_FIELDS))]
    found = [v for v in found if job_id in (v["JobID"].strip(), v["ArrayJobID"].strip(), _task_name(v))
             or _pending_task_of(v, job_id)]
    if not found:
        return None
    values = found[0]
    tres = values["tres-alloc"] if none_if_unset(values["tres-alloc"]) else ""
    code, sig = _exit_pair(values["exit_code"])
    state = values["State"].strip()
    job = SlurmJob(
        # An array task by its array name (12345_3), as sacct names it and its results folder is.
        job_id=_task_name(values) or (job_id if _pending_task_of(values, job_id) else values["JobID"].strip()),
        uid=int(values["UserID"].strip() or -1),
        user=values["UserName"].strip(),
        state=state, reason=none_if_unset(values["Reason"]), nodes=none_if_unset(values["NodeList"]),
        cpus=_int_or_none(values["NumCPUs"]), memory_mib=memory_mib(tres_value(tres, "mem") or values["MinMemory"]),
        gpus=tres_gpus(tres) or sum(parse_gres(values["tres-per-node"].replace("gres/", "")).values()),
        gpu_types=parse_gres(values["tres-per-node"].replace("gres/", "")),
        submit=parse_time(values["SubmitTime"]), start=parse_time(values["StartTime"]),
        end=parse_time(values["EndTime"]), elapsed_s=duration_s(values["TimeUsed"]),
        time_limit_s=duration_s(values["TimeLimit"]), partition=none_if_unset(values["Partition"]),
        exit_code=code if state in ENDED_STATES else None, signal=sig if state in ENDED_STATES else None,
        restart_count=_int_or_none(values["RestartCnt"]) or 0, work_dir=none_if_unset(values["WorkDir"]),
        name=values["Name"], source="squeue",
    )
    raw_output = none_if_unset(values["STDOUT"])
    if raw_output:
        array_task = none_if_unset(values["ArrayTaskID"])
        # %j is the task's own job id, not its 12345_3 name.
        job.output = expand_output_path(raw_output, job_id=values["JobID"].strip(), user=job.user, name=job.name,
                                        node=(job.nodes or "").split(",")[0] or None,
                                        array_job=none_if_unset(values["ArrayJobID"]), array_task=array_task)
    return job


def _task_name(values: dict[str, str]) -> str:
    """`12345_3` for one array task's squeue record; "" for a plain job or a pending group."""
    return array_task_name(values["ArrayJobID"].strip(), values["ArrayTaskID"].strip())


def _pending_task_of(values: dict[str, str], job_id: str) -> bool:
    """Whether `job_id` (`12345_7`) is a task of the record's pending group (`ArrayTaskID=5-9:2%2`),
    which Slurm splits off into a job of its own only when the task starts."""
    array_job, _, task = job_id.partition("_")
    if not task.isdigit() or values["ArrayJobID"].strip() != array_job:
        return False
    return array_has_index(values["ArrayTaskID"].strip(), int(task))


def array_has_index(spec: str, index: int) -> bool:
    """Whether Slurm's array index list (`0-9:2,15%4`) holds `index` (worked out, not expanded)."""
    for part in spec.partition("%")[0].split(","):
        bounds, _, step = part.partition(":")
        low, _, high = bounds.partition("-")
        if not (low.isdigit() and (high or low).isdigit() and (step or "1").isdigit() and int(step or 1) > 0):
            return False
        if int(low) <= index <= int(high or low) and (index - int(low)) % int(step or 1) == 0:
            return True
    return False


def accounted_job(settings: SlurmSettings, job_id: str) -> SlurmJob | None:
    out = run_slurm(settings, ["sacct", "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations",
                               f"--jobs={job_id}", "--format=" + ",".join(_SACCT_FIELDS)])
    for record in job_records(out.stdout, len(_SACCT_FIELDS)):
        values = dict(zip(_SACCT_FIELDS, record, strict=True))
        if values["JobID"].strip() == job_id:
            return _from_sacct(values)
    return None


def _from_sacct(values: dict[str, str]) -> SlurmJob:
    tres = values["AllocTRES"] or values["ReqTRES"]
    code, sig = _exit_pair(values["ExitCode"])
    state = values["State"].split()[0] if values["State"].strip() else "UNKNOWN"
    start = parse_time(values["Start"])
    uid = _int_or_none(values["UID"])
    return SlurmJob(
        job_id=values["JobID"].strip(), uid=-1 if uid is None else uid,
        user=values["User"].strip(), state=state, reason=none_if_unset(values["Reason"]),
        nodes=none_if_unset(values["NodeList"]) if none_if_unset(values["NodeList"]) != "None assigned" else None,
        cpus=_int_or_none(tres_value(tres, "cpu") or ""), memory_mib=memory_mib(tres_value(tres, "mem") or ""),
        gpus=tres_gpus(tres), submit=parse_time(values["Submit"]), start=start, end=parse_time(values["End"]),
        elapsed_s=duration_s(values["Elapsed"]) if start else None, time_limit_s=duration_s(values["Timelimit"]),
        partition=none_if_unset(values["Partition"]), exit_code=code if state in ENDED_STATES else None,
        signal=sig if state in ENDED_STATES else None, name=values["JobName"], source="sacct",
    )


def _exit_pair(text: str) -> tuple[int | None, int | None]:
    """sacct's `2:0` -> (2, 0) and `0:15` -> (0, 15); squeue's raw wait status 768 -> (3, 0)."""
    code, colon, sig = text.strip().partition(":")
    if not colon:
        raw = _int_or_none(code)
        return (None, None) if raw is None else ((raw >> 8) & 0xFF, raw & 0x7F)
    return _int_or_none(code), _int_or_none(sig)


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def queue_position(settings: SlurmSettings, job_id: str, partition: str | None) -> tuple[int, int] | None:
    """(place, pending jobs) in the job's partition by Slurm's priority order: one squeue call."""
    argv = ["squeue", "--noheader", "--states=PENDING", "--sort=-p,i", "--format=%i"]
    if partition:
        argv.append(f"--partition={partition}")
    ids = [line.strip() for line in run_slurm(settings, argv).stdout.splitlines() if line.strip()]
    if job_id not in ids:
        return None
    return ids.index(job_id) + 1, len(ids)
