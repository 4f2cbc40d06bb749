"""`skbridge cancel JOBID...`: scancel as you, then wait until Slurm and Kubernetes show it gone."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from bridge.cli.user.common import EXIT_FAILED, ConfigOption, err, exit_code_for, out, settings_or_exit
from bridge.errors import BridgeError
from bridge.userview.actions import cancel as scancel
from bridge.userview.actions import wait_cancelled
from bridge.userview.queue import check_job_id, find_job


def cancel(
    job_ids: list[str] = typer.Argument(..., help="Slurm job id(s).", metavar="JOBID..."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return once Slurm took the request."),
    timeout_s: float = typer.Option(120.0, "--timeout", help="How long to wait for each job to be gone."),
    config: Path | None = ConfigOption,
) -> None:
    """Cancel jobs with scancel, as you: Slurm refuses other users' jobs and that refusal is shown.
    Then wait, with a spinner, until Slurm shows each job ended and its Pod is gone.
    """
    settings = settings_or_exit("cancel", config)
    worst = 0
    for job_id in job_ids:
        try:
            check_job_id(job_id)
            before = find_job(settings.slurm, job_id)
            mine = before is not None and os.getuid() in (0, before.uid)
            # scancel says nothing about a job that has ended already: tell the owner.
            note = "it had already ended" if mine and before is not None and before.ended else scancel(settings, job_id)
        except BridgeError as exc:
            err.print(f"skbridge cancel: job {job_id}: {exc}", markup=False)
            worst = worst or exit_code_for(exc)
            continue
        if note:
            out.print(f"job {job_id}: {note}")
            continue
        if no_wait:
            out.print(f"job {job_id}: cancel requested")
            continue
        try:
            job = before or find_job(settings.slurm, job_id)
            with out.status(f"job {job_id}: cancelling, waiting for Slurm and its Pod ..."):
                gone = job is None or wait_cancelled(settings, job, timeout_s=timeout_s)
        except BridgeError as exc:
            err.print(f"skbridge cancel: job {job_id}: {exc}", markup=False)
            worst = worst or exit_code_for(exc)
            continue
        if gone:
            out.print(f"job {job_id}: cancelled, Pod gone")
        else:
            err.print(f"skbridge cancel: job {job_id}: still not gone after {timeout_s:.0f}s", markup=False)
            worst = worst or EXIT_FAILED
    if worst:
        raise typer.Exit(worst)
