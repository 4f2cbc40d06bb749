"""A user's jobs from accounting: one `sacct` call, whatever the number of jobs."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from bridge.errors import PermanentError
from bridge.settings import SlurmSettings
from bridge.slurm.commands import run_slurm
from bridge.userview.fields import (
    SEP,
    duration_s,
    iso,
    job_records,
    none_if_unset,
    parse_gres,
    parse_time,
    tres_gpus,
)

_FIELDS = ("JobID", "UID", "User", "State", "Elapsed", "AllocTRES", "ReqTRES", "ExitCode", "Partition", "NodeList",
           "Submit", "Start", "End", "Reason", "JobName")

# What `--state` accepts besides full names, as squeue prints them.
STATE_ABBREVIATIONS = {"PD": "PENDING", "R": "RUNNING", "CD": "COMPLETED", "F": "FAILED", "CA": "CANCELLED",
                       "TO": "TIMEOUT", "OOM": "OUT_OF_MEMORY", "NF": "NODE_FAIL", "PR": "PREEMPTED",
                       "RQ": "REQUEUED", "S": "SUSPENDED", "BF": "BOOT_FAIL", "DL": "DEADLINE"}


def normalize_states(states: list[str]) -> set[str]:
    names: set[str] = set()
    for raw in states:
        for item in raw.split(","):
            value = item.strip().upper()
            if value:
                names.add(STATE_ABBREVIATIONS.get(value, value))
    return names


@dataclass(frozen=True)
class JobRow:
    job_id: str
    user: str
    state: str
    elapsed_s: int | None
    gpus: int
    exit_code: str | None
    partition: str
    node: str | None
    submit: str | None
    start: str | None
    end: str | None
    name: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


_QUEUE_FIELDS = ("JobID", "UserName", "State", "TimeUsed", "tres-alloc", "tres-per-node", "exit_code", "Partition",
                 "NodeList", "SubmitTime", "StartTime", "EndTime", "Name")


def list_jobs(settings: SlurmSettings, *, user: str | None, since: str, states: set[str] | None = None) -> list[JobRow]:
    """Jobs of `user` (None: every user, as Slurm allows) submitted or active since `since`
    (a Slurm time: `now-1days`, `2026-11-20`, `2026-11-20T10:00`), oldest first.

    Two calls whatever the number of jobs: sacct for the history, squeue for the live queue
    (sacct leaves out held jobs, which have no eligible time, and lags the controller by a
    moment); a job both know is shown as squeue has it.
    """
    # The two calls run side by side: the command waits for the slower one only.
    queued: list[list[JobRow] | BaseException] = []

    def ask_queue() -> None:
        try:
            queued.append(_queued(settings, user=user))
        except BaseException as exc:  # handed to the caller below
            queued.append(exc)

    worker = threading.Thread(target=ask_queue, daemon=True)
    worker.start()
    rows = {row.job_id: row for row in _accounted(settings, user=user, since=since)}
    worker.join()
    if isinstance(queued[0], BaseException):
        raise queued[0]
    for row in queued[0]:
        rows[row.job_id] = row
    ordered = sorted(rows.values(), key=lambda row: _id_key(row.job_id))
    return [row for row in ordered if not states or row.state in states]


def _id_key(job_id: str) -> tuple[int, str]:
    head, _, rest = job_id.partition("_")
    return (int(head) if head.isdigit() else 0, rest)


def _queued(settings: SlurmSettings, *, user: str | None) -> list[JobRow]:
    fmt = ",".join(f"{name}:{SEP}" for name in _QUEUE_FIELDS)
    argv = ["squeue", "--noheader", f"--Format={fmt}"]
    argv += ["--all"] if user is None else [f"--user={user}"]
    rows: list[JobRow] = []
    for record in job_records(run_slurm(settings, argv).stdout, len(_QUEUE_FIELDS)):
        values = dict(zip(_QUEUE_FIELDS, record, strict=True))
        state = values["State"].strip()
        started = parse_time(values["StartTime"]) if state not in ("PENDING", "REQUEUED") else None
        tres = values["tres-alloc"] if none_if_unset(values["tres-alloc"]) else ""
        gpus = tres_gpus(tres) or sum(parse_gres(values["tres-per-node"].replace("gres/", "")).values())
        node = values["NodeList"].strip()
        rows.append(JobRow(
            job_id=values["JobID"].strip(), user=values["UserName"].strip(), state=state,
            elapsed_s=duration_s(values["TimeUsed"]) if started else None, gpus=gpus, exit_code=None,
            partition=values["Partition"].strip(), node=node or None, submit=iso(parse_time(values["SubmitTime"])),
            start=iso(started), end=None, name=values["Name"],
        ))
    return rows


def _accounted(settings: SlurmSettings, *, user: str | None, since: str) -> list[JobRow]:
    argv = ["sacct", "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations", f"--starttime={since}",
            "--format=" + ",".join(_FIELDS)]
    argv += ["--allusers"] if user is None else [f"--user={user}"]
    out = run_slurm(settings, argv)
    rows: list[JobRow] = []
    for record in job_records(out.stdout, len(_FIELDS)):
        values = dict(zip(_FIELDS, record, strict=True))
        state = values["State"].split()[0] if values["State"].strip() else "UNKNOWN"
        started = parse_time(values["Start"])
        node = values["NodeList"].strip()
        rows.append(JobRow(
            job_id=values["JobID"].strip(), user=values["User"].strip(), state=state,
            elapsed_s=duration_s(values["Elapsed"]) if started else None,
            gpus=tres_gpus(values["AllocTRES"] or values["ReqTRES"]),
            exit_code=values["ExitCode"].strip() if state not in ("PENDING", "RUNNING", "REQUEUED") else None,
            partition=values["Partition"].strip(), node=None if node in ("", "None assigned") else node,
            submit=iso(parse_time(values["Submit"])), start=iso(started), end=iso(parse_time(values["End"])),
            name=values["JobName"],
        ))
    return rows


def is_slurm_admin(settings: SlurmSettings, user: str) -> bool:
    """Operator or Administrator in Slurm's accounting (one sacctmgr call)."""
    out = run_slurm(settings, ["sacctmgr", "--noheader", "--parsable2", "show", "user", user, "format=AdminLevel"])
    return any(line.strip() in ("Administrator", "Operator") for line in out.stdout.splitlines())


def check_since(text: str) -> str:
    """Accept Slurm's own time forms; refuse anything that could be read as an option."""
    value = text.strip()
    if not value or value.startswith("-") or any(c.isspace() for c in value):
        raise PermanentError(f"not a time: {text!r} (e.g. now-2days, 2026-11-20, 2026-11-20T10:00)")
    return value
