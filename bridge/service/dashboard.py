"""The dashboard: server-rendered pages over the API's own functions, for a signed-in browser.

Pages: the user's jobs (an admin's: everyone's) with state, progress and elapsed time; a job
with its timeline, allocation, live log and results; the nodes' GPUs by type; a submit form
(bridge.service.dashboard_forms). The browser authenticates with the session cookie only on
these paths; the JSON API keeps taking MUNGE credentials and bearer tokens alone, so it needs
no CSRF defence.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from bridge.errors import BridgeError
from bridge.service import dashboard_forms, jobs, login, results
from bridge.service.access import State, owner_account, visible_job
from bridge.service.identity import Identity
from bridge.service.logs import TAIL_BYTES_FOR_PROGRESS, log_path, read_tail
from bridge.service.pages import STATIC_FILES, render, static_file
from bridge.service.progress import parse_progress
from bridge.service.session import BrowserUser, PageUser
from bridge.slurm.vocabulary import is_live
from bridge.userview.nodes import slurm_nodes
from bridge.userview.results import job_results_dir

log = structlog.get_logger(__name__)

views = APIRouter(prefix="/dashboard", include_in_schema=False)
PAGE_SIZE = 50
_PROGRESS_ROWS = 20  # progress is read from the log of at most this many running jobs per page


def error_page(exc: HTTPException, signed: Any) -> HTMLResponse:
    detail = exc.detail if isinstance(exc.detail, str) else "the request failed"
    return render("error.html", status_code=exc.status_code, signed=signed, status=exc.status_code, detail=detail)


def progress_of(state: Any, who: Identity, job_id: str, elapsed_s: Any) -> dict[str, Any] | None:
    """A running job's progress from the tail of its output (as job_detail reads it), or None."""
    try:
        job = visible_job(state, who, job_id)
        path = log_path(job.output, job_results_dir(state.settings.nas, job.user, job.job_id))
        if path is None or job.pending:
            return None
        text = read_tail(owner_account(job), path, None, max_bytes=TAIL_BYTES_FOR_PROGRESS)
    except (HTTPException, OSError, BridgeError):
        return None
    progress = parse_progress(text, float(elapsed_s) if elapsed_s is not None else None)
    return progress.as_json() if progress else None


@views.get("/static/{name}")
def static(name: str) -> Response:
    # The package's own CSS and script: nothing of any user's, so no identity is asked for.
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404, detail="no such file")
    return static_file(name)


@views.get("/")
def job_list(request: Request, state: State, signed: PageUser,
             offset: Annotated[int, Query(ge=0)] = 0, fragment: bool = False) -> HTMLResponse:
    who = signed.who
    try:
        listing = jobs.jobs_list(state=state, who=who, job_state=None, since=None, limit=PAGE_SIZE, offset=offset)
    except HTTPException as exc:
        return error_page(exc, signed)
    rows: list[dict[str, Any]] = list(listing["jobs"])
    running = [row for row in rows if row.get("state") == "RUNNING"][:_PROGRESS_ROWS]
    progress = {row["job_id"]: progress_of(state, who, str(row["job_id"]), row.get("elapsed_s")) for row in running}
    context = {"signed": signed, "rows": rows, "progress": progress, "total": listing["total"], "offset": offset,
               "page_size": PAGE_SIZE, "admin": who.admin}
    return render("jobs_table.html" if fragment else "jobs.html", **context)


def _job_context(state: Any, signed: Any, job_id: str) -> dict[str, Any]:
    status = jobs.job_detail(job_id=job_id, state=state, who=signed.who)
    listing = results.results_listing(job_id=job_id, state=state, who=signed.who)
    # COMPLETING is live (its epilog still runs): the page keeps re-reading until the final state.
    ended = not is_live(str(status.get("state") or "PENDING"))
    return {"signed": signed, "job": status, "results": listing, "ended": ended,
            "final": ended and bool(listing.get("ready"))}


_NOTES = {"submitted": "Job submitted.", "cancelled": "Cancel sent to Slurm.", "ended": "The job had already ended."}


@views.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, state: State, signed: PageUser, done: str | None = None) -> HTMLResponse:
    try:
        context = _job_context(state, signed, job_id)
    except HTTPException as exc:
        return error_page(exc, signed)
    return render("job.html", note=_NOTES.get(done or ""), **context)


@views.get("/jobs/{job_id}/panel")
def job_panel(job_id: str, state: State, signed: BrowserUser) -> HTMLResponse:
    """The job page's changing part (state, progress, timeline, allocation, results), which its script re-reads."""
    try:
        context = _job_context(state, signed, job_id)
    except HTTPException as exc:
        return error_page(exc, signed)
    return render("job_panel.html", **context)


@views.get("/jobs/{job_id}/logs/stream")
def job_log_stream(job_id: str, state: State, signed: BrowserUser) -> StreamingResponse:
    """The API's Server-Sent Events stream of the job's output, for the browser's EventSource."""
    return jobs.job_log_stream(job_id=job_id, state=state, who=signed.who)


@views.get("/jobs/{job_id}/results/{path:path}")
def job_result_download(job_id: str, path: str, state: State, signed: BrowserUser) -> StreamingResponse:
    log.info("dashboard download", job_id=job_id, file=path, user=signed.who.user)
    return results.results_download(job_id=job_id, path=path, state=state, who=signed.who)


@views.get("/nodes")
def nodes_page(state: State, signed: PageUser) -> HTMLResponse:
    try:
        rows = slurm_nodes(state.settings)
    except BridgeError as exc:
        return error_page(jobs.slurm_failure(exc), signed)
    by_type: dict[str, dict[str, int]] = {}
    for row in rows:
        for kind, total in row.gpus_total.items():
            entry = by_type.setdefault(kind, {"total": 0, "free": 0})
            entry["total"] += total
            entry["free"] += row.gpus_free[kind]
    for entry in by_type.values():
        entry["used"] = entry["total"] - entry["free"]
    return render("nodes.html", signed=signed, nodes=[row.as_json() for row in rows], gpu_types=dict(sorted(by_type.items())))


views.include_router(dashboard_forms.router)
# The sign-in pages and the guarded /docs live outside /dashboard; app.py includes this one router.
router = APIRouter()
router.include_router(views)
router.include_router(login.router)
