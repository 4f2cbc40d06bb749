"""Slurm's live word on the jobs the history has not seen finish, merged back into the history.

GET /api/v1/jobs answers from the history; before that, at most once per
`history.live_refresh_s` and caller, one `squeue` restricted to the caller (an admin: to the
unfinished jobs' ids) brings their state up to date, and one `sacct` for the few that
squeue no longer shows settles how they ended. What Slurm says is written back, so each
finished job is asked about once.
"""

from __future__ import annotations

import pwd
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime

from bridge.errors import BridgeError
from bridge.history.store import FINAL_STATES, JobHistory, JobRecord, Update
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.commands import run_slurm
from bridge.userview.fields import SEP, job_records, none_if_unset, parse_gres, parse_time, tres_gpus
from bridge.userview.listing import list_jobs

log = get_logger(component="service.live")

_SQUEUE_FIELDS = ("JobID", "UserID", "UserName", "State", "NodeList", "tres-alloc", "tres-per-node", "SubmitTime",
                  "StartTime", "EndTime", "Partition", "exit_code", "Name")
_SACCT_FIELDS = ("JobID", "UID", "User", "State", "NodeList", "AllocTRES", "ReqTRES", "Submit", "Start", "End",
                 "Partition", "ExitCode", "JobName")
# One call asks about this many ids at most (slurmctld's and the command line's comfort).
MAX_IDS_PER_CALL = 500
BACKFILL_KEY = "backfilled_from_slurm"
# A scope last refreshed more than this many periods ago is cold: its caller waits for Slurm's
# answer (at most COLD_WAIT_S for another caller's) instead of being answered from old state.
COLD_PERIODS = 10
COLD_WAIT_S = 10.0


@dataclass(frozen=True)
class LiveJob:
    job_id: str
    uid: int | None
    user: str
    state: str
    node: str | None
    gpus: int
    submit: float | None
    start: float | None
    end: float | None
    partition: str | None
    exit_code: int | None
    signal: int | None
    name: str

    def update(self, *, new: bool) -> Update:
        final = self.state in FINAL_STATES
        return Update(self.job_id, state=self.state, force_state=True,
                      # A job the history never heard of (plain sbatch, still queued) starts its timeline here.
                      event="submitted" if new else None, detail="sbatch" if new else None,
                      at=self.submit if new else None, event_if_new=True,
                      values={"uid": self.uid, "user": self.user or None, "name": self.name or None,
                              "partition": self.partition, "node": self.node, "gpus": self.gpus or None,
                              "submit_time": self.submit, "start_time": self.start,
                              "end_time": self.end if final else None,
                              "exit_code": self.exit_code if final else None, "signal": self.signal if final else None})


def _epoch(text: str) -> float | None:
    moment: datetime | None = parse_time(text)
    return moment.timestamp() if moment else None


def _int(text: str) -> int | None:
    value = text.strip()
    return int(value) if value.isdigit() else None


def squeue_jobs(settings: Settings, *, user: str | None = None, job_ids: list[str] | None = None) -> list[LiveJob]:
    """One squeue call: the user's jobs, or the given ids (Slurm's recently ended ones included)."""
    fmt = ",".join(f"{name}:{SEP}" for name in _SQUEUE_FIELDS)
    argv = ["squeue", "--noheader", "--states=all", f"--Format={fmt}"]
    argv.append(f"--user={user}" if user is not None else f"--jobs={','.join(job_ids or [])}")
    found: list[LiveJob] = []
    for record in job_records(run_slurm(settings.slurm, argv).stdout, len(_SQUEUE_FIELDS)):
        values = dict(zip(_SQUEUE_FIELDS, record, strict=True))
        job_id = values["JobID"].strip()
        if "[" in job_id:  # a pending array's task range: its tasks get their own rows once they run
            continue
        state = values["State"].strip()
        tres = values["tres-alloc"] if none_if_unset(values["tres-alloc"]) else ""
        raw_status = _int(values["exit_code"])
        started = state not in ("PENDING", "REQUEUED")
        found.append(LiveJob(
            job_id=job_id, uid=_int(values["UserID"]), user=values["UserName"].strip(), state=state,
            node=none_if_unset(values["NodeList"]),
            gpus=tres_gpus(tres) or sum(parse_gres(values["tres-per-node"].replace("gres/", "")).values()),
            submit=_epoch(values["SubmitTime"]), start=_epoch(values["StartTime"]) if started else None,
            end=_epoch(values["EndTime"]), partition=none_if_unset(values["Partition"]),
            # squeue prints the raw wait status.
            exit_code=None if raw_status is None else (raw_status >> 8) & 0xFF,
            signal=None if raw_status is None else raw_status & 0x7F, name=values["Name"],
        ))
    return found


def sacct_jobs(settings: Settings, job_ids: list[str]) -> list[LiveJob]:
    """One sacct call for jobs slurmctld has forgotten."""
    argv = ["sacct", "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations", f"--jobs={','.join(job_ids)}",
            "--format=" + ",".join(_SACCT_FIELDS)]
    found: list[LiveJob] = []
    for record in job_records(run_slurm(settings.slurm, argv).stdout, len(_SACCT_FIELDS)):
        values = dict(zip(_SACCT_FIELDS, record, strict=True))
        state = values["State"].split()[0] if values["State"].strip() else "UNKNOWN"
        code, _, signal = values["ExitCode"].strip().partition(":")
        node = none_if_unset(values["NodeList"])
        found.append(LiveJob(
            job_id=values["JobID"].strip(), uid=_int(values["UID"]), user=values["User"].strip(), state=state,
            node=None if node == "None assigned" else node, gpus=tres_gpus(values["AllocTRES"] or values["ReqTRES"]),
            submit=_epoch(values["Submit"]), start=_epoch(values["Start"]), end=_epoch(values["End"]),
            partition=none_if_unset(values["Partition"]), exit_code=_int(code), signal=_int(signal),
            name=values["JobName"],
        ))
    return found


