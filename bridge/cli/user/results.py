"""`skbridge results JOBID`: what came back (results/<user>/<jobid>/), checked against SHA256SUMS, copied."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from bridge.cli.user.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    ConfigOption,
    JsonOption,
    emit_json,
    err,
    failures,
    out,
    settings_or_exit,
)
from bridge.userview.queue import check_job_id
from bridge.userview.results import copy_tree, job_results_dir, list_files, verify
from bridge.userview.status import caller


def results(
    job_id: str = typer.Argument(..., help="Slurm job id (one of yours)."),
    verify_: bool = typer.Option(False, "--verify", help="Check every file against SHA256SUMS."),
    to: Path | None = typer.Option(None, "--to", help="Copy the folder to DIR/JOBID/."),
    as_json: bool = JsonOption,
    config: Path | None = ConfigOption,
) -> None:
    """List your job's results folder on the NAS (Pod log, summary, events, manifest, the
    #K8S_RESULTS files under results/, SHA256SUMS); --verify checks the checksums (exit 1 on a
    mismatch or missing file); --to copies it.
    """
    settings = settings_or_exit("results", config)
    with failures("results"):
        check_job_id(job_id)
        _uid, user = caller()
        # Always the caller's own folder: another user's results are never addressed at all.
        job_dir = job_results_dir(settings.nas, user, job_id)
        if not job_dir.is_dir():
            err.print(f"skbridge results: no results folder {job_dir} (not your job, or it has not ended yet)",
                      markup=False)
            raise typer.Exit(EXIT_NOT_FOUND)
        files = list_files(job_dir)
        checked = verify(job_dir) if verify_ else None
        copied = copy_tree(job_dir, to / job_id) if to is not None else None
    failed = checked is not None and not checked.passed
    if as_json:
        emit_json({"job_id": job_id, "results_dir": str(job_dir),
                   "files": [{"path": f.path, "size": f.size} for f in files],
                   "verify": None if checked is None else {
                       "passed": checked.passed, "sums_present": checked.sums_present, "ok": checked.ok,
                       "mismatched": checked.mismatched, "missing": checked.missing, "unlisted": checked.unlisted},
                   "copied_to": str(to / job_id) if to is not None else None, "copied": copied})
    else:
        out.print(f"[bold]{escape(str(job_dir))}[/bold]")
        table = Table(show_edge=False, header_style="bold")
        table.add_column("FILE")
        table.add_column("SIZE", justify="right")
        if checked is not None:
            table.add_column("SHA256")
        bad = set(checked.mismatched) if checked else set()
        missing = set(checked.missing) if checked else set()
        fine = set(checked.ok) if checked else set()
        for item in files:
            row = [escape(item.path), f"{item.size:,}"]
            if checked is not None:
                row.append("[green]OK[/green]" if item.path in fine else "[red]MISMATCH[/red]" if item.path in bad
                           else "" if item.path == "SHA256SUMS" else "[yellow]not listed[/yellow]")
            table.add_row(*row)
        out.print(table)
        if checked is not None:
            if not checked.sums_present:
                out.print("[red]no SHA256SUMS: the results were not collected completely[/red]")
            for name in sorted(missing):
                out.print(f"[red]missing: {escape(name)}[/red]")
            if checked.passed:
                out.print(f"[green]verified[/green] {len(checked.ok)} files against SHA256SUMS")
            else:
                out.print(f"[red]verification failed[/red]: {len(checked.mismatched)} mismatched, "
                          f"{len(checked.missing)} missing")
        if copied is not None and to is not None:
            out.print(f"copied {len(copied)} files to {escape(str(to / job_id))}")
    if failed:
        raise typer.Exit(EXIT_FAILED)
