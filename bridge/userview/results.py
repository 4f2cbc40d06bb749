"""Reading a job's results folder, results/<user>/<jobid>/, as its user."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.settings import NasSettings

SUMS_FILE = "SHA256SUMS"
SUMMARY_FILE = "summary.json"
STATUS_FILE = "bridge-status.json"
POD_LOG = "pod.log"
_CHUNK = 1 << 20


def job_results_dir(nas: NasSettings, user: str, job_id: str) -> Path:
    return nas.results_root / user / job_id


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ResultFile:
    path: str
    size: int
    mtime: float


def list_files(job_dir: Path) -> list[ResultFile]:
    """Regular files under the folder (links are not followed), hidden ones (the credential) left out."""
    found: list[ResultFile] = []
    for directory, dirnames, filenames in os.walk(job_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(directory) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.append(ResultFile(path.relative_to(job_dir).as_posix(), info.st_size, info.st_mtime))
    return found


@dataclass(frozen=True)
class Verification:
    ok: list[str]
    mismatched: list[str]
    missing: list[str]
    unlisted: list[str]
    sums_present: bool

    @property
    def passed(self) -> bool:
        return self.sums_present and not self.mismatched and not self.missing


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(job_dir: Path) -> Verification:
    """Check every line of SHA256SUMS (`sha256sum -c` format); also name files it does not list."""
    try:
        lines = (job_dir / SUMS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return Verification([], [], [], [f.path for f in list_files(job_dir)], sums_present=False)
    ok: list[str] = []
    mismatched: list[str] = []
    missing: list[str] = []
    listed: set[str] = set()
    for line in lines:
        digest, sep, name = line.partition("  ")
        if not sep or not name:
            continue
        name = name.removeprefix("*")
        listed.add(name)
        target = job_dir / name
        if ".." in Path(name).parts or name.startswith("/"):
            mismatched.append(name)
            continue
        try:
            actual = sha256_of(target)
        except OSError:
            missing.append(name)
            continue
        (ok if actual == digest.strip().lower() else mismatched).append(name)
    unlisted = [f.path for f in list_files(job_dir) if f.path not in listed and f.path != SUMS_FILE]
    return Verification(ok, mismatched, missing, unlisted, sums_present=True)


def copy_tree(job_dir: Path, dest: Path) -> list[str]:
    """Copy the folder's regular files into dest (made if missing), keeping times; returns what was copied."""
    copied: list[str] = []
    for item in list_files(job_dir):
        target = dest / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        source = job_dir / item.path
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        shutil.copystat(source, target, follow_symlinks=False)
        copied.append(item.path)
    return copied
