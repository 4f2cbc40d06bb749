"""GET /api/v1/jobs from the job history: filters, paging by offset or cursor, and a job's timeline."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import PermanentError
from bridge.history.record import history_of
from bridge.history.store import Event, JobQuery, JobRecord
from bridge.service.live import LiveMerge
from bridge.settings import Settings

_NOW = re.compile(r"^now(?:(?P<sign>[+-])(?P<count>\d+)(?P<unit>seconds?|minutes?|hours?|days?|weeks?)?)?$")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}

_MERGES: dict[Path, LiveMerge] = {}
_MERGES_LOCK = threading.Lock()


def live_merge(settings: Settings) -> LiveMerge:
    """One LiveMerge per history file and process (its rate limit is per process)."""
    with _MERGES_LOCK:
        found = _MERGES.get(settings.history.path)
        if found is None:
            found = _MERGES[settings.history.path] = LiveMerge(settings, history_of(settings))
        return found


def since_epoch(text: str, *, now: float | None = None) -> float:
    """Slurm's time forms the API takes (`now-7days`, `now`, `today`, `2026-11-20`,
    `2026-11-20T10:00`, local time like Slurm's) -> epoch seconds; PermanentError otherwise."""
    value = text.strip().lower()
    current = time.time() if now is None else now
    match = _NOW.match(value)
    if match:
        if not match.group("sign"):
            return current
        unit = (match.group("unit") or "seconds").rstrip("s")
        delta = int(match.group("count")) * _UNIT_S[unit]
        return current - delta if match.group("sign") == "-" else current + delta
    if value in ("today", "midnight"):
        local = datetime.fromtimestamp(current).astimezone()
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError(f"not a time: {text!r} (e.g. now-2days, today, 2026-11-20, 2026-11-20T10:00)") from None
    return (moment.astimezone() if moment.tzinfo is None else moment).timestamp()


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch else None


def row_json(job: JobRecord, now: float) -> dict[str, Any]:
    """The listing's row, as the Slurm-backed listing had it (bridge.userview.listing.JobRow)."""
    elapsed = None
    if job.start_time:
        elapsed = int(max(0.0, (job.end_time if job.finished and job.end_time else now) - job.start_time))
    exit_code = f"{job.exit_code}:{job.signal or 0}" if job.finished and job.exit_code is not None else None
    return {"job_id": job.job_id, "user": job.user, "state": job.state, "elapsed_s": elapsed, "gpus": job.gpus or 0,
            "exit_code": exit_code, "partition": job.partition or "", "node": job.node,
            "submit": _iso(job.submit_time), "start": _iso(job.start_time),
            "end": _iso(job.end_time) if job.finished else None, "name": job.name or "",
            "results_dir": job.results_dir}


def list_page(settings: Settings, *, uid: int | None, user: str | None, states: set[str], since: float,
              limit: int, offset: int, cursor: int | None) -> dict[str, Any]:
    """One page of jobs, newest first: the history after Slurm's live word on unfinished ones."""
    merge = live_merge(settings)
    merge.backfill()
    merge.refresh(uid=uid, user=user if uid is not None else None)
    query = JobQuery(uid=uid, user=user if uid is None else None, states=frozenset(states), since=since,
                     before_num=cursor, offset=offset, limit=limit)
    total, rows = history_of(settings).query(query)
    now = time.time()
    next_cursor = str(rows[-1].job_id.split("_", 1)[0]) if len(rows) == limit else None
    return {"total": total, "offset": offset, "limit": limit, "next_cursor": next_cursor, "source": "history",
            "jobs": [row_json(row, now) for row in rows]}


def timeline(events: list[Event]) -> list[dict[str, Any]]:
    """The history's events of one job, as the status's timeline (with the step's duration)."""
    out: list[dict[str, Any]] = []
    previous: float | None = None
    for event in events:
        out.append({"event": event.event, "time": _iso(event.time), "detail": event.detail,
                    "after_s": round(event.time - previous, 1) if previous is not None else None})
        previous = event.time
    return out


def history_timeline(settings: Settings, job_id: str) -> list[dict[str, Any]] | None:
    """The job's timeline from the history; None when it has none (or cannot be read)."""
    try:
        events = history_of(settings).events(job_id)
    except Exception:  # the history is a convenience: the caller falls back to Slurm's times
        return None
    return timeline(events) if events else None
