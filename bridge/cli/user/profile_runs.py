"""`skbridge profile status|log|collect|recover|clean`: a profile's runs after submission."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from bridge.cli.user.common import (
    EXIT_NOT_FOUND,
    ConfigOption,
    JsonOption,
    emit_json,
    err,
    failures,
    out,
    settings_or_exit,
)
from bridge.cli.user.profile import EXIT_REFUSED, ProfilesOption, app, confirm_or_refuse
from bridge.profiles.model import Profile, load_profiles
from bridge.profiles.remote import Remote
from bridge.profiles.render import RUNS_DIR, run_rel
from bridge.profiles.runs import UNFINISHED_STATES, clean_targets, collect, job_state, nas_home, orphans, resubmit_run
from bridge.profiles.state import Run, RunStore
from bridge.settings import Settings
from bridge.userview.status import caller


def _latest(runs: list[Run], name: str, *, uncollected: bool = False) -> Run:
    candidates = [run for run in runs if run.job_id and not (uncollected and run.collected_at)]
    if not candidates:
        err.print(f"skbridge profile: no {'uncollected ' if uncollected else ''}run of {name} "
                  f"(skbridge profile run {name})", markup=False)
        raise typer.Exit(EXIT_NOT_FOUND)
    return candidates[-1]  # the store keeps runs in the order they were started


@app.command("status")
def status(name: str | None = typer.Argument(None, help="Profile name (default: every profile)."),
           every_project: bool = typer.Option(False, "--all", help="Runs of every project, not only this one's."),
           profiles: Path | None = ProfilesOption, as_json: bool = JsonOption, config: Path | None = ConfigOption) -> None:
    """Your runs of this project (of profile NAME) with their job's state, snapshot folder and collection."""
    settings = settings_or_exit("profile status", config)
    with failures("profile status"):
        project = None if every_project else load_profiles(profiles).project
        rows = []
        for run in RunStore().runs(name, project):
            state = "COLLECTED" if run.collected_at else job_state(settings, run)[0]
            rows.append({**run.model_dump(), "state": state})
    if as_json:
        emit_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("PROFILE", "RUN", "JOB", "STATE", "HOST", "SNAPSHOT / COLLECTED TO"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row["profile"]), row["run_id"], row["job_id"] or "-", row["state"], escape(row["host"] or ""),
                      escape(row["collected_to"] or row["run_dir"]))
    out.print(table)


@app.command("log")
def log(name: str = typer.Argument(..., help="Profile name."),
        follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
        tail: int | None = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines."),
        profiles: Path | None = ProfilesOption, config: Path | None = ConfigOption) -> None:
    """The output of the profile's latest run."""
    with failures("profile log"):
        project = load_profiles(profiles).project
    run = _latest(RunStore().runs(name, project), name)
    assert run.job_id is not None
    if run.host:
        with failures("profile log"):
            code = Remote.from_env(run.host).passthrough(
                ["logs", run.job_id, *(["-f"] if follow_ else []), *(["--tail", str(tail)] if tail is not None else [])])
        raise typer.Exit(code)
    from bridge.cli.user.logs import logs

    logs(job_id=run.job_id, follow_=follow_, tail=tail, config=config)


def collect_and_report(settings: Settings | None, run: Run, profile: Profile, *, keep_snapshot: bool, as_json: bool) -> None:
    dest, copied = collect(settings, caller()[1], run, profile, RunStore(), keep_snapshot=keep_snapshot)
    if as_json:
        emit_json({"profile": run.profile, "run_id": run.run_id, "job_id": run.job_id, "collected_to": str(dest),
                   "files": copied, "snapshot_removed": not keep_snapshot})
        return
    out.print(f"collected job {run.job_id} (profile {escape(run.profile)}, run {run.run_id}): {len(copied)} files "
              f"→ {escape(str(dest))}" + ("" if keep_snapshot else f"; removed its snapshot {escape(run.run_dir)}"))


@app.command("collect")
def collect_command(name: str = typer.Argument(..., help="Profile name."),
                    run_id: str | None = typer.Option(None, "--run", help="This run (default: the latest uncollected)."),
                    keep_snapshot: bool = typer.Option(False, "--keep-snapshot", help="Leave the run's snapshot folder."),
                    profiles: Path | None = ProfilesOption, as_json: bool = JsonOption,
                    config: Path | None = ConfigOption) -> None:
    """Copy the run's results (results/<you>/<jobid>/ and its output file) into the project, then
    remove that run's snapshot folder, and only it. Refused while the job is queued or running."""
    settings = settings_or_exit("profile collect", config)
    with failures("profile collect"):
        loaded = load_profiles(profiles)
    runs = [r for r in RunStore().runs(name, loaded.project) if run_id is None or r.run_id == run_id]
    run = _latest(runs, name, uncollected=run_id is None)
    with failures("profile collect"):
        state, active = job_state(settings, run)
        if active:
            err.print(f"skbridge profile collect: job {run.job_id} of {name} is still {state}; collect it when it has "
                      f"ended (skbridge profile log {name} -f waits for it)", markup=False)
            raise typer.Exit(EXIT_REFUSED)
        collect_and_report(settings, run, loaded.get(name), keep_snapshot=keep_snapshot,
                           as_json=as_json)


