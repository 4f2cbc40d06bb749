"""What a user does to their jobs: submit (sbatch or the drop folder), cancel, wait. As the user, never root."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.settings import Settings
from bridge.slurm.commands import run_slurm
from bridge.slurm.submit import parsable_job_id
from bridge.userview.pod import pod_gone
from bridge.userview.queue import SlurmJob, find_job
from bridge.userview.results import STATUS_FILE, job_results_dir, read_json
from bridge.userview.status import pod_name_of


def user_env() -> dict[str, str]:
    """What sbatch passes on to the job: the same clean start the drop folder's jobs get."""
    env = {key: os.environ[key] for key in ("HOME", "USER", "LOGNAME", "SHELL") if key in os.environ}
    if os.environ.get("SKBRIDGE_CONFIG"):
        env["SKBRIDGE_CONFIG"] = os.environ["SKBRIDGE_CONFIG"]
    return env


def submit_sbatch(settings: Settings, path: Path, *, cwd: Path | None = None) -> str:
    """`sbatch --parsable FILE` as the calling user, from `cwd` (default: the current directory); the job id."""
    out = run_slurm(settings.slurm, ["sbatch", "--parsable", str(path.resolve())], env=user_env(),
                    cwd=str(cwd) if cwd is not None else os.getcwd())
    job_id = parsable_job_id(out.stdout)
    if job_id is None:
        raise PermanentError(f"sbatch printed no job id: {out.stdout.strip()!r} {out.stderr!r}")
    return job_id


@dataclass(frozen=True)
class DropTicket:
    name: str
    device: int
    inode: int


def drop(settings: Settings, path: Path, user: str) -> DropTicket:
    """Copy the file into submit/<user>/ under its own name, renamed in whole (the watcher takes it at once)."""
    from bridge.ingest.layout import user_submit_dir  # its logging set-up is only needed here

    folder = user_submit_dir(settings.nas, user)
    name = path.name
    if not folder.is_dir():
        raise PermanentError(f"your drop folder {folder} does not exist yet (the watcher makes it; ask an admin)")
    final = folder / name
    if os.path.lexists(final):
        raise PermanentError(f"{final} is already waiting in your drop folder; wait for it or remove it")
    data = path.read_bytes()
    tmp = folder / f".{name}.{os.getpid()}.part"  # dot-files and *.part are ignored by the watcher
    mode = os.stat(path).st_mode & 0o755
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode | 0o600)
        os.fsync(fd)
        info = os.fstat(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    return DropTicket(name=name, device=info.st_dev, inode=info.st_ino)


@dataclass(frozen=True)
class DropOutcome:
    job_id: str | None
    archived: Path
    error: str | None


def _same(path: Path, ticket: DropTicket) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (ticket.device, ticket.inode)


def find_outcome(settings: Settings, ticket: DropTicket) -> DropOutcome | None:
    """accepted/<jobid>-NAME or failed/NAME[.N] (+ .error) holding the very file dropped, else None."""
    suffix = "-" + ticket.name
    with os.scandir(settings.nas.accepted_dir) as listing:
        for item in listing:
            head, sep, _ = item.name.partition("-")
            if sep and head.isdigit() and item.name[len(head):].startswith(suffix) and _same(Path(item.path), ticket):
                return DropOutcome(job_id=head, archived=Path(item.path), error=None)
    with os.scandir(settings.nas.failed_dir) as listing:
        for item in listing:
            if item.name.startswith(ticket.name) and not item.name.endswith(".error") and _same(Path(item.path), ticket):
                error_path = Path(item.path + ".error")
                try:
                    error = error_path.read_text(encoding="utf-8", errors="replace")
                except OSError as exc:
                    error = f"(the reason in {error_path} cannot be read: {exc.strerror})"
                return DropOutcome(job_id=None, archived=Path(item.path), error=error)
    return None


def wait_drop(settings: Settings, ticket: DropTicket, *, timeout_s: float, poll_s: float = 0.2) -> DropOutcome:
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = find_outcome(settings, ticket)
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            raise TemporaryError(f"{ticket.name} was not taken from your drop folder within {timeout_s:.0f}s: "
                                 "is the watcher (skbridge-watcher) running? The file stays queued there")
        time.sleep(poll_s)


def wait_ended(settings: Settings, job_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0,
               on_poll: Callable[[SlurmJob], None] | None = None) -> SlurmJob:
    """Poll Slurm (one call each time) until the job has ended; the final accounting record."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            job = find_job(settings.slurm, job_id)
        except TemporaryError:
            job = None  # slurmctld busy or restarting: ask again
        if job is not None:
            if on_poll is not None:
                on_poll(job)
            if job.ended:
                return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TemporaryError(f"job {job_id} has not ended within {timeout_s:.0f}s")
        time.sleep(poll_s)


def cancel(settings: Settings, job_id: str) -> str | None:
    """scancel as the caller; Slurm itself refuses other users' jobs. A note when it had ended already."""
    try:
        run_slurm(settings.slurm, ["scancel", job_id])
    except PermanentError as exc:
        text = str(exc)
        if "already completing or completed" in text:
            return "it had already ended"
        raise
    return None


def wait_cancelled(settings: Settings, job: SlurmJob, *, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Until Slurm shows the job ended and (when its credential is readable) its Pod is gone."""
    deadline = time.monotonic() + timeout_s
    job_dir = job_results_dir(settings.nas, job.user, job.job_id)
    pod_name = pod_name_of(read_json(job_dir / STATUS_FILE), job)
    while time.monotonic() < deadline:
        try:
            current = find_job(settings.slurm, job.job_id)
        except BridgeError:
            current = None
        ended = current is None or current.ended
        if ended and pod_gone(job_dir, settings.kubernetes.namespace, pod_name):
            return True
        time.sleep(poll_s)
    return False
