"""The `skbridge` console command: the batch step's `skbridge attach` skips the CLI framework.

Every bridge job's batch step runs `skbridge attach` on a busy node; importing Typer, Rich
and every subcommand costs ~0.35 s of CPU before attach even starts. The launcher line's
exact forms (`attach`, `attach --config FILE`) go straight to the attach code; anything
else, `attach --help` included, goes through the full CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _launcher_config(argv: list[str]) -> tuple[bool, Path | None]:
    """(True, config) when argv is exactly what the launcher line runs."""
    if argv[:1] != ["attach"]:
        return False, None
    rest = argv[1:]
    if not rest:
        return True, None
    if len(rest) == 2 and rest[0] in ("--config", "-c"):
        return True, Path(rest[1])
    if len(rest) == 1 and rest[0].startswith("--config="):
        return True, Path(rest[0].removeprefix("--config="))
    return False, None


def main() -> None:
    fast, config = _launcher_config(sys.argv[1:])
    if fast:
        from bridge.hooks.attach import attach_command

        sys.exit(attach_command(config))
    from bridge.cli.user import USER_COMMANDS

    if sys.argv[1:2] and sys.argv[1] in USER_COMMANDS:
        from bridge.cli.user import standalone

        standalone()(prog_name="skbridge")
        return
    from bridge.cli.main import app

    app()
