"""`skbridge profile ...`: named runs of a project (list, show, run, full; see profile_runs for the rest)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from bridge.cli.user.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    ConfigOption,
    JsonOption,
    emit_json,
    err,
    failures,
    out,
    settings_or_exit,
)
from bridge.profiles.model import Loaded, Profile, load_profiles
from bridge.profiles.remote import Remote
from bridge.profiles.runs import Prepared, job_state, prepare, start_local, start_remote
from bridge.profiles.state import Run, RunStore
from bridge.settings import Settings

EXIT_REFUSED = 6
PROFILE_EXIT_HELP = EXIT_CODES_HELP + " 6 refused: a run of the profile is active (--force), the job still runs, " \
                                      "or you did not confirm (--yes)."

ProfilesOption = typer.Option(None, "--profiles", "-P", envvar="SKBRIDGE_PROFILES",
                              help="Profile file (default: skbridge-profiles.yaml or skbridge.yaml in this folder or "
                                   "above, else ~/.config/skbridge/profiles.yaml).")
YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
ForceOption = typer.Option(False, "--force", help="Submit even when a run of this profile is still active.")
DirtyOption = typer.Option(False, "--dirty", help="Snapshot uncommitted changes too (git projects).")
HostOption = typer.Option(None, "--host", "-H", help="Run on this login node over SSH (from a laptop); SKBRIDGE_SSH "
                          "names the ssh client, SKBRIDGE_REMOTE the skbridge there.")

app = typer.Typer(name="profile", no_args_is_help=True, help="Named runs of your project: each run submits a job "
                  "from its own code snapshot on the NAS; collect, recover and clean them.\n\n" + PROFILE_EXIT_HELP)


@app.callback()
def _quiet_logs() -> None:
    """The profile commands log their steps (job_id, profile) at info; a person at a terminal sees warnings only."""
    from bridge.log import configure_logging

    configure_logging("warning", json_output=False, stream=sys.stderr)


def confirm_or_refuse(question: str, refused: str) -> None:
    """Ask (no by default); anything but yes ends the command with EXIT_REFUSED."""
    try:
        confirmed = typer.confirm(question, default=False)
    except typer.Abort:
        confirmed = False
    if not confirmed:
        err.print(f"{refused} (not confirmed; --yes skips the question)", markup=False)
        raise typer.Exit(EXIT_REFUSED)


def profile_summary(name: str, profile: Profile) -> dict[str, Any]:
    return {"name": name, **profile.model_dump(exclude_defaults=True)}


def _loaded(profiles: Path | None) -> Loaded:
    return load_profiles(profiles)


@app.command("list")
def list_profiles(profiles: Path | None = ProfilesOption, as_json: bool = JsonOption) -> None:
    """The profiles of the profile file."""
    with failures("profile list"):
        loaded = _loaded(profiles)
    if as_json:
        emit_json({"file": str(loaded.path), "project": str(loaded.project),
                   "profiles": [profile_summary(n, p) for n, p in sorted(loaded.profiles.items())]})
        return
    out.print(f"[bold]{escape(str(loaded.path))}[/bold]  (project {escape(str(loaded.project))})")
    for name, profile in sorted(loaded.profiles.items()):
        what = profile.command or f"(base {profile.base})"
        out.print(f"  [bold]{escape(name)}[/bold]  gpus={profile.gpus or 0}  {escape(what.splitlines()[0])}"
                  + (f"  — {escape(profile.description)}" if profile.description else ""))


def _show(prepared: Prepared | None, name: str, profile: Profile, text: str, snapshot_note: str) -> None:
    out.print(f"[bold]Profile {escape(name)}[/bold]" + (f": {escape(profile.description)}" if profile.description else ""))
    resources = (f"{profile.cpus or '-'} CPU, {profile.mem or '-'} memory, {profile.gpus or 0} GPU, "
                 f"time {profile.time or '-'}")
    out.print(f"  Resources: {escape(resources)}")
    out.print(f"  Image:     {escape(profile.image or '(base file or site default)')}")
    out.print(f"  Code:      {escape(snapshot_note)}")
    out.print(f"  Results:   {escape(profile.results or '(none)')} → {escape(profile.collect_to)}")
    out.print("[bold]Job file[/bold] (what is submitted):")
    sys.stdout.write(text)
    sys.stdout.flush()


def _snapshot_note(prepared: Prepared) -> str:
    snap = prepared.snapshot
    origin = {"git": f"git commit {(snap.commit or '')[:10]}", "git-dirty": "git working tree (uncommitted changes)",
              "folder": "folder copy"}[snap.source]
    return f"{len(snap.files)} files, {snap.size_bytes:,} bytes, {origin}, from {prepared.project}"


@app.command("show")
def show(name: str = typer.Argument(..., help="Profile name."), dirty: bool = typer.Option(
        False, "--dirty", help="Take uncommitted changes too."), profiles: Path | None = ProfilesOption,
        as_json: bool = JsonOption) -> None:
    """Exactly what `run NAME` would submit: the job file and the snapshot's files."""
    with failures("profile show"):
        loaded = _loaded(profiles)
        prepared = prepare(loaded, name, allow_dirty=dirty)
    if as_json:
        emit_json({"profile": profile_summary(name, prepared.profile), "job": prepared.job_text,
                   "snapshot": {"source": prepared.snapshot.source, "commit": prepared.snapshot.commit,
                                "files": prepared.snapshot.files, "size_bytes": prepared.snapshot.size_bytes}})
        return
    _show(prepared, name, prepared.profile, prepared.job_text, _snapshot_note(prepared))
    out.print(f"[bold]Snapshot files[/bold]: {escape(', '.join(prepared.snapshot.files[:20]))}"
              + (" ..." if len(prepared.snapshot.files) > 20 else ""))


