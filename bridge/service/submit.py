"""POST /api/v1/jobs: a job file's text, checked with the watcher's rules, submitted as the caller."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from bridge.errors import BridgeError, PermanentError, TemporaryError
from bridge.history.record import record_job
from bridge.jobfile.launcher import insert_launcher
from bridge.jobfile.spec import parse_job_text
from bridge.service.access import Caller, ServiceState, State
from bridge.service.identity import Identity
from bridge.service.template import ParamValue, TemplateProblem, render_all
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


def caller_owner(settings: Settings, who: Identity) -> Owner:
    """The caller as a job owner; 403 for an account outside the site's range."""
    policy = settings.policy
    if not policy.uid_min <= who.uid <= policy.uid_max:
        raise HTTPException(status_code=403, detail=f"uid {who.uid} may not own jobs (site range "
                            f"{policy.uid_min}-{policy.uid_max})")
    try:
        return Owner.from_uid(who.uid)
    except PermanentError as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from exc


@router.post("", status_code=201)
def job_submit(body: JobFile, state: State, who: Caller) -> dict[str, Any]:
    """Validated exactly as `skbridge validate` and the drop folder do; sbatch runs as the caller."""
    answer = submit_as(state.settings, caller_owner(state.settings, who), body)
    state.metrics.submitted.inc()
    return answer


def submit_as(settings: Settings, owner: Owner, body: JobFile, *, via: str = "api") -> dict[str, Any]:
    """Check and sbatch one job file as `owner`; HTTPException (422, 503) with the reason otherwise."""
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
    record_job(settings, job_id, state="PENDING", event="submitted", detail=via, uid=owner.uid, user=owner.name,
               name=defaults.get("job-name"), partition=defaults.get("partition"), submit_time=time.time(),
               results_dir=str(settings.nas.results_root / owner.name / job_id))
    return {"job_id": job_id, "workdir": str(workdir), "tag": tag, "warnings": warnings}


class BatchFiles(BaseModel):
    jobs: list[JobFile] = Field(min_length=1, description="Job files, each checked and submitted on its own")


class TemplateFiles(BaseModel):
    script: str = Field(description="A job file with `{{ name }}` placeholders (Jinja2 expressions, sandboxed)")
    name: str = Field(default="template-{{ index }}.sh", description="Each job file's name; may use the "
                      "parameters and `index` (1, 2, ...)")
    parameters: list[dict[str, ParamValue]] = Field(min_length=1, description="One job per set of values")


def _batch_limit(settings: Settings, count: int) -> None:
    if count > settings.policy.max_array_tasks:
        raise HTTPException(status_code=422, detail=f"at most {settings.policy.max_array_tasks} jobs in one request "
                            "(policy.max_array_tasks)")


def _submit_each(state: ServiceState, owner: Owner, files: list[JobFile], via: str) -> dict[str, Any]:
    """Each file on its own: one refused does not stop the others (per-file results, in order)."""
    results: list[dict[str, Any]] = []
    for index, body in enumerate(files, start=1):
        try:
            answer = submit_as(state.settings, owner, body, via=via)
        except HTTPException as exc:
            detail: dict[str, Any] = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
            problems: list[dict[str, Any]] = detail.get("problems") or [
                {"line": None, "code": "refused", "message": detail.get("message")}]
            reason = "; ".join(str(p.get("message")) for p in problems if p.get("severity", "error") == "error")
            results.append({"index": index, "name": body.name, "accepted": False, "status": exc.status_code,
                            "reason": reason or str(problems[0].get("message")), "problems": problems})
            continue
        state.metrics.submitted.inc()
        results.append({"index": index, "name": body.name, "accepted": True, **answer})
    accepted = sum(1 for r in results if r["accepted"])
    return {"accepted": accepted, "rejected": len(results) - accepted, "results": results}


@router.post("/batch")
def job_batch(body: BatchFiles, state: State, who: Caller) -> dict[str, Any]:
    """Several job files at once, each validated and submitted as the caller on its own."""
    _batch_limit(state.settings, len(body.jobs))
    return _submit_each(state, caller_owner(state.settings, who), body.jobs, "api batch")


@router.post("/template")
def job_template(body: TemplateFiles, state: State, who: Caller) -> dict[str, Any]:
    """One job per parameter set. Nothing is submitted unless every set renders; each rendered
    file is then validated and submitted as the caller like any other."""
    _batch_limit(state.settings, len(body.parameters))
    owner = caller_owner(state.settings, who)
    try:
        rendered = render_all(body.script, body.name, body.parameters)
    except TemplateProblem as exc:
        raise HTTPException(status_code=422, detail={"problems": [exc.as_json()]}) from exc
    return _submit_each(state, owner, [JobFile(script=r.script, name=r.name) for r in rendered], "api template")
