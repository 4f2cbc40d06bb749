"""One dropped file's way: claim → validate a private copy → sbatch as owner → accepted/ or failed/.

Every step is recorded in the journal before its effect can be observed, so a crash at
any point leaves either a file still in processing/ with an entry saying what is left to
do, or a finished entry. Nothing is overwritten: name clashes get a numeric suffix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from bridge import metrics
from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.history.record import record_job, record_note
from bridge.ingest.filecheck import FileNotReadyError, read_job_file
from bridge.ingest.journal import (
    Entry,
    EntryState,
    Journal,
    new_entry_id,
    processing_name,
    short_name,
    split_processing_name,
)
from bridge.jobfile.launcher import insert_launcher
from bridge.jobfile.spec import Problem, parse_job_text, render_report
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.submit import Owner, TaggedJob, find_tagged_jobs, sbatch_as_owner, sbatch_still_running, tag_for

log = get_logger(component="ingest")


@dataclass(frozen=True)
class Outcome:
    state: EntryState
    job_id: str | None = None


def _same_file(a: str | bytes, b: str | bytes) -> bool:
    try:
        first, second = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


# Clashing names get .1, .2, ... for the first few (what people expect to see), then a random
# suffix: a popular name (job.sh rejected thousands of times) costs a few lstat calls, not a
# walk over every earlier clash.
_SEQUENTIAL_SUFFIXES = 16
_RANDOM_TRIES = 8


def _candidates(name: bytes) -> Iterator[bytes]:
    yield name
    for suffix in range(1, _SEQUENTIAL_SUFFIXES):
        yield name + b"." + str(suffix).encode()
    for _ in range(_RANDOM_TRIES):
        yield name + b"." + uuid.uuid4().hex[:12].encode()


def _move_no_clobber(src_dir: bytes, src_name: bytes, dst_dir: bytes, dst_name: bytes) -> bytes:
    """Move a file without ever replacing one: link under a free name, then unlink the source.

    Re-running after a crash between link and unlink finds the earlier link (same inode) and
    finishes the move instead of making a second copy.
    """
    src = os.path.join(src_dir, src_name)
    for candidate in _candidates(dst_name):
        dst = os.path.join(dst_dir, candidate)
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            if _same_file(src, dst):
                os.unlink(src)
                return candidate
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EISDIR):
                raise
            # Directories and some filesystems refuse hard links; rename is still atomic, and
            # the existence check right before it is the best a portable rename can do.
            if os.path.lexists(dst):
                continue
            os.rename(src, dst)
            return candidate
        os.unlink(src)
        return candidate
    raise PermanentError(f"no free name for {dst_name!r} in {dst_dir!r}")


def _free_name(directory: bytes, name: bytes, *, companion: bytes) -> bytes:
    """A name such that neither it nor it+companion exists yet: NAME, NAME.1, ... NAME.15, NAME.<random>."""
    for candidate in _candidates(short_name(name)):
        if not os.path.lexists(os.path.join(directory, candidate)) and \
                not os.path.lexists(os.path.join(directory, candidate + companion)):
            return candidate
    raise PermanentError(f"no free name for {name!r} in {directory!r}")


class Ingestor:
    """The watcher's work on files; thread-safe per entry (one worker handles one entry)."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self._settings = settings
        self.journal = journal
        nas = settings.nas
        self._submit = os.fsencode(nas.submit_dir)
        self._processing = os.fsencode(nas.processing_dir)
        self._accepted = os.fsencode(nas.accepted_dir)
        self._failed = os.fsencode(nas.failed_dir)
        self._reject_lock = threading.Lock()
        # entry id -> when the scanner first saw its file complete (monotonic): the pickup latency's start.
        self._complete_since_s: dict[str, float] = {}

    # -- claiming -----------------------------------------------------------------------

    def claim(self, relative: bytes, *, complete_since_s: float | None = None) -> Entry | None:
        """Rename submit/[FOLDER/]NAME into processing/ and journal it; None if it is gone already.

        `complete_since_s`: when the file was first seen complete (time.monotonic()), for the
        pickup-latency metric.

        The entry (with the folder's owner and mode, read from the very directory the file is
        renamed out of) is journaled before the rename: a crash in between leaves an entry whose
        file is still in submit/ (it ends as "vanished" and the file is claimed again), never a
        file in processing/ whose folder nobody knows.
        """
        folder, _, name = relative.rpartition(b"/")
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            src_fd = os.open(os.path.join(self._submit, folder) if folder else self._submit, flags)
        except FileNotFoundError:
            return None
        try:
            folder_uid = folder_mode = None
            if folder:
                info = os.fstat(src_fd)
                folder_uid, folder_mode = info.st_uid, stat.S_IMODE(info.st_mode)
            entry_id = new_entry_id()
            entry = self.journal.add(entry_id, name, folder=folder or None, folder_uid=folder_uid,
                                     folder_mode=folder_mode)
            dst_fd = os.open(self._processing, flags)
            try:
                os.rename(name, processing_name(entry_id, name), src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except FileNotFoundError:
                self.journal.forget(entry_id)
                return None
            except OSError:
                self.journal.forget(entry_id)
                raise
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        metrics.FILES_SEEN.inc()
        if complete_since_s is not None:
            self._complete_since_s[entry.id] = complete_since_s
        return entry

    def recover(self) -> list[Entry]:
        """Entries with work left, including files in processing/ the journal never saw."""
        known = {entry.id for entry in self.journal.open_entries()}
        with os.scandir(self._processing) as listing:
            for item in listing:
                parsed = split_processing_name(os.fsencode(item.name))
                if parsed is None:
                    continue
                entry_id, name = parsed
                if entry_id not in known and self.journal.get(entry_id) is None:
                    log.info("adopting unjournaled file", file=os.fsdecode(name), entry=entry_id)
                    self.journal.add(entry_id, name)
        return self.journal.open_entries()

    # -- processing ---------------------------------------------------------------------

    def process(self, entry: Entry) -> Outcome:
        # owner/job_id are bound further down; bound here too so that they never leak to the next entry.
        with structlog.contextvars.bound_contextvars(file=os.fsdecode(entry.name), entry=entry.id,
                                                     folder=None if entry.folder is None else os.fsdecode(entry.folder),
                                                     owner=None, job_id=entry.job_id):
            if entry.state == EntryState.REJECTING and entry.target is not None:
                return self._finish_rejected(entry.id, entry.target, entry.reason or "rejected", None)
            if entry.state == EntryState.SUBMITTED and entry.job_id:
                return self._finish_accepted(entry, entry.job_id)
            if entry.state == EntryState.SUBMITTING:
                settled = self._resolve_submitting(entry)
                if settled is not None:
                    return settled
            return self._validate_and_submit(entry)

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

    def _resolve_submitting(self, entry: Entry) -> Outcome | None:
        """sbatch started for this entry and its outcome is unknown: find the job, or prove it absent.

        Returns None only when two complete lookups `absence_confirm_s` apart both found no job
        with the tag. One is not enough: a request slurmctld accepted before the first lookup
        (sbatch killed while slurmctld was paused) can still be in its queue and create the job
        right after. Every failure to look up keeps the entry "submitting": never submit blind.
        """
        if sbatch_still_running(tag_for(entry.id)):
            # Left running by a watcher killed mid-submission: it may still submit the job.
            self.journal.set_state(entry.id, EntryState.SUBMITTING, clear_absent=True,
                                   next_attempt_at=time.time() + self._settings.ingest.retry_initial_s)
            log.info("an sbatch for this file is still running; waiting for it")
            return Outcome(EntryState.SUBMITTING)
        try:
            jobs = self._tagged(entry)
        except BridgeError as exc:
            return self._wait(entry, f"cannot look the job up yet: {exc}", state=EntryState.SUBMITTING)
        if jobs:
            job_id = min(jobs, key=lambda job: int(job.job_id) if job.job_id.isdigit() else 0).job_id
            if len(jobs) > 1:
                log.error("tag found on more than one job", jobs=[job.job_id for job in jobs], job_id=job_id)
            log.info("found the job submitted before the interruption", job_id=job_id)
            self.journal.set_state(entry.id, EntryState.SUBMITTED, job_id=job_id)
            return self._finish_accepted(entry, job_id)
        now = time.time()
        confirm_s = self._settings.ingest.absence_confirm_s
        if entry.absent_since is None:
            log.info("no job with the tag yet; looking again before submitting", recheck_in_s=confirm_s)
            self.journal.set_state(entry.id, EntryState.SUBMITTING, absent_since=now, next_attempt_at=now + confirm_s)
            return Outcome(EntryState.SUBMITTING)
        if now - entry.absent_since < confirm_s:
            self.journal.set_state(entry.id, EntryState.SUBMITTING, next_attempt_at=entry.absent_since + confirm_s)
            return Outcome(EntryState.SUBMITTING)
        log.info("no job with the tag in two lookups; submitting again", absent_for_s=round(now - entry.absent_since, 1))
        return None

    def _validate_and_submit(self, entry: Entry) -> Outcome:
        settings = self._settings
        dir_fd = os.open(self._processing, os.O_RDONLY | os.O_DIRECTORY)
        try:
            data, facts, problems = read_job_file(dir_fd, os.fsdecode(entry.processing_name), settings.policy,
                                                  shown_name=os.fsdecode(entry.name))
        except FileNotReadyError as exc:
            # Not a verdict on the file: a flaky NAS, or a writer still appending. Nothing was
            # submitted since the last proof of absence, so the entry simply waits.
            log.info("file not readable yet", error=str(exc))
            return self._wait(entry, str(exc), count_attempt=True)
        finally:
            os.close(dir_fd)
        if facts is not None and facts.vanished:
            self.journal.set_state(entry.id, EntryState.FAILED, reason="file vanished from processing/")
            self._complete_since_s.pop(entry.id, None)
            return Outcome(EntryState.FAILED)
        file_uid = facts.uid if facts is not None else None
        folder_problem = self._folder_problem(entry, file_uid)
        if folder_problem is not None:
            log.warning("file not taken: it is not its owner's drop", problem=folder_problem.code, file_uid=file_uid,
                        folder_uid=entry.folder_uid)
            return self._reject(entry, [folder_problem, *problems], uid=file_uid)
        if problems or data is None or facts is None:
            return self._reject(entry, problems, uid=file_uid)
        text = data.decode("utf-8")
        try:
            owner = Owner.from_uid(facts.uid)
        except PermanentError as exc:
            return self._reject(entry, [_problem("unknown-owner", str(exc), "an owner with an account on this host",
                                                  "ask an administrator to check the account (LDAP/NSS)")], uid=facts.uid)
        structlog.contextvars.bind_contextvars(owner=owner.name)
        spec, text_problems = parse_job_text(text, settings.policy, settings.nas, owner=owner.name, owner_home=owner.home)
        errors = [p for p in text_problems if p.severity == "error"]
        if errors or spec is None:
            return self._reject(entry, text_problems, uid=owner.uid)
        script = insert_launcher(text, settings.slurm.skbridge_path, settings.slurm.attach_config_path).encode("utf-8")
        given = {option.name for option in spec.sbatch_options}
        defaults = {"job-name": os.fsdecode(entry.name)}
        if settings.slurm.partition:
            defaults["partition"] = settings.slurm.partition
        return self._submit_job(entry, owner, script, {k: v for k, v in defaults.items() if k not in given})

    def _folder_problem(self, entry: Entry, file_uid: int | None) -> Problem | None:
        """A job runs as the file's owner, so the file must come from that owner's own folder.

        Anyone who can rename a colleague's file (a shared group directory on the same NAS)
        could otherwise `mv` it into the drop area and have it run as the colleague. Only the
        owner can write into submit/<owner>/ (mode 0700, the top level is root's), so a file
        there owned by the folder's owner was put there by that owner.
        """
        folder = None if entry.folder is None else os.fsdecode(entry.folder)
        where = self._settings.nas.submit_dir
        if folder is None:
            return _problem("not-in-user-folder", f"the file was found directly in {where}/; files are only taken "
                            f"from each user's own folder {where}/<user>/",
                            f"the file in your own folder {where}/<your user name>/",
                            f"copy it there: cp FILE {where}/$USER/")
        try:
            account = pwd.getpwnam(folder)
        except KeyError:
            account = None
        if account is None or account.pw_uid != entry.folder_uid:
            return _problem("not-a-user-folder", f"{where}/{folder}/ is not a user's drop folder (its owner, uid "
                            f"{entry.folder_uid}, is not the account {folder!r})", f"the file in {where}/<your user name>/",
                            f"copy it into your own folder: cp FILE {where}/$USER/")
        if file_uid is not None and file_uid != entry.folder_uid:
            return _problem("not-your-folder", f"the file belongs to {_name_of(file_uid)} but was found in "
                            f"{folder}'s folder {where}/{folder}/; a job runs as the file's owner, so a file is only "
                            "taken from its owner's own folder", f"a file owned by {folder}",
                            f"the file's owner copies it (cp, not mv) into their own folder {where}/<their name>/")
        if entry.folder_mode is not None and entry.folder_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return _problem("folder-writable-by-others", f"{where}/{folder}/ is writable by others (mode "
                            f"{stat.filemode(stat.S_IFDIR | entry.folder_mode)}), so someone else may have put the "
                            "file there", "a drop folder only you can write to",
                            f"run `chmod 700 {where}/{folder}` and copy the file again")
        return None

    def _submit_job(self, entry: Entry, owner: Owner, script: bytes, defaults: dict[str, str]) -> Outcome:
        # The intent, before sbatch: from here on, only a lookup that proves the job absent
        # allows another sbatch for this entry.
        self.journal.set_state(entry.id, EntryState.SUBMITTING, count_attempt=True, clear_absent=True)
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
            return self._wait(entry, str(exc), state=EntryState.SUBMITTING)
        except PermanentError as exc:
            metrics.SBATCH_SECONDS.labels("refused").observe(time.perf_counter() - started)
            # slurmctld answered "no". (It may still record the refused job in accounting as
            # FAILED, so a tag lookup here would find a job that never was: none is made.)
            log.info("Slurm rejected the job", error=str(exc))
            return self._reject(entry, [_problem("slurm-rejected", f"sbatch refused the job: {exc}",
                                                 "a job Slurm accepts",
                                                 "fix the #SBATCH options Slurm names above, then drop the file again")],
                                uid=owner.uid)
        metrics.SBATCH_SECONDS.labels("ok").observe(time.perf_counter() - started)
        complete_since_s = self._complete_since_s.pop(entry.id, None)
        if complete_since_s is not None:
            metrics.PICKUP_SECONDS.observe(time.monotonic() - complete_since_s)
        self.journal.set_state(entry.id, EntryState.SUBMITTED, job_id=job_id)
        record_job(self._settings, job_id, state="PENDING", event="submitted", detail="drop folder",
                   uid=owner.uid, user=owner.name, name=defaults.get("job-name"), partition=defaults.get("partition"),
                   submit_time=time.time(), results_dir=str(self._settings.nas.results_root / owner.name / job_id))
        return self._finish_accepted(entry, job_id)

    def _wait(self, entry: Entry, reason: str, *, state: EntryState = EntryState.WAITING,
              count_attempt: bool = False) -> Outcome:
        """Try again later, with back-off (`count_attempt`: this try counts towards it)."""
        ingest = self._settings.ingest
        delay_s = min(ingest.retry_max_s, ingest.retry_initial_s * (2 ** min(entry.attempts, 16)))
        self.journal.set_state(entry.id, state, reason=reason, next_attempt_at=time.time() + delay_s,
                               count_attempt=count_attempt)
        log.info("will retry", retry_in_s=round(delay_s, 1), reason=reason, state=state.value)
        return Outcome(state)

    # -- endings ------------------------------------------------------------------------

    def _finish_accepted(self, entry: Entry, job_id: str) -> Outcome:
        source = entry.processing_name
        if os.path.lexists(os.path.join(self._processing, source)):
            _make_private(os.path.join(self._processing, source))
            final = _move_no_clobber(self._processing, source, self._accepted, job_id.encode() + b"-" + entry.name)
            log.info("accepted", job_id=job_id, accepted=os.fsdecode(final))
            record_job(self._settings, job_id, event="file accepted", detail=os.fsdecode(final))
        self.journal.set_state(entry.id, EntryState.ACCEPTED, job_id=job_id)
        metrics.FILES_ACCEPTED.inc()
        return Outcome(EntryState.ACCEPTED, job_id)

    def _reject(self, entry: Entry, problems: list[Problem], *, uid: int | None) -> Outcome:
        report = render_report(problems, file_name=os.fsdecode(entry.name))
        with self._reject_lock:
            # Choosing the name and recording it are one step, so two files called alike never
            # pick the same name and a restart finishes the move under the recorded one.
            target = _free_name(self._failed, entry.name, companion=b".error")
            self.journal.set_state(entry.id, EntryState.REJECTING, reason=report, target=target)
        log.info("rejected", problems=[p.code for p in problems], failed=os.fsdecode(target))
        record_note(self._settings, "file rejected", uid=uid,
                    detail=f"{os.fsdecode(entry.name)}: {', '.join(p.code for p in problems) or 'rejected'}")
        metrics.file_rejected(problems)
        return self._finish_rejected(entry.id, target, report, uid)

    def _finish_rejected(self, entry_id: str, target: bytes, report: str, uid: int | None) -> Outcome:
        self._complete_since_s.pop(entry_id, None)
        entry = self.journal.get(entry_id)
        assert entry is not None
        if uid is None:  # resuming after a restart: the file itself still says whose it is
            for path in (os.path.join(self._processing, entry.processing_name), os.path.join(self._failed, target)):
                with contextlib.suppress(OSError):
                    uid = os.lstat(path).st_uid
                    break
        self._write_error_file(target + b".error", report, uid)
        if os.path.lexists(os.path.join(self._processing, entry.processing_name)):
            _make_private(os.path.join(self._processing, entry.processing_name))
            final = _move_no_clobber(self._processing, entry.processing_name, self._failed, target)
            if final != target:
                log.warning("failed/ name taken meanwhile; used another", failed=os.fsdecode(final))
                os.rename(os.path.join(self._failed, target + b".error"), os.path.join(self._failed, final + b".error"))
        self.journal.set_state(entry.id, EntryState.FAILED)
        return Outcome(EntryState.FAILED)

    def _write_error_file(self, name: bytes, report: str, uid: int | None) -> None:
        """NAME.error, readable by the file's owner only (0600, theirs): it quotes their script."""
        path = os.path.join(self._failed, name)
        tmp = os.path.join(self._failed, b"." + name + b".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older leftover .tmp keeps its mode through O_CREAT
            os.write(fd, report.encode("utf-8"))
            if uid is not None and uid > 0:
                # The owner can read and remove the explanation of their own file.
                os.fchown(fd, uid, -1)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)


def _make_private(path: bytes) -> None:
    """Drop group/other access from a file about to be archived in accepted/ or failed/.

    Those folders are listable by everyone, while the file came from its owner's private
    submit/<user>/ (0700): archiving must not publish it. Symbolic links and other non-files
    are left as they are (never followed).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # a symlink (ELOOP) or gone: nothing to protect here
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & 0o700)
    finally:
        os.close(fd)


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return int(user) if user.isdigit() else None


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _problem(code: str, message: str, expected: str, fix: str) -> Problem:
    return Problem(line=None, code=code, message=message, expected=expected, fix=fix)