def active_runs(settings: Settings | None, runs: list[Run]) -> list[tuple[Run, str]]:
    found = []
    for run in runs:
        if run.job_id is None or run.collected_at:
            continue
        state, active = job_state(settings, run)
        if active:
            found.append((run, state))
    return found


def start(name: str, *, yes: bool, force: bool, dirty: bool, host: str | None, profiles: Path | None,
          config: Path | None, command: str) -> tuple[Run, Settings | None]:
    """Show, check, confirm, snapshot and submit; the new run."""
    settings = None if host else settings_or_exit(command, config)
    store = RunStore()
    with failures(command):
        loaded = _loaded(profiles)
        prepared = prepare(loaded, name, allow_dirty=dirty)
        _show(prepared, name, prepared.profile, prepared.job_text, _snapshot_note(prepared))
        if settings is not None:
            from bridge.jobfile.spec import parse_job_text

            _spec, problems = parse_job_text(prepared.job_text, settings.policy, settings.nas)
            errors = [p for p in problems if p.severity == "error"]
            for problem in errors:
                err.print(f"[red]refused[/red]: {escape(problem.message)} (fix: {escape(problem.fix)})")
            if errors:
                raise typer.Exit(EXIT_FAILED)
        active = active_runs(settings, store.runs(name, loaded.project))
        for run, state in active:
            err.print(f"[yellow]warning[/yellow]: run {run.run_id} of {escape(name)} (job {run.job_id}) is still "
                      f"{state}")
        if active and not force:
            err.print("not submitted: pass --force to start another run anyway", markup=False)
            raise typer.Exit(EXIT_REFUSED)
        if not yes:
            confirm_or_refuse("Submit this run?", "not submitted")
        if host is not None:
            run = start_remote(Remote.from_env(host), prepared, store)
        else:
            from bridge.userview.status import caller

            assert settings is not None
            run = start_local(settings, caller()[1], prepared, store)
    where = f" on {host}" if host else ""
    out.print(f"Submitted job [bold]{run.job_id}[/bold]{escape(where)}: profile {escape(name)}, run {run.run_id}, "
              f"snapshot {escape(run.run_dir)}")
    out.print(f"  next: skbridge profile status {escape(name)} · skbridge profile log {escape(name)} -f · "
              f"skbridge profile collect {escape(name)}")
    return run, settings


