"""`skbridge submit FILE`: validate with the watcher's rules, hand in (sbatch or drop folder), print the id."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

import typer
from rich.markup import escape

from bridge.cli.user.common import EXIT_FAILED, ConfigOption, err, failures, out, settings_or_exit
from bridge.errors import BridgeError, TemporaryError
from bridge.ingest.filecheck import validate_file
from bridge.settings import Settings
from bridge.userview.actions import DropOutcome, drop, submit_sbatch, wait_drop, wait_ended
from bridge.userview.output import follow
from bridge.userview.queue import SlurmJob, find_job
from bridge.userview.results import job_results_dir
from bridge.userview.status import caller


class Route(StrEnum):
    sbatch = "sbatch"
    drop = "drop"


def submit(
    file: Path = typer.Argument(..., help="Job script (#SBATCH lines and #K8S_ directives); - reads it from stdin.",
                                metavar="FILE"),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the job to end; exit with its exit code."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Stream the job's output while it runs (implies --wait)."),
    parsable: bool = typer.Option(False, "--parsable", help="Print only the job id."),
    via: Route = typer.Option(Route.sbatch, "--via", envvar="SKBRIDGE_SUBMIT_VIA", help="sbatch: submit as you, "
                              "now. drop: copy into your drop folder submit/<user>/ and wait for the watcher's "
                              "verdict. Your default: SKBRIDGE_SUBMIT_VIA=drop in your shell's profile."),
    drop_timeout_s: float = typer.Option(120.0, "--drop-timeout", help="How long to wait for the watcher (drop route)."),
    chdir: Path | None = typer.Option(None, "--chdir", help="Submit from this folder (the job's working directory)."),
    host: str | None = typer.Option(None, "--host", "-H", help="Submit on this login node over SSH (from a laptop): "
                                    "the file goes on ssh's stdin. SKBRIDGE_SSH names the ssh client, "
                                    "SKBRIDGE_REMOTE the skbridge there."),
    config: Path | None = ConfigOption,
) -> None:
    """Check FILE exactly as the watcher will, submit it as you, and print the job id.

    With --wait (or --follow) the command ends when the job does and exits with the job's own
    exit code (128+N when it was killed by signal N). A rejected file prints each problem.
    """
    if host is not None:
        with failures("submit"):
            code = _submit_remote(host, file, wait=wait, follow_=follow_, parsable=parsable, via=via, chdir=chdir)
        raise typer.Exit(code)
    settings = settings_or_exit("submit", config)
    with failures("submit"), _stdin_file(file) as path:
        report = validate_file(path, settings)
        if not report.ok:
            err.print(f"[red]invalid[/red] {escape(str(file))}: not submitted")
            for problem in report.problems:
                where = f"line {problem.line}" if problem.line else "file"
                err.print(f"  {where}: {escape(problem.message)}\n    expected: {escape(problem.expected)}\n"
                          f"    fix:      {escape(problem.fix)}")
            raise typer.Exit(EXIT_FAILED)
        _uid, user = caller()
        if via is Route.sbatch:
            job_id = submit_sbatch(settings, path, cwd=chdir)
        else:
            ticket = drop(settings, path, user)
            if not parsable:
                err.print(f"dropped into {settings.nas.submit_dir / user}/{ticket.name}; waiting for the watcher ...",
                          markup=False)
            outcome = wait_drop(settings, ticket, timeout_s=drop_timeout_s)
            job_id = _drop_verdict(outcome)
        if parsable:
            typer.echo(job_id)
        else:
            out.print(f"Submitted job [bold]{job_id}[/bold]  (skbridge status {job_id} · skbridge logs {job_id} -f · "
                      f"skbridge cancel {job_id})")
        if not (wait or follow_):
            return
        final = _follow(settings, job_id) if follow_ else wait_ended(settings, job_id)
    raise typer.Exit(_job_exit(final))


@contextmanager
def _stdin_file(file: Path) -> Iterator[Path]:
    """FILE itself, or for `-` the job read from stdin into a private temporary file."""
    if str(file) != "-":
        yield file
        return
    with tempfile.TemporaryDirectory(prefix="skbridge-submit-") as folder:
        path = Path(folder) / "stdin-job.sh"
        path.write_bytes(sys.stdin.buffer.read())
        yield path


def _submit_remote(host: str, file: Path, *, wait: bool, follow_: bool, parsable: bool, via: Route,
                   chdir: Path | None) -> int:
    """`ssh HOST skbridge submit --parsable -` with the file on stdin; the job id comes back."""
    from bridge.log import configure_logging
    from bridge.profiles.remote import Remote

    configure_logging("warning", json_output=False, stream=sys.stderr)
    remote = Remote.from_env(host)
    data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    argv = ["submit", "--parsable", "--via", via.value, *(["--chdir", str(chdir)] if chdir else [])]
    if wait or follow_:
        return remote.passthrough([*argv, *(["--follow"] if follow_ else ["--wait"]), "-"], stdin=data)
    done = remote.run([*argv, "-"], stdin=data)
    job_id = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not job_id.isdigit():
        return done.returncode or EXIT_FAILED
    if parsable:
        typer.echo(job_id)
    else:
        out.print(f"Submitted job [bold]{job_id}[/bold] on {escape(host)}  (ssh {escape(host)} skbridge status {job_id})")
    return 0


def _drop_verdict(outcome: DropOutcome) -> str:
    if outcome.job_id is not None:
        return outcome.job_id
    err.print(f"[red]rejected[/red] by the watcher: the file is now {escape(str(outcome.archived))}")
    err.print(escape(outcome.error or ""))
    raise typer.Exit(EXIT_FAILED)


def _follow(settings: Settings, job_id: str) -> SlurmJob:
    """Stream the --output file (once Slurm says where it is) until the job ends."""
    job = wait_output_known(settings, job_id)
    if job.ended:
        return job
    path = Path(job.output) if job.output else job_results_dir(settings.nas, job.user, job_id) / "pod.log"

    def running() -> bool:
        try:
            current = find_job(settings.slurm, job_id)
        except BridgeError:
            return True
        return current is not None and not current.ended

    for chunk in follow(path, 0, still_running=running):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    return wait_ended(settings, job_id, timeout_s=600)


def wait_output_known(settings: Settings, job_id: str, timeout_s: float = 120.0) -> SlurmJob:
    """The job once Slurm tells its output file (or it has ended); Slurm must know it within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = find_job(settings.slurm, job_id)
        if job is not None and (job.output or job.ended):
            return job
        if time.monotonic() >= deadline:
            raise TemporaryError(f"Slurm does not show job {job_id} or its output file after {timeout_s:.0f}s")
        time.sleep(0.5)


def _job_exit(job: SlurmJob) -> int:
    if job.exit_code:
        return min(job.exit_code, 255)
    if job.signal:
        return 128 + job.signal
    if job.state != "COMPLETED":
        err.print(f"job {job.job_id} ended {job.state}", markup=False)
        return EXIT_FAILED
    return 0
