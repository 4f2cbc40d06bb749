"""The job's results folder on the NAS, results/<user>/<jobid>/, owned by the user.

Everything below results/<user>/ is the user's to change, so root never writes there:
each write runs in a short-lived child process with the user's uid and gid. A symlink or
hard link planted by the user can then reach only what the user could reach anyway.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import PermanentError
from bridge.runas import run_as_user, write_atomic, write_file_as

if TYPE_CHECKING:  # not imported at run time: `skbridge attach` reads the status without the settings model
    from bridge.settings import NasSettings

__all__ = ["STATUS_FILE", "ensure_results_dir", "read_status", "record_status", "results_dir", "run_as_user",
           "write_atomic", "write_file_as"]

STATUS_FILE = "bridge-status.json"


def results_dir(nas: NasSettings, user: str, job_id: str) -> Path:
    return nas.results_root / user / job_id


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


def record_status(job_dir: Path, uid: int, gid: int, history: list[dict[str, Any]], *,
                  also_write: dict[str, bytes] | None = None) -> None:
    """The user's copy of the job's attempts (the bridge's own is root's: bridge.collect.records);
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
