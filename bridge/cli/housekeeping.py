"""`skbridge admin retention|usage`: what the NAS holds per user, and what retention removes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bridge.cli.admin import ConfigOption, _settings
from bridge.errors import BridgeError

admin_app = typer.Typer(help="Housekeeping for admins: results usage and retention.", no_args_is_help=True)


def _size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@admin_app.command("usage")
def usage(config: Path | None = ConfigOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """Per user: job folders and size under the NAS results folder, largest first."""
    from bridge.collect.retention import results_usage

    rows = results_usage(_settings(config))
    if as_json:
        typer.echo(json.dumps([{"user": r.user, "jobs": r.jobs, "size_bytes": r.size_bytes,
                                "oldest": r.oldest_mtime} for r in rows], indent=2))
        return
    table = Table("user", "jobs", "size", "oldest")
    for row in rows:
        oldest = time.strftime("%Y-%m-%d", time.localtime(row.oldest_mtime)) if row.oldest_mtime else "-"
        table.add_row(row.user, str(row.jobs), _size(row.size_bytes), oldest)
    Console().print(table)


@admin_app.command("retention")
def retention(
    config: Path | None = ConfigOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted, delete nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Apply the retention horizons now (the watcher does it every retention.interval_s).

    Lists every file and folder that goes, and why; jobs Slurm still lists are never touched.
    Exit codes: 0 done (or nothing to do), 1 some deletions failed, 2 Slurm could not say which jobs are live.
    """
    from bridge.collect.retention import apply_retention, plan_retention

    settings = _settings(config)
    try:
        plan = plan_retention(settings)
    except BridgeError as exc:
        typer.echo(f"skbridge: nothing deleted: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps([{"path": str(r.path), "kind": r.kind, "size_bytes": r.size_bytes, "reason": r.reason,
                                "job_id": r.job_id} for r in plan], indent=2))
    else:
        for item in plan:
            typer.echo(f"{'would remove' if dry_run else 'remove'} {item.kind:8} {_size(item.size_bytes):>10}  "
                       f"{item.path}  ({item.reason})")
        total = _size(sum(r.size_bytes for r in plan))
        typer.echo(f"{len(plan)} item(s), {total}" + (" (dry run: nothing deleted)" if dry_run else ""))
    if dry_run or not plan:
        return
    _done, errors = apply_retention(plan)
    for error in errors:
        typer.echo(f"skbridge: could not remove {error}", err=True)
    if errors:
        raise typer.Exit(1)
