"""`skbridge`: the bridge's command line."""

from __future__ import annotations

import typer

from bridge.cli import sandbox

app = typer.Typer(
    name="skbridge",
    help="slurm-k8s-bridge: Slurm queues the job, Kubernetes runs it as a Pod on the node Slurm allocated.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(sandbox.app, name="sandbox")


if __name__ == "__main__":  # pragma: no cover
    app()
