"""POST /api/v1/jobs: a job file's text, checked with the watcher's rules, submitted as the caller."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.ingest.jobfile import parse_job_text
from bridge.ingest.launcher import insert_launcher
from bridge.service.access import Caller, State
from bridge.settings import Settings
from bridge.slurm.submit import Owner, sbatch_as_owner, tag_for

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class JobFile(BaseModel):
    script: str = Field(description="The job file's text: a bash script with #SBATCH and #K8S_ lines")
    name: str = Field(default="api-job.sh", description="The file's name (the job's name unless --job-name is set)")


def _problem_list(problems: list[Any]) -> list[dict[str, Any]]:
    return [p.model_dump() for p in problems]


def check_script(settings: Settings, owner: Owner, body: JobFile) -> tuple[bytes, dict[str, str], list[dict[str, Any]]]:
    """The script to sbatch (launcher line added) and the options it leaves to the bridge; 422 with
    the watcher's problems otherwise."""
    if not _NAME.match(body.name):
        raise HTTPException(status_code=422, detail={"problems": [{"line": None, "code": "bad-name", "message":
                            "the name may hold letters, digits, . _ - (at most 128)"}]})
    if len(body.script.encode("utf-8")) > settings.policy.max_file_bytes or "\x00" in body.script:
        raise HTTPException(status_code=422, detail={"problems": [{"line": None, "code": "too-big-or-binary", "message":
                            f"a text script of at most {settings.policy.max_file_bytes} bytes"}]})
    spec, problems = parse_job_text(body.script, settings.policy, settings.nas, owner=owner.name,
                                    owner_home=owner.home)
    errors = [p for p in problems if p.severity == "error"]
    if errors or spec is None:
        raise HTTPException(status_code=422, detail={"problems": _problem_list(problems)})
    script = insert_launcher(body.script, settings.slurm.skbridge_path, settings.slurm.attach_config_path)
    given = {option.name for option in spec.sbatch_options}
    defaults = {"job-name": body.name}
    if settings.slurm.partition:
        defaults["partition"] = settings.slurm.partition
    options = {k: v for k, v in defaults.items() if k not in given}
    return script.encode("utf-8"), options, _problem_list(problems)


@router.post("", status_code=201)
def job_submit(body: JobFile, state: State, who: Caller) -> dict[str, Any]:
    """Validated exactly as `skbridge validate` and the drop folder do; sbatch runs as the caller."""
    settings = state.settings
    policy = settings.policy
    if not policy.uid_min <= who.uid <= policy.uid_max:
        raise HTTPException(status_code=403, detail=f"uid {who.uid} may not own jobs (site range "
                            f"{policy.uid_min}-{policy.uid_max})")
    try:
        owner = Owner.from_uid(who.uid)
    except PermanentError as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from exc
    script, defaults, warnings = check_script(settings, owner, body)
    nas_home = settings.nas.home_root / owner.name
    workdir: Path = nas_home if nas_home.is_dir() else owner.home
    tag = f"api-{uuid.uuid4().hex}"
    try:
        job_id = sbatch_as_owner(settings.slurm, owner, script, tag=tag_for(tag), workdir=workdir, defaults=defaults)
    except TemporaryError as exc:
        raise HTTPException(status_code=503, detail=f"Slurm did not confirm the job (tag {tag}): {exc}") from exc
    except BridgeError as exc:
        raise HTTPException(status_code=422, detail={"problems": [{"line": None, "code": "slurm-rejected",
                                                                   "message": f"sbatch refused the job: {exc}"}]}) from exc
    state.metrics.submitted.inc()
    return {"job_id": job_id, "workdir": str(workdir), "tag": tag, "warnings": warnings}
