"""`skbridge admin retention|usage|reload`: what the NAS holds per user, what retention removes, and a watcher reload."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bridge.cli.admin import ConfigOption, _settings
from bridge.errors import BridgeError

admin_app = typer.Typer(help="Housekeeping for admins: results usage, retention, reloading the watcher.", no_args_is_help=True)


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


@admin_app.command("reload")
def reload(
    config: Path | None = ConfigOption,
    if_running: bool = typer.Option(False, "--if-running", help="No watcher running is fine (exit 0)."),
    timeout_s: float = typer.Option(120.0, "--timeout-s", help="How long to wait for the watcher to come back."),
) -> None:
    """Make the running watcher take the config file and the code installed now, and wait until it has.

    Under systemd this is what `systemctl reload skbridge-watcher` does (SIGHUP); this command
    also waits until the watcher's hook server answers with the config digest and version on
    disk. A config that does not load is refused here, before anything is signalled.
    Exit codes: 0 reloaded (or --if-running and none runs), 1 it did not come back in time,
    2 the config does not load, no watcher runs, or the lock's holder is not a watcher.
    """
    from bridge.admin.reload import reload_watcher
    from bridge.errors import TemporaryError

    settings = _settings(config)
    try:
        done = reload_watcher(settings, config, timeout_s=timeout_s)
    except TemporaryError as exc:
        typer.echo(f"skbridge admin reload: {exc}", err=True)
        raise typer.Exit(1) from exc
    except BridgeError as exc:
        typer.echo(f"skbridge admin reload: {exc}", err=True)
        raise typer.Exit(2) from exc
    if done is None:
        typer.echo(f"no watcher holds {settings.ingest.lock_path}" + ("; nothing to reload" if if_running else ""),
                   err=not if_running)
        raise typer.Exit(0 if if_running else 2)
    typer.echo(f"watcher pid {done.pid} runs version {done.version} with {done.config_path or 'its defaults'}")
