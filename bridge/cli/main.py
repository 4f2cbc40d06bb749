"""`skbridge`: the bridge's command line."""

from __future__ import annotations

import typer

from bridge.cli.admin import config_app, install_app
from bridge.cli.hooks import attach, hook_app
from bridge.cli.housekeeping import admin_app
from bridge.cli.serve import serve
from bridge.cli.testsuite import test_suite
from bridge.cli.user import register as register_user_commands
from bridge.cli.validate import validate
from bridge.cli.watch import watch


def _add_sandbox(parent: typer.Typer) -> None:
    """The sandbox is a development tool: a checkout has it (with its extra, `pip install -e '.[sandbox]'`),
    a built package leaves it out; there the command says so instead of failing to import."""
    try:
        from bridge.cli import sandbox
    except ImportError as exc:
        what = exc.name or str(exc)

        @parent.command("sandbox", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                        help="A local Slurm + Kubernetes sandbox (development only; not installed here).")
        def _not_installed() -> None:
            if what.startswith("bridge.sandbox"):
                typer.echo("skbridge sandbox: a development tool, not part of an installed bridge: run it from a git "
                           "checkout (`make sandbox`)", err=True)
            else:
                typer.echo(f"skbridge sandbox: not installed ({what} is missing): "
                           "pip install -e '.[sandbox]' in a development checkout", err=True)
            raise typer.Exit(2)

        return
    parent.add_typer(sandbox.app, name="sandbox")


app = typer.Typer(
    name="skbridge",
    help="slurm-k8s-bridge: Slurm queues the job, Kubernetes runs it as a Pod on the node Slurm allocated.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_add_sandbox(app)
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