@app.command("recover")
def recover(name: str = typer.Argument(..., help="Profile name."),
            resubmit: bool = typer.Option(False, "--resubmit", help="Submit a run whose job failed, was cancelled, "
                                          "timed out or is unknown to Slurm again, from its own snapshot."),
            profiles: Path | None = ProfilesOption, as_json: bool = JsonOption, config: Path | None = ConfigOption) -> None:
    """Find runs of NAME whose job ended but whose results were never collected (also run folders
    on the NAS this machine lost track of) and collect them; with --resubmit, a run that did not
    complete is submitted again from the same snapshot instead. Active runs are left alone."""
    settings = settings_or_exit("profile recover", config)
    store = RunStore()
    report = []
    with failures("profile recover"):
        loaded = load_profiles(profiles)
        profile = loaded.get(name)
        known = store.runs(name, loaded.project)
        relinked = orphans(settings, caller()[1], name, store.runs(name), loaded.project)
        for run in relinked:
            store.put(run)
        for run in [r for r in known if not r.collected_at and r.job_id] + relinked:
            state, active = job_state(settings, run)
            entry: dict[str, object] = {"run_id": run.run_id, "job_id": run.job_id, "state": state,
                                        "relinked": run in relinked, "collected_to": None, "resubmitted_as": None}
            if not active and resubmit and state in UNFINISHED_STATES and not run.snapshot_removed:
                entry["resubmitted_as"] = resubmit_run(settings, run, store)
            elif not active:
                dest, _copied = collect(settings, caller()[1], run, profile, store)
                entry["collected_to"] = str(dest)
            report.append(entry)
    if as_json:
        emit_json(report)
        return
    if not report:
        out.print(f"nothing to recover: every run of {escape(name)} is collected or still active")
    for entry in report:
        what = (f"resubmitted as job {entry['resubmitted_as']}" if entry["resubmitted_as"]
                else f"collected → {entry['collected_to']}" if entry["collected_to"] else "still active, left alone")
        out.print(f"run {entry['run_id']} (job {entry['job_id']}, {entry['state']}"
                  f"{', re-linked from the NAS' if entry['relinked'] else ''}): {escape(what)}")


@app.command("clean")
def clean(name: str | None = typer.Argument(None, help="Profile name (default: every profile)."),
          yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
          keep_results: bool = typer.Option(False, "--keep-results", help="Keep the collected copies."),
          profiles: Path | None = ProfilesOption, config: Path | None = ConfigOption) -> None:
    """List every folder it would delete (snapshot folders and collected copies of ended runs),
    ask, then delete exactly those. A queued or running job's files are never touched."""
    settings = settings_or_exit("profile clean", config)
    store = RunStore()
    user = caller()[1]
    runs_root = (nas_home(settings, user) / RUNS_DIR).resolve()
    plan: list[tuple[Run, list[str]]] = []
    with failures("profile clean"):
        project = load_profiles(profiles).project
        known = store.runs(name, project)
        for run in known + orphans(settings, user, name, store.runs(name), project):
            state, active = job_state(settings, run)
            if active:
                out.print(f"kept: run {run.run_id} of {escape(run.profile)} (job {run.job_id} is {state})")
                continue
            targets = [t for t in clean_targets(run) if not (keep_results and t == run.collected_to)]
            plan.append((run, [t for t in targets if _ours(t, run, runs_root)]))
    doomed = [target for _run, targets in plan for target in targets]
    if not plan:
        out.print("nothing to clean")
        return
    out.print("[bold]To delete[/bold]:")
    for target in doomed:
        out.print(f"  {escape(target)}/")
    out.print(f"  and the record of {len(plan)} run(s)")
    if not yes:
        confirm_or_refuse("Delete these?", "nothing deleted")
    with failures("profile clean"):
        for run, targets in plan:
            for target in targets:
                if run.host and target == f"{run.host}:{run.run_dir}":
                    Remote.from_env(run.host).output(["profile", "discard", str(run_rel(run.profile, run.run_id))])
                else:
                    shutil.rmtree(target)
            store.drop(run.profile, run.run_id)
    out.print(f"deleted {len(doomed)} folder(s)")


def _ours(target: str, run: Run, runs_root: Path) -> bool:
    """Only folders the runs made: a snapshot under the runs folder (or on the login node), a copy inside its project."""
    if run.host and target == f"{run.host}:{run.run_dir}":
        return True
    resolved = Path(target).resolve()
    return runs_root in resolved.parents or Path(run.project).resolve() in resolved.parents
