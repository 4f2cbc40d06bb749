"""Shared pieces of the user commands: settings, consoles, error → exit status, JSON output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bridge.errors import BridgeError, ConfigError, TemporaryError
from bridge.settings import Settings, load_settings
from bridge.userview.status import NoSuchJob, NotYourJob

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOT_YOURS = 4
EXIT_UNAVAILABLE = 5

EXIT_CODES_HELP = ("Exit status: 0 done; 1 failed (Slurm refused, check failed); 2 bad usage or configuration; "
                   "3 no such job; 4 not your job; 5 Slurm or the watcher did not answer (try again).")

ConfigOption = typer.Option(None, "--config", "-c", help="Bridge config (default $SKBRIDGE_CONFIG or "
                            "/etc/slurm-k8s-bridge/config.yaml).")
JsonOption = typer.Option(False, "--json", help="Print JSON (for scripts) instead of tables.")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def settings_or_exit(command: str, config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except BridgeError as exc:
        err.print(f"skbridge {command}: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from exc


def exit_code_for(exc: BridgeError) -> int:
    if isinstance(exc, NotYourJob):
        return EXIT_NOT_YOURS
    if isinstance(exc, NoSuchJob):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, TemporaryError):
        return EXIT_UNAVAILABLE
    return EXIT_FAILED


@contextmanager
def failures(command: str) -> Iterator[None]:
    """Turn the bridge's errors into one line on stderr and the documented exit status."""
    try:
        yield
    except BridgeError as exc:
        err.print(f"skbridge {command}: {exc}", markup=False)
        raise typer.Exit(exit_code_for(exc)) from exc
    except OSError as exc:  # a file or folder the user cannot read or write
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"skbridge {command}: {exc.strerror or exc}{where}", markup=False)
        raise typer.Exit(EXIT_FAILED) from exc
    except KeyboardInterrupt:
        err.print(f"skbridge {command}: interrupted", markup=False)
        raise typer.Exit(130) from None


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
