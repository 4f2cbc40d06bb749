"""Retention: finished things leave the NAS and the journal after the configured horizons.

A plan is made first (what would go, why, how big), so `skbridge admin retention --dry-run`
shows exactly what a real pass deletes. A job Slurm still lists (queued, running,
completing) is never touched; when Slurm cannot answer, nothing is deleted at all. Files in
a user's results folder are deleted by a child that became that user, like every other
write there (bridge.runas).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import BridgeError, TemporaryError
from bridge.history.record import history_of
from bridge.log import get_logger
from bridge.runas import run_as_user
from bridge.settings import Settings
from bridge.slurm.commands import run_slurm

log = get_logger(component="retention")

DAY_S = 86400.0
GIB = 2**30


@dataclass(frozen=True)
class Removal:
    path: Path
    kind: str  # accepted | failed | results
    size_bytes: int
    owner_uid: int
    reason: str
    job_id: str | None = None


@dataclass(frozen=True)
class UserUsage:
    user: str
    jobs: int
    size_bytes: int
    oldest_mtime: float | None


def live_job_ids(settings: Settings) -> set[str]:
    """Every job Slurm still lists (any array task counts for its whole array)."""
    out = run_slurm(settings.slurm, ["squeue", "--noheader", "--all", "--format=%i|%F"]).stdout
    live: set[str] = set()
    for line in out.split("\n"):
        for part in line.strip().split("|"):
            if part and part != "N/A":
                live.add(part.split("_")[0])
    return live


def _tree_size(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_size
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return total


def _job_of(name: str) -> str | None:
    head = name.split("-", 1)[0].split("_", 1)[0]
    return head if head.isdigit() else None


def _archive_removals(folder: Path, kind: str, horizon_days: float | None, now: float,
                      live: set[str]) -> Iterator[Removal]:
    if horizon_days is None or not folder.is_dir():
        return
    cutoff = now - horizon_days * DAY_S
    with os.scandir(folder) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            job_id = _job_of(entry.name) if kind == "accepted" else None
            if info.st_mtime >= cutoff or (job_id is not None and job_id in live) or stat.S_ISDIR(info.st_mode):
                continue
            yield Removal(Path(entry.path), kind, info.st_size, info.st_uid,
                          f"older than {horizon_days:g} days", job_id)


def _job_folders(settings: Settings) -> Iterator[tuple[str, os.stat_result, Path, os.stat_result]]:
    root = settings.nas.results_root
    if not root.is_dir():
        return
    with os.scandir(root) as users:
        for user in users:
            user_info = user.stat(follow_symlinks=False)
            if not stat.S_ISDIR(user_info.st_mode):
                continue
            with os.scandir(user.path) as jobs:
                for job in jobs:
                    info = job.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode) and _job_of(job.name) is not None:
                        yield user.name, user_info, Path(job.path), info


def _results_removals(settings: Settings, now: float, live: set[str]) -> Iterator[Removal]:
    retention = settings.retention
    if retention.results_days is None and retention.results_max_gib_per_user is None:
        return
    by_user: dict[str, list[tuple[float, Path, int, int, str]]] = {}
    for user, user_info, folder, info in _job_folders(settings):
        job_id = _job_of(folder.name)
        if job_id is None or job_id in live or info.st_uid != user_info.st_uid:
            continue  # a live job, or a folder its user does not own: never ours to delete
        by_user.setdefault(user, []).append((info.st_mtime, folder, _tree_size(folder), info.st_uid, job_id))
    for user, folders in by_user.items():
        folders.sort()  # oldest first
        kept = sum(size for _, _, size, _, _ in folders)
        for mtime, folder, size, uid, job_id in folders:
            if retention.results_days is not None and mtime < now - retention.results_days * DAY_S:
                reason = f"older than {retention.results_days:g} days"
            elif retention.results_max_gib_per_user is not None and kept > retention.results_max_gib_per_user * GIB:
                reason = f"{user} is over {retention.results_max_gib_per_user:g} GiB of results; oldest go first"
            else:
                continue
            kept -= size
            yield Removal(folder, "results", size, uid, reason, job_id)


def plan_retention(settings: Settings, *, now: float | None = None, live: set[str] | None = None) -> list[Removal]:
    """What a pass would delete now; asks Slurm for live jobs unless `live` is given."""
    now = time.time() if now is None else now
    live = live_job_ids(settings) if live is None else live
    nas = settings.nas
    retention = settings.retention
    return [*_archive_removals(nas.accepted_dir, "accepted", retention.accepted_days, now, live),
            *_archive_removals(nas.failed_dir, "failed", retention.failed_days, now, live),
            *_results_removals(settings, now, live)]


def _remove_tree_as(uid: int, folder: Path) -> None:
    # The user's own folder, removed with the user's rights: a link planted inside reaches
    # nothing the user could not remove anyway (and rmtree never follows links).
    gid = os.lstat(folder).st_gid
    run_as_user(uid, gid, lambda: shutil.rmtree(folder))


def apply_retention(removals: list[Removal]) -> tuple[int, list[str]]:
    """Delete what the plan lists; returns how many went and what could not."""
    done, errors = 0, []
    for item in removals:
        try:
            if item.kind == "results":
                _remove_tree_as(item.owner_uid, item.path)
            else:
                item.path.unlink()
            done += 1
        except (OSError, BridgeError) as exc:
            errors.append(f"{item.path}: {exc}")
    return done, errors


def retention_pass(settings: Settings) -> tuple[int, list[str]]:
    """One pass as the watcher runs it; nothing happens when Slurm cannot say what is live."""
    try:
        removals = plan_retention(settings)
    except TemporaryError as exc:
        log.warning("retention skipped: Slurm cannot say which jobs are live", error=str(exc))
        return 0, []
    done, errors = apply_retention(removals)
    forgotten = prune_history(settings)
    if done or errors or forgotten:
        log.info("retention pass", removed=done, bytes=sum(r.size_bytes for r in removals), errors=errors[:20],
                 history_rows=forgotten)
    return done, errors


def prune_history(settings: Settings) -> int:
    """Finished jobs older than retention.history_days leave the job history (never a live one)."""
    days = settings.retention.history_days
    if days is None:
        return 0
    try:
        return history_of(settings).prune(days * DAY_S)
    except Exception as exc:  # the history is a convenience: its trouble never stops retention
        log.warning("job history not pruned", error=f"{type(exc).__name__}: {exc}")
        return 0


def results_usage(settings: Settings) -> list[UserUsage]:
    """Per user: job folders and bytes under results/ (for `skbridge admin usage`)."""
    usage: dict[str, list[tuple[float, int]]] = {}
    for user, _user_info, folder, info in _job_folders(settings):
        usage.setdefault(user, []).append((info.st_mtime, _tree_size(folder)))
    return sorted((UserUsage(user, len(items), sum(size for _, size in items), min(m for m, _ in items))
                   for user, items in usage.items()), key=lambda u: -u.size_bytes)
