"""One dropped file's way: claim → validate a private copy → sbatch as owner → accepted/ or failed/.

Every step is recorded in the journal before its effect can be observed, so a crash at
any point leaves either a file still in processing/ with an entry saying what is left to
do, or a finished entry. Nothing is overwritten: name clashes get a numeric suffix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from dataclasses import dataclass

import structlog

from bridge.errors import PermanentError, TemporaryError
from bridge.ingest.filecheck import read_job_file
from bridge.ingest.jobfile import Problem, parse_job_text, render_report
from bridge.ingest.journal import Entry, EntryState, Journal, new_entry_id, processing_name, split_processing_name
from bridge.ingest.launcher import insert_launcher
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.commands import AmbiguousSlurmError
from bridge.slurm.submit import Owner, find_tagged_jobs, sbatch_as_owner, tag_for

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


def _move_no_clobber(src_dir: bytes, src_name: bytes, dst_dir: bytes, dst_name: bytes) -> bytes:
    """Move a file without ever replacing one: link under a free name, then unlink the source.

    Re-running after a crash between link and unlink finds the earlier link (same inode) and
    finishes the move instead of making a second copy.
    """
    src = os.path.join(src_dir, src_name)
    candidate = dst_name
    for suffix in range(1, 10_000):
        dst = os.path.join(dst_dir, candidate)
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            if _same_file(src, dst):
                os.unlink(src)
                return candidate
            candidate = dst_name + b"." + str(suffix).encode()
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EISDIR):
                raise
            # Directories and some filesystems refuse hard links; rename is still atomic, and
            # the existence check right before it is the best a portable rename can do.
            if os.path.lexists(dst):
                candidate = dst_name + b"." + str(suffix).encode()
                continue
            os.rename(src, dst)
            return candidate
        os.unlink(src)
        return candidate
    raise PermanentError(f"no free name for {dst_name!r} in {dst_dir!r}")


def _free_name(directory: bytes, name: bytes, *, companion: bytes) -> bytes:
    """First of NAME, NAME.1, ... such that neither it nor it+companion exists yet."""
    for suffix in range(10_000):
        candidate = name if suffix == 0 else name + b"." + str(suffix).encode()
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

    # -- claiming -----------------------------------------------------------------------

    def claim(self, name: bytes) -> Entry | None:
        """Rename submit/NAME into processing/ and journal it; None if it is gone already."""
        entry_id = new_entry_id()
        try:
            os.rename(os.path.join(self._submit, name), os.path.join(self._processing, processing_name(entry_id, name)))
        except FileNotFoundError:
            return None
        # A crash right here leaves a processing/ file without an entry: recover() adopts it.
        return self.journal.add(entry_id, name)

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
        with structlog.contextvars.bound_contextvars(file=os.fsdecode(entry.name), entry=entry.id):
            if entry.state == EntryState.REJECTING and entry.target is not None:
                return self._finish_rejected(entry.id, entry.target, entry.reason or "rejected", None)
            if entry.state == EntryState.SUBMITTED and entry.job_id:
                return self._finish_accepted(entry, entry.job_id)
            if entry.state == EntryState.SUBMITTING:
                # sbatch may have succeeded before we lost track: ask Slurm before trying again.
                try:
                    job_id = find_tagged_jobs(self._settings.slurm).get(tag_for(entry.id))
                except TemporaryError as exc:
                    return self._wait(entry, f"cannot look the job up yet: {exc}")
                if job_id:
                    log.info("found job submitted before a crash", job_id=job_id)
                    self.journal.set_state(entry.id, EntryState.SUBMITTED, job_id=job_id)
                    return self._finish_accepted(entry, job_id)
            return self._validate_and_submit(entry)

    def _validate_and_submit(self, entry: Entry) -> Outcome:
        settings = self._settings
        dir_fd = os.open(self._processing, os.O_RDONLY | os.O_DIRECTORY)
        try:
            data, facts, problems = read_job_file(dir_fd, os.fsdecode(entry.processing_name), settings.policy)
        finally:
            os.close(dir_fd)
        if facts is not None and getattr(facts, "vanished", False):
            self.journal.set_state(entry.id, EntryState.FAILED, reason="file vanished from processing/")
            return Outcome(EntryState.FAILED)
        if problems or data is None or facts is None:
            return self._reject(entry, problems, uid=getattr(facts, "uid", None))
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

    def _submit_job(self, entry: Entry, owner: Owner, script: bytes, defaults: dict[str, str]) -> Outcome:
        self.journal.set_state(entry.id, EntryState.SUBMITTING, count_attempt=True)  # the intent, before sbatch
        nas_home = self._settings.nas.home_root / owner.name
        workdir = nas_home if nas_home.is_dir() else owner.home
        try:
            job_id = sbatch_as_owner(self._settings.slurm, owner, script, tag=tag_for(entry.id), workdir=workdir,
                                     defaults=defaults)
        except AmbiguousSlurmError as exc:
            log.warning("sbatch outcome unknown; will look the tag up before retrying", error=str(exc))
            return self._wait(entry, str(exc), state=EntryState.SUBMITTING)
        except TemporaryError as exc:
            log.info("Slurm cannot take the job now; the file stays queued", error=str(exc))
            return self._wait(entry, str(exc))
        except PermanentError as exc:
            log.info("Slurm rejected the job", error=str(exc))
            return self._reject(entry, [_problem("slurm-rejected", f"sbatch refused the job: {exc}",
                                                 "a job Slurm accepts",
                                                 "fix the #SBATCH options Slurm names above, then drop the file again")],
                                uid=owner.uid)
        self.journal.set_state(entry.id, EntryState.SUBMITTED, job_id=job_id)
        return self._finish_accepted(entry, job_id)

    def _wait(self, entry: Entry, reason: str, *, state: EntryState = EntryState.WAITING) -> Outcome:
        ingest = self._settings.ingest
        delay_s = min(ingest.retry_max_s, ingest.retry_initial_s * (2 ** min(entry.attempts, 16)))
        self.journal.set_state(entry.id, state, reason=reason, next_attempt_at=time.time() + delay_s)
        log.info("will retry", retry_in_s=round(delay_s, 1), reason=reason)
        return Outcome(state)

    # -- endings ------------------------------------------------------------------------

    def _finish_accepted(self, entry: Entry, job_id: str) -> Outcome:
        source = entry.processing_name
        if os.path.lexists(os.path.join(self._processing, source)):
            final = _move_no_clobber(self._processing, source, self._accepted, job_id.encode() + b"-" + entry.name)
            log.info("accepted", job_id=job_id, accepted=os.fsdecode(final))
        self.journal.set_state(entry.id, EntryState.ACCEPTED, job_id=job_id)
        return Outcome(EntryState.ACCEPTED, job_id)

    def _reject(self, entry: Entry, problems: list[Problem], *, uid: int | None) -> Outcome:
        report = render_report(problems, file_name=os.fsdecode(entry.name))
        with self._reject_lock:
            # Choosing the name and recording it are one step, so two files called alike never
            # pick the same name and a restart finishes the move under the recorded one.
            target = _free_name(self._failed, entry.name, companion=b".error")
            self.journal.set_state(entry.id, EntryState.REJECTING, reason=report, target=target)
        log.info("rejected", problems=[p.code for p in problems], failed=os.fsdecode(target))
        return self._finish_rejected(entry.id, target, report, uid)

    def _finish_rejected(self, entry_id: str, target: bytes, report: str, uid: int | None) -> Outcome:
        entry = self.journal.get(entry_id)
        assert entry is not None
        if uid is None:  # resuming after a restart: the file itself still says whose it is
            for path in (os.path.join(self._processing, entry.processing_name), os.path.join(self._failed, target)):
                with contextlib.suppress(OSError):
                    uid = os.lstat(path).st_uid
                    break
        self._write_error_file(target + b".error", report, uid)
        if os.path.lexists(os.path.join(self._processing, entry.processing_name)):
            final = _move_no_clobber(self._processing, entry.processing_name, self._failed, target)
            if final != target:
                log.warning("failed/ name taken meanwhile; used another", failed=os.fsdecode(final))
                os.rename(os.path.join(self._failed, target + b".error"), os.path.join(self._failed, final + b".error"))
        self.journal.set_state(entry.id, EntryState.FAILED)
        return Outcome(EntryState.FAILED)

    def _write_error_file(self, name: bytes, report: str, uid: int | None) -> None:
        path = os.path.join(self._failed, name)
        tmp = os.path.join(self._failed, b"." + name + b".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, report.encode("utf-8"))
            if uid is not None:
                # The owner can read and remove the explanation of their own file.
                os.fchown(fd, uid, -1)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)


def _problem(code: str, message: str, expected: str, fix: str) -> Problem:
    return Problem(line=None, code=code, message=message, expected=expected, fix=fix)
