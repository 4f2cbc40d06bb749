"""How one step on a dropped file ends: accepted/ with its job, failed/ with NAME.error, or later.

The file is archived under a name chosen so that nothing is ever overwritten (name clashes
get a numeric suffix), and the journal records each ending before or right as it happens, so
a restart finishes a half-done move under the recorded name instead of making a second copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from bridge import metrics
from bridge.errors import PermanentError
from bridge.history.record import record_job, record_note
from bridge.ingest.journal import Entry, EntryState, Journal, short_name
from bridge.jobfile.spec import Problem, render_report
from bridge.log import get_logger
from bridge.settings import Settings

log = get_logger(component="ingest")


@dataclass(frozen=True)
class Outcome:
    state: EntryState
    job_id: str | None = None


def problem(code: str, message: str, expected: str, fix: str) -> Problem:
    """A verdict of the watcher's own (not about one line of the file), for NAME.error."""
    return Problem(line=None, code=code, message=message, expected=expected, fix=fix)


def retry_later(settings: Settings, journal: Journal, entry: Entry, reason: str, *,
                state: EntryState = EntryState.WAITING, count_attempt: bool = False) -> Outcome:
    """Try again later, with back-off (`count_attempt`: this try counts towards it)."""
    ingest = settings.ingest
    delay_s = min(ingest.retry_max_s, ingest.retry_initial_s * (2 ** min(entry.attempts, 16)))
    journal.set_state(entry.id, state, reason=reason, next_attempt_at=time.time() + delay_s,
                      count_attempt=count_attempt)
    log.info("will retry", retry_in_s=round(delay_s, 1), reason=reason, state=state.value)
    return Outcome(state)


class Archiver:
    """Moves a processed file into accepted/ or failed/ (with its NAME.error) and journals the end.

    `pickup_since_s` is the Ingestor's map of entry id -> when the scanner first saw the file
    complete; a file that ends here no longer needs its entry.
    """

    def __init__(self, settings: Settings, journal: Journal, *, pickup_since_s: dict[str, float]) -> None:
        self._settings = settings
        self._journal = journal
        nas = settings.nas
        self._processing = os.fsencode(nas.processing_dir)
        self._accepted = os.fsencode(nas.accepted_dir)
        self._failed = os.fsencode(nas.failed_dir)
        self._reject_lock = threading.Lock()
        self._pickup_since_s = pickup_since_s

    def accept(self, entry: Entry, job_id: str) -> Outcome:
        source = entry.processing_name
        if os.path.lexists(os.path.join(self._processing, source)):
            _make_private(os.path.join(self._processing, source))
            final = _move_no_clobber(self._processing, source, self._accepted, job_id.encode() + b"-" + entry.name)
            log.info("accepted", job_id=job_id, accepted=os.fsdecode(final))
            record_job(self._settings, job_id, event="file accepted", detail=os.fsdecode(final))
        self._journal.set_state(entry.id, EntryState.ACCEPTED, job_id=job_id)
        metrics.FILES_ACCEPTED.inc()
        return Outcome(EntryState.ACCEPTED, job_id)

    def reject(self, entry: Entry, problems: list[Problem], *, uid: int | None) -> Outcome:
        report = render_report(problems, file_name=os.fsdecode(entry.name))
        with self._reject_lock:
            # Choosing the name and recording it are one step, so two files called alike never
            # pick the same name and a restart finishes the move under the recorded one.
            target = _free_name(self._failed, entry.name, companion=b".error")
            self._journal.set_state(entry.id, EntryState.REJECTING, reason=report, target=target)
        log.info("rejected", problems=[p.code for p in problems], failed=os.fsdecode(target))
        record_note(self._settings, "file rejected", uid=uid,
                    detail=f"{os.fsdecode(entry.name)}: {', '.join(p.code for p in problems) or 'rejected'}")
        metrics.file_rejected(problems)
        return self.finish_rejected(entry.id, target, report, uid)

    def finish_rejected(self, entry_id: str, target: bytes, report: str, uid: int | None) -> Outcome:
        """Write NAME.error and move the file to failed/TARGET; also resumes one cut off by a restart."""
        self._pickup_since_s.pop(entry_id, None)
        entry = self._journal.get(entry_id)
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
        self._journal.set_state(entry.id, EntryState.FAILED)
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
