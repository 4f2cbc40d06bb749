"""The job's results folder on the NAS, results/<user>/<jobid>/, owned by the user.

Everything below results/<user>/ is the user's to change, so root never writes there:
each write runs in a short-lived child process with the user's uid and gid. A symlink or
hard link planted by the user can then reach only what the user could reach anyway.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import PermanentError
from bridge.settings import NasSettings

STATUS_FILE = "bridge-status.json"
T = TypeVar("T")


def results_dir(nas: NasSettings, user: str, job_id: str) -> Path:
    return nas.results_root / user / job_id


def run_as_user(uid: int, gid: int, work: Callable[[], T]) -> T:
    """Run `work` with the user's identity in a forked child; its JSON-able result comes back."""
    if os.geteuid() == uid:
        return work()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user for good, do the work, report, exit
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([gid])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(0o027)
            payload = json.dumps({"ok": work()}).encode("utf-8")
        except BaseException as exc:
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode("utf-8"), 1
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view):]
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        while chunk := reader.read(1 << 16):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        answer = json.loads(b"".join(chunks) or b"{}")
    except ValueError as exc:
        raise PermanentError(f"work as uid {uid} returned garbage") from exc
    if "ok" not in answer:
        raise PermanentError(f"as uid {uid}: {answer.get('error', 'the child process died')}")
    return answer["ok"]  # type: ignore[no-any-return]


def ensure_results_dir(nas: NasSettings, user: str, uid: int, gid: int, job_id: str) -> Path:
    """results/<user>/ is made by root (results/ is root's); the job folder by the user."""
    user_dir = nas.results_root / user
    try:
        info = os.lstat(user_dir)
    except FileNotFoundError:
        os.mkdir(user_dir, 0o750)
        os.lchown(user_dir, uid, gid)
        info = os.lstat(user_dir)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise PermanentError(f"{user_dir} is not a folder owned by {user}; an administrator must fix it")
    job_dir = user_dir / job_id

    def make() -> None:
        job_dir.mkdir(mode=0o750, exist_ok=True)

    run_as_user(uid, gid, make)
    return job_dir


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_file_as(path: Path, data: bytes, uid: int, gid: int, mode: int = 0o640) -> None:
    """Write atomically, as the user, into the user's folder."""
    run_as_user(uid, gid, lambda: write_atomic(path, data, mode))


def record_status(job_dir: Path, uid: int, gid: int, history: list[dict[str, Any]], *,
                  also_write: dict[str, bytes] | None = None) -> None:
    """The user's copy of the job's attempts (the bridge's own is root's: bridge.hooks.records);
    `attach` reads the last entry to explain a rejection. `also_write` files go into the job
    folder in the same switch to the user (one fork)."""
    last = history[-1] if history else {}

    def update() -> None:
        for name, data in (also_write or {}).items():
            write_atomic(job_dir / name, data)
        body = {"state": last.get("state"), "reason": last.get("reason", ""), "attempts": history}
        write_atomic(job_dir / STATUS_FILE, json.dumps(body, indent=2).encode("utf-8") + b"\n")

    run_as_user(uid, gid, update)


def read_status(job_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((job_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
