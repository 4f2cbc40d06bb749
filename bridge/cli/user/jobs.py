"""`skbridge jobs`: your jobs from Slurm's accounting, one sacct call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from bridge.cli.user.common import (
    EXIT_NOT_YOURS,
    ConfigOption,
    JsonOption,
    emit_json,
    err,
    failures,
    out,
    settings_or_exit,
)
from bridge.userview.fields import format_duration
from bridge.userview.listing import check_since, is_slurm_admin, list_jobs, normalize_states
from bridge.userview.status import caller


def jobs(
    all_: bool = typer.Option(False, "--all", "-a", help="Every job in accounting, not just the last day."),
    state: list[str] = typer.Option([], "--state", "-s", help="Only these states (RUNNING, PD, FAILED, ...; repeatable "
                                    "or comma-separated)."),
    since: str | None = typer.Option(None, "--since", help="Jobs active since this Slurm time: now-2days, 2026-11-20, "
                                     "2026-11-20T10:00 (default now-1days)."),
    all_users: bool = typer.Option(False, "--all-users", help="Every user's jobs (Slurm operators and "
                                   "administrators only)."),
    limit: int = typer.Option(50, "--limit", "-n", min=0, help="Table: only the latest N jobs (0: all). JSON has all."),
    as_json: bool = JsonOption,
    config: Path | None = ConfigOption,
) -> None:
    """List your jobs: state, elapsed time, GPUs and exit code."""
    settings = settings_or_exit("jobs", config)
    with failures("jobs"):
        window = check_since(since) if since else ("1970-01-01" if all_ else "now-1days")
        uid, user = caller()
        if all_users and uid != 0 and not is_slurm_admin(settings.slurm, user):
            err.print("skbridge jobs: --all-users is for Slurm operators and administrators; "
                      "without it you see your own jobs", markup=False)
            raise typer.Exit(EXIT_NOT_YOURS)
        rows = list_jobs(settings.slurm, user=None if all_users else user,
                         since=window, states=normalize_states(state) or None)
    if as_json:
        emit_json([row.as_json() for row in rows])
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("JOBID", *(("USER",) if all_users else ()), "NAME", "STATE", "ELAPSED", "GPUS", "EXIT", "NODE",
                   "SUBMITTED UTC"):
        table.add_column(column, justify="right" if column in ("JOBID", "GPUS") else "left", overflow="fold")
    colours = {"RUNNING": "green", "COMPLETED": "green", "PENDING": "yellow", "FAILED": "red", "CANCELLED": "red",
               "TIMEOUT": "red", "OUT_OF_MEMORY": "red"}
    shown = rows[-limit:] if limit else rows
    for row in shown:
        cells: list[str | Text] = [row.job_id, *((row.user,) if all_users else ()), Text(row.name),
                 f"[{colours.get(row.state, 'white')}]{row.state}[/]", format_duration(row.elapsed_s), str(row.gpus or "-"),
                 row.exit_code or "-", row.node or "-", (row.submit or "-")[5:].replace("T", " ").rstrip("Z")]
        table.add_row(*cells)
    if rows:
        out.print(table)
    more = f" ({len(shown)} shown; --limit 0 for all)" if len(shown) < len(rows) else ""
    out.print(f"[dim]{len(rows)} job{'s' if len(rows) != 1 else ''}{' since ' + window if not all_ else ''}{more}[/dim]")