@app.command("run")
def run_profile(
    name: str = typer.Argument(..., help="Profile name."),
    yes: bool = YesOption,
    force: bool = ForceOption,
    dirty: bool = DirtyOption,
    host: str | None = HostOption,
    profiles: Path | None = ProfilesOption,
    config: Path | None = ConfigOption,
) -> None:
    """Show the profile and its job file, snapshot the project's code into a new run folder on the
    NAS (later edits never reach this job) and submit the job from there, as you."""
    start(name, yes=yes, force=force, dirty=dirty, host=host, profiles=profiles, config=config, command="profile run")


@app.command("full")
def full(
    name: str = typer.Argument(..., help="Profile name."),
    yes: bool = YesOption,
    force: bool = ForceOption,
    dirty: bool = DirtyOption,
    host: str | None = HostOption,
    profiles: Path | None = ProfilesOption,
    config: Path | None = ConfigOption,
) -> None:
    """`run`, then follow the job's output until it ends, then `collect`; exits with the job's exit code."""
    from bridge.cli.user.profile_runs import collect_and_report
    from bridge.cli.user.submit import _follow, _job_exit

    run, settings = start(name, yes=yes, force=force, dirty=dirty, host=host, profiles=profiles, config=config,
                          command="profile full")
    assert run.job_id is not None
    with failures("profile full"):
        profile = _loaded(profiles).get(name)
        if host is not None:
            code = _follow_remote(run)
            collect_and_report(None, run, profile, keep_snapshot=False, as_json=False)
            raise typer.Exit(code)
        assert settings is not None
        final = _follow(settings, run.job_id)
        collect_and_report(settings, run, profile, keep_snapshot=False, as_json=False)
    raise typer.Exit(_job_exit(final))


def _follow_remote(run: Run, poll_s: float = 2.0) -> int:
    """Stream the job's output over ssh until it ends, then wait for Slurm to finish it; its exit status."""
    import json
    import time

    assert run.host is not None and run.job_id is not None
    remote = Remote.from_env(run.host)
    remote.passthrough(["logs", run.job_id, "-f"])
    while job_state(None, run)[1]:  # COMPLETING after the output ends
        time.sleep(poll_s)
    final = json.loads(remote.output(["status", run.job_id, "--json"]))
    if final.get("exit_code"):
        return min(int(final["exit_code"]), 255)
    return 0 if final.get("state") == "COMPLETED" else EXIT_FAILED


@app.command("receive", hidden=True)
def receive_snapshot(rel: str = typer.Argument(...), config: Path | None = ConfigOption) -> None:
    """The login node's end of `--host`: unpack the snapshot on stdin into RUNS/PROFILE/RUN_ID."""
    from bridge.profiles.runs import receive
    from bridge.userview.status import caller

    settings = settings_or_exit("profile receive", config)
    with failures("profile receive"):
        path = receive(settings, caller()[1], rel, sys.stdin.buffer)
    typer.echo(str(path))


@app.command("export", hidden=True)
def export_run(job_id: str = typer.Argument(...), run_dir: Path | None = typer.Option(None, "--run-dir"),
               config: Path | None = ConfigOption) -> None:
    """The login node's end of collecting over `--host`: the ended job's results as a tar stream on stdout."""
    from bridge.profiles.runs import export_results
    from bridge.userview.status import own_job

    settings = settings_or_exit("profile export", config)
    with failures("profile export"):
        job = own_job(settings, job_id)
        if not job.ended:
            err.print(f"skbridge profile export: job {job_id} is still {job.state}", markup=False)
            raise typer.Exit(EXIT_REFUSED)
        export_results(settings, job.user, job_id, run_dir, sys.stdout.buffer)
        sys.stdout.buffer.flush()


@app.command("discard", hidden=True)
def discard_run(rel: str = typer.Argument(...), config: Path | None = ConfigOption) -> None:
    """The login node's end of removing a run folder over `--host`: RUNS/PROFILE/RUN_ID of yours, only it."""
    from bridge.profiles.runs import discard
    from bridge.userview.status import caller

    settings = settings_or_exit("profile discard", config)
    with failures("profile discard"):
        removed = discard(settings, caller()[1], rel)
    typer.echo(str(removed or ""))
