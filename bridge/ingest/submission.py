"""Submitting a file's job exactly once (docs/drop-folder.md, "Exactly once under ambiguous failures").

The entry turns "submitting" in the journal before sbatch runs. From then on, only a job id,
a job found by the entry's tag, or two complete lookups `absence_confirm_s` apart that both
find no job allow the entry to move on; every other answer leaves it "submitting".
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time

from bridge import metrics
from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.history.record import record_job
from bridge.ingest.journal import Entry, EntryState, Journal
from bridge.ingest.outcome import Archiver, Outcome, problem, retry_later
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.submit import Owner, TaggedJob, find_tagged_jobs, sbatch_as_owner, sbatch_still_running, tag_for

log = get_logger(component="ingest")


class Submitter:
    """sbatch as the file's owner, and the resolution of an sbatch whose outcome is unknown.

    `pickup_since_s` is the Ingestor's map of entry id -> when the scanner first saw the file
    complete (time.monotonic()): a successful submission ends the pickup latency.
    """

    def __init__(self, settings: Settings, journal: Journal, archiver: Archiver, *,
                 pickup_since_s: dict[str, float]) -> None:
        self._settings = settings
        self._journal = journal
        self._archiver = archiver
        self._processing = os.fsencode(settings.nas.processing_dir)
        self._pickup_since_s = pickup_since_s

    def _tagged(self, entry: Entry) -> list[TaggedJob]:
        """Jobs carrying this entry's tag, submitted by the file's owner; raises when Slurm cannot say."""
        jobs = find_tagged_jobs(self._settings.slurm).get(tag_for(entry.id), [])
        expected_uid = entry.folder_uid
        if expected_uid is None:
            with contextlib.suppress(OSError):
                expected_uid = os.lstat(os.path.join(self._processing, entry.processing_name)).st_uid
        if expected_uid is None:
            return jobs
        mine = [job for job in jobs if _uid_of(job.user) == expected_uid]
        if len(mine) != len(jobs):
            log.warning("tag found on another user's job; ignored", jobs=[j.job_id for j in jobs if j not in mine])
        return mine

    def resolve(self, entry: Entry) -> Outcome | None:
        """sbatch started for this entry and its outcome is unknown: find the job, or prove it absent.

        Returns None only when two complete lookups `absence_confirm_s` apart both found no job
        with the tag. One is not enough: a request slurmctld accepted before the first lookup
        (sbatch killed while slurmctld was paused) can still be in its queue and create the job
        right after. Every failure to look up keeps the entry "submitting": never submit blind.
        """
        if sbatch_still_running(tag_for(entry.id)):
            # Left running by a watcher killed mid-submission: it may still submit the job.
            self._journal.set_state(entry.id, EntryState.SUBMITTING, clear_absent=True,
                                    next_attempt_at=time.time() + self._settings.ingest.retry_initial_s)
            log.info("an sbatch for this file is still running; waiting for it")
            return Outcome(EntryState.SUBMITTING)
        try:
            jobs = self._tagged(entry)
        except BridgeError as exc:
            return retry_later(self._settings, self._journal, entry, f"cannot look the job up yet: {exc}",
                               state=EntryState.SUBMITTING)
        if jobs:
            job_id = min(jobs, key=lambda job: int(job.job_id) if job.job_id.isdigit() else 0).job_id
            if len(jobs) > 1:
                log.error("tag found on more than one job", jobs=[job.job_id for job in jobs], job_id=job_id)
            log.info("found the job submitted before the interruption", job_id=job_id)
            self._journal.set_state(entry.id, EntryState.SUBMITTED, job_id=job_id)
            return self._archiver.accept(entry, job_id)
        now = time.time()
        confirm_s = self._settings.ingest.absence_confirm_s
        if entry.absent_since is None:
            log.info("no job with the tag yet; looking again before submitting", recheck_in_s=confirm_s)
            self._journal.set_state(entry.id, EntryState.SUBMITTING, absent_since=now, next_attempt_at=now + confirm_s)
            return Outcome(EntryState.SUBMITTING)
        if now - entry.absent_since < confirm_s:
            self._journal.set_state(entry.id, EntryState.SUBMITTING, next_attempt_at=entry.absent_since + confirm_s)
            return Outcome(EntryState.SUBMITTING)
        log.info("no job with the tag in two lookups; submitting again", absent_for_s=round(now - entry.absent_since, 1))
        return None

    def submit(self, entry: Entry, owner: Owner, script: bytes, defaults: dict[str, str]) -> Outcome:
        # The intent, before sbatch: from here on, only a lookup that proves the job absent
        # allows another sbatch for this entry.
        self._journal.set_state(entry.id, EntryState.SUBMITTING, count_attempt=True, clear_absent=True)
        nas_home = self._settings.nas.home_root / owner.name
        workdir = nas_home if nas_home.is_dir() else owner.home
        started = time.perf_counter()
        try:
            job_id = sbatch_as_owner(self._settings.slurm, owner, script, tag=tag_for(entry.id), workdir=workdir,
                                     defaults=defaults)
        except TemporaryError as exc:
            metrics.SBATCH_SECONDS.labels("unknown").observe(time.perf_counter() - started)
            # Cut off, timed out, "Socket timed out", "Zero Bytes were transmitted", connection
            # reset, or even a plain "not now": sbatch may have reached slurmctld, so the entry
            # stays "submitting" and the tag is looked up before anything is sent again.
            log.warning("sbatch did not say whether the job exists; the tag is looked up before any retry",
                        error=str(exc))
            return retry_later(self._settings, self._journal, entry, str(exc), state=EntryState.SUBMITTING)
        except PermanentError as exc:
            metrics.SBATCH_SECONDS.labels("refused").observe(time.perf_counter() - started)
            # slurmctld answered "no". (It may still record the refused job in accounting as
            # FAILED, so a tag lookup here would find a job that never was: none is made.)
            log.info("Slurm rejected the job", error=str(exc))
            return self._archiver.reject(entry, [problem("slurm-rejected", f"sbatch refused the job: {exc}",
                                                         "a job Slurm accepts",
                                                         "fix the #SBATCH options Slurm names above, then drop the "
                                                         "file again")],
                                         uid=owner.uid)
        metrics.SBATCH_SECONDS.labels("ok").observe(time.perf_counter() - started)
        complete_since_s = self._pickup_since_s.pop(entry.id, None)
        if complete_since_s is not None:
            metrics.PICKUP_SECONDS.observe(time.monotonic() - complete_since_s)
        self._journal.set_state(entry.id, EntryState.SUBMITTED, job_id=job_id)
        record_job(self._settings, job_id, state="PENDING", event="submitted", detail="drop folder",
                   uid=owner.uid, user=owner.name, name=defaults.get("job-name"), partition=defaults.get("partition"),
                   submit_time=time.time(), results_dir=str(self._settings.nas.results_root / owner.name / job_id))
        return self._archiver.accept(entry, job_id)


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return int(user) if user.isdigit() else None
