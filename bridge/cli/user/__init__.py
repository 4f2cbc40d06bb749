"""The user's commands: submit, status, logs, cancel, jobs, nodes, init, results, dashboard, profile, shell
(as the user, never root).

`skbridge STATUS ...` and friends start through `standalone()`, which imports only these
commands: the admin and sandbox commands cost ~0.5 s of imports a user waits for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

USER_COMMANDS = ("submit", "status", "logs", "cancel", "jobs", "nodes", "init", "results", "dashboard", "profile",
                 "shell")


def register(app: typer.Typer) -> None:
    """Add the user commands to `skbridge`, each help ending with the exit statuses."""
    import inspect

    from bridge.cli.user.cancel import cancel
    from bridge.cli.user.common import EXIT_CODES_HELP
    from bridge.cli.user.dashboard import dashboard
    from bridge.cli.user.init import init
    from bridge.cli.user.jobs import jobs
    from bridge.cli.user.logs import logs
    from bridge.cli.user.nodes import nodes
    from bridge.cli.user.results import results
    from bridge.cli.user.status import status
    from bridge.cli.user.submit import submit

    for name, command in (("submit", submit), ("status", status), ("logs", logs), ("cancel", cancel),
                          ("jobs", jobs), ("nodes", nodes), ("init", init), ("results", results),
                          ("dashboard", dashboard)):
        app.command(name, help=inspect.cleandoc(command.__doc__ or "") + "\n\n" + EXIT_CODES_HELP)(command)
    from bridge.cli.user.shell import SHELL_EXIT_HELP, shell

    app.command("shell", help=inspect.cleandoc(shell.__doc__ or "") + "\n\n" + SHELL_EXIT_HELP)(shell)
    import bridge.cli.user.profile_runs  # noqa: F401  (adds status, log, collect, recover, clean)
    from bridge.cli.user.profile import PROFILE_EXIT_HELP
    from bridge.cli.user.profile import app as profile_app

    for info in profile_app.registered_commands:
        if info.callback is not None and not info.hidden:
            info.help = inspect.cleandoc(info.callback.__doc__ or "") + "\n\n" + PROFILE_EXIT_HELP
    app.add_typer(profile_app, name="profile")


def standalone() -> typer.Typer:
    """`skbridge` with only the user commands (entry.py uses it when argv names one)."""
    import typer

    app = typer.Typer(name="skbridge", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    register(app)
    return app
