"""`skbridge shell`: a shell in a Pod on the node Slurm allocates, as you; the job ends with the shell."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import typer
from rich.markup import escape

from bridge.cli.user.common import EXIT_FAILED, EXIT_UNAVAILABLE, ConfigOption, err, failures, settings_or_exit
from bridge.errors import BridgeError
from bridge.ingest.filecheck import validate_file
from bridge.settings import Settings
from bridge.userview.actions import cancel, submit_sbatch, wait_cancelled
from bridge.userview.queue import SlurmJob, find_job
from bridge.userview.shell import JobEndedEarly, ShellRequest, shell_script, wait_shell_pod

SHELL_EXIT_HELP = ("Exit status: the shell's own exit status once it ran. Before it: 1 the job was refused or ended "
                   "before its Pod ran; 2 bad usage or configuration; 5 Slurm or Kubernetes did not answer, or the "
                   "connection to the shell was lost. The job is cancelled in every case.")
_TEARDOWN_TIMEOUT_S = 120.0


def shell(
    gpus: str | None = typer.Option(None, "--gpus", help="GPUs, as sbatch --gpus: 1, a100:1."),
    cpus: int | None = typer.Option(None, "--cpus", min=1, help="CPUs (sbatch --cpus-per-task)."),
    mem: str | None = typer.Option(None, "--mem", help="Memory, as sbatch --mem: 4G, 16000M."),
    time_limit: str | None = typer.Option(None, "--time", help="Time limit, as sbatch --time: 60, 2:00:00. "
                                          "The shell is ended when it is reached."),
    image: str | None = typer.Option(None, "--image", help="Container image (default: the site's default image)."),
    partition: str | None = typer.Option(None, "--partition", "-p", help="Slurm partition."),
    config: Path | None = ConfigOption,
) -> None:
    """Open a shell inside a Pod on the node Slurm allocates, as you, and end the job when the shell exits.

    Submits a batch job named skbridge-shell (checked like `skbridge submit`), waits while it is
    queued (showing Slurm's reason), then runs your login shell (or bash) in the job's container.
    With a terminal it is a full TTY (Ctrl-C goes to the shell); without one, stdin is the
    shell's script. When the shell ends (exit, Ctrl-D, end of input, lost connection) the job is
    cancelled and skbridge waits until its Pod is gone.
    """
    settings = settings_or_exit("shell", config)
    request = ShellRequest(gpus=gpus, cpus=cpus, mem=mem, time=time_limit, image=image, partition=partition)
    with failures("shell"):
        job_id = _submit(settings, request)
    code = EXIT_FAILED
    try:
        code = _session(settings, job_id)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        code = 130
    finally:
        _end(settings, job_id)
    raise typer.Exit(code)


def _submit(settings: Settings, request: ShellRequest) -> str:
    with tempfile.TemporaryDirectory(prefix="skbridge-shell-") as folder:
        path = Path(folder) / "skbridge-shell.sh"
        path.write_text(shell_script(request), encoding="utf-8")
        report = validate_file(path, settings)
        if not report.ok:
            err.print("[red]invalid[/red] shell request: not submitted")
            for problem in report.problems:
                err.print(f"  {escape(problem.message)}\n    fix: {escape(problem.fix)}")
            raise typer.Exit(EXIT_FAILED)
        # From the current folder, as `skbridge submit` and salloc: it is the job's working directory.
        job_id = submit_sbatch(settings, path)
    err.print(f"job {job_id} submitted (skbridge status {job_id})", markup=False)
    return job_id


def _session(settings: Settings, job_id: str) -> int:
    from bridge.userview.shell_exec import run_session

    with err.status(f"job {job_id}: waiting for Slurm") as spinner:
        def show(job: SlurmJob, phase: str | None) -> None:
            if job.pending:
                spinner.update(f"job {job_id} pending ({job.reason or 'None'})")
            else:
                spinner.update(f"job {job_id} {job.state.lower()} on {job.nodes or '?'}: Pod {phase or 'starting'}")

        try:
            target = wait_shell_pod(settings, job_id, on_poll=show)
        except JobEndedEarly as exc:
            err.print(str(exc), markup=False)
            return EXIT_FAILED
        except BridgeError as exc:
            err.print(f"skbridge shell: {exc}", markup=False)
            return EXIT_UNAVAILABLE
    err.print(f"job {job_id} running on {target.job.nodes}: shell in Pod {target.pod}; exit it to end the job",
              markup=False)
    try:
        end = run_session(target.kubeconfig, target.namespace, target.pod, login_shell=_login_shell(),
                          api_timeout_s=settings.kubernetes.api_timeout_s)
    except BridgeError as exc:
        err.print(f"skbridge shell: {exc}", markup=False)
        return EXIT_UNAVAILABLE
    if end.exit_code is None:
        err.print(f"skbridge shell: {end.detail}", markup=False)
        return EXIT_UNAVAILABLE
    return min(end.exit_code, 255)


def _end(settings: Settings, job_id: str) -> None:
    """scancel and wait until the job has ended and its Pod is gone (Ctrl-C here is ignored: it must finish)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cancel(settings, job_id)
        job = find_job(settings.slurm, job_id)
        if job is not None and not wait_cancelled(settings, job, timeout_s=_TEARDOWN_TIMEOUT_S):
            err.print(f"job {job_id} was cancelled but its Pod is still there after {_TEARDOWN_TIMEOUT_S:.0f}s; "
                      "the bridge's reaper removes it", markup=False)
    except BridgeError as exc:
        err.print(f"skbridge shell: cancelling job {job_id} failed: {exc}; run `skbridge cancel {job_id}`",
                  markup=False)
    finally:
        signal.signal(signal.SIGINT, previous)


def _login_shell() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_shell or "/bin/bash"
    except KeyError:
        return "/bin/bash"
