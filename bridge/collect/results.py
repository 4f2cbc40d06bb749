"""The job's results folder on the NAS, results/<user>/<jobid>/, owned by the user."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bridge.settings import NasSettings

STATUS_FILE = "bridge-status.json"


def results_dir(nas: NasSettings, user: str, job_id: str) -> Path:
    return nas.results_root / user / job_id


def ensure_results_dir(nas: NasSettings, user: str, uid: int, gid: int, job_id: str) -> Path:
    user_dir = nas.results_root / user
    job_dir = user_dir / job_id
    for directory in (user_dir, job_dir):
        if not directory.is_dir():
            directory.mkdir(mode=0o750, exist_ok=True)
            os.chown(directory, uid, gid)
    return job_dir


def write_file_as(path: Path, data: bytes, uid: int, gid: int, mode: int = 0o640) -> None:
    """Write atomically and hand the file to the user."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def record_status(job_dir: Path, uid: int, gid: int, *, state: str, reason: str, attempt: int) -> None:
    """Append this attempt's outcome; `attach` reads the last entry to explain a rejection."""
    path = job_dir / STATUS_FILE
    history: list[dict[str, Any]] = []
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("attempts", [])
    except (OSError, ValueError):
        history = []
    history.append({"attempt": attempt, "state": state, "reason": reason, "time": int(time.time())})
    body = {"state": state, "reason": reason, "attempts": history}
    write_file_as(path, json.dumps(body, indent=2).encode("utf-8") + b"\n", uid, gid)


def read_status(job_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((job_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
