"""Writing the history from the stages: never at a job's expense.

Every call here logs and swallows its own failure (a full disk, a locked or broken file, a
bug): the watcher, the hooks and the service go on as if the history did not exist. One
`JobHistory` per file and process, opened on first use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bridge.history.store import JobHistory
from bridge.log import get_logger
from bridge.settings import Settings

log = get_logger(component="history")

_OPEN: dict[Path, JobHistory] = {}
_OPEN_LOCK = threading.Lock()


def history_of(settings: Settings) -> JobHistory:
    """This process's history object for the configured file (opened lazily, shared by threads)."""
    path = settings.history.path
    with _OPEN_LOCK:
        found = _OPEN.get(path)
        if found is None:
            found = _OPEN[path] = JobHistory(path, busy_timeout_s=settings.history.busy_timeout_s)
        return found


def record_job(settings: Settings, job_id: str, *, state: str | None = None, event: str | None = None,
               detail: str | None = None, force_state: bool = False, at: float | None = None, **values: Any) -> bool:
    """`JobHistory.record`, failure logged and swallowed; False when nothing was written."""
    try:
        history_of(settings).record(job_id, state=state, event=event, detail=detail, force_state=force_state, at=at,
                                    **values)
    except Exception as exc:  # anything at all: the history must not cost a job
        log.warning("job history not written", job_id=job_id, history_event=event, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def record_note(settings: Settings, event: str, *, uid: int | None, detail: str | None = None) -> bool:
    """`JobHistory.note` (an event of no job), failure logged and swallowed."""
    try:
        history_of(settings).note(event, uid=uid, detail=detail)
    except Exception as exc:  # as above
        log.warning("job history not written", history_event=event, error=f"{type(exc).__name__}: {exc}")
        return False
    return True