class LiveMerge:
    """Brings the history's unfinished jobs up to date, at most once per period per scope."""

    def __init__(self, settings: Settings, history: JobHistory) -> None:
        self._settings = settings
        self._history = history
        self._last: dict[int | None, float] = {}
        self._locks: dict[int | None, threading.Lock] = {}
        self._guard = threading.Lock()
        self._backfill_lock = threading.Lock()
        self._backfilled = False

    def refresh(self, *, uid: int | None, user: str | None) -> None:
        """`uid`/`user`: the caller's jobs; None: everyone's (an admin). Slurm's trouble is
        logged and the history answers as it stands.

        A scope asked about lately is refreshed behind the answer (the caller never waits on
        Slurm, and what it sees is at most about one period old); a cold one before it.
        """
        period_s = self._settings.history.live_refresh_s
        with self._guard:
            lock = self._locks.setdefault(uid, threading.Lock())
        age_s = time.monotonic() - self._last.get(uid, -1e9)
        if age_s < period_s:
            return
        if age_s < max(period_s * COLD_PERIODS, 1.0):
            if lock.acquire(blocking=False):  # else someone is asking Slurm for this scope already
                threading.Thread(target=self._refresh_behind, args=(lock, uid, user), name="history-live",
                                 daemon=True).start()
            return
        if lock.acquire(timeout=COLD_WAIT_S):
            self._refresh_held(lock, uid, user)

    def _refresh_behind(self, lock: threading.Lock, uid: int | None, user: str | None) -> None:
        try:
            self._refresh_held(lock, uid, user)
        finally:
            self._history.close()  # this thread's connection: the thread ends here

    def _refresh_held(self, lock: threading.Lock, uid: int | None, user: str | None) -> None:
        try:
            if time.monotonic() - self._last.get(uid, -1e9) < self._settings.history.live_refresh_s:
                return  # done by the caller we waited for
            try:
                self._merge(uid=uid, user=user)
            except BridgeError as exc:
                log.warning("Slurm's live state not merged; listing from the history alone", error=str(exc))
            except Exception:  # a bug here must not take the listing down: it answers from the history
                log.exception("Slurm's live state not merged")
            self._last[uid] = time.monotonic()
        finally:
            lock.release()

    def _merge(self, *, uid: int | None, user: str | None) -> None:
        open_jobs = {job.job_id: job for job in self._history.unfinished(uid=uid, limit=MAX_IDS_PER_CALL)}
        if user is not None:
            live = squeue_jobs(self._settings, user=user)
        elif open_jobs:
            live = squeue_jobs(self._settings, job_ids=sorted(open_jobs))
        else:
            return
        live = [job for job in live if uid is None or job.uid in (None, uid)]
        seen = {job.job_id for job in live}
        gone = sorted(job_id for job_id in open_jobs if job_id not in seen)
        if gone:
            accounted = {job.job_id: job for job in sacct_jobs(self._settings, gone)}
            for job_id in gone:
                # Gone from slurmctld yet not ended in accounting (a lost end record, an old
                # requeued incarnation): it will never change, so it is not asked about again.
                job = accounted.get(job_id)
                if job is None or job.state not in FINAL_STATES:
                    job = replace(job or _unknown(open_jobs[job_id]), state="UNKNOWN")
                live.append(job)
        known = set(open_jobs)
        updates = []
        for job in live:
            record = open_jobs.get(job.job_id)
            if record is not None and record.state == job.state and record.node == job.node:
                continue  # nothing new: no write
            if record is None and job.job_id not in known and self._history.get(job.job_id) is not None:
                known.add(job.job_id)
                if job.state in FINAL_STATES:
                    continue  # finished and recorded already
            updates.append(job.update(new=job.job_id not in known))
        self._history.record_many(updates)
        if updates:
            log.debug("history brought up to date from Slurm", jobs=len(updates))

    def backfill(self) -> None:
        """Once per history file: jobs Slurm knows from before the history existed
        (service.default_since), so the first listings miss nothing."""
        if self._backfilled:
            return
        with self._backfill_lock:
            if self._history.meta(BACKFILL_KEY) is not None:
                self._backfilled = True
                return
            since = self._settings.service.default_since
            try:
                rows = list_jobs(self._settings.slurm, user=None, since=since)
            except BridgeError as exc:
                log.warning("history not backfilled from Slurm yet", error=str(exc))
                return
            updates = []
            for row in rows:
                if self._history.get(row.job_id) is not None:
                    continue
                code, _, signal = (row.exit_code or "").partition(":")
                job = LiveJob(job_id=row.job_id, uid=_uid_of(row.user), user=row.user, state=row.state, node=row.node,
                              gpus=row.gpus, submit=_epoch(row.submit or ""), start=_epoch(row.start or ""),
                              end=_epoch(row.end or ""), partition=row.partition or None, exit_code=_int(code),
                              signal=_int(signal), name=row.name)
                updates.append(job.update(new=True))
            self._history.record_many(updates)
            self._history.set_meta(BACKFILL_KEY, f"{time.time():.0f} since {since}")
            self._backfilled = True
            log.info("history backfilled from Slurm", jobs=len(updates), since=since)


def _unknown(record: JobRecord) -> LiveJob:
    return LiveJob(job_id=record.job_id, uid=record.uid, user=record.user or "", state="UNKNOWN", node=record.node,
                   gpus=record.gpus or 0, submit=record.submit_time, start=record.start_time, end=None,
                   partition=record.partition, exit_code=None, signal=None, name=record.name or "")


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
