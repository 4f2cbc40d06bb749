"""Checks on the file itself (DESIGN section 3), before its text is read as a job.

The file is opened once, relative to a directory descriptor, with `O_NOFOLLOW`; every check
runs on that open descriptor (`fstat`), so nobody can swap the file between check and read.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bridge.errors import TemporaryError
from bridge.ingest.journal import MAX_NAME_BYTES
from bridge.jobfile.spec import JobSpec, Problem, parse_job_text
from bridge.settings import PolicySettings, Settings

_READ_CHUNK = 64 * 1024

# Open/read failures that say nothing about the file: a flaky or overloaded NAS (EIO, ESTALE,
# ETIMEDOUT), the watcher out of descriptors (EMFILE, ENFILE), an NFS export with root-squash
# that lets root (mapped to nobody) not read the file yet (EACCES, EPERM). They are retried;
# only a verdict about the file itself rejects it.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EPERM,
                              errno.EAGAIN, errno.EINTR, errno.ENOMEM, errno.ETIMEDOUT, errno.EBUSY,
                              errno.ENOLCK, errno.EREMOTEIO})

Opener = Callable[..., int]


class FileNotReadyError(TemporaryError):
    """The file could not be read right now, or changed while it was read: try again later."""


@dataclass(frozen=True)
class FileFacts:
    uid: int
    gid: int
    owner: str | None
    size: int
    mtime_ns: int
    inode: int
    device: int
    vanished: bool = False


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    file: str
    owner: str | None
    problems: list[Problem]
    job: JobSpec | None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems) and self.job is not None


def _problem(code: str, message: str, expected: str, fix: str) -> Problem:
    return Problem(line=None, code=code, message=message, expected=expected, fix=fix)


def check_name(name: str) -> list[Problem]:
    """A name that would be unsafe or unreadable in logs, reports and shells, or too long to archive."""
    raw = os.fsencode(name)
    if len(raw) > MAX_NAME_BYTES:
        return [_problem("name-too-long", f"the file name is {len(raw)} bytes long; the bridge adds a job id or a "
                         "suffix to it and would exceed the file system's limit of 255 bytes",
                         f"a file name of at most {MAX_NAME_BYTES} bytes", "rename the file to a shorter name, "
                         "e.g. train.sh, and copy it again")]
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return [_problem("bad-name", "the file name is not valid UTF-8", "a UTF-8 file name such as train.sh",
                         "rename the file using plain letters, digits, '-', '_' and '.'")]
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return [_problem("bad-name", f"the file name {name!r} contains control characters (newline, tab, ...)",
                         "a file name without control characters", "rename the file, e.g. to train.sh")]
    if name.startswith("-"):
        return [_problem("bad-name", f"the file name {name!r} starts with '-' and would read as an option",
                         "a name starting with a letter or digit", "rename the file, e.g. to job.sh")]
    return []


def _owner_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _facts(info: os.stat_result) -> FileFacts:
    return FileFacts(uid=info.st_uid, gid=info.st_gid, owner=_owner_name(info.st_uid), size=info.st_size,
                     mtime_ns=info.st_mtime_ns, inode=info.st_ino, device=info.st_dev)


def _check_metadata(info: os.stat_result, policy: PolicySettings) -> list[Problem]:
    problems: list[Problem] = []
    if not stat.S_ISREG(info.st_mode):
        return [_problem("not-regular", "this is not a regular file (a directory, device or pipe)",
                         "a regular file", "copy the job script itself into the folder")]
    if info.st_nlink != 1:
        problems.append(_problem("hard-link", f"the file has {info.st_nlink} hard links",
                                 "a file with a single link (a copy, not `ln`)", "copy the file with cp instead of ln"))
    if info.st_uid == 0:
        problems.append(_problem("root-owned", "the file is owned by root; jobs run as the file's owner and root "
                                 "may not run jobs through the bridge", "a file owned by your own user",
                                 "copy the file as yourself (not with sudo)"))
    elif not policy.uid_min <= info.st_uid <= policy.uid_max:
        problems.append(_problem("uid-out-of-range", f"the file's owner (uid {info.st_uid}) is not a user account "
                                 "allowed to submit jobs", f"an owner uid between {policy.uid_min} and {policy.uid_max}",
                                 "copy the file as your own user; service accounts cannot submit"))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(_problem("writable-by-others", f"others can write to the file (mode {stat.filemode(info.st_mode)})",
                                 "a file only you can write (e.g. mode -rw-r--r--)", "run `chmod go-w FILE` and copy it again"))
    if info.st_size > policy.max_file_bytes:
        problems.append(_problem("too-big", f"the file is {info.st_size} bytes, larger than a job script may be",
                                 f"at most {policy.max_file_bytes} bytes",
                                 "keep data out of the script: put it on the NAS and read it from there"))
    if info.st_mtime_ns == 0:
        problems.append(_problem("mtime-zero", "the file's modification time is 0 (an interrupted rsync or copy)",
                                 "a completely copied file", "copy the file again"))
    return problems


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _check_content(data: bytes) -> list[Problem]:
    if b"\x00" in data:
        return [_problem("binary", "the file contains NUL bytes: it is binary, not a text script",
                         "a plain-text bash script", "copy the job's .sh file, not a compiled or archived file")]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return [Problem(line=line, code="not-utf8", message=f"byte {exc.start} is not UTF-8 text",
                        expected="a UTF-8 encoded text file",
                        fix="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE`)")]
    return []


def read_job_file(
    dir_fd: int, name: str, policy: PolicySettings, *, shown_name: str | None = None, opener: Opener = os.open,
    fstat: Callable[[int], os.stat_result] = os.fstat,
) -> tuple[bytes | None, FileFacts | None, list[Problem]]:
    """Open NAME in the directory without following links; return its bytes when every check passes.

    `shown_name` is the name the user gave the file (checked instead of NAME). Raises
    FileNotReadyError for a transient failure (see TRANSIENT_ERRNOS) or when the file changed
    while it was read (a writer still appending): the caller retries, never rejects, on those.
    `opener` and `fstat` are the file-system boundary, replaceable in tests.
    """
    data, facts, problems = _inspect(dir_fd, name, policy, shown_name=shown_name, opener=opener, fstat=fstat)
    return (None if problems else data), facts, problems


def _signature(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev, info.st_nlink


def _inspect(
    dir_fd: int, name: str, policy: PolicySettings, *, shown_name: str | None = None, opener: Opener = os.open,
    fstat: Callable[[int], os.stat_result] = os.fstat,
) -> tuple[bytes | None, FileFacts | None, list[Problem]]:
    """All file-level problems, plus the bytes whenever they could be read safely (for a full report)."""
    problems = check_name(shown_name if shown_name is not None else name)
    try:
        fd = opener(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise FileNotReadyError(f"cannot open the file yet: {exc.strerror}") from exc
        if exc.errno == errno.ENOENT:
            return None, FileFacts(uid=-1, gid=-1, owner=None, size=0, mtime_ns=0, inode=0, device=0, vanished=True), []
        if exc.errno == errno.ELOOP:
            return None, _lstat_facts(dir_fd, name), [*problems, _problem(
                "symlink", "the file is a symbolic link", "the job script itself, not a symbolic link to it",
                "copy the file (cp -L) instead of linking it")]
        return None, None, [*problems, _problem("unreadable", f"cannot open the file: {exc.strerror}",
                                                "a readable file", "check the file's permissions and copy it again")]
    try:
        info = fstat(fd)
        facts = _facts(info)
        problems += _check_metadata(info, policy)
        if not stat.S_ISREG(info.st_mode) or info.st_size > policy.max_file_bytes:
            return None, facts, problems
        data = _read_all(fd, policy.max_file_bytes)
        after = fstat(fd)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise FileNotReadyError(f"cannot read the file yet: {exc.strerror}") from exc
        raise
    finally:
        os.close(fd)
    if _signature(after) != _signature(info) or len(data) != info.st_size:
        # Someone still holds the file open and writes to it: the copy may be half of it.
        raise FileNotReadyError("the file changed while it was being read (still being written?)")
    if len(data) > policy.max_file_bytes:
        return None, facts, [*problems, _problem("too-big", "the file grew beyond the size a job script may have",
                                                 f"at most {policy.max_file_bytes} bytes", "keep data out of the script")]
    content = _check_content(data)
    return (None if content else data), facts, problems + content


def _lstat_facts(dir_fd: int, name: str) -> FileFacts | None:
    try:
        return _facts(os.lstat(name, dir_fd=dir_fd))
    except OSError:
        return None


def validate_file(path: Path, settings: Settings) -> ValidationReport:
    """Everything the watcher would check, for `skbridge validate FILE`."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return ValidationReport(file=str(path), owner=None, job=None, problems=[_problem(
            "unreadable", f"cannot open the folder {parent}: {exc.strerror}", "an existing, readable folder",
            "check the path")])
    try:
        data, facts, problems = _inspect(dir_fd, path.name, settings.policy)
    except FileNotReadyError as exc:
        return ValidationReport(file=str(path), owner=None, job=None, problems=[_problem(
            "not-ready", str(exc), "a complete, readable file", "try again in a moment")])
    finally:
        os.close(dir_fd)
    owner = facts.owner if facts is not None else None
    if facts is not None and facts.vanished:
        problems = [_problem("missing", f"{path} does not exist", "an existing file", "check the path")]
    if data is None:
        return ValidationReport(file=str(path), owner=owner, job=None, problems=problems)
    home = None
    if owner is not None:
        home = Path(pwd.getpwnam(owner).pw_dir)
    spec, text_problems = parse_job_text(data.decode("utf-8"), settings.policy, settings.nas, owner=owner,
                                         owner_home=home)
    return ValidationReport(file=str(path), owner=owner, job=spec, problems=[*problems, *text_problems])
