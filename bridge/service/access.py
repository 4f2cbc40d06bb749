"""The caller's identity as a FastAPI dependency, and jobs looked up on the caller's behalf."""

from __future__ import annotations

import grp
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from bridge.errors import PermanentError
from bridge.service.identity import AuthError, Identity, TokenSigner, identity_for, verify_munge
from bridge.service.metrics import ServiceMetrics
from bridge.service.useropen import Account
from bridge.settings import Settings
from bridge.slurm.submit import Owner
from bridge.userview.queue import SlurmJob, find_job


@dataclass
class ServiceState:
    settings: Settings
    signer: TokenSigner
    metrics: ServiceMetrics

    @property
    def admin_gid(self) -> int | None:
        name = self.settings.service.admin_group
        if not name:
            return None
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


def state_of(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(state_of)]


def _unauthorized(state: ServiceState, scheme: str, message: str) -> HTTPException:
    state.metrics.auth_failures.labels(scheme).inc()
    return HTTPException(status_code=401, detail=message,
                         headers={"WWW-Authenticate": 'MUNGE realm="skbridge", Bearer realm="skbridge"'})


def munge_identity(request: Request, state: ServiceState) -> Identity:
    """Only a MUNGE credential (what POST /api/v1/token takes)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.upper() != "MUNGE":
        raise _unauthorized(state, scheme.lower() or "none", "send `Authorization: MUNGE $(munge -n)`")
    try:
        uid, gid = verify_munge(value, state.settings.service.unmunge_path)
        return identity_for(uid, gid, state.admin_gid)
    except AuthError as exc:
        raise _unauthorized(state, "munge", str(exc)) from exc


def caller(request: Request, state: State) -> Identity:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.upper() == "BEARER":
        try:
            uid, gid = state.signer.check(value)
            return identity_for(uid, gid, state.admin_gid)
        except AuthError as exc:
            raise _unauthorized(state, "bearer", str(exc)) from exc
    return munge_identity(request, state)


Caller = Annotated[Identity, Depends(caller)]


def not_found(job_id: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no job {job_id} of yours")


def visible_job(state: ServiceState, who: Identity, job_id: str) -> SlurmJob:
    """The job if the caller may see it; 404 alike for someone else's job and no job (nothing leaks)."""
    try:
        job = find_job(state.settings.slurm, job_id)
    except PermanentError as exc:
        raise not_found(job_id) from exc
    if job is None or (job.uid != who.uid and not who.admin):
        raise not_found(job_id)
    return job


def owner_account(job: SlurmJob) -> Account:
    """The job owner's rights, used to open anything under their folders."""
    try:
        owner = Owner.from_uid(job.uid)
    except PermanentError as exc:
        raise HTTPException(status_code=404, detail=f"job {job.job_id}'s owner has no account here") from exc
    return Account(uid=owner.uid, gid=owner.gid, groups=owner.groups)
