"""`skbridge logs JOBID [-f] [--tail N]`: the job's output, live while it runs, from the NAS after."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from bridge.cli.user.common import EXIT_FAILED, ConfigOption, err, failures, settings_or_exit
from bridge.errors import BridgeError
from bridge.settings import Settings
from bridge.userview.output import follow, output_source, tail_bytes
from bridge.userview.queue import find_job
from bridge.userview.results import job_results_dir
from bridge.userview.status import own_job


def logs(
    job_id: str = typer.Argument(..., help="Slurm job id (one of yours)."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the job ends."),
    tail: int | None = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines (then follow, with -f)."),
    config: Path | None = ConfigOption,
) -> None:
    """Print your job's output: its --output file (the Pod's log, written while it runs), or the
    copy collected into results/<user>/<jobid>/pod.log once the job is over. Only your own jobs.
    """
    settings = settings_or_exit("logs", config)
    with failures("logs"):
        job = own_job(settings, job_id)
        job_dir = job_results_dir(settings.nas, job.user, job.job_id)
        source = output_source(job.output, job_dir)
        if source is None and not (follow_ and not job.ended):
            err.print(f"skbridge logs: job {job_id} ({job.state}) has no output yet: "
                      f"{job.output or 'its --output file'} does not exist and {job_dir}/pod.log is not collected yet",
                      markup=False)
            raise typer.Exit(EXIT_FAILED)
        write = sys.stdout.buffer
        offset = 0
        if source is not None:
            data, offset = tail_bytes(source, tail)
            write.write(data)
            write.flush()
        if not follow_ or job.ended:
            return
        path = source or Path(job.output or job_dir / "pod.log")
        for chunk in follow(path, offset, still_running=lambda: _running(settings, job_id)):
            write.write(chunk)
            write.flush()


def _running(settings: Settings, job_id: str) -> bool:
    try:
        job = find_job(settings.slurm, job_id)
    except BridgeError:
        return True  # ask again later
    return job is not None and not job.ended
