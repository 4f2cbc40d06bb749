"""/api/v1/jobs: the caller's jobs, one job's status with progress, its output, cancel, submit."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.service.access import Caller, State, owner_account, visible_job
from bridge.service.joblist import history_timeline, list_page, since_epoch
from bridge.service.logs import TAIL_BYTES_FOR_PROGRESS, log_path, read_tail, stream_events
from bridge.service.progress import parse_progress
from bridge.slurm.commands import run_slurm
from bridge.slurm.submit import Owner
from bridge.userview.listing import check_since, normalize_states
from bridge.userview.queue import find_job
from bridge.userview.results import job_results_dir
from bridge.userview.status import job_status

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


def slurm_failure(exc: BridgeError) -> HTTPException:
    if isinstance(exc, TemporaryError):
        return HTTPException(status_code=503, detail=f"Slurm did not answer: {exc}")
    return HTTPException(status_code=502, detail=str(exc))


@router.get("")
def jobs_list(state: State, who: Caller,
              job_state: Annotated[list[str] | None, Query(alias="state", description="PD, R, COMPLETED, ...")] = None,
              since: Annotated[str | None, Query(description="a Slurm time: now-3days, today, 2026-11-20")] = None,
              user: Annotated[str | None, Query(description="admins: only this user's jobs")] = None,
              limit: Annotated[int, Query(ge=1, le=10000)] = 100,
              offset: Annotated[int, Query(ge=0)] = 0,
              cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
              ) -> dict[str, Any]:
    """The caller's jobs (an admin: everyone's), newest first, from the job history; jobs it has
    not seen finish carry Slurm's live state (at most history.live_refresh_s old)."""
    if user is not None and not who.admin and user != who.user:
        raise HTTPException(status_code=403, detail="only the admin group lists other users' jobs")
    if cursor is not None and not cursor.isdigit():
        raise HTTPException(status_code=422, detail=f"not a cursor: {cursor!r}")
    try:
        since_value = since_epoch(check_since(since or state.settings.service.default_since))
    except PermanentError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    try:
        return list_page(state.settings, uid=None if who.admin else who.uid, user=who.user if not who.admin else user,
                         states=normalize_states(job_state or []), since=since_value, limit=limit, offset=offset,
                         cursor=int(cursor) if cursor is not None else None)
    except sqlite3.Error as exc:
        raise HTTPException(status_code=503, detail=f"the job history cannot be read: {exc}") from exc


@router.get("/{job_id}")
def job_detail(job_id: str, state: State, who: Caller) -> dict[str, Any]:
    """Status, timeline, allocation and training progress with an ETA."""
    job = visible_job(state, who, job_id)
    try:
        status = job_status(state.settings, job.job_id, job=job)
    except BridgeError as exc:
        raise slurm_failure(exc) from exc
    status["timeline"] = history_timeline(state.settings, job.job_id) or status["timeline"]
    status["progress"] = None
    path = log_path(status.get("output"), job_results_dir(state.settings.nas, job.user, job.job_id))
    if path is not None and not job.pending:
        try:
            text = read_tail(owner_account(job), path, None, max_bytes=TAIL_BYTES_FOR_PROGRESS)
        except OSError:
            text = ""
        progress = parse_progress(text, status.get("elapsed_s"))
        status["progress"] = progress.as_json() if progress else None
    return status


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
def job_logs(job_id: str, state: State, who: Caller,
             tail: Annotated[int | None, Query(ge=0, le=100000, description="only the last N lines")] = None) -> str:
    """The job's output so far (the --output file, or the collected pod.log once it ended)."""
    job = visible_job(state, who, job_id)
    path = log_path(job.output, job_results_dir(state.settings.nas, job.user, job.job_id))
    if path is None:
        return ""
    try:
        return read_tail(owner_account(job), path, tail)
    except OSError as exc:
        raise HTTPException(status_code=404, detail=f"the job's output cannot be read: {exc.strerror}") from exc


@router.get("/{job_id}/logs/stream")
def job_log_stream(job_id: str, state: State, who: Caller) -> StreamingResponse:
    """Server-Sent Events: one `data:` per output line while the job runs, then `event: end`."""
    job = visible_job(state, who, job_id)
    settings = state.settings
    job_dir = job_results_dir(settings.nas, job.user, job.job_id)
    current = {"output": job.output}

    def still_running() -> str | None:
        try:
            now = find_job(settings.slurm, job.job_id)
        except BridgeError:
            return None  # Slurm busy: keep streaming, ask again
        if now is None:
            return "UNKNOWN"
        current["output"] = now.output or current["output"]
        return now.state if now.ended else None

    events = stream_events(owner_account(job), lambda: log_path(current["output"], job_dir), still_running)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{job_id}/cancel")
def job_cancel(job_id: str, state: State, who: Caller) -> dict[str, Any]:
    """scancel as the caller: Slurm's own ownership check applies too."""
    job = visible_job(state, who, job_id)
    if job.ended:
        return {"job_id": job.job_id, "cancelled": False, "note": "it had already ended"}
    caller = Owner.from_uid(who.uid)
    try:
        run_slurm(state.settings.slurm, ["scancel", job.job_id], env=caller.clean_env(), user=caller.uid,
                  group=caller.gid, extra_groups=caller.groups, cwd="/")
    except PermanentError as exc:
        if "already completing or completed" in str(exc):
            return {"job_id": job.job_id, "cancelled": False, "note": "it had already ended"}
        raise HTTPException(status_code=409, detail=f"Slurm refused: {exc}") from exc
    except BridgeError as exc:
        raise slurm_failure(exc) from exc
    return {"job_id": job.job_id, "cancelled": True, "note": None}
