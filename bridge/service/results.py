"""/api/v1/jobs/{id}/results: what the epilog collected, with SHA256SUMS' checksums, and downloads."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from bridge.service.access import Caller, State, owner_account, visible_job
from bridge.service.useropen import Account, open_as
from bridge.userview.results import SUMS_FILE, job_results_dir, list_files

router = APIRouter(prefix="/api/v1/jobs", tags=["results"])
_CHUNK = 1 << 20


def read_sums(account: Account, job_dir: Path) -> dict[str, str]:
    """name -> sha256 from SHA256SUMS (`sha256sum` format), read as the job's owner."""
    try:
        fd = open_as(account, job_dir / SUMS_FILE)
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as handle:
        text = handle.read(16 << 20).decode("utf-8", "replace")
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep and name:
            sums[name.removeprefix("*")] = digest.strip().lower()
    return sums


def safe_relative(job_dir: Path, relative: str) -> Path:
    """The file under job_dir that `relative` names; 404 for anything that would leave it or is hidden."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise HTTPException(status_code=404, detail="no such result file")
    base = os.path.realpath(job_dir)
    target = job_dir.joinpath(*parts)
    # Every folder on the way must be a real folder inside the job's: no link leads out.
    resolved_parent = os.path.realpath(target.parent)
    if os.path.commonpath([base, resolved_parent]) != base or os.path.islink(target):
        raise HTTPException(status_code=404, detail="no such result file")
    return target


@router.get("/{job_id}/results")
def results_listing(job_id: str, state: State, who: Caller) -> dict[str, Any]:
    job = visible_job(state, who, job_id)
    job_dir = job_results_dir(state.settings.nas, job.user, job.job_id)
    if not job_dir.is_dir() or job_dir.is_symlink():
        return {"job_id": job.job_id, "ready": False, "files": []}
    sums = read_sums(owner_account(job), job_dir)
    files = [{"path": item.path, "size": item.size, "mtime": item.mtime, "sha256": sums.get(item.path)}
             for item in list_files(job_dir)]
    return {"job_id": job.job_id, "ready": bool(sums), "files": files}


@router.get("/{job_id}/results/{path:path}")
def results_download(job_id: str, path: str, state: State, who: Caller) -> StreamingResponse:
    job = visible_job(state, who, job_id)
    job_dir = job_results_dir(state.settings.nas, job.user, job.job_id)
    target = safe_relative(job_dir, path)
    try:
        fd = open_as(owner_account(job), target)  # O_NOFOLLOW, as the owner: a swapped-in link goes nowhere
    except OSError as exc:
        raise HTTPException(status_code=404, detail="no such result file") from exc
    size = os.fstat(fd).st_size

    def chunks() -> Iterator[bytes]:
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(path).name)
    return StreamingResponse(chunks(), media_type="application/octet-stream",
                             headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'})
