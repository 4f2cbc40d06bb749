"""`skbridge`: the bridge's command line."""

from __future__ import annotations

import typer

from bridge.cli import sandbox
from bridge.cli.admin import config_app, install_app
from bridge.cli.hooks import attach, hook_app
from bridge.cli.housekeeping import admin_app
from bridge.cli.serve import serve
from bridge.cli.testsuite import test_suite
from bridge.cli.user import register as register_user_commands
from bridge.cli.validate import validate
from bridge.cli.watch import watch

app = typer.Typer(
    name="skbridge",
    help="slurm-k8s-bridge: Slurm queues the job, Kubernetes runs it as a Pod on the node Slurm allocated.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(sandbox.app, name="sandbox")
app.command()(validate)
app.command()(watch)
app.command()(serve)
app.command()(attach)
app.add_typer(hook_app, name="hook")
app.add_typer(config_app, name="config")
app.add_typer(install_app, name="install")
app.add_typer(admin_app, name="admin")
app.command("test-suite")(test_suite)
register_user_commands(app)


if __name__ == "__main__":  # pragma: no cover
    app()
