"""`skbridge attach` and `skbridge hook prolog|epilog`: what Slurm runs for a bridge job."""

from __future__ import annotations

import os
from pathlib import Path

import typer

hook_app = typer.Typer(
    help="Run a Slurm hook by hand (slurmctld runs them as skbridge-prolog-slurmctld / skbridge-epilog-slurmctld).",
    no_args_is_help=True,
)

ConfigOption = typer.Option(
    None, "--config", "-c", help="Config file (default $SKBRIDGE_CONFIG or /etc/slurm-k8s-bridge/config.yaml).")


@hook_app.command("prolog")
def prolog(job_id: str = typer.Argument(..., help="Slurm job id."), config: Path | None = ConfigOption) -> None:
    """Create the job's Pod on its allocated node and wait until it is Ready. Exit 1 = requeue."""
    from bridge.hooks.entry import run_hook
    from bridge.hooks.prolog import run_prolog

    if config is not None:
        os.environ["SKBRIDGE_CONFIG"] = str(config)
    raise typer.Exit(run_hook("prolog", run_prolog, job_id))


@hook_app.command("epilog")
def epilog(job_id: str = typer.Argument(..., help="Slurm job id."), config: Path | None = ConfigOption) -> None:
    """Collect the job's results onto the NAS, then delete its Pod, ConfigMap, PVC and PV and check they are gone."""
    from bridge.hooks.entry import run_hook
    from bridge.hooks.epilog import run_epilog

    if config is not None:
        os.environ["SKBRIDGE_CONFIG"] = str(config)
    raise typer.Exit(run_hook("epilog", run_epilog, job_id))


def attach(config: Path | None = ConfigOption) -> None:
    """The batch step of a bridge job (inserted by the launcher line; not for interactive use).

    Streams the job's Pod log to stdout, so it lands in the job's --output file, and exits
    with the Pod's exit code. If the bridge rejected the job, prints why and exits 1.
    """
    from bridge.hooks.attach import attach_command

    raise typer.Exit(attach_command(config))
