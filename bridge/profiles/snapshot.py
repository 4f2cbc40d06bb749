"""A run's code snapshot: which files of the project (git's view when it is a repository), packed
as a tar stream and unpacked into the run's own folder, so later edits never reach a queued job.

In a git repository the snapshot is the committed content: a tree with uncommitted changes to
tracked files is refused unless the caller allows it (then the working tree's tracked and
untracked-but-not-ignored files are taken). Elsewhere the folder is copied, up to a size cap.
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import structlog

from bridge.errors import ConfigError, PermanentError

log = structlog.get_logger(__name__)
_GIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Snapshot:
    project: Path
    source: str  # "git" | "git-dirty" | "folder"
    commit: str | None
    files: list[str]  # posix paths relative to the project
    size_bytes: int


def _git(project: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(project), *args], capture_output=True, timeout=_GIT_TIMEOUT_S, check=False)


def git_root(project: Path) -> Path | None:
    done = _git(project, "rev-parse", "--show-toplevel")
    return Path(done.stdout.decode().strip()) if done.returncode == 0 and done.stdout.strip() else None


def matches(path: str, patterns: list[str]) -> bool:
    """True when no patterns are given, or `path` is one, lies under one, or matches one as a glob."""
    if not patterns:
        return True
    for pattern in patterns:
        clean = pattern.rstrip("/")
        if path == clean or path.startswith(clean + "/") or fnmatch.fnmatchcase(path, pattern):
            return True
    return False


def _git_files(project: Path, *, allow_dirty: bool) -> tuple[list[str], str, str | None]:
    changed = _git(project, "status", "--porcelain", "--untracked-files=no", "--", ".")
    if changed.returncode != 0:
        raise PermanentError(f"git status failed in {project}: {changed.stderr.decode(errors='replace').strip()}")
    dirty = bool(changed.stdout.strip())
    if dirty and not allow_dirty:
        names = [line[3:] for line in changed.stdout.decode(errors="replace").splitlines()][:5]
        raise ConfigError(f"{project} has uncommitted changes ({', '.join(names)}); commit them (the snapshot is what "
                          "is committed), or pass --dirty to take the working tree as it is")
    head = _git(project, "rev-parse", "HEAD")
    commit = head.stdout.decode().strip() if head.returncode == 0 else None
    # -z: names as they are (no quoting); paths relative to the project folder.
    listing = ["ls-files", "-z", "--cached"] + (["--others", "--exclude-standard"] if dirty else []) + ["--", "."]
    done = _git(project, *listing)
    if done.returncode != 0:
        raise PermanentError(f"git ls-files failed in {project}: {done.stderr.decode(errors='replace').strip()}")
    names = sorted({name for name in done.stdout.decode("utf-8", errors="surrogateescape").split("\0") if name})
    return names, "git-dirty" if dirty else "git", commit


def _folder_files(project: Path, excluded: list[str]) -> list[str]:
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(project, followlinks=False):
        relative_dir = Path(directory).relative_to(project)
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and (relative_dir / d).as_posix() not in excluded)
        found += [(relative_dir / name).as_posix() for name in sorted(filenames)]
    return found


def select(project: Path, patterns: list[str], *, allow_dirty: bool, cap_bytes: int,
           excluded: list[str] | None = None) -> Snapshot:
    """The files a run of this project takes: git's tracked files, or the folder's (without
    `excluded` top folders such as the local results), filtered by `patterns`, at most cap_bytes."""
    if git_root(project) is not None:
        names, source, commit = _git_files(project, allow_dirty=allow_dirty)
    else:
        names, source, commit = _folder_files(project, excluded or []), "folder", None
    files: list[str] = []
    total = 0
    for name in names:
        if not matches(name, patterns):
            continue
        try:
            info = (project / name).lstat()
        except FileNotFoundError:
            continue  # deleted in the working tree: nothing to take
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue
        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
        files.append(name)
        if total > cap_bytes:
            raise ConfigError(f"the snapshot of {project} would exceed {cap_bytes // 2**20} MiB (at {name}); "
                              "name the code to take with the profile's 'code:' list or raise 'snapshot_cap_mib'")
    if patterns and not files:
        raise ConfigError(f"the profile's code list {patterns} matches no file in {project}")
    return Snapshot(project=project, source=source, commit=commit, files=files, size_bytes=total)


def write_tar(snapshot: Snapshot, stream: IO[bytes], extra: dict[str, bytes] | None = None) -> None:
    """The snapshot as an uncompressed tar stream (names relative, owners left out), plus `extra`
    small files (the run's own record)."""
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        for name in snapshot.files:
            if name in (extra or {}):
                continue  # the run's own record wins over a project file of that name
            info = archive.gettarinfo(str(snapshot.project / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(snapshot.project / name, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\0" in name:
        raise PermanentError(f"snapshot member {name!r} points outside its folder")
    return path


def extract_tar(stream: IO[bytes], dest: Path, *, fresh: bool = True) -> list[str]:
    """Unpack a snapshot stream into `dest`: a new folder made here (fresh), or an existing one
    whose files are replaced (a collected copy). The names unpacked.

    Python 3.11.2 has no tarfile data filter: names are checked here, only files, folders and
    links are taken, and links are made last so no file is written through one."""
    if fresh:
        dest.mkdir(mode=0o750, parents=False)
    links: list[tuple[PurePosixPath, str]] = []
    names: list[str] = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if fresh else os.O_TRUNC)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            relative = _safe_name(member.name)
            target = dest / relative
            if member.isdir():
                target.mkdir(mode=0o750, parents=True, exist_ok=True)
            elif member.issym():
                links.append((relative, member.linkname))
            elif member.isreg():
                target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                fd = os.open(target, flags, (member.mode & 0o755) | 0o600)
                with os.fdopen(fd, "wb") as handle:
                    while chunk := source.read(1 << 20):
                        handle.write(chunk)
                names.append(relative.as_posix())
            else:
                log.warning("snapshot member skipped", file=member.name, kind=member.type.decode(errors="replace"))
    for relative, link_target in links:
        (dest / relative).parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.symlink(link_target, dest / relative)
        names.append(relative.as_posix())
    return names
