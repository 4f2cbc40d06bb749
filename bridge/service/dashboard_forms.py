"""The dashboard's forms: submit a job file (pasted or uploaded) and cancel a job.

Both go through the API's own functions (the same validation, sbatch and scancel as the
caller); the session's CSRF token and the Origin check guard them.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from bridge.service import jobs, submit
from bridge.service.access import State
from bridge.service.pages import render
from bridge.service.session import PageUser, Signed, check_form

log = structlog.get_logger(__name__)

router = APIRouter()
_DEFAULT_NAME = "web-job.sh"


def _form(signed: Signed, *, status_code: int = 200, problems: list[dict[str, Any]] | None = None,
          message: str | None = None, script: str = "", name: str = "") -> HTMLResponse:
    return render("submit.html", status_code=status_code, signed=signed, problems=problems or [], message=message,
                  script=script, name=name)


@router.get("/submit")
def submit_form(signed: PageUser) -> HTMLResponse:
    return _form(signed)


def _upload_name(upload: UploadFile | None) -> str:
    if upload is None or not upload.filename:
        return ""
    # The browser's file name, cut to what the API accepts as a job file's name.
    return re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(upload.filename.replace("\\", "/")).name)[:128].lstrip("._-")


@router.post("/submit")
async def submit_post(request: Request, state: State, signed: PageUser,
                      csrf: Annotated[str, Form(max_length=256)] = "",
                      script: Annotated[str, Form(max_length=4 << 20)] = "",
                      name: Annotated[str, Form(max_length=256)] = "",
                      upload: Annotated[UploadFile | None, File()] = None) -> Response:
    check_form(request, signed, csrf)
    limit = state.settings.policy.max_file_bytes
    if upload is not None and upload.filename:
        data = await upload.read(limit + 1)
        try:
            script = data.decode("utf-8")
        except UnicodeDecodeError:
            return _form(signed, status_code=422, name=name, message="the uploaded file is not UTF-8 text")
        name = name or _upload_name(upload)
    name = name.strip() or _DEFAULT_NAME
    if not script.strip():
        return _form(signed, status_code=422, name=name, message="paste a job file or choose one to upload")
    body = submit.JobFile(script=script.replace("\r\n", "\n"), name=name)
    try:
        # A worker thread: validation and sbatch block.
        answer = await run_in_threadpool(submit.job_submit, body=body, state=state, who=signed.who)
    except HTTPException as exc:
        detail = exc.detail
        if isinstance(detail, dict) and isinstance(detail.get("problems"), list):
            return _form(signed, status_code=exc.status_code, problems=detail["problems"], script=script, name=name)
        return _form(signed, status_code=exc.status_code, message=str(detail), script=script, name=name)
    job_id = str(answer["job_id"])
    log.info("dashboard submit", job_id=job_id, file=name, user=signed.who.user)
    return RedirectResponse(f"/dashboard/jobs/{job_id}?done=submitted", status_code=303)


@router.post("/jobs/{job_id}/cancel")
def cancel_post(request: Request, job_id: str, state: State, signed: PageUser,
                csrf: Annotated[str, Form(max_length=256)] = "") -> Response:
    check_form(request, signed, csrf)
    try:
        answer = jobs.job_cancel(job_id=job_id, state=state, who=signed.who)
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, str) else "the cancel failed"
        return render("error.html", status_code=exc.status_code, signed=signed, status=exc.status_code, detail=detail)
    log.info("dashboard cancel", job_id=job_id, user=signed.who.user, cancelled=answer["cancelled"])
    done = "cancelled" if answer["cancelled"] else "ended"
    return RedirectResponse(f"/dashboard/jobs/{answer['job_id']}?done={done}", status_code=303)
