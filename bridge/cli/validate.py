"""`skbridge validate FILE`: the watcher's verdict on a job file, before dropping it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bridge.errors import BridgeError
from bridge.ingest.filecheck import validate_file
from bridge.settings import load_settings


def validate(
    files: list[Path] = typer.Argument(..., help="Job script(s) to check.", metavar="FILE..."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file (for scripts)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file with the site's limits "
                                       "(default $SKBRIDGE_CONFIG or /etc/slurm-k8s-bridge/config.yaml)."),
) -> None:
    """Check job files exactly as the drop-folder watcher will: file checks, #SBATCH allow-list and
    site limits, #K8S_ directives, image registry, and where the job runs: every job runs in a
    Pod, with its #K8S_IMAGE or the site's policy.default_image (a file without either is refused).

    Each problem names its line, what was expected there and how to fix it. Exit status: 0 when
    every file is valid, 1 when any has errors, 2 when the configuration cannot be loaded.
    """
    try:
        settings = load_settings(config)
    except BridgeError as exc:
        typer.echo(f"skbridge validate: {exc}", err=True)
        raise typer.Exit(2) from exc
    console = Console(highlight=False)
    failed = False
    for path in files:
        report = validate_file(path, settings)
        failed = failed or not report.ok
        if as_json:
            typer.echo(json.dumps({"file": report.file, "valid": report.ok, "owner": report.owner,
                                   "problems": [p.model_dump() for p in report.problems],
                                   "job": report.job.model_dump(mode="json") if report.job else None}))
            continue
        if report.ok:
            job = report.job
            assert job is not None
            facts = [f"runs in a Pod with the site's default image {job.image} (no #K8S_IMAGE)"
                     if job.image_is_default else f"image {job.image}"]
            if job.cpus_per_task:
                facts.append(f"{job.cpus_per_task} CPUs")
            if job.mem_mib:
                facts.append(f"{job.mem_mib} MiB")
            if job.gpus:
                facts.append(f"{job.gpus} GPU{'s' if job.gpus > 1 else ''}" + (f" ({job.gpu_type})" if job.gpu_type else ""))
            console.print(f"[green]valid[/green]  {escape(str(path))}: " + escape(", ".join(facts)))
        else:
            errors = sum(p.severity == "error" for p in report.problems)
            console.print(f"[red]invalid[/red]  {escape(str(path))}: {errors} error{'s' if errors != 1 else ''}")
        for problem in report.problems:
            colour = "red" if problem.severity == "error" else "yellow"
            where = f"line {problem.line}" if problem.line else "file"
            console.print(f"  [{colour}]{where}: {escape(problem.message)}[/{colour}]")
            console.print(f"    expected: {escape(problem.expected)}")
            console.print(f"    fix:      {escape(problem.fix)}")
    if failed:
        raise typer.Exit(1)
