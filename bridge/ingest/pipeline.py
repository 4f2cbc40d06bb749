"""One dropped file's way: claim → validate a private copy → sbatch as owner → accepted/ or failed/.

Every step is recorded in the journal before its effect can be observed, so a crash at
any point leaves either a file still in processing/ with an entry saying what is left to
do, or a finished entry. Nothing is overwritten: name clashes get a numeric suffix.

This module sequences the steps; the submission that happens exactly once is
`bridge.ingest.submission`, the endings (accepted/, failed/ with NAME.error, retry later)
are `bridge.ingest.outcome`, and whose drop a file is, `bridge.ingest.ownership`.
"""

from __future__ import annotations

import os
import stat

import structlog

from bridge import metrics
from bridge.errors import PermanentError
from bridge.ingest.filecheck import FileNotReadyError, read_job_file
from bridge.ingest.journal import (
    Entry,
    EntryState,
    Journal,
    new_entry_id,
    processing_name,
    split_processing_name,
)
from bridge.ingest.outcome import Archiver, Outcome, problem, retry_later
from bridge.ingest.ownership import folder_problem
from bridge.ingest.submission import Submitter
from bridge.jobfile.launcher import insert_launcher
from bridge.jobfile.spec import parse_job_text
from bridge.log import get_logger
from bridge.settings import Settings
from bridge.slurm.submit import Owner

# Outcome is what process() returns; the watcher imports both from here.
__all__ = ["Ingestor", "Outcome"]

log = get_logger(component="ingest")


class Ingestor:
    """The watcher's work on files; thread-safe per entry (one worker handles one entry)."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self._settings = settings
        self.journal = journal
        nas = settings.nas
        self._submit = os.fsencode(nas.submit_dir)
        self._processing = os.fsencode(nas.processing_dir)
        # entry id -> when the scanner first saw its file complete (monotonic): the pickup latency's start.
        self._complete_since_s: dict[str, float] = {}
        self._archiver = Archiver(settings, journal, pickup_since_s=self._complete_since_s)
        self._submitter = Submitter(settings, journal, self._archiver, pickup_since_s=self._complete_since_s)

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
                return self._archiver.finish_rejected(entry.id, entry.target, entry.reason or "rejected", None)
            if entry.state == EntryState.SUBMITTED and entry.job_id:
                return self._archiver.accept(entry, entry.job_id)
            if entry.state == EntryState.SUBMITTING:
                settled = self._submitter.resolve(entry)
                if settled is not None:
                    return settled
            return self._validate_and_submit(entry)

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
            return retry_later(settings, self.journal, entry, str(exc), count_attempt=True)
        finally:
            os.close(dir_fd)
        if facts is not None and facts.vanished:
            self.journal.set_state(entry.id, EntryState.FAILED, reason="file vanished from processing/")
            self._complete_since_s.pop(entry.id, None)
            return Outcome(EntryState.FAILED)
        file_uid = facts.uid if facts is not None else None
        not_theirs = folder_problem(entry, file_uid, submit_dir=settings.nas.submit_dir)
        if not_theirs is not None:
            log.warning("file not taken: it is not its owner's drop", problem=not_theirs.code, file_uid=file_uid,
                        folder_uid=entry.folder_uid)
            return self._archiver.reject(entry, [not_theirs, *problems], uid=file_uid)
        if problems or data is None or facts is None:
            return self._archiver.reject(entry, problems, uid=file_uid)
        text = data.decode("utf-8")
        try:
            owner = Owner.from_uid(facts.uid)
        except PermanentError as exc:
            return self._archiver.reject(entry, [problem("unknown-owner", str(exc), "an owner with an account on this "
                                                         "host", "ask an administrator to check the account (LDAP/NSS)")],
                                         uid=facts.uid)
        structlog.contextvars.bind_contextvars(owner=owner.name)
        spec, text_problems = parse_job_text(text, settings.policy, settings.nas, owner=owner.name, owner_home=owner.home)
        errors = [p for p in text_problems if p.severity == "error"]
        if errors or spec is None:
            return self._archiver.reject(entry, text_problems, uid=owner.uid)
        script = insert_launcher(text, settings.slurm.skbridge_path, settings.slurm.attach_config_path).encode("utf-8")
        given = {option.name for option in spec.sbatch_options}
        defaults = {"job-name": os.fsdecode(entry.name)}
        if settings.slurm.partition:
            defaults["partition"] = settings.slurm.partition
        return self._submitter.submit(entry, owner, script, {k: v for k, v in defaults.items() if k not in given})
