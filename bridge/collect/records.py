"""The bridge's own record of each job's attempts, where only root writes.

The prolog notes each attempt's outcome here (and, for the user to read, in the results
folder's bridge-status.json). The epilog and the reaper decide what to collect and whose
Pod it is from this record and from Kubernetes, never from the user's folder: a user can
rewrite everything under results/<user>/, and root must not be steered by it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.log import get_logger

log = get_logger(component="records")


class JobRecords:
    """`<dir>/<jobid>.json` files (0600, root's), one per job, with the attempts in order."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _path(self, job_id: str) -> Path:
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        return self._dir / f"{job_id}.json"

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        try:
            data = json.loads(self._path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("job record unreadable; treated as empty", job_id=job_id, error=str(exc))
            return []
        attempts = data.get("attempts") if isinstance(data, dict) else None
        return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []

    def append(self, job_id: str, *, attempt: int, state: str, reason: str, **details: Any) -> list[dict[str, Any]]:
        """Add one attempt's outcome; returns the whole history (for the user's copy).

        Two hooks may note the same job at once (a restarted slurmctld runs the prolog again
        while the first run goes on, in the watcher or as a process): the read-modify-write
        holds the directory's lock, so neither loses the other's line."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(job_id)
        with self._locked():
            history = [*self.attempts(job_id),
                       {"attempt": attempt, "state": state, "reason": reason, "time": int(time.time()), **details}]
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{path.name}.", suffix=".tmp")
            try:
                os.write(fd, json.dumps({"job_id": job_id, "attempts": history}, indent=1).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        return history

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def last_run(self, job_id: str) -> dict[str, Any]:
        """The last attempt that reached a Ready Pod, or {}."""
        return next((a for a in reversed(self.attempts(job_id)) if a.get("state") == "running"), {})

    def last(self, job_id: str) -> dict[str, Any]:
        attempts = self.attempts(job_id)
        return attempts[-1] if attempts else {}

    def forget(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(job_id).unlink()
